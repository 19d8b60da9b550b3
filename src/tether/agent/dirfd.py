"""Directory handles under a tree's root: every write, delete and read happens relative to
a directory opened one component at a time, never through a symlink.

Each component below the root is opened from its parent's handle with O_NOFOLLOW and
O_DIRECTORY, and the final name is created, renamed, unlinked or opened relative to that
handle (dir_fd). A directory swapped for a symlink after a scan (or after a check) can
therefore never redirect a write outside the tree: either the open refuses the symlink
(OpError "unsafe"), or the handle already held is the real directory. The root itself is
resolved as the user's shell would (it may be a symlink the user chose, e.g. ~/work).
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from typing import Any, Dict, Iterator, Optional, Tuple

from .fsops import TMP_MARK, OpError, check_rel, entry_of, entry_of_row
from .wire import ErrorKind

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# What open(O_NOFOLLOW) answers for a symlink: ELOOP (Linux, macOS), EMLINK (FreeBSD).
_REFUSED = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)


def open_root(root: str, create: bool) -> int:
    """A handle on the tree's root (made first with `create`); FileNotFoundError if absent."""
    try:
        return _open_root(root)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):  # a file there: refused just below
        os.makedirs(root, exist_ok=True)
    return _open_root(root)


def _open_root(root: str) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except NotADirectoryError:
        raise OpError(ErrorKind.NOTDIR, "%s is not a directory" % root) from None


def open_dir(parent: int, name: str, where: str, create: bool, mode: Optional[int] = None) -> int:
    """A handle on the directory `name` in `parent` (made first with `create`, with `mode`
    exactly when given, else 0o777 minus this process's umask), never through a symlink;
    `where` is its full path, for messages."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as error:
        raise refusal(error, parent, name, where) from None
    # FileExistsError: made meanwhile by another writer (agents of one push share a tree).
    made = False
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=parent)
        made = True
    try:
        handle = os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as error:
        raise refusal(error, parent, name, where) from None
    if made and mode is not None:
        os.fchmod(handle, mode)
    return handle


def open_parent(root: str, rel: str, create: bool, mode: Optional[int] = None) -> Tuple[int, str]:
    """(a handle on rel's parent directory, rel's last component); the caller closes it.

    FileNotFoundError when a directory on the way is missing (unless `create`: then made,
    with `mode` when given, see open_dir)."""
    check_rel(rel)
    parts = rel.split("/")
    handle = open_root(root, create)
    try:
        where = root
        for part in parts[:-1]:
            where = os.path.join(where, part)
            child = open_dir(handle, part, where, create, mode)
            os.close(handle)
            handle = child
    except BaseException:
        os.close(handle)
        raise
    return handle, parts[-1]


@contextlib.contextmanager
def parent_of(
    root: str, rel: str, create: bool, mode: Optional[int] = None
) -> Iterator[Tuple[int, str]]:
    """open_parent() as a context: the handle is closed at the end."""
    handle, name = open_parent(root, rel, create, mode)
    try:
        yield handle, name
    finally:
        os.close(handle)


def refusal(error: OSError, parent: int, name: str, where: str) -> Exception:
    """What to raise when opening `name` without following symlinks failed: OpError
    "unsafe" for a symlink, "notdir" for something else in a directory's place."""
    if error.errno in _REFUSED:
        st = lstat_at(parent, name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            return OpError(ErrorKind.UNSAFE, "refusing to go through the symlink %s" % where)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            return OpError(ErrorKind.NOTDIR, "%s is not a directory" % where)
    error.filename = where
    return error


def lstat_at(parent: int, name: str) -> Optional[os.stat_result]:
    """lstat of name in the directory `parent`; None if nothing is there."""
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def entry_at(parent: int, name: str, st: os.stat_result) -> Dict[str, Any]:
    """The manifest entry JSON of name in `parent` (st: its lstat)."""
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=parent)
        return entry_of_row([name, "link", 0, st.st_mtime_ns, 0o777, None, target])
    return entry_of(st, name)


def still(
    parent: int, name: str, st: Optional[os.stat_result], expect: Optional[Dict[str, Any]]
) -> bool:
    """Whether name in `parent` (st: its lstat, None: absent) is still what a scan saw
    (`expect`, None: must not exist). Directories match any directory; links by target;
    files by size and mtime."""
    if st is None or expect is None:
        return st is None and expect is None
    now = entry_at(parent, name, st)
    if now["k"] != expect["k"]:
        return False
    if now["k"] == "dir":
        return True
    if now["k"] == "link":
        return bool(now.get("t") == expect.get("t"))
    return bool(now["s"] == expect["s"] and now["m"] == expect["m"])


def backup_name(parent: int, name: str) -> str:
    """A free NAME.tether-conflict-<time>[-N] in the directory `parent`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = "%s.tether-conflict-%s" % (name, stamp)
    counter = 1
    while lstat_at(parent, candidate) is not None:
        counter += 1
        candidate = "%s.tether-conflict-%s-%d" % (name, stamp, counter)
    return candidate


def temp_name(name: str) -> str:
    """A temporary name for a write of `name` in the same directory (see scan's cleanup)."""
    return ".%s%s%d.%s" % (name[:120], TMP_MARK, os.getpid(), os.urandom(4).hex())


def unlink_quietly_at(parent: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=parent)
