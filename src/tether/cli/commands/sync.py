"""push, pull (and watch): thin commands over tether.sync."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from tether.sync.session import Report

PUSH_HELP = """Mirror the project to every default target (or --to), safely.

Creates, updates and deletes only what tether owns; a file changed on the remote since
the last push is a conflict (exit 3) and is never overwritten unless --force, which keeps
the remote copy as NAME.tether-conflict-<time>.

Examples:

  tether push

  tether push --to gpu src/model.py data/small/

  tether push --dry-run
"""

PULL_HELP = """Bring results back (default: [sync] results), never deleting a local file.

A local file changed since the last pull is a conflict (exit 3), never overwritten
unless --force (which keeps the local copy as NAME.tether-conflict-<time>).

Examples:

  tether pull

  tether pull --from gpu logs/run3
"""


def register(app: typer.Typer) -> None:
    """Add push and pull."""
    app.command("push", help=PUSH_HELP)(push)
    app.command("pull", help=PULL_HELP)(pull)


def push(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(None, help="Only these paths (files or directories)."),
    to: list[str] = typer.Option(None, "--to", help="Target name (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change."),
    force: bool = typer.Option(False, "--force", help="Overwrite conflicts, keeping a backup."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Mirror the project to the targets."""
    _sync(ctx, "push", paths, to, dry_run, force, as_json)


def pull(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(None, help="Remote paths to download."),
    source: str = typer.Option(None, "--on", "--from", help="Target (default: the primary)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change."),
    force: bool = typer.Option(False, "--force", help="Overwrite local changes, keeping a backup."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Bring results back."""
    _sync(ctx, "pull", paths, [source] if source else [], dry_run, force, as_json)


def _sync(
    ctx: typer.Context,
    direction: str,
    paths: list[str] | None,
    names: list[str] | None,
    dry_run: bool,
    force: bool,
    as_json: bool,
) -> None:
    from tether import config as config_module
    from tether import runtime
    from tether.cli.render import print_json
    from tether.errors import ConflictError
    from tether.sync import runner

    config = config_module.load()
    if direction == "pull":
        targets = [config.one(names[0] if names else None)]
    else:
        targets = config.pick(names or [])
    on = runtime.of(ctx.obj)
    reports = on.run(
        runner.sync(
            config, targets, direction, paths or None, force, dry_run, pool=on.pool, scans=on.scans
        )
    )
    if as_json:
        print_json([runner.report_json(report) for report in reports])
    else:
        _show(reports, direction, dry_run)
    from tether.sync.session import raise_for_errors

    raise_for_errors(reports)
    conflicts = [c.path for report in reports for c in report.conflicts]
    if conflicts:
        raise ConflictError(reports[0].target, conflicts, direction)


def _show(reports: list[Report], direction: str, dry_run: bool) -> None:
    from tether.cli.render import console, table

    out = console()
    for report in reports:
        plan = report.plan
        where = f"{report.target}:{report.remote_root}"
        if dry_run:
            rows = [(u.action, u.path) for u in plan.uploads]
            rows += [("delete", d.path) for d in plan.deletes]
            rows += [("CONFLICT", c.path) for c in plan.conflicts]
            if rows:
                table(f"{direction} {where} (dry run)", ["action", "path"], rows)
            else:
                out.print(f"{where}: up to date")
            continue
        verb = "pushed to" if direction == "push" else "pulled from"
        size = _size(report.bytes)
        out.print(
            f"{verb} {where}: {report.created} new, {report.updated} updated, "
            f"{report.deleted} deleted, {size} in {report.seconds:.2f} s"
        )
        for backup in report.backups:
            out.print(f"  kept a backup: {backup}")
        if report.conflicts:
            table(
                f"conflicts on {report.target}",
                ["path", "why"],
                [(c.path, c.reason) for c in report.conflicts],
            )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"
