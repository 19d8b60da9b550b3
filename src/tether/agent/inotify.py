"""Linux inotify through ctypes: a watch on every directory of a tree, its events fed to a
WatchedTree (agent/watched.py).

No thread: the owner calls `drain()` right before it wants an answer; events wait in the
kernel's queue meanwhile (an overflowed queue says so, and the tree becomes unsure). A
directory created or moved in gets its watches (and those of what it already holds) when
its event is read, and the tree re-scans it whole after that. Anything this module cannot
promise makes `start()` raise Unwatchable (not Linux, a file system whose changes may come
from other machines such as NFS, another file system mounted inside the tree, the watch
budget spent, any inotify error): the owner then scans in full, as without it.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import sys
from typing import Dict, Optional, Protocol, Set

from .watched import under

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
MASK = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
    | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
)  # fmt: skip
HEADER = struct.Struct("iIII")
# File systems whose every change is made by this machine's kernel (so inotify sees it);
# NFS, CIFS, Lustre, GPFS, FUSE and the like may change under us unseen.
LOCAL_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "f2fs", "zfs",
            "reiserfs", "jfs", "bcachefs"}  # fmt: skip
# The share of the user's inotify watches (max_user_watches) this process may take: the
# rest is left to editors and other tools of the same user.
SHARE = 4


class Events(Protocol):
    """Where a drain puts what it read: WatchedTree (agent/watched.py), or `tether watch`'s
    collector (sync/filewatch.py). Paths are relative to the root ("" the root)."""

    def changed(self, path: str) -> None: ...

    def touched(self, path: str) -> None: ...

    def unsure(self, why: str) -> None: ...

    def heartbeat(self, now: float) -> None: ...


class Unwatchable(Exception):
    """This tree cannot be watched reliably: scan it in full."""


class _Lib:
    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise Unwatchable("not Linux")
        libc = ctypes.CDLL(None, use_errno=True)  # the C library python itself runs on
        try:
            self.init1 = libc.inotify_init1
            self.add = libc.inotify_add_watch
            self.rm = libc.inotify_rm_watch
        except AttributeError:
            raise Unwatchable("no inotify in the C library") from None
        self.init1.argtypes = [ctypes.c_int]
        self.add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.rm.argtypes = [ctypes.c_int, ctypes.c_int]


_LIB: Optional[_Lib] = None
_in_use = 0  # watches this process holds, all trees together


def _lib() -> _Lib:
    global _LIB
    if _LIB is None:
        _LIB = _Lib()
    return _LIB


_budget: Optional[int] = None


def budget() -> int:
    """How many watches this process may hold in all (read once)."""
    global _budget
    if _budget is None:
        try:
            with open("/proc/sys/fs/inotify/max_user_watches") as handle:
                _budget = int(handle.read()) // SHARE
        except (OSError, ValueError):
            _budget = 8192 // SHARE
    return _budget


def fs_type(path: str) -> Optional[str]:
    """The type of the file system holding path (from /proc/self/mountinfo), or None."""
    real = os.path.realpath(path)
    best, found = -1, None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        point = fields[4].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > best:
            best, found = len(point), right.split()[0]
    return found


class Watcher:
    """inotify watches on every directory of root but the skipped ones (exact paths)."""

    def __init__(self, root: str, skip: Set[str]) -> None:
        self.root = root
        self.skip = skip
        self.fd = -1
        self.paths: Dict[int, str] = {}  # wd -> directory (relative, "" for root)
        self.wds: Dict[str, int] = {}
        self.dev = -1
        self.broken: Optional[str] = None

    def start(self) -> None:
        """Watch the tree (raises Unwatchable, leaving nothing open)."""
        self.begin()
        try:
            self._add_tree("")
            if self.broken:
                raise Unwatchable(self.broken)
        except BaseException:
            self.close()
            raise

    def begin(self) -> None:
        """Open the watcher with no watch yet: the owner's own walk of the tree adds them
        (add_dir on each directory before listing it), so a full scan sets them up in the
        same walk. Raises Unwatchable or OSError (the root is missing), leaving nothing open."""
        kind = fs_type(self.root)
        if kind not in LOCAL_FS:
            raise Unwatchable("file system %s may change unseen" % kind)
        lib = _lib()
        self.broken = None
        self.fd = lib.init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise Unwatchable("inotify_init1: %s" % os.strerror(ctypes.get_errno()))
        try:
            self.dev = os.lstat(self.root).st_dev
        except BaseException:
            self.close()
            raise

    def add_dir(self, rel: str, full: str, st: os.stat_result) -> None:
        """Watch the directory rel (lstat'ed as st) before the owner lists it; what goes
        wrong is kept in `broken` (the owner then gives the watcher up)."""
        if not self.broken and rel not in self.skip:
            self._add(rel, full, st)

    def close(self) -> None:
        global _in_use
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        _in_use -= len(self.paths)
        self.paths.clear()
        self.wds.clear()

    def drain(self, tree: Events, now: float) -> None:
        """Read every queued event into tree, then a heartbeat (or make it unsure)."""
        if self.fd < 0:
            tree.unsure("the watcher is closed")
            return
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError as error:
                self.broken = "reading events: %s" % error.strerror
                break
            self._events(data, tree)
        if self.broken:
            tree.unsure(self.broken)
        else:
            tree.heartbeat(now)

    def _events(self, data: bytes, tree: Events) -> None:
        offset = 0
        while offset + HEADER.size <= len(data):
            wd, mask, _cookie, length = HEADER.unpack_from(data, offset)
            offset += HEADER.size
            name = os.fsdecode(data[offset : offset + length].rstrip(b"\0"))
            offset += length
            if mask & IN_Q_OVERFLOW:
                tree.unsure("the event queue overflowed")
                self.broken = self.broken or "the event queue overflowed"
                continue
            if mask & IN_UNMOUNT:
                self.broken = "a file system was unmounted in the tree"
                continue
            directory = self.paths.get(wd)
            if mask & IN_IGNORED:
                self._forget(wd)
                continue
            if directory is None:
                continue  # a watch dropped on the way (moved out): its paths are dirty
            if not name:  # the directory itself
                if not directory and mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                    self.broken = "the root was moved or deleted"
                elif mask & IN_ATTRIB:
                    tree.touched(directory)
                continue
            path = directory + "/" + name if directory else name
            tree.changed(path)
            if mask & IN_ISDIR and mask & IN_MOVED_FROM:
                self._drop_under(path)
            elif mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                self._add_tree(path)

    def _add_tree(self, top: str) -> None:
        """Watch top and every directory under it (not through symlinks, not skipped)."""
        stack = [top]
        while stack and not self.broken:
            rel = stack.pop()
            if rel in self.skip:
                continue
            full = os.path.join(self.root, rel) if rel else self.root
            if not self._add(rel, full):
                continue
            try:
                with os.scandir(full) as listing:
                    for item in listing:
                        if item.is_dir(follow_symlinks=False):
                            stack.append(rel + "/" + item.name if rel else item.name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as error:
                self.broken = "listing %s: %s" % (full, error.strerror)

    def _add(self, rel: str, full: str, known: Optional[os.stat_result] = None) -> bool:
        global _in_use
        try:
            st = known or os.lstat(full)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
        if st.st_dev != self.dev:
            self.broken = "another file system is mounted at %s" % full
            return False
        if rel not in self.wds and _in_use >= budget():
            self.broken = "the inotify watch budget is spent"
            return False
        wd = _lib().add(self.fd, os.fsencode(full), MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code in (errno.ENOENT, errno.ENOTDIR):
                return False  # gone again: its parent's event says so
            self.broken = "inotify_add_watch %s: %s" % (full, os.strerror(code))
            return False
        old = self.paths.get(wd)
        if old is not None and old != rel:
            self.wds.pop(old, None)
        elif old is None:
            _in_use += 1
        self.paths[wd] = rel
        self.wds[rel] = wd
        return True

    def _forget(self, wd: int) -> None:
        global _in_use
        rel = self.paths.pop(wd, None)
        if rel is not None:
            _in_use -= 1
            if self.wds.get(rel) == wd:
                del self.wds[rel]

    def _drop_under(self, top: str) -> None:
        """A directory moved away: its watches (and those under it) report nothing more."""
        global _in_use
        for rel in [rel for rel in self.wds if under(rel, top)]:
            wd = self.wds.pop(rel)
            self.paths.pop(wd, None)
            _lib().rm(self.fd, wd)
            _in_use -= 1

    def count(self) -> int:
        return len(self.paths)
