"""File operations of the agent: scan, digest, atomic write, checked delete, read.

Every path is relative to a root and checked: no '..', no absolute paths, and no symlink
is followed on the way (a symlink inside the tree is kept as a symlink, never traversed).
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from .modes import safe_mode

TMP_MARK = ".tether-tmp."
CHUNK = 1 << 20


class OpError(Exception):
    """A request that cannot be done; `kind` is a stable word the client maps to a message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_rel(path: str) -> str:
    """A safe relative POSIX path or OpError('unsafe')."""
    if not path or path.startswith("/") or "\x00" in path:
        raise OpError("unsafe", "unsafe path %r" % path)
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise OpError("unsafe", "unsafe path %r" % path)
    return path


def root_path(root: str) -> str:
    """Expand '~' in a root the way the user's shell would."""
    return os.path.abspath(os.path.expanduser(root))


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
                self.data = json.load(handle)
        except (OSError, ValueError):
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
        _unlink_quietly(self.old_file)


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
    return digest.hexdigest(), same and st.st_ctime_ns < started - RACY_NS


def pid_alive(pid: int, group: bool = False) -> bool:
    """Whether a process (or, with group, a process group) exists."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_tmp(name: str) -> bool:
    """A temp file of ours whose writer is gone."""
    try:
        pid = int(name.split(TMP_MARK, 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return False
    return pid != os.getpid() and (not pid_alive(pid) or _orphaned(pid))


def _orphaned(pid: int) -> bool:
    """A writer whose sshd session is gone (re-parented to init): its client cannot finish."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return False
    return len(fields) > 1 and fields[1] == b"1"


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


def scan(
    root: str,
    skip: List[str],
    cache: Optional[DigestCache],
    with_digests: bool,
    only: Optional[List[str]] = None,
) -> Tuple[Dict[str, Row], bool]:
    """Walk root (or only the given subpaths) without following symlinks.

    Returns ({path: row}, root_exists) and removes stale temp files of dead writers.
    """
    rows: Dict[str, Row] = {}
    try:
        top = os.lstat(root)
    except FileNotFoundError:
        return rows, False
    if not stat.S_ISDIR(top.st_mode):
        raise OpError("notdir", "%s is not a directory" % root)
    skipped = set(skip)
    stack = [""]
    if only is not None:
        stack = []
        for rel in only:
            rel = check_rel(rel.strip("/"))
            try:
                full = os.path.join(safe_parent(root, rel, create=False), rel.rsplit("/", 1)[-1])
                st = os.lstat(full)
            except (FileNotFoundError, NotADirectoryError):
                continue
            row = rows[rel] = row_of(rel, st, full)
            if row[1] == "dir":
                stack.append(rel)
            elif row[1] == "file" and cache is not None:
                row[5] = cache.get(full, st, with_digests)
    is_file = stat.S_ISREG
    is_dir = stat.S_ISDIR
    while stack:
        rel_dir = stack.pop()
        full_dir = os.path.join(root, rel_dir) if rel_dir else root
        head = rel_dir + "/" if rel_dir else ""
        try:
            with os.scandir(full_dir) as listing:
                items = list(listing)
        except FileNotFoundError:
            continue
        except PermissionError:
            raise OpError("permission", "cannot read %s (permission denied)" % full_dir) from None
        for item in items:
            name = item.name
            if TMP_MARK in name:
                if _stale_tmp(name):
                    _unlink_quietly(item.path)
                continue
            rel = head + name
            if rel in skipped:
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            mode = st.st_mode
            if is_file(mode):
                digest = None if cache is None else cache.get(item.path, st, with_digests)
                rows[rel] = [rel, "file", st.st_size, st.st_mtime_ns, safe_mode(mode), digest, None]
            elif is_dir(mode):
                rows[rel] = [rel, "dir", 0, st.st_mtime_ns, safe_mode(mode), None, None]
                stack.append(rel)
            else:
                row = rows[rel] = row_of(rel, st, item.path)
                if row[1] == "file" and cache is not None:
                    row[5] = cache.get(item.path, st, with_digests)
    return rows, True


