"""A job's frozen snapshot: its own copy of the synced tree (invariant 11).

Every file is a new inode: a reflink (FICLONE: shared blocks, copy-on-write, free on
btrfs/xfs/bcachefs), else an in-kernel copy (copy_file_range), else read/write. Never a
hard link: a job appending to train.py would otherwise change the live tree and every
other snapshot sharing that inode. Only what sync owns is copied (the client sends the
paths it pushed; a `.venv` or data made on the remote stays out); result directories are
symlinks to the live ones, so `tether pull` finds what jobs write.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Dict, Iterable, List, Optional, Set

from . import fsops, modes

FICLONE = 0x40049409  # _IOW(0x94, 9, int): linux/fs.h
_OPEN_SRC = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_OPEN_DST = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NO_CLONE = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EBADF)


class Stats:
    """What a snapshot cost: files, bytes and how they were copied."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0
        self.methods: Dict[str, int] = {}

    def add(self, size: int, method: str) -> None:
        self.files += 1
        self.bytes += size
        self.methods[method] = self.methods.get(method, 0) + 1

    def as_dict(self) -> Dict[str, object]:
        return {"files": self.files, "bytes": self.bytes, "methods": dict(self.methods)}


_CLONE_OK = {"ok": True}  # per process: once FICLONE is refused, stop asking


def copy_fd(src: int, dst: int, size: int) -> str:
    """Copy src into dst (both open, dst empty); the method that worked."""
    if _CLONE_OK["ok"] and size:
        try:
            import fcntl

            fcntl.ioctl(dst, FICLONE, src)
            return "reflink"
        except OSError as error:
            if error.errno not in _NO_CLONE:
                raise
            if error.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS):
                _CLONE_OK["ok"] = False
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None and size:
        try:
            left = size
            while left > 0:
                done = copy_range(src, dst, min(left, 1 << 30))
                if done == 0:
                    break
                left -= done
            if left <= 0:
                return "copy_file_range"
            os.lseek(src, size - left, os.SEEK_SET)
            os.lseek(dst, size - left, os.SEEK_SET)
        except OSError as error:
            if error.errno not in _NO_CLONE:
                raise
            os.lseek(src, 0, os.SEEK_SET)
            os.lseek(dst, 0, os.SEEK_SET)
            os.ftruncate(dst, 0)
    while True:
        chunk = os.read(src, fsops.CHUNK)
        if not chunk:
            return "copy"
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]


def copy_file(source: str, dest: str, stats: Stats) -> None:
    """A regular file's bytes, permission bits and mtime into a new file at dest."""
    src = os.open(source, _OPEN_SRC)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            return
        dst = os.open(dest, _OPEN_DST, 0o600)
        try:
            method = copy_fd(src, dst, st.st_size)
            os.fchmod(dst, modes.safe_mode(st.st_mode))
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
        stats.add(st.st_size, method)
    finally:
        os.close(src)


def _result_dirs(results: Iterable[str]) -> Set[str]:
    """Plain result directories (patterns with wildcards are not linked)."""
    found = set()
    for rel in results:
        rel = rel.strip("/")
        if rel and not any(ch in rel for ch in "*?[") and fsops.check_rel(rel):
            found.add(rel)
    return found


def _inside(rel: str, dirs: Set[str]) -> bool:
    parts = rel.split("/")
    return any("/".join(parts[:i]) in dirs for i in range(1, len(parts) + 1))


def take(root: str, dest: str, paths: Optional[List[str]], results: List[str]) -> Stats:
    """Copy the synced tree at root into the new directory dest; link result dirs back.

    `paths`: the tree's files, links and directories as sync owns them (relative); None
    walks the whole tree (an older client)."""
    skip = _result_dirs(results)
    skip.add(".tether")
    stats = Stats()
    os.makedirs(dest, mode=0o755)
    made: Set[str] = {""}
    safe: Set[str] = {""}

    def parent_ok(rel: str) -> bool:
        """Every directory above rel is a real directory of the live tree (no symlink)."""
        parent = rel.rpartition("/")[0]
        if parent in safe:
            return True
        if not parent_ok(parent):
            return False
        try:
            st = os.lstat(os.path.join(root, parent))
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
        safe.add(parent)
        return True

    def make_dir(rel: str) -> None:
        if rel in made:
            return
        make_dir(rel.rpartition("/")[0])
        with contextlib.suppress(FileExistsError):
            os.mkdir(os.path.join(dest, rel), 0o755)
        made.add(rel)

    for rel in sorted(paths) if paths is not None else _walk(root):
        fsops.check_rel(rel)
        if _inside(rel, skip) or not parent_ok(rel):
            continue
        source = os.path.join(root, rel)
        try:
            st = os.lstat(source)
        except (FileNotFoundError, NotADirectoryError):
            continue  # deleted since it was pushed
        if stat.S_ISDIR(st.st_mode):
            make_dir(rel)
        elif stat.S_ISLNK(st.st_mode):
            make_dir(rel.rpartition("/")[0])
            os.symlink(os.readlink(source), os.path.join(dest, rel))
        elif stat.S_ISREG(st.st_mode):
            make_dir(rel.rpartition("/")[0])
            with contextlib.suppress(FileNotFoundError):
                copy_file(source, os.path.join(dest, rel), stats)
    for rel in sorted(skip - {".tether"}):
        live = os.path.join(root, rel)
        os.makedirs(live, exist_ok=True)
        make_dir(rel.rpartition("/")[0])
        link = os.path.join(dest, rel)
        if not os.path.lexists(link):
            os.symlink(live, link)
    return stats


def _walk(root: str) -> Iterable[str]:
    """Every entry under root, never following a symlinked directory."""
    for current, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(current, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        for entry in sorted(dirs) + sorted(files):
            yield os.path.join(rel_dir, entry) if rel_dir else entry


def paths_of(header: Dict[str, object], payload: bytes) -> Optional[List[str]]:
    """The synced paths a job_start carries (NUL-separated payload), or None."""
    if not header.get("paths"):
        return None
    return [path for path in payload.decode("utf-8", "surrogateescape").split("\0") if path]


def size_of(path: str) -> int:
    """Bytes held by the files under path (not following links; for status and prune)."""
    total = 0
    for current, _dirs, files in os.walk(path):
        for entry in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(current, entry)).st_blocks * 512
    return total
