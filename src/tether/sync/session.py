"""Push (and what pull shares): scan both sides, plan with the pure planner, execute pipelined,
record base. Pull itself is tether.sync.pull; both drive a source endpoint into a destination
endpoint (sync/endpoint.py)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.agent import fsops
from tether.agent.wire import ErrorKind, Op
from tether.config import Config, Target
from tether.core.manifest import FILE, Entry, Manifest
from tether.core.plan import Conflict, Plan, plan_push
from tether.errors import TetherError
from tether.sync import incremental, lanes, speculate
from tether.sync.endpoint import Endpoint, LocalEndpoint, RemoteEndpoint
from tether.sync.local import Scope
from tether.sync.state import Base, base_file
from tether.transport.channel import AgentChannel, refusal

if TYPE_CHECKING:
    from tether.sync.kept import KeptScans

CHUNK = lanes.CHUNK  # one request's payload, both ways
RACED = "changed on the remote during the push"
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Pair:
    """One local directory mirrored to one remote directory of a target."""

    target: str
    local_root: Path
    remote_root: str
    scope: Scope
    results: tuple[str, ...] = ()

    def base(self, kind: str, project_root: Path) -> Base:
        return Base.load(base_file(project_root, self.target, self.remote_root, kind))


@dataclass
class Report:
    """What one push or pull of one pair did."""

    target: str
    remote_root: str
    plan: Plan
    created: int = 0
    updated: int = 0
    deleted: int = 0
    bytes: int = 0
    seconds: float = 0.0
    conflicts: list[Conflict] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # How many paths the plan considered when it planned only the changed ones (the sync
    # daemon's incremental push, sync/incremental.py); None: the whole tree.
    considered: int | None = None

    def refused(self, side: Endpoint, op: Op, header: dict[str, Any], path: str, race: str) -> bool:
        """Whether side refused a request, the refusal noted: a path found changed since
        the scan (the write-and-check's CHANGED) is a conflict for `race`, anything else an
        error of this report; the side's internal error is raised."""
        error = refusal(side.host, op, header)
        if error is None:
            return False
        if error.kind is ErrorKind.CHANGED:
            self.conflicts.append(Conflict(path, race))
        elif error.kind is ErrorKind.INTERNAL:
            raise error
        else:
            self.errors.append(error.what)
        return True


def pairs_for(config: Config, target: Target) -> list[Pair]:
    """The project pair plus one per mapping."""
    scope = Scope.of(config.sync.exclude, config.sync.include, config.sync.results)
    result = [Pair(target.name, config.root, target.path, scope, config.sync.results)]
    for mapping in target.mappings:
        result.append(Pair(target.name, mapping.local, mapping.remote, Scope.of((), (), ())))
    return result


def _skip_list(pair: Pair) -> list[str]:
    plain = [pattern.strip("/") for pattern in pair.results if not set("*?[!") & set(pattern)]
    return [".git", ".tether", *plain]


async def push_pair(
    channel: AgentChannel,
    pair: Pair,
    project_root: Path,
    only: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    trust_base: bool = False,
    scans: KeptScans | None = None,
    source: LocalEndpoint | None = None,
) -> Report:
    """Make the remote mirror the local pair on the paths sync owns (see core.plan).

    With `only` and `trust_base` (watch's small batches), the remote is taken to still be
    what tether last recorded instead of being scanned: one round trip instead of two.
    Safe, because every write and delete is checked against that expectation by the agent;
    paths found changed are planned again after a real scan. With `scans` (the sync
    daemon's), a whole-tree push takes the kept local manifest when nothing changed.
    """
    started = time.monotonic()
    base = pair.base("push", project_root)
    pending = list(base.pending)
    # The last push's mark (sync/incremental.py), taken: set again only by a push done well.
    mark = scans.marks.pop(str(base.file), None) if scans is not None and only is None else None
    dest = RemoteEndpoint(channel, pair.remote_root, _skip_list(pair))
    trusted = trust_base and only is not None and not base.pending
    guessed = _remote_from_base(base, only) if trusted and only is not None else None
    scanning: asyncio.Future[Manifest] | None = None
    if guessed is None:
        covering = None if only is None else _covering(only)
        scanning = asyncio.ensure_future(dest.scan(base, covering))
        await asyncio.sleep(0)  # the request leaves now: the remote scans while we do
    source = source or local_source(pair, project_root, scans)
    try:
        local = await source.scan(base, only)
    except BaseException:
        if scanning is not None:
            scanning.cancel()
            await asyncio.gather(scanning, return_exceptions=True)
        raise
    here = incremental.local_paths(mark, base.stamp, source.changes, pending)
    if mark is not None:
        mark = replace(mark, unsettled=frozenset())  # in `here` now (100,000 after a first push)
    speculation = None
    if scanning is not None and not dry_run and not force:
        # Small edits leave now, behind the scan request (see speculate.py).
        speculation = await speculate.start(source, dest, local, base, here)
    if scanning is None:
        assert guessed is not None
        remote = guessed
    else:
        remote = await scanning
    changed = incremental.changed_paths(mark, here, dest.delta)
    if changed is not None:
        sent = speculation.sent.keys() if speculation is not None else set()
        changed = incremental.to_plan(
            changed, {*pending, *base.pending, *sent}, local, remote, base
        )
    if scanning is not None:
        wanted: Collection[str] = (
            set(local) | set(base.entries) | set(base.pending) if changed is None else changed
        )
        await dest.digests(remote, wanted)
        if speculation is None:  # else nothing was pending but what is in flight now
            base.adopt_landed(remote, lambda path: only is None or under(path, only))
    base_entries = base.entries
    if only is not None:
        remote = {p: e for p, e in remote.items() if under(p, only)}
        base_entries = {p: e for p, e in base.entries.items() if under(p, only)}

    def synced(path: str) -> bool:
        if pair.scope.excluded(path):
            return False
        # Still here but not scanned: hidden by .gitignore, so never touched (see plan_push).
        return not os.path.lexists(os.path.join(pair.local_root, path))

    plan = plan_push(local, remote, base_entries, synced, force, changed)
    report = Report(pair.target, pair.remote_root, plan, conflicts=list(plan.conflicts))
    report.considered = None if changed is None else len(changed)
    if dry_run:
        return report
    try:
        todo = plan
        if speculation is not None:

            def settle(header: dict[str, Any], action: str, path: str, entry: Entry) -> None:
                _settle_one(header, action, path, entry, local, base, report, dest)

            todo, outside = await speculation.finish(plan, base, settle)
            report.conflicts = [c for c in report.conflicts if c.path not in outside]
        await _execute_push(source, dest, todo, local, base, report, progress)
    finally:
        # Outside the named paths (`only`), local and remote were not scanned.
        scanned = (lambda path: True) if only is None else (lambda path: under(path, only))
        incremental.record_plan(base, plan, local, remote, synced, changed, scanned)
        base.save()
        report.seconds = time.monotonic() - started
    # A save that took another process's rows (state.Base.save) leaves no mark: the next
    # push plans the whole tree.
    if (
        scans is not None
        and only is None
        and source.changes is not None
        and dest.token
        and not base.merged
    ):
        unsettled = incremental.unsettled_after(plan, local, base.entries, changed)
        unsettled.update(base.pending)
        if speculation is not None:
            unsettled.update(speculation.sent)
        scans.marks[str(base.file)] = incremental.Mark(
            base.stamp, source.changes[0], source.changes[1], dest.token, unsettled
        )
    raced = [c.path for c in report.conflicts if c.reason == RACED]
    if guessed is not None and raced:
        again = await push_pair(channel, pair, project_root, raced, force, False, progress)
        report.conflicts = [c for c in report.conflicts if c.reason != RACED] + again.conflicts
        report.created += again.created
        report.updated += again.updated
        report.deleted += again.deleted
        report.bytes += again.bytes
        report.backups += again.backups
        report.errors += again.errors
        report.seconds = time.monotonic() - started
    return report


def _remote_from_base(base: Base, only: list[str]) -> Manifest | None:
    """What tether last recorded on the remote under `only`; None if a stat is unknown."""
    guessed: Manifest = {}
    for path, entry in base.entries.items():
        if not under(path, only):
            continue
        stat = base.remote_stat.get(path)
        if stat is None:
            return None
        guessed[path] = replace(entry, size=stat[0], mtime_ns=stat[1])
    return guessed


def _covering(paths: list[str]) -> list[str]:
    """The shortest set of prefixes that covers paths (for a scan limited to them)."""
    result: list[str] = []
    for path in sorted(set(paths)):
        if not result or not under(path, [result[-1]]):
            result.append(path)
    return result


def under(path: str, prefixes: list[str]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


async def _execute_push(
    source: LocalEndpoint,
    dest: RemoteEndpoint,
    plan: Plan,
    local: Manifest,
    base: Base,
    report: Report,
    progress: Progress | None,
) -> None:
    digests = {u.path: local[u.path].digest or "" for u in plan.uploads if u.entry.kind == FILE}
    expecting = bool(digests)
    base.expect_uploads(digests, save=False)
    del digests  # the base's pending now

    def on_answer(
        header: dict[str, Any], action: str, path: str, entry: Entry, lane: Endpoint
    ) -> None:
        _settle_one(header, action, path, entry, local, base, report, lane)

    running = asyncio.ensure_future(
        lanes.run(source, dest, plan.deletes, plan.uploads, on_answer, progress)
    )
    try:
        # One step of the lanes hands the first writes to ssh (all of a small push's);
        # the pending record is on disk before any answer can be read.
        await asyncio.sleep(0)
        if expecting:
            base.save_pending()
        await running
    except BaseException:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        raise


def _settle_one(
    header: dict[str, Any],
    action: str,
    path: str,
    entry: Entry,
    local: Manifest,
    base: Base,
    report: Report,
    dest: Endpoint,
) -> None:
    if action in ("create", "update"):
        base.settle_upload(path)
    if action == "chunk":
        refused = refusal(dest.host, Op.PUT, header)
        if refused is not None:
            report.errors.append(refused.what)
        return
    if report.refused(dest, Op.DELETE if action == "delete" else Op.PUT, header, path, RACED):
        return
    backup = header.get("backup")
    if isinstance(backup, str):
        report.backups.append(backup)
    if action == "delete":
        report.deleted += 0 if header.get("kept") else 1
        base.forget(path)
        return
    raw = header.get("entry")
    remote_entry = Entry.from_json(raw) if isinstance(raw, dict) else None
    local_entry = local.get(path)
    if local_entry is not None and local_entry.kind == FILE:
        # Record the local stat only if the bytes sent are the bytes the scan hashed.
        same = entry.digest == local_entry.digest
        base.record(path, entry, remote_entry, local_entry if same else None)
    else:
        base.record(path, entry, remote_entry, local_entry)
    report.bytes += entry.size
    if action == "update":
        report.updated += 1
    else:
        report.created += 1


def local_source(pair: Pair, project_root: Path, scans: KeptScans | None) -> LocalEndpoint:
    """The local side of a push of pair (its tree, digest cache and the daemon's scans)."""
    return LocalEndpoint(
        pair.local_root, pair.scope, lambda: digest_cache(project_root, pair), scans=scans
    )


def digest_cache(project_root: Path, pair: Pair) -> fsops.DigestCache:
    """The local digest cache of a pair (kept in the project's .tether/, mappings too)."""
    return fsops.DigestCache(str(project_root / ".tether"), str(pair.local_root), keep=True)


def raise_for_errors(reports: list[Report]) -> None:
    """A TetherError for the first execution error of any report."""
    for report in reports:
        if report.errors:
            more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
            raise TetherError(f"{report.target}: {report.errors[0]}{more}")