class ScanMemo:
    """The last answer of each scan (per root, skip, only and digests) of this agent, so
    that a repeated scan answers only what changed since (a delta against a token)."""

    KEEP = 16  # scans remembered, and at most this many rows in all (the newest always)
    KEEP_ROWS = 1000000

    def __init__(self) -> None:
        self.scans: Dict[str, Tuple[str, Dict[str, Row]]] = {}

    def answer(self, key: str, since: Optional[str], rows: Dict[str, Row]) -> Dict[str, Any]:
        """{token, rows} (everything), or {token, since, rows, gone} when the caller holds
        the answer `since`: the rows that differ from it and the paths gone since."""
        token = os.urandom(12).hex()
        previous = self.scans.pop(key, None)
        self.scans[key] = (token, rows)
        while len(self.scans) > 1 and (
            len(self.scans) > self.KEEP
            or sum(len(held[1]) for held in self.scans.values()) > self.KEEP_ROWS
        ):
            del self.scans[next(iter(self.scans))]
        if since is None or previous is None or previous[0] != since:
            return {"token": token, "rows": list(rows.values())}
        old = previous[1]
        get = old.get
        changed = [row for path, row in rows.items() if get(path) != row]
        gone = [path for path in old if path not in rows]
        return {"token": token, "since": since, "rows": changed, "gone": gone}


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def safe_parent(root: str, rel: str, create: bool, checked: Optional[Set[str]] = None) -> str:
    """The full path of rel's parent directory, refusing symlinks on the way.

    `checked` holds directories this process already verified (or made), to skip them.
    """
    check_rel(rel)
    current = root
    if create and (checked is None or root not in checked):
        os.makedirs(root, exist_ok=True)
        if checked is not None:
            checked.add(root)
    for part in rel.split("/")[:-1]:
        current = os.path.join(current, part)
        if checked is not None and current in checked:
            continue
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(current)
            except FileExistsError:
                # Made meanwhile by another writer (agents of one push share a tree):
                # checked below like any directory found.
                st = os.lstat(current)
            else:
                if checked is not None:
                    checked.add(current)
                continue
        if stat.S_ISLNK(st.st_mode):
            raise OpError("unsafe", "refusing to go through the symlink %s" % current)
        if not stat.S_ISDIR(st.st_mode):
            raise OpError("notdir", "%s is not a directory" % current)
        if checked is not None:
            checked.add(current)
    return current


def matches(full: str, expect: Optional[Dict[str, Any]]) -> bool:
    """Whether the path is still what a scan saw (None: must not exist)."""
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return expect is None
    return _still(st, full, expect)


def _still(st: Optional[os.stat_result], full: str, expect: Optional[Dict[str, Any]]) -> bool:
    """matches() for a path's lstat result (None: it does not exist)."""
    if st is None or expect is None:
        return st is None and expect is None
    now = entry_of(st, full)
    if now["k"] != expect["k"]:
        return False
    if now["k"] == "dir":
        return True
    if now["k"] == "link":
        return bool(now.get("t") == expect.get("t"))
    return bool(now["s"] == expect["s"] and now["m"] == expect["m"])


