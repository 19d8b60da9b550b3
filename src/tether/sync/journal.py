"""A base file's journal: each save appends the rows it changed (a push costs its change).

A base (sync/state.py) lives in two files: the document (`push-<key>.json`: every row and
a random id) and its journal (`push-<key>.journal`): a header line naming the document's
id, then one line per save, the rows it changed and the paths it dropped. Every line
carries the CRC-32 of its text: reading stops at the first line that is torn or damaged,
so a save cut short reads back as the save before it. A journal whose header names
another id (left beside a document that replaced its own) is ignored whole.

append() adds a line, under an flock of the journal, only while both files are exactly
what the caller read or wrote (its stamp) and the journal stays under a size limit, then
fdatasyncs it from a thread. Otherwise the caller compacts: compact() writes the whole
document (temp file, fsync, rename, directory fsync) and then a fresh journal the same
way, both under the old journal's flock. A cut anywhere leaves the old document with its
own journal, or the new document with none that matches it: never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FileStamp = tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns
NO_FILE: FileStamp = (0, 0, 0, 0)
# The document's and the journal's file stamps, one after the other.
Stamp = tuple[int, ...]


@dataclass(frozen=True)
class Journal:
    """What read() found: the records to replay in order, the journal's stamp as read, and
    whether a line may be appended (the header matched and no torn or damaged tail)."""

    records: list[Any]
    stamp: FileStamp
    whole: bool


def journal_file(document: Path) -> Path:
    """The journal beside a document (`NAME.json` -> `NAME.journal`)."""
    return document.with_name(document.name[: -len(".json")] + ".journal")


def file_stamp(st: os.stat_result) -> FileStamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stat_stamp(path: Path) -> FileStamp:
    """The stamp of path now; NO_FILE when it is missing or unreadable."""
    try:
        return file_stamp(os.stat(path))
    except OSError:
        return NO_FILE


def encode(value: Any) -> bytes:
    """One journal line: the CRC-32 of the JSON text, the text (no raw newline), a newline."""
    text = json.dumps(value, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(text), text)


def decode(data: bytes) -> tuple[list[Any], int]:
    """The values of data's lines up to the first torn or damaged one (not included), and
    the length of data they span."""
    values: list[Any] = []
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return values, start
        line = data[start:end]
        crc, text = line[:8], line[9:]
        if len(line) < 10 or line[8:9] != b" " or b"%08x" % zlib.crc32(text) != crc:
            return values, start
        try:
            values.append(json.loads(text))
        except ValueError:
            return values, start
        start = end + 1


def read(document: Path, document_ino: int, document_id: str) -> Journal | None:
    """The journal of the document read (its inode and id); None when the document was
    replaced since it was opened (read both again)."""
    try:
        with open(journal_file(document), "rb") as handle:
            stamp = file_stamp(os.fstat(handle.fileno()))
            data = handle.read(stamp[1])
    except OSError:
        return Journal([], NO_FILE, False)
    lines, length = decode(data)
    header = lines[0] if lines else None
    if not isinstance(header, dict) or header.get("base") != document_id:
        if stat_stamp(document)[0] != document_ino:
            return None
        return Journal([], stamp, False)
    return Journal(lines[1:], stamp, length == len(data))


def append(document: Path, expect: Stamp, record: Any | None, limit: int) -> Stamp | None:
    """Append record (None: nothing) to document's journal, fdatasync'ed, when both files
    are still as `expect` says and the journal stays within limit bytes: the stamp after;
    None otherwise (the caller compacts)."""
    line = b"" if record is None else encode(record)
    try:
        fd = os.open(journal_file(document), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            return None  # no locks here (some network file systems): written whole
        st = os.fstat(fd)
        now = stat_stamp(document) + file_stamp(st)
        if now != expect or stat_stamp(journal_file(document))[0] != st.st_ino:
            return None
        if not line:
            return now
        if st.st_size + len(line) > limit:
            return None
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        stamp = now[:4] + file_stamp(os.fstat(fd))
        _datasync_soon(fd)
        return stamp
    finally:
        os.close(fd)  # the flock goes with it


def compact(document: Path, document_id: str, write: Callable[[IO[str]], None]) -> Stamp:
    """Replace the document (write() fills it) and start its journal afresh: the stamp."""
    document.parent.mkdir(parents=True, exist_ok=True)
    journal = journal_file(document)
    with _locked(journal):
        tmp = _temp(document)
        with open(tmp, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp, document)
            # The stamp of the file just written (rename changes its ctime, not its inode).
            written = file_stamp(os.fstat(handle.fileno()))
        _sync_directory(document.parent)  # the document lands before its new journal
        tmp = _temp(journal)
        with open(tmp, "wb") as binary:
            binary.write(encode({"base": document_id}))
            binary.flush()
            os.fsync(binary.fileno())
            os.replace(tmp, journal)
            started = file_stamp(os.fstat(binary.fileno()))
        _sync_directory(document.parent)  # appends to it are durable once fdatasync'ed
    return written + started


def remove_dead_temps(directory: Path, files: list[Path]) -> None:
    """Remove the temp files of these files and of the first one's journal left by a
    process that died while saving (`.NAME.PID.tmp`, PID no longer running)."""
    from tether.hosts.processes import alive

    try:
        present = os.listdir(directory)
    except OSError:
        return
    for name in [path.name for path in files] + [journal_file(files[0]).name]:
        prefix = f".{name}."
        for found in present:
            pid = found[len(prefix) : -len(".tmp")]
            ours = found.startswith(prefix) and found.endswith(".tmp") and pid.isdigit()
            if ours and int(pid) != os.getpid() and not alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(directory / found)


def _temp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def _locked(journal: Path) -> Iterator[None]:
    """Hold the flock of the journal there now (if any): no append lands meanwhile."""
    try:
        fd = os.open(journal, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):  # no locks here: appends fail over to this
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# macOS has no fdatasync: fsync there.
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def _datasync_soon(fd: int) -> None:
    """fdatasync the line just written from a thread (~4-14 ms of a push on this kind of
    disk): the save returns at once, the line is on disk moments later. A crash of the
    process loses nothing either way (the kernel holds the written line); the thread's
    copy of fd holds the flock until then, so the next append waits for it."""
    later = os.dup(fd)

    def sync() -> None:
        try:
            with contextlib.suppress(OSError):
                _datasync(later)
        finally:
            os.close(later)

    threading.Thread(target=sync, name="tether-journal-sync").start()


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):  # a file system that cannot: renamed all the same
            os.fsync(fd)
    finally:
        os.close(fd)
