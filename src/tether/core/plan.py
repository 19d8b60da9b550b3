"""Reconcile a local tree, a remote tree and the last-synced base into a plan (pure).

The planner never touches a disk. Its promises, each proven by property tests:
- a remote path is changed only if it exists locally now, or tether pushed it before and
  it is unchanged on the remote since (invariant 1);
- a remote path that changed since tether last pushed it is a conflict, never overwritten
  or deleted, unless `force` (then the engine keeps a backup) (invariant 2);
- pull never deletes and never overwrites a local change without a conflict (invariant 3).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from tether.core.manifest import DIR, Entry, Manifest


@dataclass(frozen=True, slots=True)
class Upload:
    """Write `entry` (local content) at path; `expect` is what the remote held when scanned."""

    path: str
    entry: Entry
    expect: Entry | None
    backup: bool = False

    @property
    def action(self) -> str:
        """ "update" where the other side held the path when scanned, else "create"."""
        return "update" if self.expect is not None else "create"


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove path on the remote only if it is still `expect`."""

    path: str
    expect: Entry
    backup: bool = False


@dataclass(frozen=True, slots=True)
class Conflict:
    """A path changed on both sides (or never pushed and different); left alone."""

    path: str
    reason: str


@dataclass
class Plan:
    """What a push or pull will do; `same` are paths already identical on both sides."""

    uploads: list[Upload] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    same: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True if there is nothing to write and nothing to delete."""
        return not self.uploads and not self.deletes


def _always(path: str) -> bool:
    return True


def plan_push(
    local: Manifest,
    remote: Manifest,
    base: Manifest,
    synced: Callable[[str], bool] = _always,
    force: bool = False,
    paths: Collection[str] | None = None,
) -> Plan:
    """Plan a push: make remote mirror local on the paths sync owns.

    `local` is already filtered by the ignore rules; `synced(path)` says whether a path that
    is not local now is still under sync (False for ignored and results paths, which are
    never touched). Entries need digests wherever content must be compared. With `paths`,
    only those paths are planned (sync/incremental.py: every other path is known to be in
    sync and unchanged, which the whole plan would find the same).
    """
    result = Plan()
    if paths is None:
        gone: Collection[str] = set(base) - set(local)
        present: Collection[str] = local
    else:
        gone = [path for path in paths if path in base and path not in local]
        present = [path for path in paths if path in local]
    for path in sorted(gone, key=_deepest_first):
        if not synced(path):
            continue
        remote_entry = remote.get(path)
        if remote_entry is None:
            continue
        base_entry = base[path]
        if remote_entry.same_content(base_entry):
            result.deletes.append(Delete(path, remote_entry))
        elif remote_entry.kind == DIR and base_entry.kind == DIR:
            continue
        elif force:
            result.deletes.append(Delete(path, remote_entry, backup=True))
        else:
            result.conflicts.append(
                Conflict(path, "deleted locally but changed on the remote since the last push")
            )
    deleted = {delete.path for delete in result.deletes}
    for path in sorted(present):
        remote_entry = remote.get(path)
        if (
            remote_entry is not None
            and remote_entry.kind == DIR
            and local[path].kind != DIR
            and any(p.startswith(path + "/") and p not in deleted for p in remote)
        ):
            result.conflicts.append(
                Conflict(path, "a directory on the remote holding files tether did not push")
            )
            continue
        _plan_local_path(path, local[path], remote_entry, base.get(path), force, result)
    return result


def _plan_local_path(
    path: str,
    local_entry: Entry,
    remote_entry: Entry | None,
    base_entry: Entry | None,
    force: bool,
    result: Plan,
) -> None:
    if remote_entry is None:
        result.uploads.append(Upload(path, local_entry, None))
    elif local_entry.same_content(remote_entry):
        result.same.append(path)
    elif remote_entry.kind == DIR and local_entry.kind != DIR:
        if base_entry is not None and base_entry.kind == DIR:
            # A directory tether made: its owned children are deleted first; the agent
            # replaces it only if nothing the remote created is left inside.
            result.uploads.append(Upload(path, local_entry, remote_entry))
        else:
            result.conflicts.append(Conflict(path, "a directory on the remote, not on this side"))
    elif base_entry is not None and remote_entry.same_content(base_entry):
        result.uploads.append(Upload(path, local_entry, remote_entry))
    elif force:
        result.uploads.append(Upload(path, local_entry, remote_entry, backup=True))
    elif base_entry is None:
        result.conflicts.append(
            Conflict(path, "exists on the remote with other content and was never pushed")
        )
    else:
        result.conflicts.append(Conflict(path, "changed on the remote since the last push"))


def plan_pull(
    remote: Manifest,
    local: Manifest,
    base: Manifest,
    force: bool = False,
) -> Plan:
    """Plan a pull of `remote` (already limited to the pulled paths) into local.

    Never deletes. `base` is what tether last pulled. A local file that differs from the
    remote is overwritten only if it is still what tether pulled last time.
    """
    result = Plan()
    for path in sorted(remote):
        remote_entry = remote[path]
        local_entry = local.get(path)
        base_entry = base.get(path)
        if local_entry is None:
            result.uploads.append(Upload(path, remote_entry, None))
        elif remote_entry.same_content(local_entry):
            result.same.append(path)
        elif base_entry is not None and remote_entry.same_content(base_entry):
            continue
        elif local_entry.kind == DIR or remote_entry.kind == DIR:
            result.conflicts.append(Conflict(path, "a directory on one side, not on the other"))
        elif base_entry is not None and local_entry.same_content(base_entry):
            result.uploads.append(Upload(path, remote_entry, local_entry))
        elif force:
            result.uploads.append(Upload(path, remote_entry, local_entry, backup=True))
        else:
            result.conflicts.append(Conflict(path, "changed locally since the last pull"))
    return result


def _deepest_first(path: str) -> tuple[int, str]:
    return (-path.count("/"), path)