def backup_name(full: str) -> str:
    """NAME.tether-conflict-<time> next to the file."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = "%s.tether-conflict-%s" % (full, stamp)
    counter = 1
    while os.path.lexists(candidate):
        counter += 1
        candidate = "%s.tether-conflict-%s-%d" % (full, stamp, counter)
    return candidate


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_UTIME_FD = os.utime in os.supports_fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Writer:
    """Atomic writes, possibly in chunks: temp name in the same dir, check, rename."""

    def __init__(self) -> None:
        # Files being written in chunks: key -> (descriptor, temp path).
        self.open: Dict[str, Tuple[int, str]] = {}
        # Directories verified in this run; forgotten whenever tether deletes anything.
        self.checked: Set[str] = set()

    def put(self, root: str, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        if header.get("fresh"):
            # The first write of a push on this agent: directories may have changed since.
            self.checked.clear()
        rel = check_rel(header["path"])
        kind = header.get("kind", "file")
        parent = safe_parent(root, rel, create=True, checked=self.checked)
        full = os.path.join(parent, rel.rsplit("/", 1)[-1])
        if kind == "dir":
            return self._mkdir(full, header)
        if kind == "link":
            return self._finish_link(full, header)
        key = root + "\x00" + rel
        if header.get("offset", 0) == 0:
            self.discard(key)
            tmp = "%s/.%s%s%d.%s" % (
                parent,
                os.path.basename(full)[:120],
                TMP_MARK,
                os.getpid(),
                os.urandom(4).hex(),
            )
            self.open[key] = (os.open(tmp, _CREATE, 0o600), tmp)
        elif key not in self.open:
            raise OpError("protocol", "chunk for %s without its start" % rel)
        fd, tmp = self.open[key]
        try:
            _write_all(fd, payload)
        except OSError as error:
            self.discard(key)
            raise os_error(error, full) from None
        if not header.get("last", True):
            return {"ok": True}
        del self.open[key]
        try:
            # No fsync per file (as rsync): the rename alone keeps readers from ever seeing a
            # partial file; an fsync per file cost ~3 ms each, most of a first push.
            # Mode and mtime by descriptor, after the last write. The local permission
            # bits exactly (like rsync -p), not masked by the remote's umask: the next
            # scan must find the bits sent, or the planner (which compares execute bits)
            # would see a change at every push.
            os.fchmod(fd, safe_mode(header.get("mode", 0o644)))
            if "mtime_ns" in header:
                times = (time.time_ns(), int(header["mtime_ns"]))
                os.utime(fd if _UTIME_FD else tmp, ns=times)
            written = os.fstat(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        try:
            return self._commit(tmp, full, header, written)
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def _commit(
        self, tmp: str, full: str, header: Dict[str, Any], written: Optional[os.stat_result] = None
    ) -> Dict[str, Any]:
        """Rename tmp over full if full is still what the plan saw (`expect`)."""
        try:
            now: Optional[os.stat_result] = os.lstat(full)
        except FileNotFoundError:
            now = None
        if not _still(now, full, header.get("expect")):
            _unlink_quietly(tmp)
            raise OpError("changed", "%s changed on the remote since it was scanned" % full)
        backup = None
        if header.get("backup") and now is not None:
            backup = backup_name(full)
            os.link(full, backup, follow_symlinks=False)
        if now is not None and stat.S_ISDIR(now.st_mode):
            os.rmdir(full)
            self.checked.clear()
        os.replace(tmp, full)
        # The written file's own stat (the rename keeps size, mtime and mode).
        st = written if written is not None else os.lstat(full)
        return {"ok": True, "entry": entry_of(st, full), "backup": backup}

    def _finish_link(self, full: str, header: Dict[str, Any]) -> Dict[str, Any]:
        tmp = "%s%s%d.%s" % (full, TMP_MARK, os.getpid(), os.urandom(4).hex())
        os.symlink(header["target"], tmp)
        try:
            return self._commit(tmp, full, header)
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def _mkdir(self, full: str, header: Dict[str, Any]) -> Dict[str, Any]:
        if os.path.lexists(full) and not (os.path.isdir(full) and not os.path.islink(full)):
            if not matches(full, header.get("expect")):
                raise OpError("changed", "%s changed on the remote since it was scanned" % full)
            if header.get("backup"):
                os.rename(full, backup_name(full))
            else:
                os.unlink(full)
        if not os.path.isdir(full):
            try:
                os.mkdir(full)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(full).st_mode):
                    raise OpError(
                        "changed", "%s changed on the remote since it was scanned" % full
                    ) from None
        if "mode" in header:
            os.chmod(full, safe_mode(header["mode"]))
        return {"ok": True, "entry": entry_of(os.lstat(full), full)}

    def discard(self, key: str) -> None:
        item = self.open.pop(key, None)
        if item is not None:
            with contextlib.suppress(OSError):
                os.close(item[0])
            _unlink_quietly(item[1])

    def close(self) -> None:
        for key in list(self.open):
            self.discard(key)


def delete(root: str, header: Dict[str, Any]) -> Dict[str, Any]:
    """Remove a path only if it is still what the scan saw; directories only when empty."""
    rel = check_rel(header["path"])
    try:
        parent = safe_parent(root, rel, create=False)
    except FileNotFoundError:
        return {"ok": True, "gone": True}
    full = os.path.join(parent, rel.rsplit("/", 1)[-1])
    if not os.path.lexists(full):
        return {"ok": True, "gone": True}
    if not matches(full, header.get("expect")):
        raise OpError("changed", "%s changed on the remote since it was scanned" % full)
    backup = None
    if header.get("backup"):
        backup = backup_name(full)
        os.rename(full, backup)
        return {"ok": True, "backup": backup}
    if os.path.isdir(full) and not os.path.islink(full):
        try:
            os.rmdir(full)
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return {"ok": True, "kept": "not empty"}
            raise
    else:
        os.unlink(full)
    return {"ok": True}


def read(root: str, header: Dict[str, Any]) -> Tuple[Dict[str, Any], bytes]:
    """A slice of a file (never through a symlink) with the file's stat."""
    rel = check_rel(header["path"])
    parent = safe_parent(root, rel, create=False)
    full = os.path.join(parent, rel.rsplit("/", 1)[-1])
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        handle.seek(int(header.get("offset", 0)))
        data = handle.read(int(header.get("length", CHUNK)))
    return {"ok": True, "entry": entry_of(st, full)}, data


def os_error(error: OSError, path: str) -> OpError:
    """An OSError as an OpError with a stable kind and a clear message."""
    if error.errno == errno.ENOSPC:
        return OpError("nospace", "no space left on the remote disk writing %s" % path)
    if error.errno == errno.EDQUOT:
        return OpError("nospace", "disk quota exceeded on the remote writing %s" % path)
    if error.errno in (errno.EACCES, errno.EPERM):
        return OpError("permission", "permission denied writing %s" % path)
    if error.errno == errno.ENAMETOOLONG:
        return OpError("toolong", "file name too long on the remote: %s" % path)
    return OpError("oserror", "%s: %s" % (path, error.strerror))
