"""A base's recorded stats per path (sync/state.py): what each side's file looked like
(size, mtime_ns) when tether last saw it in sync, kept compact for 100,000 paths."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from tether.core.manifest import Entry

if TYPE_CHECKING:
    from tether.sync.state import Base

# A path's recorded stats on each side: None when unknown, OWN when the entry's own
# (size, mtime_ns), else (size, mtime_ns). Kept as one (remote, local) pair per path, the
# common pairs shared (no tuple per path for them).
OWN = 0
Stat = tuple[int, int]
Side = Stat | int | None
Pair = tuple[Side, Side]
PAIRS: dict[Pair, Pair] = {
    pair: pair for pair in ((OWN, OWN), (OWN, None), (None, OWN), (None, None))
}
UNKNOWN: Pair = (None, None)


class Stats(Mapping[str, Stat]):
    """One side's recorded stats (read-only), made from the base's compact pairs."""

    def __init__(self, base: Base, side: int) -> None:
        self._base = base
        self._side = side

    def __getitem__(self, path: str) -> Stat:
        stat: Stat | None = self.get(path)
        if stat is None:
            raise KeyError(path)
        return stat

    def get(self, path: str, default: Any = None) -> Any:
        base = self._base
        pair = base._stats.get(path)
        if pair is None:
            return default
        side = pair[self._side]
        if side is None:
            return default
        if side == OWN:
            entry = base.entries[path]
            return (entry.size, entry.mtime_ns)
        return side

    def __contains__(self, path: object) -> bool:
        pair = self._base._stats.get(path)  # type: ignore[call-overload]
        return pair is not None and pair[self._side] is not None

    def __iter__(self) -> Iterator[str]:
        side = self._side
        return (path for path, pair in self._base._stats.items() if pair[side] is not None)

    def __len__(self) -> int:
        side = self._side
        return sum(1 for pair in self._base._stats.values() if pair[side] is not None)


def side_of(stat: Stat | None, entry: Entry) -> Side:
    if stat is None:
        return None
    if stat[0] == entry.size and stat[1] == entry.mtime_ns:
        return OWN
    return stat


def absolute(side: Side, entry: Entry | None) -> Stat | None:
    if side is None or entry is None:
        return None
    if isinstance(side, tuple):
        return side
    return (entry.size, entry.mtime_ns)


def pair_of(remote: Side, local: Side) -> Pair:
    pair = (remote, local)
    return (
        PAIRS.get(pair, pair)
        if not isinstance(remote, tuple) and not isinstance(local, tuple)
        else pair
    )
