"""The last-synced base per target and pair, kept under .tether/ in the project."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.core.manifest import FILE, Entry, Manifest

VERSION = 1


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

    @classmethod
    def load(cls, file: Path) -> Base:
        """Read a base file; a missing or unreadable one is an empty base (safe: all conflicts)."""
        base = cls(file)
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return base
        if data.get("version") != VERSION:
            return base
        base.pending = {str(k): str(v) for k, v in data.get("pending", {}).items()}
        for path, raw in data.get("entries", {}).items():
            base.entries[path] = Entry.from_json(raw)
            if "r" in raw:
                base.remote_stat[path] = (raw["r"][0], raw["r"][1])
            if "l" in raw:
                base.local_stat[path] = (raw["l"][0], raw["l"][1])
        return base

    def record(self, path: str, entry: Entry, remote: Entry | None, local: Entry | None) -> None:
        """Remember that path now holds entry on both sides (with each side's stat)."""
        before = (
            self.entries.get(path),
            self.remote_stat.get(path),
            self.local_stat.get(path),
        )
        self.entries[path] = entry
        if remote is not None:
            self.remote_stat[path] = (remote.size, remote.mtime_ns)
        if local is not None:
            self.local_stat[path] = (local.size, local.mtime_ns)
        after = (entry, self.remote_stat.get(path), self.local_stat.get(path))
        self.dirty = self.dirty or before != after

    def expect_uploads(self, digests: dict[str, str]) -> None:
        """Remember uploads about to be sent (saved at once), until their answers arrive."""
        if digests:
            self.pending.update(digests)
            self.dirty = True
            self.save()

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
        """Write atomically (temp + rename), only when something changed since load."""
        if not self.dirty:
            return
        entries: dict[str, Any] = {}
        for path, entry in self.entries.items():
            raw = entry.to_json()
            if path in self.remote_stat:
                raw["r"] = list(self.remote_stat[path])
            if path in self.local_stat:
                raw["l"] = list(self.local_stat[path])
            entries[path] = raw
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        document = {"version": VERSION, "entries": entries, "pending": self.pending}
        tmp.write_text(json.dumps(document), encoding="utf-8")
        os.replace(tmp, self.file)
        self.dirty = False

    def reuse_digest(self, path: str, entry: Entry, side: str) -> Entry:
        """entry with the base's digest when its stat still matches what that side had."""
        known = self.entries.get(path)
        stats = self.remote_stat if side == "remote" else self.local_stat
        if (
            entry.kind == FILE
            and entry.digest is None
            and known is not None
            and known.kind == FILE
            and stats.get(path) == (entry.size, entry.mtime_ns)
        ):
            return entry.with_digest(known.digest)
        return entry


def base_file(project_root: Path, target: str, remote_dir: str, kind: str = "push") -> Path:
    """.tether/state/<target>/<kind>-<hash of remote dir>.json"""
    key = hashlib.sha256(remote_dir.encode()).hexdigest()[:12]
    return project_root / ".tether" / "state" / target / f"{kind}-{key}.json"
