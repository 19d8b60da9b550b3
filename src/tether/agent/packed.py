"""A whole tree's scan rows packed per directory (issue #26: the agent at 100,000 files).

The agent keeps a full scan's answer for the next scan (agent/scan.ScanMemo, the watched
tree of agent/watching.py). As {path: [path, kind, size, mtime_ns, mode, digest, target]}
that is ~300 bytes a file (the list, its path and ints, the dict's slot); PackedRows holds
the same rows as one (names, records, extras) triple per directory: the names joined by
NUL (no name holds one), a 19-byte record per row (kind and flags, mode, size, mtime_ns)
and the digests and link targets there are, joined by NUL: ~40 bytes a file. A row is a
list again only while it is read or changed (those directories are held open, then
packed) and while an answer is encoded, a chunk at a time (`rows`, `changed_rows`:
iterators). Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import bisect
import json
import struct
from typing import Any, Dict, Iterator, List, MutableMapping, Optional, Set, Tuple

from .fsops import Row
from .watched import Restat, WatchedTree

KINDS = ("file", "dir", "link")
_CODE = {kind: code for code, kind in enumerate(KINDS)}
_KIND_BITS = 3
_DIGEST = 4  # the row has a digest (in extras)
_TARGET = 8  # the row has a link target (in extras, after its digest)
_RECORD = struct.Struct("<BHqq")  # a row's code (kind | flags), mode, size, mtime_ns
Packed = Tuple[str, bytes, str]  # (names, records, extras) of one directory's rows


def pack(rows: List[Row], cut: int) -> Packed:
    """One directory's rows (their paths' names start at `cut`) as a packed triple. A size
    or mtime beyond 64 bits (a hostile timestamp) leaves the directory's rows, less their
    paths, as JSON in extras (records empty)."""
    names = "\0".join([row[0][cut:] for row in rows])
    record = _RECORD.pack
    code = _CODE
    try:
        records = b"".join(
            [
                record(
                    code[row[1]]
                    | (row[5] is not None and _DIGEST)
                    | (row[6] is not None and _TARGET),
                    row[4],
                    row[2],
                    row[3],
                )
                for row in rows
            ]
        )
    except struct.error:
        return names, b"", json.dumps([row[1:] for row in rows])
    extras = [extra for row in rows for extra in (row[5], row[6]) if extra is not None]
    return names, records, "\0".join(extras)


def unpack(head: str, packed: Packed) -> List[Row]:
    """The rows of a packed triple, their paths `head` + name."""
    names, records, extras = packed
    if not records:
        return [[head + name, *rest] for name, rest in zip(names.split("\0"), json.loads(extras))]
    fields = _RECORD.iter_unpack(records)
    if not extras:  # no digest, no link target: one list per row, nothing to look up
        kinds = KINDS
        return [
            [head + name, kinds[code], size, mtime, mode, None, None]
            for name, (code, mode, size, mtime) in zip(names.split("\0"), fields)
        ]
    more = iter(extras.split("\0"))
    rows = []
    for name, (code, mode, size, mtime) in zip(names.split("\0"), fields):
        digest = next(more) if code & _DIGEST else None
        target = next(more) if code & _TARGET else None
        rows.append([head + name, KINDS[code & _KIND_BITS], size, mtime, mode, digest, target])
    return rows


def _head(directory: str) -> str:
    return directory + "/" if directory else ""


class PackedRows(MutableMapping[str, Row]):
    """{path: row} of a whole tree, held packed per directory ("" is the root)."""

    def __init__(self) -> None:
        self.dirs: Dict[str, Packed] = {}  # only directories with rows
        self.count = 0
        self.opened: Dict[str, Dict[str, Row]] = {}  # {name: row} of directories read or changed
        self.dirty: Set[str] = set()  # opened directories changed since they were packed
        self._order: Optional[List[str]] = None  # dirs' keys, sorted (built on need)

    def add(self, directory: str, rows: List[Row]) -> None:
        """A scan's listing of a directory not held yet (rows under it, at least one)."""
        self.dirs[directory] = pack(rows, len(_head(directory)))
        self.count += len(rows)
        self._order = None

    def _open(self, directory: str) -> Optional[Dict[str, Row]]:
        listing = self.opened.get(directory)
        if listing is None:
            packed = self.dirs.get(directory)
            if packed is None:
                return None
            cut = len(_head(directory))
            listing = {row[0][cut:]: row for row in unpack(_head(directory), packed)}
            self.opened[directory] = listing
        return listing

    def __getitem__(self, path: str) -> Row:
        directory, _, name = path.rpartition("/")
        listing = self._open(directory)
        if listing is None or not name:
            raise KeyError(path)
        return listing[name]

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        directory, _, name = path.rpartition("/")
        listing = self._open(directory)
        return listing is not None and name in listing

    def __setitem__(self, path: str, row: Row) -> None:
        directory, _, name = path.rpartition("/")
        listing = self._open(directory)
        if listing is None:
            listing = self.opened[directory] = {}
        if name not in listing:
            self.count += 1
        listing[name] = row
        self.dirty.add(directory)

    def __delitem__(self, path: str) -> None:
        directory, _, name = path.rpartition("/")
        listing = self._open(directory)
        if listing is None or name not in listing:
            raise KeyError(path)
        del listing[name]
        self.count -= 1
        self.dirty.add(directory)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[str]:
        self.pack()
        for directory, packed in list(self.dirs.items()):
            head = _head(directory)
            for name in packed[0].split("\0"):
                yield head + name

    def pack(self) -> None:
        """Pack the directories changed since their last packing; let go of the open ones."""
        for directory in self.dirty:
            listing = self.opened[directory]
            if listing:
                if directory not in self.dirs:
                    self._order = None
                self.dirs[directory] = pack(list(listing.values()), len(_head(directory)))
            elif self.dirs.pop(directory, None) is not None:
                self._order = None
        self.dirty.clear()
        self.opened.clear()

    def copy(self) -> PackedRows:
        """Another PackedRows with the same rows (the packed triples shared)."""
        self.pack()
        other = PackedRows()
        other.dirs = dict(self.dirs)
        other.count = self.count
        return other

    def rows(self) -> Iterator[Row]:
        """Every row, a directory at a time."""
        self.pack()
        for directory, packed in list(self.dirs.items()):
            yield from unpack(_head(directory), packed)

    def changed_rows(self, old: PackedRows) -> Iterator[Row]:
        """The rows that differ from old's (new or changed), a directory at a time."""
        self.pack()
        old.pack()
        held = old.dirs
        for directory, packed in list(self.dirs.items()):
            before = held.get(directory)
            if before == packed:
                continue
            rows = unpack(_head(directory), packed)
            if before is None:
                yield from rows
                continue
            was = {row[0]: row for row in unpack(_head(directory), before)}
            for row in rows:
                if was.get(row[0]) != row:
                    yield row

    def gone(self, old: PackedRows) -> List[str]:
        """The paths of old's rows that are not here."""
        self.pack()
        old.pack()
        paths: List[str] = []
        for directory, before in old.dirs.items():
            packed = self.dirs.get(directory)
            if packed is not None and packed[0] == before[0]:
                continue
            head = _head(directory)
            names = set(packed[0].split("\0")) if packed is not None else set()
            paths.extend(head + name for name in before[0].split("\0") if name not in names)
        return paths

    def _sorted_dirs(self) -> List[str]:
        if self._order is None:
            self._order = sorted(self.dirs)
        return self._order

    def _dirs_under(self, prefix: str) -> List[str]:
        """The held directories at or under prefix (not "")."""
        order = self._sorted_dirs()
        start = bisect.bisect_left(order, prefix + "/")
        end = bisect.bisect_left(order, prefix + "0")  # "0" follows "/"
        return ([prefix] if prefix in self.dirs else []) + order[start:end]

    def under(self, prefix: str) -> List[str]:
        """The paths at or under prefix (every path for "")."""
        if not prefix:
            return list(self)
        self.pack()
        found = [prefix] if prefix in self else []
        for directory in self._dirs_under(prefix):
            head = _head(directory)
            found.extend(head + name for name in self.dirs[directory][0].split("\0"))
        return found

    def has_under(self, prefix: str) -> bool:
        """Whether any row lies strictly under prefix."""
        self.pack()
        return bool(self.dirs) if not prefix else bool(self._dirs_under(prefix))


class PackedTree(WatchedTree):
    """A WatchedTree whose entries are PackedRows: the paths under a prefix come from its
    directories (no sorted list of every path), and what a refresh changed is packed."""

    def __init__(self, bound_s: float) -> None:
        super().__init__(bound_s)
        self.entries: PackedRows = PackedRows()

    def reset(self, entries: MutableMapping[str, Any], now: float) -> None:
        assert isinstance(entries, PackedRows)
        super().reset(entries, now)

    def refresh(self, now: float, restat: Restat) -> Optional[Tuple[Dict[str, Any], List[str]]]:
        try:
            return super().refresh(now, restat)
        finally:
            self.entries.pack()

    def has_under(self, prefix: str) -> bool:
        return self.entries.has_under(prefix)

    def _under(self, prefix: str) -> List[str]:
        return self.entries.under(prefix)

    def _remember(self, path: str) -> None:
        pass

    def _forget(self, path: str) -> None:
        pass
