"""Incremental push planning (sync/incremental.py) plans what the whole plan would.

Random histories of the planner model (test_plan_invariants.World: both trees edited,
pushes with remote races, cut pushes, pulls) are replayed; at every push after the first,
the push is planned twice: whole, and only on a changed set made the way the daemon makes
it (the local paths changed since the last push's scan, the remote paths changed since
the last push's scan, incremental.unsettled_after of the last push) plus random extra
paths, less the paths found in sync as the base records them (incremental.to_plan: the
base holds both sides' stats, each write recording the remote's as the agent answers it,
so the push after a first push finds its writes in sync). Both must give the same uploads,
deletes and conflicts, and record the same base (entries and both sides' stats). A changed
set one true change short, and a to_plan that trusts the base without the remote, must be
caught.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from tests.property.test_plan_invariants import (
    STEPS,
    Cut,
    Edit,
    Push,
    Step,
    World,
    Write,
    _manifest,
    synced,
)
from tether.core.manifest import Manifest
from tether.core.plan import Plan, plan_push
from tether.sync import incremental
from tether.sync.state import Base

EXTRAS = st.lists(st.integers(min_value=0, max_value=200), max_size=60)
Case = tuple[list[Step], list[int], int | None]
Unsettled = Callable[[Plan, Manifest, Manifest, "set[str] | None"], set[str]]
ToPlan = Callable[[set[str], "set[str]", Manifest, Manifest, Base], set[str]]


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


def _written(base: Base, before: Manifest, world: World, local: Manifest) -> None:
    """Record what a push wrote as its answers do: the entry sent, the remote's stat after
    the write, the local stat where the bytes sent are the local file's."""
    for path, entry in world.base.items():
        there = world.remote.get(path)
        if there is not None and there != before.get(path) and there.same_content(entry):
            here = local.get(path)
            base.record(path, entry, there, here if here == entry else None)


def _recorded(
    base: Base, plan: Plan, local: Manifest, remote: Manifest, paths: set[str] | None
) -> Base:
    after = base.copy()
    incremental.record_plan(after, plan, local, remote, synced, paths)
    return after


def _mismatches(
    case: Case,
    unsettled_after: Unsettled = incremental.unsettled_after,
    to_plan: ToPlan = incremental.to_plan,
) -> list[str]:
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
            changed = to_plan(true | (extra if drop is None else set()), set(), local, remote, real)
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
        if isinstance(step, Push):
            _written(real, remote, world, local)
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


def _trusting(
    changed: set[str], keep: set[str], local: Manifest, remote: Manifest, base: Base
) -> set[str]:
    """A to_plan that takes a path unchanged here as in sync, without looking at the remote."""
    return {path for path in changed if local.get(path) != base.entries.get(path)}


def test_a_to_plan_that_trusts_the_base_without_the_remote_is_caught() -> None:
    found = find(
        CASES,
        lambda case: bool(_mismatches(case, to_plan=_trusting)),
        settings=settings(max_examples=3000, database=None, deadline=None, phases=[Phase.generate]),
    )
    assert _mismatches(found, to_plan=_trusting)


def test_the_push_after_a_first_push_finds_the_writes_in_sync() -> None:
    """A first push (whole: no mark) uploads everything; the next one's changed set, all of
    those writes as the remote delta names them again, shrinks to what changed since."""
    steps: list[Step] = [
        Write("local", "a.py", "a"),
        Write("local", "pkg/b.py", "b"),
        Write("local", "pkg/c.py", "c"),
        Push(),
        Edit("local", 0, "a2"),
        Push(),
        Push(),
    ]
    world = World(check_convergence=False)
    real = Base(Path("/nonexistent/base.json"))
    sizes = []
    last: tuple[Manifest, Manifest] | None = None
    for step in steps:
        if not isinstance(step, Push):
            world.apply(step)
            continue
        local, remote = _manifest(world.local, synced), dict(world.remote)
        _follow(real, dict(world.base))
        whole = plan_push(local, remote, dict(world.base), synced)
        if last is not None:
            changed = incremental.to_plan(
                _diff(last[0], local) | _diff(last[1], remote), set(), local, remote, real
            )
            sizes.append(len(changed))
        real = _recorded(real, whole, local, remote, None)
        world.apply(step)
        _written(real, remote, world, local)
        last = (local, remote)
    assert sizes == [1, 0], sizes  # the edited file, then nothing
    assert _mismatches((steps, [], None)) == []
