"""Incremental push planning (sync/incremental.py) plans what the whole plan would.

Random histories of the planner model (test_plan_invariants.World: both trees edited,
pushes with remote races, cut pushes, pulls) are replayed; at every push after the first,
the push is planned twice: whole, and only on a changed set made the way the daemon makes
it (the local paths changed since the last push's scan, the remote paths changed since
the last push's scan, incremental.unsettled_after of the last push) plus random extra
paths. Both must give the same uploads, deletes and conflicts, and record the same base
(entries and both sides' stats). A changed set one true change short must be caught.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from tests.property.test_plan_invariants import STEPS, Cut, Push, Step, World, _manifest, synced
from tether.core.manifest import Manifest
from tether.core.plan import Plan, plan_push
from tether.sync import incremental
from tether.sync.state import Base

EXTRAS = st.lists(st.integers(min_value=0, max_value=200), max_size=60)
Case = tuple[list[Step], list[int], int | None]
Unsettled = Callable[[Plan, Manifest, Manifest, "set[str] | None"], set[str]]


def _diff(before: Manifest, after: Manifest) -> set[str]:
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


def _follow(base: Base, model: Manifest) -> None:
    """Bring base to the model's entries (what the writes recorded): a path the model wrote
    or forgot since is taken over without stats (as after a cut: unknown)."""
    for path in set(base.entries) | set(model):
        entry = model.get(path)
        if entry is None:
            base.forget(path)
        elif base.entries.get(path) != entry:
            base.forget(path)
            base.record(path, entry, None, None)


def _recorded(
    base: Base, plan: Plan, local: Manifest, remote: Manifest, paths: set[str] | None
) -> Base:
    after = base.copy()
    incremental.record_plan(after, plan, local, remote, synced, paths)
    return after


def _mismatches(case: Case, unsettled_after: Unsettled = incremental.unsettled_after) -> list[str]:
    """Replay the steps; at each push, how the incremental plan differs from the whole one.

    `drop`: remove the drop-th (mod size) path of each push's true changes from its
    changed set (the mutant: a changed set that misses a change)."""
    steps, extras, drop = case
    world = World(check_convergence=False)
    last: tuple[Manifest, Manifest, set[str]] | None = None  # scanned local, remote; unsettled
    found: list[str] = []
    picks = iter(extras)
    real = Base(Path("/nonexistent/base.json"))  # the base with both sides' stats
    for number, step in enumerate(steps):
        if not isinstance(step, (Push, Cut)):
            world.apply(step)
            continue
        local = _manifest(world.local, synced)
        remote = dict(world.remote)
        base = dict(world.base)
        _follow(real, base)
        whole = plan_push(local, remote, base, synced, step.force)
        changed: set[str] | None = None
        if last is not None:
            true = _diff(last[0], local) | _diff(last[1], remote) | last[2]
            if drop is not None and true:
                true.discard(sorted(true)[drop % len(true)])
            known = sorted(set(local) | set(remote) | set(base))
            extra = {known[next(picks, 0) % len(known)] for _ in range(3)} if known else set()
            changed = true | (extra if drop is None else set())
            some = plan_push(local, remote, base, synced, step.force, changed)
            for what in ("uploads", "deletes", "conflicts"):
                if getattr(some, what) != getattr(whole, what):
                    found.append(
                        f"step {number}: {what} {getattr(some, what)} != {getattr(whole, what)}"
                    )
            got = _recorded(real, some, local, remote, changed)
            want = _recorded(real, whole, local, remote, None)
            for what in ("entries", "remote_stat", "local_stat"):
                if getattr(got, what) != getattr(want, what):
                    found.append(f"step {number}: the base's {what} differ")
        else:
            some = whole
        real = _recorded(real, whole, local, remote, None)
        world.apply(step)
        unsettled = unsettled_after(some, local, world.base, changed)
        last = (local, remote, unsettled)
    return found


CASES = st.tuples(STEPS, EXTRAS, st.none())


@settings(max_examples=400, deadline=None)
@given(CASES)
def test_incremental_plan_is_the_whole_plan(case: Case) -> None:
    assert _mismatches(case) == []


def test_a_changed_set_missing_a_change_is_caught() -> None:
    """The mutant: trust a changed set one path short of the true changes."""
    short = st.tuples(STEPS, EXTRAS, st.integers(min_value=0, max_value=50))
    found = find(
        short,
        lambda case: bool(_mismatches(case)),
        settings=settings(max_examples=3000, database=None, deadline=None, phases=[Phase.generate]),
    )
    assert _mismatches(found)


def test_forgetting_the_paths_left_out_of_sync_is_caught() -> None:
    """The other mutant: a changed set without the paths the last push left out of sync."""
    found = find(
        CASES,
        lambda case: bool(_mismatches(case, lambda *_: set())),
        settings=settings(max_examples=3000, database=None, deadline=None, phases=[Phase.generate]),
    )
    assert _mismatches(found, lambda *_: set())
