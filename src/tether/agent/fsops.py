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
import struct
import sys
import time
from typing import Any, BinaryIO, Dict, List, Optional, Protocol, Tuple, Union

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


class FileStat(Protocol):
    """What the digest cache reads of a file's lstat: an os.stat_result, or a smaller
    object holding only these (sync/local.py keeps one per file between scan and digest)."""

    @property
    def st_ino(self) -> int: ...
    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ctime_ns(self) -> int: ...


class DigestCache:
    """sha256 of files keyed by (inode, size, mtime_ns, ctime_ns), kept on disk between runs.

    A digest is kept only if the file's stat did not change while it was read and its ctime
    lies RACY_NS before the read began: a later write then always changes the key (ctime
    is set by the kernel on every write, and no tool can set it back), even one of the same
    size landing within the same timestamp tick as the write before it.

    In memory, one packed bytes object per inode (size, mtime_ns, ctime_ns, the 32 digest
    bytes): a key of an older ctime can never match again, so one per inode is all that
    serves. On disk (version 3), the same records with the inode in front, 64 bytes each;
    the version 2 file ({"ino:size:mtime:ctime": hex}) is read when there is no other and
    removed at the first save.

    `keep` (the sync daemon's): the records this process read or saved last serve the next
    cache of the same file while that file is unchanged (same inode, size, mtime and
    ctime: every save replaces it), shared until either changes them.
    """

    def __init__(self, cache_dir: str, root: str, keep: bool = False) -> None:
        key = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.file = os.path.join(cache_dir, "digests-3-%s.bin" % key)
        # The caches of older versions: read when there is no newer, removed at the first save.
        self.json_file = os.path.join(cache_dir, "digests-2-%s.json" % key)
        self.old_file = os.path.join(cache_dir, "digests-%s.json" % key)
        self.data: Dict[int, bytes] = {}
        self.dirty = False
        self.keep = keep
        self._shared = False  # data is also the kept copy's
        try:
            self.data = self._read()
        except FileNotFoundError:
            self.data = _read_json_cache(self.json_file)
            self.dirty = bool(self.data)  # written in the new form at the first save
        except OSError:
            self.data = {}

    def _read(self) -> Dict[int, bytes]:
        with open(self.file, "rb") as handle:
            if not self.keep:
                return _read_records(handle)
            stamp = _file_stamp(os.fstat(handle.fileno()))
            held = _KEPT.get(self.file)
            if held is None or held[0] != stamp:
                held = _keep(self.file, stamp, _read_records(handle))
        self._shared = True
        return held[1]

    def count(self) -> int:
        """How many digests are held (one per inode)."""
        return len(self.data)

    def known(self, st: FileStat) -> Optional[str]:
        """The cached digest for a stat, if any (no I/O)."""
        if not self.data:
            return None
        return self._lookup(st)

    def _lookup(self, st: FileStat) -> Optional[str]:
        held = self.data.get(st.st_ino)
        if held is None or held[:_STAT_SIZE] != _stat_bytes(st):
            return None
        # Interned: one object per digest in every manifest and row.
        return sys.intern(held[_STAT_SIZE:].hex())

    def get(self, full: str, st: FileStat, compute: bool) -> Optional[str]:
        if not self.data and not compute:
            return None
        digest = self._lookup(st)
        if digest is None and compute:
            digest, settled = checked_digest(full, st)
            key = _stat_bytes(st)
            if settled and key:
                if self._shared:
                    self.data = dict(self.data)
                    self._shared = False
                self.data[st.st_ino] = key + bytes.fromhex(digest)
                self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        os.makedirs(os.path.dirname(self.file), exist_ok=True)
        tmp = "%s.%d.tmp" % (self.file, os.getpid())
        pack = _INODE.pack
        with open(tmp, "wb") as handle:
            items = list(self.data.items())
            for start in range(0, len(items), 4096):
                handle.write(b"".join(pack(i) + r for i, r in items[start : start + 4096]))
            handle.flush()
            os.replace(tmp, self.file)
            stamp = _file_stamp(os.fstat(handle.fileno()))  # after the rename (its ctime)
        if self.keep:
            _keep(self.file, stamp, self.data)
            self._shared = True
        self.dirty = False
        unlink_quietly(self.json_file)
        unlink_quietly(self.old_file)


_INODE = struct.Struct("<Q")
_STAT = struct.Struct("<qqq")
_STAT_SIZE = _STAT.size
_RECORD_SIZE = _INODE.size + _STAT_SIZE + 32


def _stat_bytes(st: FileStat) -> bytes:
    try:
        return _STAT.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except struct.error:  # out of range: never cached (no record holds such a stat)
        return b""


def _read_records(handle: BinaryIO) -> Dict[int, bytes]:
    """The version 3 cache file: 64-byte records (a torn tail is left out)."""
    data: Dict[int, bytes] = {}
    unpack = _INODE.unpack_from
    while True:
        block = handle.read(_RECORD_SIZE * 4096)
        for start in range(0, len(block) - _RECORD_SIZE + 1, _RECORD_SIZE):
            (inode,) = unpack(block, start)
            data[inode] = block[start + _INODE.size : start + _RECORD_SIZE]
        if len(block) < _RECORD_SIZE * 4096:
            return data


Stamp = Tuple[int, int, int, int]
# The caches kept (DigestCache(keep=True)) by file: (the file's stamp, its records); the
# last few only (each is tens of MB at 100,000 files).
_KEPT: Dict[str, Tuple[Stamp, Dict[int, bytes]]] = {}
_KEEP = 2


def _file_stamp(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _keep(file: str, stamp: Stamp, data: Dict[int, bytes]) -> Tuple[Stamp, Dict[int, bytes]]:
    _KEPT.pop(file, None)
    held = _KEPT[file] = (stamp, data)
    while len(_KEPT) > _KEEP:
        del _KEPT[next(iter(_KEPT))]
    return held


def _read_json_cache(path: str) -> Dict[int, bytes]:
    """The version 2 cache file ({"ino:size:mtime:ctime": hex digest}); entries that do not
    parse are left out, an unreadable file is an empty cache."""
    data: Dict[int, bytes] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
        items = list(loaded.items())
    except (OSError, ValueError, AttributeError, TypeError):
        return data
    del loaded
    for key, digest in items:
        try:
            inode, size, mtime_ns, ctime_ns = (int(part) for part in key.split(":"))
            raw = bytes.fromhex(digest)
            if len(raw) == 32:
                data[inode] = _STAT.pack(size, mtime_ns, ctime_ns) + raw
        except (ValueError, TypeError, AttributeError, struct.error, OverflowError):
            continue
    return data


def stat_key(st: FileStat) -> str:
    """What a cached digest is valid for: inode, size, mtime and ctime (any write changes
    ctime, and nothing can set it back)."""
    return "%d:%d:%d:%d" % (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# How long before a read a file's ctime must lie for its digest to be kept: well above the
# tick of any file system's timestamps (jiffies on Linux, up to 2 s on FAT).
RACY_NS = 2 * 10**9


def checked_digest(full: str, st: FileStat) -> Tuple[str, bool]:
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
