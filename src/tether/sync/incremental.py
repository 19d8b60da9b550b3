"""Incremental push planning: a push in the sync daemon costs what changed, not the tree.

After a push, every path is either in sync (local == remote == base, all three recorded,
or on neither side and not in the base) or not: the plan left it to a conflict, an
upload or a delete, or it lies in the base without being local (ignored, results). The
daemon keeps, per base file, a `Mark`: the paths not in sync, the local kept scan's
serial (sync/kept.py) and the remote scan's token (the agent's delta answers) of that
push, and the stamp of the base file it saved. The next push plans only

    changed = local changes since that serial | remote changes since that token
              | the paths not in sync | pending uploads,

every other path being in sync and unchanged on both sides: the whole plan would find it
the same and record it again as it is (property-tested: tests/property/test_incremental.py).
Of those, a path found in sync as the base records it (`in_sync`: the same content on both
sides, the base's entry the local one, both sides' stats the recorded ones) is left out
too, as the whole plan would find it the same and record nothing new: so a push that wrote
much (a first push, its full scans of both trees leaving a mark like any other), whose
writes the next remote delta names again, costs the next push a look at each, not a plan.
A path with an upload pending or in flight is always planned.
Whenever anything of that is not known for certain, the push plans the whole tree, as a
command in its own process always does: no mark (first push, a failed or dry push, a push
of named paths), a full local scan or another consumer of the kept scan in between, a
remote answer that is not a delta against the mark's token, or a base file other than the
one saved (another process pushed, or it was edited).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from tether.core.manifest import Manifest
from tether.core.plan import Plan
from tether.sync.journal import Stamp
from tether.sync.state import Base


@dataclass(frozen=True)
class Mark:
    """What one push left: see the module's docstring."""

    stamp: Stamp | None  # the base file and its journal as saved (state.Base.stamp)
    local: object  # the kept tree (held: never the id of another)
    serial: int  # the kept tree's serial of that push's manifest
    token: str  # the agent's token of that push's remote scan
    unsettled: AbstractSet[str]  # (never changed once in a Mark)


def local_paths(
    mark: Mark | None,
    stamp: Stamp | None,
    local: tuple[object, int, set[str] | None] | None,
    pending: Collection[str],
) -> set[str] | None:
    """The paths changed here or not in sync since the mark, or None: unknown.

    `stamp`: the base file's as loaded; `local`: the kept scan's (tree, serial, changed)."""
    if mark is None or local is None or mark.stamp is None or stamp != mark.stamp:
        return None
    tree, serial, local_changed = local
    if tree is not mark.local or serial != mark.serial + 1 or local_changed is None:
        return None
    return set(local_changed) | mark.unsettled | set(pending)


def changed_paths(
    mark: Mark | None, here: set[str] | None, remote: tuple[str | None, set[str] | None]
) -> set[str] | None:
    """The paths a push must plan (`here`: local_paths', taken), or None: plan them all.

    `remote`: the token the scan's delta answer is against and the paths it names."""
    since, remote_changed = remote
    if mark is None or here is None or remote_changed is None:
        return None
    if since is None or since != mark.token:
        return None
    here.update(remote_changed)  # (here's own set: not a copy of 100,000 paths beside it)
    return here


def in_sync(path: str, local: Manifest, remote: Manifest, base: Base) -> bool:
    """Whether path is in sync as base records it: the whole plan finds it the same on both
    sides (the remote's digest is the base's where its stat is the recorded one) and
    records it again as it is (entry and both stats unchanged)."""
    here = local.get(path)
    known = base.entries.get(path)
    if here is None or (known is not here and known != here):
        return False
    there = remote.get(path)
    return (
        there is not None
        and here.same_content(there)
        and base.local_stat.get(path) == (here.size, here.mtime_ns)
        and base.remote_stat.get(path) == (there.size, there.mtime_ns)
    )


def to_plan(
    changed: set[str], keep: Collection[str], local: Manifest, remote: Manifest, base: Base
) -> set[str]:
    """Of changed_paths' answer, the paths to plan: those not in_sync, and `keep` (uploads
    pending or in flight, which the base records before the plan) always."""
    return {path for path in changed if path in keep or not in_sync(path, local, remote, base)}


def unsettled_after(
    plan: Plan, local: Manifest, base_entries: Manifest, paths: Collection[str] | None
) -> set[str]:
    """Of the planned paths (None: all), those not in sync once the plan's `same` are
    recorded and the paths gone from both sides are forgotten (`base_entries` then)."""
    same = set(plan.same)
    if paths is None:  # one set of the tree's paths (sized once from the dict), no union
        found = set(local)
        found.update(path for path in base_entries if path not in local)
        return {path for path in found if path not in same} if same else found
    return {path for path in paths if path not in same and (path in local or path in base_entries)}


def _everywhere(path: str) -> bool:
    return True


def record_plan(
    base: Base,
    plan: Plan,
    local: Manifest,
    remote: Manifest,
    synced: Callable[[str], bool],
    paths: Collection[str] | None,
    scanned: Callable[[str], bool] = _everywhere,
) -> None:
    """What a push records beside its writes: the plan's `same` paths, and the paths gone
    from both sides (of the planned ones, None: all; and of the `scanned` ones) forgotten."""
    base.record_same(plan.same, local, remote)
    entries = base.entries
    for path in list(entries) if paths is None else [p for p in paths if p in entries]:
        if path not in local and path not in remote and scanned(path) and synced(path):
            base.forget(path)
