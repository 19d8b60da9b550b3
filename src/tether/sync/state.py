"""The last-synced base per target and pair, kept under .tether/ in the project."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tether.core.manifest import FILE, Entry, Manifest
from tether.sync import journal
from tether.sync.basestats import OWN, PAIRS, UNKNOWN, Pair, Stat, Stats, absolute, pair_of, side_of
from tether.sync.journal import Stamp

# 3: the document carries an id, its journal beside it (sync/journal.py); a version 2
# reader would take the document without its journal, so it must not read this one.
VERSION = 3


class Base:
    """What tether last synced: content entries plus the stats seen on each side then.

    `entries` is the synced manifest (read it, never change it: it may be shared with the
    in-process copy of the file; the methods below change it). `remote_stat` and
    `local_stat` are read-only views of the (size, mtime_ns) recorded on each side.
    """

    def __init__(
        self,
        file: Path,
        entries: Manifest | None = None,
        remote_stat: dict[str, Stat] | None = None,
        local_stat: dict[str, Stat] | None = None,
        dirty: bool = False,
        pending: dict[str, str] | None = None,
        stamp: Stamp | None = None,
    ) -> None:
        self.file = file
        self.entries: Manifest = {} if entries is None else entries
        self._stats: dict[str, Pair] = {}
        self._shared = False  # entries and _stats are also the in-process copy's
        # The contents this base started from (a load, a save: never changed once made) and
        # the paths whose entry or stats changed since (None: too many to list); the origin
        # before the last save with the paths that save wrote. The paths touched are what a
        # save appends to the journal of the files the origin was read from or saved to.
        self._origin = object()
        self._touched: set[str] | None = set()
        self._since: tuple[object, frozenset[str] | None] | None = None
        self.dirty = dirty
        # Uploads sent but not yet answered (path -> digest of the bytes sent): after a
        # cut, a remote file holding exactly those bytes is tether's own write, not a
        # remote edit.
        self.pending: dict[str, str] = {} if pending is None else pending
        # The base file and its journal as this process read or wrote them last (inode,
        # size, mtime, ctime of each), and the document's id when a save may append to
        # that journal (None: a save writes the document again).
        self.stamp = stamp
        self._file_id: str | None = None
        self._taken = False  # taken whole from _LOADED by a load: a save gives it back
        # A save took rows another process saved meanwhile (_merge_saved).
        self.merged = False
        # The pending uploads as last read or written (a loaded base's): a save of the
        # pending file changes only those this base added or settled since.
        self._pending_seen: dict[str, str] | None = None
        for path, entry in self.entries.items():
            remote = None if remote_stat is None else remote_stat.get(path)
            local = None if local_stat is None else local_stat.get(path)
            pair = pair_of(side_of(remote, entry), side_of(local, entry))
            if pair is not UNKNOWN:
                self._stats[path] = pair

    @property
    def remote_stat(self) -> Mapping[str, Stat]:
        return Stats(self, 0)

    @property
    def local_stat(self) -> Mapping[str, Stat]:
        return Stats(self, 1)

    @classmethod
    def load(cls, file: Path) -> Base:
        """Read a base file; a missing or unreadable one is an empty base (safe: all conflicts).

        A file this process read or wrote before, unchanged since (the same inode, size,
        mtime and ctime of the document and of its journal), is not parsed again.
        """
        base = cls._load_main(file)
        pending = _read_pending(_pending_file(file))
        if pending is not None:
            base.pending = pending
        base._pending_seen = dict(base.pending)
        return base

    @classmethod
    def _load_main(cls, file: Path) -> Base:
        for _ in range(_LOAD_TRIES):
            try:
                base = cls._load_once(file)
            except (OSError, ValueError, TypeError, AttributeError, KeyError, IndexError):
                return cls(file)
            if base is not None:
                return base
        return cls(file)  # replaced again and again while read: as unknown (safe)

    @classmethod
    def _load_once(cls, file: Path) -> Base | None:
        """The base of the document and its journal; None when the document was replaced
        while they were read."""
        with open(file, "rb") as handle:
            document = journal.file_stamp(os.fstat(handle.fileno()))
            stamp = document + journal.stat_stamp(journal.journal_file(file))
            held = _LOADED.get(str(file))
            if held is not None and held[0] == stamp:
                if held[2]:  # the saved contents, taken whole: no copy of 100,000 rows
                    del _LOADED[str(file)]
                    held[1].stamp = stamp
                    held[1]._shared = False
                    held[1]._taken = True
                    return held[1]
                return held[1].copy(stamp)
            data = json.loads(handle.read())
        base = cls(file)
        version = data.get("version")
        if version == VERSION:
            base._load_rows(data["rows"])
            found = journal.read(file, document[0], str(data["id"]))
            if found is None:
                return None
            for record in found.records:
                base._load_rows(record["rows"])
                for path in record["gone"]:
                    base.entries.pop(path, None)
                    base._stats.pop(path, None)
            stamp = document + found.stamp
            base._file_id = str(data["id"]) if found.whole else None
        elif version == 2:
            base.pending = {str(k): str(v) for k, v in data.get("pending", {}).items()}
            base._load_rows(data["rows"])
        elif version == 1:
            base._load_v1(data)
        else:
            return base
        _remember(stamp, base, False)
        return base.copy(stamp)

    def copy(self, stamp: Stamp | None = None) -> Base:
        """A clean base with the same contents: its dictionaries are shared until either
        base changes (copy on write; entries are immutable)."""
        other = Base(self.file, pending=dict(self.pending), stamp=stamp)
        other.entries = self.entries
        other._stats = self._stats
        other._shared = self._shared = True
        other._origin = self._origin
        other._touched = None if self._touched is None else set(self._touched)
        other._since = self._since
        other._file_id = self._file_id
        return other

    def _own(self) -> None:
        """Make entries and stats this base's own before changing them."""
        if self._shared:
            self.entries = dict(self.entries)
            self._stats = dict(self._stats)
            self._shared = False

    def _load_rows(self, rows: list[list[Any]]) -> None:
        """Set the rows (versions 2 and 3, and the journal's): [path, kind, size, mtime_ns,
        mode, digest, target, remote, local] per path, each stat [size, mtime_ns], 0 when
        the entry's own, null when unknown."""
        entries = self.entries
        stats = self._stats
        pairs = PAIRS
        intern = sys.intern  # paths and digests: one object each across manifests
        for path, kind, size, mtime_ns, mode, digest, target, remote, local in rows:
            path = intern(path)
            if digest is not None:
                digest = intern(digest)
            entries[path] = Entry(kind, size, mtime_ns, mode, digest, target)
            if remote == 0 or remote is None:
                if local == 0 or local is None:
                    pair = pairs[(remote, local)]
                    if pair is not UNKNOWN:
                        stats[path] = pair
                    else:
                        stats.pop(path, None)  # a journal's row replacing known stats
                    continue
            else:
                remote = (remote[0], remote[1])
            if local != 0 and local is not None:
                local = (local[0], local[1])
            stats[path] = (remote, local)

    def _load_v1(self, data: dict[str, Any]) -> None:
        """Version 1: {path: entry-json plus "r" and "l"} (read, never written any more)."""
        self.pending = {str(k): str(v) for k, v in data.get("pending", {}).items()}
        for path, raw in data.get("entries", {}).items():
            entry = self.entries[path] = Entry.from_json(raw)
            remote = (raw["r"][0], raw["r"][1]) if "r" in raw else None
            local = (raw["l"][0], raw["l"][1]) if "l" in raw else None
            pair = pair_of(side_of(remote, entry), side_of(local, entry))
            if pair is not UNKNOWN:
                self._stats[path] = pair

    def _set(self, path: str, entry: Entry, remote: Entry | None, local: Entry | None) -> None:
        """entries[path] = entry, each side's stat from remote and local where given (the
        other kept); dirty when anything changed. The base is its own already."""
        known = self.entries.get(path)
        old = self._stats.get(path, UNKNOWN)
        remote_stat = absolute(old[0], known) if remote is None else (remote.size, remote.mtime_ns)
        local_stat = absolute(old[1], known) if local is None else (local.size, local.mtime_ns)
        if known is not entry and known != entry:
            self.entries[path] = entry
            self.dirty = True
            self._touch(path)
        pair = pair_of(side_of(remote_stat, entry), side_of(local_stat, entry))
        if pair != old:
            if pair is UNKNOWN:
                self._stats.pop(path, None)
            else:
                self._stats[path] = pair
            self.dirty = True
            self._touch(path)

    def _touch(self, path: str) -> None:
        touched = self._touched
        if touched is not None:
            touched.add(path)
            if len(touched) > _TOUCHED_MAX:
                self._touched = None

    def version(self) -> Version:
        """What this base holds now, for changed_since (cheap: no copy of the entries)."""
        touched = self._touched
        return Version(self._origin, None if touched is None else frozenset(touched))

    def changed_since(self, version: Version) -> set[str] | None:
        """The paths whose entry or stats may differ from those of the base at version
        (taken of this base, or of a copy of the file this base was loaded from, before the
        save it was loaded after); None when that is not known (then: any)."""
        then = version.touched
        if then is None or self._touched is None:
            return None
        if version.origin is self._origin:
            return self._touched | then
        since = self._since
        if since is None or since[0] is not version.origin or since[1] is None:
            return None
        return self._touched | then | since[1]

    def record(self, path: str, entry: Entry, remote: Entry | None, local: Entry | None) -> None:
        """Remember that path now holds entry on both sides (with each side's stat)."""
        self._own()
        self._set(path, entry, remote, local)

    def expect_uploads(self, digests: dict[str, str], save: bool = True) -> None:
        """Remember uploads about to be sent, until their answers arrive (in the small
        pending file beside the base: saved at once, or with save=False by the caller's
        `save_pending()` once the requests are handed to ssh, before any answer is read;
        a push killed between the two finds the remote's copy the same as the local one,
        or a conflict, never a loss). `digests` becomes the base's: the caller lets it go."""
        if digests:
            # Taken, not copied, when it is all (a first push's names every file).
            self.pending = {**self.pending, **digests} if self.pending else digests
            self.dirty = True
            if save:
                self._save_pending()

    def save_pending(self) -> None:
        """Write the pending uploads beside the base now (see expect_uploads)."""
        self._save_pending()

    def record_same(self, paths: Iterable[str], local: Manifest, remote: Manifest) -> None:
        """record(path, local, remote, local) for each path the plan found the same on both
        sides (one pass: a push's every unchanged file comes through here)."""
        for path in paths:
            entry = local[path]
            there = remote.get(path)
            if self.entries.get(path) is entry:
                # The common case (a no-op push): nothing to change when the stats hold.
                pair = self._stats.get(path, UNKNOWN)
                if pair[1] == OWN and isinstance(pair[1], int):
                    if there is None:
                        continue
                    side = pair[0]
                    if side is not None and (
                        (
                            isinstance(side, int)
                            and there.size == entry.size
                            and there.mtime_ns == entry.mtime_ns
                        )
                        or side == (there.size, there.mtime_ns)
                    ):
                        continue
            self._own()
            self._set(path, entry, there, entry)

    def settle_upload(self, path: str) -> None:
        """An upload's answer arrived (written or refused): it is no longer pending."""
        if self.pending.pop(path, None) is not None:
            self.dirty = True

    def adopt_landed(self, remote: dict[str, Entry], scanned: Callable[[str], bool]) -> None:
        """Record as synced every pending upload (of the scanned paths) the remote holds."""
        for path, digest in list(self.pending.items()):
            if not scanned(path):
                continue
            entry = remote.get(path)
            if entry is not None and entry.digest == digest:
                self.record(path, entry, entry, None)
            self.settle_upload(path)

    def forget(self, path: str) -> None:
        """Drop a path (deleted on both sides)."""
        if path in self.entries or path in self._stats:
            self._own()
            self.dirty = self.dirty or path in self.entries
            self.entries.pop(path, None)
            self._stats.pop(path, None)
            self._touch(path)

    def save(self) -> None:
        """Save what changed since load, only when something did.

        When the files are still those this base was loaded from or saved to, the rows it
        changed are appended to the journal (sync/journal.py: a push of one file writes a
        line, not the 100,000 rows); otherwise, and when the journal grew past a fraction of
        the document, the document is written whole and the journal started afresh.
        """
        if not self.dirty:
            if self._taken and self.stamp is not None:  # the next load takes it again
                self._remember_written(self.stamp)
            return
        touched = self._touched
        self.file.parent.mkdir(parents=True, exist_ok=True)
        journal.remove_dead_temps(self.file.parent, [self.file, _pending_file(self.file)])
        stamp = None if touched is None else self._save_touched(touched)
        if stamp is None:
            file_id = os.urandom(8).hex()
            stamp = journal.compact(self.file, file_id, self._write_document(file_id))
            self._file_id = file_id
        self._save_pending()
        self.dirty = False
        self.stamp = stamp
        self._since = (self._origin, None if touched is None else frozenset(touched))
        self._origin = object()
        self._touched = set()
        self._remember_written(stamp)

    def _remember_written(self, stamp: Stamp) -> None:
        """Keep this base's contents as those of the files at stamp, for the next load."""
        self._taken = False
        written = self.copy()
        written.pending = {}  # not in the file written: load reads the pending file
        _remember(stamp, written, True)

    def _save_touched(self, touched: set[str]) -> Stamp | None:
        """Append the touched rows to the journal, over another process's save made since
        this base was loaded when there is one: the stamp after; None when the document
        is to be written whole (it then holds the other process's rows too)."""
        for _ in range(_SAVE_TRIES):
            if self.stamp is None or self._file_id is None:
                break
            stamp = self._append(self.stamp, touched)
            if stamp is not None:
                return stamp
            if not self._merge_saved(touched):
                return None  # nobody else saved: the journal is full
        if self.stamp is not None:
            self._merge_saved(touched)
        return None

    def _merge_saved(self, touched: set[str]) -> bool:
        """Take the base as another process saved it since this one was loaded (`tether
        watch` and a push save one file), with this base's touched paths on top: a save
        writes what it changed, never its stale copy of the rest. False: nobody did."""
        now = journal.stat_stamp(self.file) + journal.stat_stamp(journal.journal_file(self.file))
        if now == self.stamp or now[:4] == journal.NO_FILE:
            return False
        current = Base._load_main(self.file)
        if current.stamp is None or current.stamp == self.stamp:
            return False
        mine = {path: (self.entries.get(path), self._stats.get(path)) for path in touched}
        self.entries, self._stats = current.entries, current._stats
        self._shared = current._shared = True  # (the in-process copy's too: copy on write)
        self._own()
        for path, (entry, stats) in mine.items():
            if entry is None:
                self.entries.pop(path, None)
                self._stats.pop(path, None)
                continue
            self.entries[path] = entry
            if stats is None:
                self._stats.pop(path, None)
            else:
                self._stats[path] = stats
        self.stamp, self._file_id = current.stamp, current._file_id
        # The contents are no longer the origin's plus the paths touched: a version of
        # this base taken before is unknown from now on (changed_since: None).
        self._since, self._origin = (self._origin, None), object()
        self.merged = True
        return True

    def _append(self, stamp: Stamp, touched: set[str]) -> Stamp | None:
        """Append the touched paths' rows (or their drop) to the journal: the stamp after,
        or None when the files changed since stamp or the journal would grow too large."""
        rows = []
        gone = []
        for path in sorted(touched):
            entry = self.entries.get(path)
            if entry is None:
                gone.append(path)
            else:
                rows.append(self._row(path, entry))
        record = {"rows": rows, "gone": gone} if touched else None
        limit = max(_JOURNAL_MIN, stamp[1] // _JOURNAL_FRACTION)  # of the document's size
        return journal.append(self.file, stamp, record, limit)

    def _write_document(self, file_id: str) -> Callable[[IO[str]], None]:
        """What writes the whole document: every row, encoded a chunk at a time."""

        def write(handle: IO[str]) -> None:
            handle.write(f'{{"version": {VERSION}, "id": "{file_id}", "rows": [')
            rows: list[list[Any]] = []
            first = True
            row = self._row
            for path, entry in self.entries.items():
                rows.append(row(path, entry))
                if len(rows) == _CHUNK:
                    handle.write(("" if first else ", ") + json.dumps(rows)[1:-1])
                    rows, first = [], False
            if rows:
                handle.write(("" if first else ", ") + json.dumps(rows)[1:-1])
            handle.write("]}")

        return write

    def _row(self, path: str, entry: Entry) -> list[Any]:
        """The saved row of path (see _load_rows)."""
        return [
            path,
            entry.kind,
            entry.size,
            entry.mtime_ns,
            entry.mode,
            entry.digest,
            entry.target,
            *self._stats.get(path, UNKNOWN),
        ]

    def _save_pending(self) -> None:
        """The pending uploads in their own small file (removed when there are none)."""
        path = _pending_file(self.file)
        seen = self._pending_seen
        if seen is not None:
            # Another process's uploads in flight (watch beside a push) stay pending.
            merged = _read_pending(path) or {}
            for name, digest in seen.items():
                if name not in self.pending and merged.get(name) == digest:
                    del merged[name]  # settled here
            for name, digest in self.pending.items():
                if seen.get(name) != digest:
                    merged[name] = digest  # sent from here
            self.pending, self._pending_seen = merged, dict(merged)
        if not self.pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            # A chunk at a time: a first push's names every file (encoded whole: its peak).
            items, separator = iter(self.pending.items()), "{"
            while chunk := dict(itertools.islice(items, _CHUNK)):
                handle.write(separator + json.dumps(chunk)[1:-1])
                separator = ", "
            handle.write("}")
        os.replace(tmp, path)

    def remote_entries(
        self, scanned: dict[str, Entry], filled: set[str], paths: Iterable[str] | None = None
    ) -> Manifest:
        """The remote's entries as scanned, each file without a digest taking the base's
        when its stat is still the one the base recorded there; a copy is returned.

        `scanned` and `filled` are the caller's, kept between scans: scanned's entries are
        updated in place (a digest taken from the base, or given back when the base no
        longer has it), and `filled` holds the paths whose digest came from the base. The
        same base again changes nothing (no Entry made). `paths`: only these are looked at
        (None: all), the others being as a scan with this base left them (changed_since).
        """
        known = self.entries
        stats = self._stats
        unknown = UNKNOWN
        for path in scanned if paths is None else [p for p in paths if p in scanned]:
            entry = scanned[path]
            digest = entry.digest
            if digest is None:
                if entry.kind != FILE:
                    continue
            elif path not in filled:
                continue
            base = known.get(path)
            take = None
            if base is not None and base.kind == FILE and entry.kind == FILE:
                side = stats.get(path, unknown)[0]
                if side is not None and (
                    (base.size == entry.size and base.mtime_ns == entry.mtime_ns)
                    if isinstance(side, int)
                    else (side[0] == entry.size and side[1] == entry.mtime_ns)
                ):
                    take = base.digest
            if take == digest:
                continue
            filling = Entry(entry.kind, entry.size, entry.mtime_ns, entry.mode, take, entry.target)
            # The base's own object when equal (a push sets the remote mtime to the local
            # one): one Entry per file for the base, the local and the remote manifest.
            scanned[path] = base if take is not None and base == filling else filling
            if take is None:
                filled.discard(path)
            else:
                filled.add(path)
        return dict(scanned)


def _pending_file(file: Path) -> Path:
    return file.with_name(file.name[: -len(".json")] + ".pending.json")


def _read_pending(path: Path) -> dict[str, str] | None:
    """The pending uploads saved beside a base; None when there is no such file."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


@dataclass(frozen=True)
class Version:
    """A base's contents at one moment (Base.version): its origin and the paths touched."""

    origin: object
    touched: frozenset[str] | None


# More paths than this touched since a base's origin: not listed (as good as all of them).
_TOUCHED_MAX = 20_000
# Base files this process read or wrote, by path: (their stamp then, the contents, whether
# the next load may take those whole). A saved base's dictionaries are the saver's too:
# the next load takes them and changes them in place, so the saver reads them until then
# only (a push or pull reads its base after the save, never after a load of its file).
# Those of a file read are shared with the base that load returned: never taken.
_LOADED: dict[str, tuple[Stamp, Base, bool]] = {}
_KEEP = 16
# A document replaced while read this many times in a row: the base is read as unknown.
_LOAD_TRIES = 3
# A save appends after taking another process's save this many times at most, then writes
# the document whole (with both processes' rows).
_SAVE_TRIES = 3
# A journal grows to this fraction of its document (at least _JOURNAL_MIN bytes), then the
# next save writes the document whole: a load replays at most that much.
_JOURNAL_FRACTION = 8
_JOURNAL_MIN = 64 * 1024
_CHUNK = 1000  # rows encoded at a time when the document is written whole


def _remember(stamp: Stamp, base: Base, takeable: bool) -> None:
    key = str(base.file)
    _LOADED.pop(key, None)
    _LOADED[key] = (stamp, base, takeable)
    while len(_LOADED) > _KEEP:
        del _LOADED[next(iter(_LOADED))]


def base_file(project_root: Path, target: str, remote_dir: str, kind: str = "push") -> Path:
    """.tether/state/<target>/<kind>-<hash of remote dir>.json"""
    key = hashlib.sha256(remote_dir.encode()).hexdigest()[:12]
    return project_root / ".tether" / "state" / target / f"{kind}-{key}.json"
