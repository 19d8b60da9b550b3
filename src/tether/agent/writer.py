"""Atomic writes, checked deletes and reads, all through directory handles (dirfd.py).

The agent writes pushed files with it; pull writes pulled files here with the same code
(DESIGN.md 2: one write-and-check for both sides). A write goes to a temporary name in
the file's own directory, gets its mode and mtime, is checked against what the plan saw
(`expect`) and renamed over the path: no reader ever sees a partial file. Modes pass
through modes.safe_mode: never setuid, setgid or sticky. Standard library only,
Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .dirfd import (
    backup_name,
    entry_at,
    lstat_at,
    open_dir,
    open_parent,
    parent_of,
    refusal,
    still,
    temp_name,
    unlink_quietly_at,
)
from .fsops import CHUNK, OpError, check_rel, entry_of
from .modes import safe_mode
from .wire import ErrorKind

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_UTIME_FD = os.utime in os.supports_fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _changed(full: str) -> OpError:
    return OpError(ErrorKind.CHANGED, "%s changed on the remote since it was scanned" % full)


@contextlib.contextmanager
def _named(full: str) -> Iterator[None]:
    """OSErrors raised inside carry a full path as their file (`full` in place of a name
    relative to a directory handle): the agent's and the CLI's messages show it."""
    try:
        yield
    except OSError as error:
        if not (isinstance(error.filename, str) and os.path.isabs(error.filename)):
            error.filename, error.filename2 = full, None
        raise


class Writer:
    """Atomic writes, possibly in chunks: temp name in the same directory, check, rename.

    Modes: a file or directory gets safe_mode(mode) minus `umask`. The agent's writer
    (umask 0) gives a pushed file exactly the local permission bits, like rsync -p or
    scp -p, not masked by the remote's umask: a push mirrors the local tree, and its
    next scan must find the bits it sent (the planner compares execute bits, so a masked
    copy would look changed at every push). Pull's writer masks with the local umask:
    a pulled file is made like any new file here (sync.pull plans with the same
    masked modes). `durable`: fsync each file before its rename (pull). `parents`: the
    mode of directories made on the way to a path (None: 0o777 minus this process's
    umask; pull in the sync daemon passes the caller's, whose umask is not the daemon's).
    """

    def __init__(
        self, umask: int = 0, durable: bool = False, parents: Optional[int] = None
    ) -> None:
        # Files being written in chunks: key -> (descriptor, its directory's handle, temp
        # name). The directory handle is the one the temp file was made in: the final
        # rename happens there, wherever that directory has been moved since.
        self.open: Dict[str, Tuple[int, int, str]] = {}
        self.umask = umask
        self.durable = durable
        self.parents = parents

    def put(self, root: str, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
        rel = check_rel(header["path"])
        full = os.path.join(root, rel)
        with _named(full):
            return self._put(root, rel, full, header, payload)

    def _put(
        self, root: str, rel: str, full: str, header: Dict[str, Any], payload: bytes
    ) -> Dict[str, Any]:
        kind = header.get("kind", "file")
        if kind in ("dir", "link"):
            with parent_of(root, rel, create=True, mode=self.parents) as (parent, name):
                if kind == "dir":
                    return self._mkdir(parent, name, full, header)
                return self._link(parent, name, full, header)
        key = root + "\x00" + rel
        if header.get("offset", 0) == 0 and header.get("last", True):
            self.discard(key)  # a whole file in one request
            with parent_of(root, rel, create=True, mode=self.parents) as (parent, name):
                return self._whole(parent, name, full, header, payload)
        if header.get("offset", 0) == 0:
            self.discard(key)
            parent, name = open_parent(root, rel, create=True, mode=self.parents)
            tmp = temp_name(name)
            try:
                fd = os.open(tmp, _CREATE, 0o600, dir_fd=parent)
            except BaseException:
                os.close(parent)
                raise
            self.open[key] = (fd, parent, tmp)
        elif key not in self.open:
            raise OpError(ErrorKind.PROTOCOL, "chunk for %s without its start" % rel)
        fd, parent, tmp = self.open[key]
        try:
            _write_all(fd, payload)
        except OSError:
            self.discard(key)
            raise
        if not header.get("last", True):
            return {"ok": True}
        del self.open[key]
        try:
            written = self._finish(fd, parent, tmp, header)
            try:
                return self._commit(parent, tmp, rel.rsplit("/", 1)[-1], full, header, written)
            except BaseException:
                unlink_quietly_at(parent, tmp)
                raise
        finally:
            os.close(parent)

    def put_batch(
        self,
        root: str,
        items: List[Dict[str, Any]],
        payload: bytes,
        failed: Callable[[Exception], Dict[str, Any]],
    ) -> List[Dict[str, Any]]:
        """Each item written as by its own `put` (its bytes the next "n" of payload), in
        order; an item that raises is answered with failed(error) and the rest go on.

        Consecutive files in one directory share one handle on it, opened once (as a
        chunked write keeps its directory's handle between its requests)."""
        offset = 0
        answers: List[Dict[str, Any]] = []
        held: Optional[Tuple[str, int]] = None  # (directory's rel, its handle)
        try:
            for item in items:
                size = item.get("n", 0)
                if not isinstance(size, int) or size < 0:
                    size = len(payload) + 1  # refused below, as is every item after it
                data = payload[offset : offset + size]
                offset += size
                try:
                    if len(data) != size:
                        raise OpError(ErrorKind.PROTOCOL, "a batch's payload is too short")
                    rel = check_rel(item["path"])
                    whole = item.get("offset", 0) == 0 and item.get("last", True)
                    if item.get("kind", "file") != "file" or not whole:
                        answers.append(self.put(root, item, data))
                        continue
                    if self.open:
                        self.discard(root + "\x00" + rel)
                    full = os.path.join(root, rel)
                    folder, _, name = rel.rpartition("/")
                    with _named(full):
                        if held is None or held[0] != folder:
                            if held is not None:
                                os.close(held[1])
                                held = None
                            held = (folder, open_parent(root, rel, True, self.parents)[0])
                        answers.append(self._whole(held[1], name, full, item, data))
                except Exception as error:  # answered like a request of its own
                    answers.append(failed(error))
        finally:
            if held is not None:
                os.close(held[1])
        return answers

    def _whole(
        self, parent: int, name: str, full: str, header: Dict[str, Any], payload: bytes
    ) -> Dict[str, Any]:
        """Write a whole file to a temp name in `parent`, then check and rename it."""
        tmp = temp_name(name)
        fd = os.open(tmp, _CREATE, 0o600, dir_fd=parent)
        try:
            _write_all(fd, payload)
        except BaseException:
            os.close(fd)
            unlink_quietly_at(parent, tmp)
            raise
        written = self._finish(fd, parent, tmp, header)
        try:
            return self._commit(parent, tmp, name, full, header, written)
        except BaseException:
            unlink_quietly_at(parent, tmp)
            raise

    def _finish(self, fd: int, parent: int, tmp: str, header: Dict[str, Any]) -> os.stat_result:
        """Mode, mtime (and with `durable` the data) of a written temp file; closes it."""
        try:
            # No fsync per file on the agent (as rsync): the rename alone keeps readers from
            # ever seeing a partial file; an fsync per file cost ~3 ms each, most of a push.
            if self.durable:
                os.fsync(fd)
            # Mode and mtime by descriptor, after the last write.
            os.fchmod(fd, safe_mode(header.get("mode", 0o644)) & ~self.umask)
            if "mtime_ns" in header:
                times = (time.time_ns(), int(header["mtime_ns"]))
                if _UTIME_FD:
                    os.utime(fd, ns=times)
                else:
                    os.utime(tmp, ns=times, dir_fd=parent, follow_symlinks=False)
            return os.fstat(fd)
        except BaseException:
            unlink_quietly_at(parent, tmp)
            raise
        finally:
            os.close(fd)

    def _commit(
        self,
        parent: int,
        tmp: str,
        name: str,
        full: str,
        header: Dict[str, Any],
        written: Optional[os.stat_result] = None,
    ) -> Dict[str, Any]:
        """Rename tmp over name (in `parent`) if it is still what the plan saw (`expect`)."""
        now = lstat_at(parent, name)
        if not still(parent, name, now, header.get("expect")):
            unlink_quietly_at(parent, tmp)
            raise _changed(full)
        backup = None
        if header.get("backup") and now is not None:
            saved = backup_name(parent, name)
            os.link(name, saved, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
            backup = os.path.join(os.path.dirname(full), saved)
        if now is not None and stat.S_ISDIR(now.st_mode):
            os.rmdir(name, dir_fd=parent)
        os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        # The written file's own stat (the rename keeps size, mtime and mode).
        st = written if written is not None else lstat_at(parent, name)
        if st is None:
            raise _changed(full)
        return {"ok": True, "entry": entry_at(parent, name, st), "backup": backup}

    def _link(self, parent: int, name: str, full: str, header: Dict[str, Any]) -> Dict[str, Any]:
        tmp = temp_name(name)
        os.symlink(header["target"], tmp, dir_fd=parent)
        try:
            return self._commit(parent, tmp, name, full, header)
        except BaseException:
            unlink_quietly_at(parent, tmp)
            raise

    def _mkdir(self, parent: int, name: str, full: str, header: Dict[str, Any]) -> Dict[str, Any]:
        st = lstat_at(parent, name)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            if not still(parent, name, st, header.get("expect")):
                raise _changed(full)
            if header.get("backup"):
                os.rename(name, backup_name(parent, name), src_dir_fd=parent, dst_dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)
        try:
            fd = open_dir(parent, name, full, create=True)
        except OpError:  # something else than a directory got there meanwhile
            raise _changed(full) from None
        try:
            if "mode" in header:
                os.fchmod(fd, safe_mode(header["mode"]) & ~self.umask)
            return {"ok": True, "entry": entry_of(os.fstat(fd), full)}
        finally:
            os.close(fd)

    def discard(self, key: str) -> None:
        item = self.open.pop(key, None)
        if item is not None:
            fd, parent, tmp = item
            with contextlib.suppress(OSError):
                os.close(fd)
            unlink_quietly_at(parent, tmp)
            os.close(parent)

    def discard_path(self, root: str, rel: str) -> None:
        """Give up a chunked write of rel under root (its temp file is removed)."""
        self.discard(root + "\x00" + rel)

    def close(self) -> None:
        for key in list(self.open):
            self.discard(key)


def delete(root: str, header: Dict[str, Any]) -> Dict[str, Any]:
    """Remove a path only if it is still what the scan saw; directories only when empty."""
    rel = check_rel(header["path"])
    full = os.path.join(root, rel)
    with _named(full):
        try:
            parent, name = open_parent(root, rel, create=False)
        except FileNotFoundError:
            return {"ok": True, "gone": True}
        try:
            return _delete_at(parent, name, full, header)
        finally:
            os.close(parent)


def _delete_at(parent: int, name: str, full: str, header: Dict[str, Any]) -> Dict[str, Any]:
    st = lstat_at(parent, name)
    if st is None:
        return {"ok": True, "gone": True}
    if not still(parent, name, st, header.get("expect")):
        raise _changed(full)
    if header.get("backup"):
        saved = backup_name(parent, name)
        os.rename(name, saved, src_dir_fd=parent, dst_dir_fd=parent)
        return {"ok": True, "backup": os.path.join(os.path.dirname(full), saved)}
    if stat.S_ISDIR(st.st_mode):
        try:
            os.rmdir(name, dir_fd=parent)
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return {"ok": True, "kept": "not empty"}
            raise
    else:
        os.unlink(name, dir_fd=parent)
    return {"ok": True}


def read(root: str, header: Dict[str, Any]) -> Tuple[Dict[str, Any], bytes]:
    """A slice of a file (never through a symlink) with the file's stat."""
    rel = check_rel(header["path"])
    full = os.path.join(root, rel)
    with _named(full), parent_of(root, rel, create=False) as (parent, name):
        try:
            fd = os.open(name, _READ, dir_fd=parent)
        except OSError as error:
            raise refusal(error, parent, name, full) from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        handle.seek(int(header.get("offset", 0)))
        data = handle.read(int(header.get("length", CHUNK)))
    return {"ok": True, "entry": entry_of(st, full)}, data
