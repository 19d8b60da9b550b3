"""Push or pull every pair of several targets in parallel, with one progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether import invocation
from tether.config import Config, Target
from tether.sync.local import check_inside
from tether.sync.pull import pull_pair
from tether.sync.session import Report, pairs_for, push_pair
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

    async def work(target: Target, channel: AgentChannel) -> list[Report]:
        reports = []
        for pair in pairs_for(config, target):
            if only is not None and pair.local_root != config.root:
                continue
            tick = progress.tick if progress is not None else None
            if direction == "push":
                done = await push_pair(
                    channel, pair, config.root, only, force, dry_run, tick, scans=scans
                )
            else:
                done = await pull_pair(channel, pair, config.root, only, force, dry_run, tick)
            reports.append(done)
        return reports

    try:
        nested = await each_target(targets, work, pool)
    finally:
        if progress is not None:
            progress.close()
    return [report for reports in nested for report in reports]


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
