"""A tree's last full scan kept current by a watcher's events: re-stat only what changed.

Pure (no I/O of its own): the owner feeds it the watcher's events and hands it a `restat`
function that looks at the disk. `refresh()` answers the current entries as a delta
against the previous answer, or None when it cannot be sure, and then the owner does a
full scan and calls `reset()`. It is unsure after an overflowed event queue, a watcher
restart or error, a watch limit reached, when no heartbeat (an event queue read to its
end) came within `bound_s` before the answer, or when the last full scan is older than
`verify_s` (TETHER_VERIFY_S, 600 s by default): a safety bound for what inotify cannot
see (writes through a shared mmap, a hard link written from outside the tree, clock or
file system oddities), after which a full scan replaces the kept entries. A directory
created before its watch was added may have been filled unseen: the event of its creation
makes its whole subtree dirty, and it is re-scanned after the watch is in place.

Used by the agent for remote scans (agent/scan.py) and by the sync daemon for local ones
(sync/watching.py): the rule lives once. Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import bisect
import os
from typing import Any, Callable, Dict, List, MutableMapping, Optional, Set, Tuple

# restat(path, deep): the entries a full scan would give at path (and, with deep, under
# it); a missing path gives none.
Restat = Callable[[str, bool], Dict[str, Any]]
Delta = Tuple[Dict[str, Any], List[str]]  # (entries new or changed, paths gone)
# More dirty paths than this: a full scan is cheaper than re-stat'ing them one by one.
MAX_DIRTY = 5000
VERIFY_S = 600.0  # a full verification scan at least this often (TETHER_VERIFY_S)


def verify_s() -> float:
    """The age after which kept entries are verified by a full scan (TETHER_VERIFY_S)."""
    try:
        value = float(os.environ.get("TETHER_VERIFY_S", ""))
    except ValueError:
        return VERIFY_S
    return value if value >= 0 else VERIFY_S


def under(path: str, prefix: str) -> bool:
    """Whether path is prefix or lies under it ("" is the root: everything)."""
    return not prefix or path == prefix or path.startswith(prefix + "/")


class WatchedTree:
    """The entries of one tree ({path: value}) and the paths changed since they were read."""

    def __init__(self, bound_s: float, verify: Optional[float] = None) -> None:
        self.bound_s = bound_s
        self.verify_s = verify_s() if verify is None else verify
        self.entries: MutableMapping[str, Any] = {}
        self.why: Optional[str] = "never scanned"  # None: sure
        self.aged = False  # unsure only because the last full scan is older than verify_s
        self.heartbeat_at = float("-inf")
        self.scanned_at = float("-inf")
        self.deep: Set[str] = set()  # these paths and everything under them
        self.shallow: Set[str] = set()  # these paths' own entries (a directory's mtime)
        self._order: Optional[List[str]] = None  # entries' paths, sorted (built on need)

    def reset(self, entries: MutableMapping[str, Any], now: float) -> None:
        """A full scan, begun after the watcher was in place and read at `now`: the new truth.

        What changed during the scan also comes as events (re-stat'ed at the next refresh:
        harmless), what changed after it comes only as events."""
        self.entries = entries
        self.why = None
        self.aged = False
        self.heartbeat_at = now
        self.scanned_at = now
        self.deep.clear()
        self.shallow.clear()
        self._order = None

    def unsure(self, why: str) -> None:
        """Events may have been lost: the next answer comes from a full scan."""
        if self.why is None:
            self.why = why
        self.aged = False  # (set again by refresh when age is the only reason)
        self.deep.clear()
        self.shallow.clear()

    def heartbeat(self, now: float) -> None:
        """The watcher read its event queue to the end at `now` (nothing pending was lost)."""
        self.heartbeat_at = max(self.heartbeat_at, now)

    def changed(self, path: str) -> None:
        """An event on path: it and anything under it may differ, and so may its parent's own
        entry (a directory's mtime changes with what it holds)."""
        if self.why is not None:
            return
        self.deep.add(path)
        if path:
            self.shallow.add(path.rpartition("/")[0])
        if len(self.deep) + len(self.shallow) > MAX_DIRTY:
            self.unsure("too many changes")

    def touched(self, path: str) -> None:
        """path's own entry may differ (a directory's attributes), nothing under it."""
        if self.why is None:
            self.shallow.add(path)

    def pending(self) -> int:
        """How many paths wait to be re-stat'ed."""
        return len(self.deep) + len(self.shallow)

    def refresh(self, now: float, restat: Restat) -> Optional[Delta]:
        """Bring the entries up to date and answer what changed: (new or changed, gone).

        None when unsure (no answer can be trusted): do a full scan and reset()."""
        if self.why is None and now - self.heartbeat_at > self.bound_s:
            self.unsure("no heartbeat from the watcher for %.0f s" % (now - self.heartbeat_at))
        if self.why is None and now - self.scanned_at > self.verify_s:
            self.unsure(
                "a verification scan is due (%.0f s since the last)" % (now - self.scanned_at)
            )
            self.aged = True
        if self.why is not None:
            return None
        deep = outermost(self.deep)
        covered = set(deep)
        shallow = sorted(p for p in self.shallow if not ancestors(p) & covered)
        self.deep.clear()
        self.shallow.clear()
        old: Dict[str, Any] = {}
        for prefix in deep:
            for path in self._under(prefix):
                old[path] = self.entries[path]
        for path in shallow:
            if path in self.entries:
                old[path] = self.entries[path]
        fresh: Dict[str, Any] = {}
        try:
            for prefix in deep:
                fresh.update(restat(prefix, True))
            for path in shallow:
                fresh.update(restat(path, False))
        except BaseException:
            self.unsure("a re-stat failed")
            raise
        changed = {path: value for path, value in fresh.items() if old.get(path, _NONE) != value}
        gone = [path for path in old if path not in fresh]
        for path in gone:
            del self.entries[path]
            self._forget(path)
        for path, value in changed.items():
            if path not in self.entries:
                self._remember(path)
            self.entries[path] = value
        return changed, gone

    def has_under(self, prefix: str) -> bool:
        """Whether any entry lies strictly under prefix."""
        order = self._sorted()
        index = bisect.bisect_left(order, prefix + "/")
        return index < len(order) and order[index].startswith(prefix + "/")

    def put(self, path: str, value: Any) -> None:
        """Set one entry (the owner's own fix-up after a refresh)."""
        if path not in self.entries:
            self._remember(path)
        self.entries[path] = value

    def drop(self, path: str) -> None:
        """Remove one entry, if there (the owner's own fix-up after a refresh)."""
        if self.entries.pop(path, _NONE) is not _NONE:
            self._forget(path)

    def _under(self, prefix: str) -> List[str]:
        """The entries' paths at or under prefix."""
        if not prefix:
            return list(self.entries)
        order = self._sorted()
        found = [prefix] if prefix in self.entries else []
        start = bisect.bisect_left(order, prefix + "/")
        end = bisect.bisect_left(order, prefix + "0")  # "0" follows "/"
        return found + order[start:end]

    def _sorted(self) -> List[str]:
        if self._order is None:
            self._order = sorted(self.entries)
        return self._order

    def _remember(self, path: str) -> None:
        if self._order is not None:
            bisect.insort(self._order, path)

    def _forget(self, path: str) -> None:
        if self._order is not None:
            index = bisect.bisect_left(self._order, path)
            if index < len(self._order) and self._order[index] == path:
                del self._order[index]


_NONE = object()


def outermost(paths: Set[str]) -> List[str]:
    """The paths not under another one of them (sorted by parts: a parent comes right
    before what lies under it)."""
    result: List[str] = []
    for path in sorted(paths, key=lambda p: p.split("/") if p else []):
        if not result or not under(path, result[-1]):
            result.append(path)
    return result


def ancestors(path: str) -> Set[str]:
    """path, its parent directories and the root ("")."""
    parts = path.split("/") if path else []
    return {""} | {"/".join(parts[: i + 1]) for i in range(len(parts))}
