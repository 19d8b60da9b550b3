"""The last-synced base per target and pair, kept under .tether/ in the project."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.core.manifest import FILE, Entry, Manifest

VERSION = 2


@dataclass
class Base:
    """What tether last synced: content entries plus the stats seen on each side then."""

    file: Path
    entries: Manifest = field(default_factory=dict)
    remote_stat: dict[str, tuple[int, int]] = field(default_factory=dict)
    local_stat: dict[str, tuple[int, int]] = field(default_factory=dict)
    dirty: bool = False
    # Uploads sent but not yet answered (path -> digest of the bytes sent): after a cut,
    # a remote file holding exactly those bytes is tether's own write, not a remote edit.
    pending: dict[str, str] = field(default_factory=dict)
    # The base file as this process read or wrote it last (inode, size, mtime, ctime).
    stamp: tuple[int, int, int, int] | None = None

    @classmethod
    def load(cls, file: Path) -> Base:
        """Read a base file; a missing or unreadable one is an empty base (safe: all conflicts).

        A file this process read or wrote before, unchanged since (same inode, size, mtime
        and ctime: every save replaces the file), is not parsed again.
        """
        base = cls._load_main(file)
        pending = _read_pending(_pending_file(file))
        if pending is not None:
            base.pending = pending
        return base

    @classmethod
    def _load_main(cls, file: Path) -> Base:
        try:
            with open(file, "rb") as handle:
                stamp = _stamp(os.fstat(handle.fileno()))
                held = _LOADED.get(str(file))
                if held is not None and held[0] == stamp:
                    return held[1].copy(stamp)
                data = json.loads(handle.read())
            base = cls(file)
            if data.get("version") == VERSION:
                base._load_rows(data)
            elif data.get("version") == 1:
                base._load_v1(data)
            else:
                return base
        except (OSError, ValueError, TypeError, AttributeError, KeyError, IndexError):
            return cls(file)
        _remember(stamp, base)
        return base.copy(stamp)

    def copy(self, stamp: tuple[int, int, int, int] | None = None) -> Base:
        """A clean base with the same contents (entries are immutable, so shared)."""
        return Base(
            self.file,
            dict(self.entries),
            dict(self.remote_stat),
            dict(self.local_stat),
            pending=dict(self.pending),
            stamp=stamp,
        )

    def _load_rows(self, data: dict[str, Any]) -> None:
        """Version 2: [path, kind, size, mtime_ns, mode, digest, target, remote, local] per
        path, each stat [size, mtime_ns], 0 when the entry's own, null when unknown."""
        self.pending = {str(k): str(v) for k, v in data.get("pending", {}).items()}
        entries = self.entries
        remote_stat = self.remote_stat
        local_stat = self.local_stat
        rows: list[list[Any]] = data["rows"]
        intern = sys.intern  # paths and digests: one object each across manifests
        for path, kind, size, mtime_ns, mode, digest, target, remote, local in rows:
            path = intern(path)
            if digest is not None:
                digest = intern(digest)
            entries[path] = Entry(kind, size, mtime_ns, mode, digest, target)
            own = (size, mtime_ns)
            if remote is not None:
                remote_stat[path] = own if remote == 0 else (remote[0], remote[1])
            if local is not None:
                local_stat[path] = own if local == 0 else (local[0], local[1])

    def _load_v1(self, data: dict[str, Any]) -> None:
        """Version 1: {path: entry-json plus "r" and "l"} (read, never written any more)."""
        self.pending = {str(k): str(v) for k, v in data.get("pending", {}).items()}
        for path, raw in data.get("entries", {}).items():
            self.entries[path] = Entry.from_json(raw)
            if "r" in raw:
                self.remote_stat[path] = (raw["r"][0], raw["r"][1])
            if "l" in raw:
                self.local_stat[path] = (raw["l"][0], raw["l"][1])

    def record(self, path: str, entry: Entry, remote: Entry | None, local: Entry | None) -> None:
        """Remember that path now holds entry on both sides (with each side's stat)."""
        known = self.entries.get(path)
        if known is not entry and known != entry:
            self.entries[path] = entry
            self.dirty = True
        if remote is not None:
            stat = (remote.size, remote.mtime_ns)
            if self.remote_stat.get(path) != stat:
                self.remote_stat[path] = stat
                self.dirty = True
        if local is not None:
            stat = (local.size, local.mtime_ns)
            if self.local_stat.get(path) != stat:
                self.local_stat[path] = stat
                self.dirty = True

    def expect_uploads(self, digests: dict[str, str]) -> None:
        """Remember uploads about to be sent (saved at once, in the small pending file
        beside the base), until their answers arrive."""
        if digests:
            self.pending.update(digests)
            self.dirty = True
            self._save_pending()

    def record_same(self, paths: Iterable[str], local: Manifest, remote: Manifest) -> None:
        """record(path, local, remote, local) for each path the plan found the same on both
        sides (one pass: a push's every unchanged file comes through here)."""
        entries, remote_stat, local_stat = self.entries, self.remote_stat, self.local_stat
        dirty = False
        for path in paths:
            entry = local[path]
            known = entries.get(path)
            if known is not entry and known != entry:
                entries[path] = entry
                dirty = True
            stat = (entry.size, entry.mtime_ns)
            if local_stat.get(path) != stat:
                local_stat[path] = stat
                dirty = True
            there = remote.get(path)
            if there is not None:
                stat = (there.size, there.mtime_ns)
                if remote_stat.get(path) != stat:
                    remote_stat[path] = stat
                    dirty = True
        self.dirty = self.dirty or dirty

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
        self.dirty = self.dirty or path in self.entries
        self.entries.pop(path, None)
        self.remote_stat.pop(path, None)
        self.local_stat.pop(path, None)

    def save(self) -> None:
        """Write atomically (temp + rename), only when something changed since load.

        Rows unchanged since this process last wrote them reuse their JSON text, so saving
        a base of thousands of entries after a small push costs a join, not an encoding.
        """
        if not self.dirty:
            return
        remote_stat = self.remote_stat
        local_stat = self.local_stat
        encoded = _ENCODED.setdefault(str(self.file), {})
        parts: list[str] = []
        for path, entry in self.entries.items():
            remote = remote_stat.get(path)
            local = local_stat.get(path)
            held = encoded.get(path)
            if held is not None and held[0] is entry and held[1] == remote and held[2] == local:
                parts.append(held[3])
                continue
            own = (entry.size, entry.mtime_ns)
            row = [
                path,
                entry.kind,
                entry.size,
                entry.mtime_ns,
                entry.mode,
                entry.digest,
                entry.target,
                0 if remote == own else remote,
                0 if local == own else local,
            ]
            text = json.dumps(row)
            encoded[path] = (entry, remote, local, text)
            parts.append(text)
        if len(encoded) > 2 * len(self.entries) + 1000:  # paths long gone
            for path in [path for path in encoded if path not in self.entries]:
                del encoded[path]
        self.file.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temps(self.file)
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        document = f'{{"version": {VERSION}, "rows": [{", ".join(parts)}]}}'
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(document)
            handle.flush()
            os.replace(tmp, self.file)
            # The stamp of the file just written (rename changes its ctime, not its inode).
            stamp = _stamp(os.fstat(handle.fileno()))
        self._save_pending()
        self.dirty = False
        self.stamp = stamp
        written = self.copy()
        written.pending = {}  # not in the file written: load reads the pending file
        _remember(stamp, written)

    def _save_pending(self) -> None:
        """The pending uploads in their own small file (removed when there are none)."""
        path = _pending_file(self.file)
        if not self.pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.pending), encoding="utf-8")
        os.replace(tmp, path)

    def manifest_of_rows(
        self, rows: Iterable[Sequence[Any]], built: dict[str, Any] | None = None
    ) -> Manifest:
        """The agent's compact rows ([path, kind, size, mtime_ns, mode, digest, target]) as
        a manifest of the remote, each file without a digest taking the base's when its stat
        is still the one the base recorded there (one pass, one Entry per row).

        `built`, kept by the caller between calls, remembers each path's Entry with the row,
        base entry and stat it was made from: the same objects again give the same Entry.
        """
        known = self.entries
        stats = self.remote_stat
        memo: dict[str, Any] = {} if built is None else built
        result: Manifest = {}
        for row in rows:
            path = row[0]
            base = known.get(path)
            stat = stats.get(path)
            held = memo.get(path)
            if held is not None and held[0] is row and held[1] is base and held[2] is stat:
                result[path] = held[3]
                continue
            _, kind, size, mtime_ns, mode, digest, target = row
            if (
                digest is None
                and kind == FILE
                and base is not None
                and base.kind == FILE
                and stat == (size, mtime_ns)
            ):
                digest = base.digest
            entry = result[path] = Entry(kind, size, mtime_ns, mode, digest, target)
            if built is not None:
                built[path] = (row, base, stat, entry)
        if built is not None and len(built) > len(result) + 1000:  # paths long gone
            for path in [path for path in built if path not in result]:
                del built[path]
        return result


