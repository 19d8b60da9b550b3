"""Push (and what pull shares): scan both sides, plan with the pure planner, execute pipelined,
record base. Pull itself is tether.sync.pull."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.agent import fsops
from tether.agent.wire import Digest, ErrorKind, Op, Scan, scan_key, scans_to_forget
from tether.config import Config, Target
from tether.core.manifest import FILE, Entry, Manifest
from tether.core.plan import Conflict, Plan, plan_push
from tether.errors import TetherError
from tether.sync import lanes, speculate
from tether.sync.local import Scope, fill_local_digests, scan_local
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


async def remote_manifest(
    channel: AgentChannel,
    root: str,
    base: Base,
    need: Collection[str] = (),
    skip: list[str] | None = None,
    only: list[str] | None = None,
    digests: bool = False,
) -> tuple[Manifest, bool]:
    """Scan root on the remote; fill digests for the `need` paths (one extra request at most).

    A channel that scanned the same tree before asks only for what changed since: its agent
    keeps its last answer, and the entries it answers are those of a full scan.
    """
    request = Scan(root, skip, only, digests)
    key = scan_key(root, skip, only, digests)
    memo: dict[str, Any] = channel.scan_memo
    held: tuple[str, dict[str, list[Any]], dict[str, Any]] | None = memo.get(key)
    if held is not None:
        request = replace(request, since=held[0])
    answer = await channel.call(request)
    if held is not None and answer.since == held[0]:
        rows = dict(held[1])
        for row in answer.rows:
            rows[row[0]] = row
        for path in answer.gone:
            rows.pop(path, None)
        built = held[2]
    else:
        rows = {row[0]: row for row in answer.rows}
        built = {}
    memo.pop(key, None)
    memo[key] = (answer.token, rows, built)
    for _ in range(scans_to_forget([len(m[1]) for m in memo.values()])):
        del memo[next(iter(memo))]  # the agent forgets as much (agent/scan.ScanMemo)
    manifest = base.manifest_of_rows(rows.values(), built)
    await fill_remote_digests(channel, root, manifest, need)
    return manifest, answer.exists


async def fill_remote_digests(
    channel: AgentChannel, root: str, manifest: Manifest, paths: Collection[str]
) -> None:
    """Ask the agent (one request) for the digests of those files in manifest lacking one."""
    missing = sorted(
        path
        for path, entry in manifest.items()
        if entry.digest is None and entry.kind == FILE and path in paths
    )
    if not missing:
        return
    digests = await channel.call(Digest(root, missing))
    for path, digest in digests.items():
        if path in manifest and digest is not None:
            manifest[path] = manifest[path].with_digest(digest)


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
    trusted = trust_base and only is not None and not base.pending
    guessed = _remote_from_base(base, only) if trusted and only is not None else None
    scanning: asyncio.Future[tuple[Manifest, bool]] | None = None
    if guessed is None:
        covering = None if only is None else _covering(only)
        scanning = asyncio.ensure_future(
            remote_manifest(channel, pair.remote_root, base, skip=_skip_list(pair), only=covering)
        )
        await asyncio.sleep(0)  # the request leaves now: the remote scans while we do

    def scan() -> Manifest:
        found = scan_local(pair.local_root, pair.scope, only)
        return fill_local_digests(pair.local_root, found, digest_cache(project_root, pair))

    try:
        if scans is not None and only is None:
            cache = lambda: digest_cache(project_root, pair)  # noqa: E731
            local = scans.manifest(pair.local_root, pair.scope, scan, cache)
        else:
            local = scan()
    except BaseException:
        if scanning is not None:
            scanning.cancel()
            await asyncio.gather(scanning, return_exceptions=True)
        raise
    speculation = None
    if scanning is not None and not dry_run and not force:
        # Small edits leave now, behind the scan request (see speculate.py).
        speculation = await speculate.start(channel, pair.remote_root, pair.local_root, local, base)
    if scanning is None:
        assert guessed is not None
        remote = guessed
    else:
        remote, _ = await scanning
        need = set(local) | set(base.entries) | set(base.pending)
        await fill_remote_digests(channel, pair.remote_root, remote, need)
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

    plan = plan_push(local, remote, base_entries, synced, force)
    report = Report(pair.target, pair.remote_root, plan, conflicts=list(plan.conflicts))
    if dry_run:
        return report
    try:
        todo = plan
        if speculation is not None:

            def settle(header: dict[str, Any], action: str, path: str, entry: Entry) -> None:
                _settle_one(header, action, path, entry, local, base, report, channel)

            todo, outside = await speculation.finish(plan, base, settle)
            report.conflicts = [c for c in report.conflicts if c.path not in outside]
        await _execute_push(channel, pair, todo, local, remote, base, report, progress)
    finally:
        base.record_same(plan.same, local, remote)
        for path in list(base.entries):
            if only is not None and not under(path, only):
                continue  # outside the named paths: local and remote were not scanned
            if path not in local and path not in remote and synced(path):
                base.forget(path)
        base.save()
        report.seconds = time.monotonic() - started
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
    channel: AgentChannel,
    pair: Pair,
    plan: Plan,
    local: Manifest,
    remote: Manifest,
    base: Base,
    report: Report,
    progress: Progress | None,
) -> None:
    base.expect_uploads(
        {u.path: local[u.path].digest or "" for u in plan.uploads if u.entry.kind == FILE}
    )

    def on_answer(
        header: dict[str, Any], action: str, path: str, entry: Entry, lane: AgentChannel
    ) -> None:
        _settle_one(header, action, path, entry, local, base, report, lane)

    await lanes.run(
        channel,
        pair.remote_root,
        pair.local_root,
        plan.deletes,
        plan.uploads,
        on_answer,
        progress,
    )


def _settle_one(
    header: dict[str, Any],
    action: str,
    path: str,
    entry: Entry,
    local: Manifest,
    base: Base,
    report: Report,
    channel: AgentChannel,
) -> None:
    if action in ("create", "update"):
        base.settle_upload(path)
    refused = refusal(channel.host, Op.DELETE if action == "delete" else Op.PUT, header)
    if action == "chunk":
        if refused is not None:
            report.errors.append(refused.what)
        return
    if refused is not None:
        if refused.kind is ErrorKind.CHANGED:
            report.conflicts.append(Conflict(path, RACED))
            return
        if refused.kind is ErrorKind.INTERNAL:
            raise refused
        report.errors.append(refused.what)
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


def digest_cache(project_root: Path, pair: Pair) -> fsops.DigestCache:
    """The local digest cache of a pair (kept in the project's .tether/, mappings too)."""
    return fsops.DigestCache(str(project_root / ".tether"), str(pair.local_root))


def raise_for_errors(reports: list[Report]) -> None:
    """A TetherError for the first execution error of any report."""
    for report in reports:
        if report.errors:
            more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
            raise TetherError(f"{report.target}: {report.errors[0]}{more}")
