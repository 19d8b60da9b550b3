"""What the agent's file operations share: errors, checked relative paths, manifest
entries and the digest cache.

Every path is relative to a root and checked: no '..', no absolute paths, and no symlink
is followed on the way (a symlink inside the tree is kept as a symlink, never traversed).
The operations themselves: scan.py (scan_tree), writer.py (atomic write, checked delete, read),
both through dirfd.py's directory handles. Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import sys
import time
from typing import Any, Dict, List, Optional, Tuple, Union

from . import roots
from .modes import safe_mode
from .wire import ErrorKind

TMP_MARK = ".tether-tmp."
CHUNK = 1 << 20


class OpError(Exception):
    """A request that cannot be done; `kind` (wire.ErrorKind) is what the client maps to a
    message. A word that is no ErrorKind is a bug (ValueError)."""

    def __init__(self, kind: Union[ErrorKind, str], message: str) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)


def check_rel(path: str) -> str:
    """A safe relative POSIX path or OpError(ErrorKind.UNSAFE)."""
    if not path or path.startswith("/") or "\x00" in path:
        raise OpError(ErrorKind.UNSAFE, "unsafe path %r" % path)
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise OpError(ErrorKind.UNSAFE, "unsafe path %r" % path)
    return path


def read_json(path: str) -> Optional[Dict[str, Any]]:
    """The JSON object in the file at path, or None (missing, unreadable, not an object)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def root_path(root: str) -> str:
    """Expand '~' in a root the way the user's shell would."""
    return os.path.abspath(os.path.expanduser(root))


def sync_root(root: str) -> str:
    """root_path of a directory tether may sync, run or read in (agent/roots.py)."""
    why = roots.problem(root, os.path.expanduser("~"))
    if why:
        raise OpError(
            ErrorKind.UNSAFE_ROOT, "refusing to use %s as a project directory: it %s" % (root, why)
        )
    return root_path(root)


def entry_of(st: os.stat_result, full: str) -> Dict[str, Any]:
    """The manifest entry JSON for an lstat result."""
    return entry_of_row(row_of("", st, full))


class DigestCache:
    """sha256 of files keyed by (inode, size, mtime_ns, ctime_ns), kept on disk between runs.

    A digest is kept only if the file's stat did not change while it was read and its ctime
    lies RACY_NS before the read began: a later write then always changes the key (ctime
    is set by the kernel on every write, and no tool can set it back), even one of the same
    size landing within the same timestamp tick as the write before it.
    """

    def __init__(self, cache_dir: str, root: str) -> None:
        key = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.file = os.path.join(cache_dir, "digests-2-%s.json" % key)
        # The cache of older versions (no ctime in its keys): removed at the first save.
        self.old_file = os.path.join(cache_dir, "digests-%s.json" % key)
        self.data: Dict[str, str] = {}
        self.dirty = False
        try:
            with open(self.file, encoding="utf-8") as handle:
                # Digests interned: one object per digest in every manifest and row.
                self.data = {key: sys.intern(value) for key, value in json.load(handle).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            self.data = {}

    def known(self, st: os.stat_result) -> Optional[str]:
        """The cached digest for a stat, if any (no I/O)."""
        if not self.data:
            return None
        return self.data.get(stat_key(st))

    def get(self, full: str, st: os.stat_result, compute: bool) -> Optional[str]:
        if not self.data and not compute:
            return None
        key = stat_key(st)
        digest = self.data.get(key)
        if digest is None and compute:
            digest, settled = checked_digest(full, st)
            if settled:
                self.data[key] = digest
                self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        os.makedirs(os.path.dirname(self.file), exist_ok=True)
        tmp = "%s.%d.tmp" % (self.file, os.getpid())
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle)
        os.replace(tmp, self.file)
        self.dirty = False
        unlink_quietly(self.old_file)


def stat_key(st: os.stat_result) -> str:
    """What a cached digest is valid for: inode, size, mtime and ctime (any write changes
    ctime, and nothing can set it back)."""
    return "%d:%d:%d:%d" % (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# How long before a read a file's ctime must lie for its digest to be kept: well above the
# tick of any file system's timestamps (jiffies on Linux, up to 2 s on FAT).
RACY_NS = 2 * 10**9


def checked_digest(full: str, st: os.stat_result) -> Tuple[str, bool]:
    """sha256 hex of a file's bytes (never through a symlink), and whether it may be cached
    under st: the file is still st after the read, and st's ctime is settled."""
    started = time.time_ns()
    digest = hashlib.sha256()
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
        after = os.fstat(handle.fileno())
    same = stat_key(after) == stat_key(st)
    return sys.intern(digest.hexdigest()), same and st.st_ctime_ns < started - RACY_NS


def pid_alive(pid: int, group: bool = False) -> bool:
    """Whether a process (or, with group, a process group) exists."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Row = List[Any]  # [path, kind, size, mtime_ns, mode, digest, target]


def row_of(rel: str, st: os.stat_result, full: str) -> Row:
    """The compact manifest entry of an lstat result (see `entry_of`)."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return [rel, "link", 0, st.st_mtime_ns, 0o777, None, os.readlink(full)]
    if stat.S_ISDIR(mode):
        return [rel, "dir", 0, st.st_mtime_ns, safe_mode(mode), None, None]
    return [rel, "file", st.st_size, st.st_mtime_ns, safe_mode(mode), None, None]


def entry_of_row(row: Row) -> Dict[str, Any]:
    """A row as the manifest entry JSON of `entry_of`."""
    entry: Dict[str, Any] = {"k": row[1], "s": row[2], "m": row[3], "p": row[4]}
    if row[5] is not None:
        entry["d"] = row[5]
    if row[6] is not None:
        entry["t"] = row[6]
    return entry


def names_in(path: str) -> List[str]:
    """The entries of a directory, sorted; none where it cannot be read (not made yet)."""
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def os_error(error: OSError, path: str) -> OpError:
    """An OSError as an OpError with a stable kind and a clear message."""
    if error.errno == errno.ENOSPC:
        return OpError(ErrorKind.NOSPACE, "no space left on the remote disk writing %s" % path)
    if error.errno == errno.EDQUOT:
        return OpError(ErrorKind.NOSPACE, "disk quota exceeded on the remote writing %s" % path)
    if error.errno in (errno.EACCES, errno.EPERM):
        return OpError(ErrorKind.PERMISSION, "permission denied writing %s" % path)
    if error.errno == errno.ENAMETOOLONG:
        return OpError(ErrorKind.TOOLONG, "file name too long on the remote: %s" % path)
    return OpError(ErrorKind.OSERROR, "%s: %s" % (path, error.strerror))
