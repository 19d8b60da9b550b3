"""Push or pull every pair of several targets in parallel, with one progress bar."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether import invocation
from tether.config import Config, Target
from tether.sync.endpoint import LocalEndpoint
from tether.sync.local import check_inside
from tether.sync.pull import pull_pair
from tether.sync.session import Pair, Report, local_source, pairs_for, push_pair
from tether.sync.targets import ChannelPool, each_target
from tether.transport.channel import AgentChannel

if TYPE_CHECKING:
    from tether.sync.kept import KeptScans


async def sync(
    config: Config,
    targets: list[Target],
    direction: str,
    paths: list[str] | None,
    force: bool,
    dry_run: bool,
    cwd: Path | None = None,
    pool: ChannelPool | None = None,
    scans: KeptScans | None = None,
) -> list[Report]:
    """Push or pull the project (and mappings) for each target; reports in target order."""
    only = check_inside(config.root, paths, cwd) if paths else None
    progress = _Bar() if invocation.stderr().isatty() and not dry_run else None

    def chosen(target: Target) -> list[Pair]:
        pairs = pairs_for(config, target)
        return [p for p in pairs if only is None or p.local_root == config.root]

    # A push's local scans begin at once, on one worker thread, while the loop opens the
    # channels: a cold push (an ssh session and an agent start) costs the longer of the
    # two, not their sum.
    # With every channel kept open (the daemon's, warm) the scans stay on the loop, behind
    # the remote scan's request, which a busy worker thread would hold up for the GIL.
    sources: dict[tuple[str, int], LocalEndpoint] = {}
    worker = ThreadPoolExecutor(1, thread_name_prefix="tether-scan")
    cold = pool is None or not all(pool.ready(target) for target in targets)

    async def work(target: Target, channel: AgentChannel) -> list[Report]:
        reports = []
        for index, pair in enumerate(chosen(target)):
            tick = progress.tick if progress is not None else None
            if direction == "push":
                done = await push_pair(
                    channel, pair, config.root, only, force, dry_run, tick, scans=scans,
                    source=sources.get((target.name, index)),
                )  # fmt: skip
            else:
                done = await pull_pair(channel, pair, config.root, only, force, dry_run, tick)
            reports.append(done)
        return reports

    try:
        for target in targets if direction == "push" and cold else ():
            for index, pair in enumerate(chosen(target)):
                source = sources[(target.name, index)] = local_source(pair, config.root, scans)
                source.start_scan(only, worker)
        nested = await each_target(targets, work, pool)
    finally:
        if progress is not None:
            progress.close()
        await _settle(worker, sources.values())
    return [report for reports in nested for report in reports]


async def _settle(worker: ThreadPoolExecutor, sources: Iterable[LocalEndpoint]) -> None:
    """Drop the early scans no push took (its channel failed), once the one running ends:
    none outlives the command (the daemon's kept scans are the next command's)."""
    worker.shutdown(wait=False, cancel_futures=True)
    left = [source.early[1] for source in sources if source.early is not None]
    await asyncio.gather(*left, return_exceptions=True)
    worker.shutdown(wait=True)  # (its thread is idle now: this joins it)


def report_json(report: Report) -> dict[str, Any]:
    """A report as plain data for --json."""
    plan = report.plan
    return {
        "target": report.target,
        "remote": report.remote_root,
        "created": report.created,
        "updated": report.updated,
        "deleted": report.deleted,
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
        "planned": {
            "uploads": [u.path for u in plan.uploads],
            "deletes": [d.path for d in plan.deletes],
        },
        "considered": report.considered,  # paths planned by the daemon; null: the tree
        "conflicts": [{"path": c.path, "reason": c.reason} for c in report.conflicts],
        "backups": report.backups,
        "errors": report.errors,
    }


class _Bar:
    """A rich progress bar on stderr that appears once a transfer passes a few MB."""

    THRESHOLD = 4 << 20

    def __init__(self) -> None:
        self.done = 0
        self.progress: Any = None
        self.task: Any = None

    def tick(self, count: int) -> None:
        self.done += count
        if self.progress is None and self.done >= self.THRESHOLD:
            from rich.console import Console
            from rich.progress import (
                DownloadColumn,
                Progress,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                *Progress.get_default_columns()[:1],
                DownloadColumn(),
                TransferSpeedColumn(),
                transient=True,
                console=Console(file=invocation.stderr(), _environ=invocation.environ()),
            )
            self.progress.start()
            self.task = self.progress.add_task("syncing", total=None)
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
