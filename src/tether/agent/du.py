"""Disk use of tether's snapshots and logs on this host (`tether status`).

Blocks are counted as `du` does: every inode once, however many of its links are seen,
and `own` bytes only for inodes with no link outside the trees measured (what removing
them would free). A snapshot that only ended jobs use no longer changes (jobs write into
their snapshot while they run, never after), so its sizes are kept in a small file next
to the job records and read back instead of walking it again: `status` costs the
snapshots still in use, not every job ever run. A kept size is measured again when the
snapshot directory itself changed (its inode, mtime or ctime), after a day in any case,
and never kept for a snapshot that shares an inode with anything outside it (a hard link
from an older tether's snapshots or the live tree): those are walked every time, in one
pass with the others, so the totals stay exact.

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from . import jobstore as store

Inode = Tuple[int, int]
SIZES_FILE = "snapshot-sizes.json"
RECHECK_S = 86400.0
# A kept entry: the directory's [dev, ino, mtime_ns, ctime_ns], when measured, bytes, own.
Kept = List[Any]


def walk(top: str, prune: Any = None) -> Iterable[Tuple[str, os.stat_result]]:
    """(path, lstat) of top and everything under it, never following links; a directory
    for which prune(path, st) is true is neither yielded nor entered."""
    try:
        st = os.lstat(top)
    except OSError:
        return
    if prune is not None and stat.S_ISDIR(st.st_mode) and prune(top, st):
        return
    yield top, st
    if not stat.S_ISDIR(st.st_mode):
        return
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if prune is not None and prune(entry.path, st):
                    continue
                stack.append(entry.path)
            yield entry.path, st


def _stamp(st: os.stat_result) -> List[int]:
    return [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


class Usage:
    """Counts the blocks of the trees it is given, each inode once, and the snapshots it
    may take from (or add to) the kept sizes whole."""

    def __init__(self, frozen: Set[str], kept: Dict[str, Kept]) -> None:
        self.frozen = frozen
        self.kept = kept
        self.used: Dict[str, Kept] = {}
        self.now = time.time()

    def measure(self, tops: List[str]) -> Dict[str, int]:
        """bytes: blocks of every inode once (du); own_bytes: of those not linked elsewhere."""
        seen: Dict[Inode, List[int]] = {}  # inode -> [links seen, nlink, bytes, is a dir]
        total = own = 0

        def whole(path: str, st: os.stat_result) -> bool:
            nonlocal total, own
            sizes = self._sizes(path, st)
            if sizes is None:
                return False
            total += sizes[0]
            own += sizes[1]
            return True

        for top in tops:
            _count(walk(top, whole), seen)
        total += sum(entry[2] for entry in seen.values())
        own += sum(entry[2] for entry in seen.values() if entry[3] or entry[0] >= entry[1])
        return {"bytes": total, "own_bytes": own}

    def _sizes(self, path: str, st: os.stat_result) -> Optional[Tuple[int, int]]:
        """(bytes, own) of a frozen snapshot that shares no inode outside itself, else None."""
        if path not in self.frozen:
            return None
        held = self.used.get(path) or self.kept.get(path)
        fresh = (
            isinstance(held, list)
            and len(held) == 7
            and held[:4] == _stamp(st)
            and isinstance(held[4], (int, float))
            and self.now - held[4] < RECHECK_S
        )
        if not fresh:
            seen: Dict[Inode, List[int]] = {}
            _count(walk(path), seen)
            alone = all(entry[3] or entry[0] >= entry[1] for entry in seen.values())
            size = sum(entry[2] for entry in seen.values())
            # A shared snapshot is kept as such (own -1) and walked with the others.
            held = [*_stamp(st), self.now, size, size if alone else -1]
        assert held is not None
        self.used[path] = held
        if held[6] < 0:
            return None
        return int(held[5]), int(held[6])


def _count(found: Iterable[Tuple[str, os.stat_result]], seen: Dict[Inode, List[int]]) -> None:
    for _, st in found:
        key = (st.st_dev, st.st_ino)
        entry = seen.get(key)
        if entry is None:
            is_dir = int(stat.S_ISDIR(st.st_mode))
            entry = seen[key] = [0, st.st_nlink, st.st_blocks * 512, is_dir]
        entry[0] += 1


def frozen_snapshots(records: List[Dict[str, Any]], snapshot_of: Any) -> Set[str]:
    """The snapshots that only ended jobs use (a running, queued or lost job may still
    write into its own; a snapshot no record names may be one being made)."""
    ended: Dict[str, bool] = {}
    for record in records:
        snap = snapshot_of(record)
        if snap:
            done = isinstance(record.get("ended"), (int, float))
            ended[snap] = ended.get(snap, True) and done
    return {snap for snap, done in ended.items() if done}


def _sizes_path() -> str:
    return os.path.join(store.data_dir(), SIZES_FILE)


def load_kept() -> Dict[str, Kept]:
    """The kept sizes ({} when there are none or the file is not ours to trust)."""
    try:
        with open(_sizes_path(), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}


def save_kept(usage: Usage) -> None:
    """Keep the sizes of the frozen snapshots this call saw (the others are gone)."""
    if usage.used == usage.kept:
        return
    with contextlib.suppress(OSError):  # a full disk, a read-only home: measured again
        store.write_json(_sizes_path(), dict(usage.used))