def _remove_dead_temps(file: Path) -> None:
    """Remove the temp files of file and its pending file left by a process that died
    while saving (`.NAME.PID.tmp`, PID no longer running): a killed push leaves nothing."""
    from tether.hosts.processes import alive

    try:
        present = os.listdir(file.parent)
    except OSError:
        return
    for name in (file.name, _pending_file(file).name):
        prefix = f".{name}."
        for found in present:
            pid = found[len(prefix) : -len(".tmp")]
            ours = found.startswith(prefix) and found.endswith(".tmp") and pid.isdigit()
            if ours and int(pid) != os.getpid() and not alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(file.parent / found)


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


# Encoded rows of the base files this process wrote: path -> (entry, remote, local, JSON).
_ENCODED: dict[str, dict[str, tuple[Entry, Any, Any, str]]] = {}
# Base files this process read or wrote, by path: (stamp of the file then, its contents).
_LOADED: dict[str, tuple[tuple[int, int, int, int], Base]] = {}
_KEEP = 16


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _remember(stamp: tuple[int, int, int, int], base: Base) -> None:
    key = str(base.file)
    _LOADED.pop(key, None)
    _LOADED[key] = (stamp, base)
    while len(_LOADED) > _KEEP:
        del _LOADED[next(iter(_LOADED))]


def base_file(project_root: Path, target: str, remote_dir: str, kind: str = "push") -> Path:
    """.tether/state/<target>/<kind>-<hash of remote dir>.json"""
    key = hashlib.sha256(remote_dir.encode()).hexdigest()[:12]
    return project_root / ".tether" / "state" / target / f"{kind}-{key}.json"
