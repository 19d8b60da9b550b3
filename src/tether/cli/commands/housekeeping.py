"""show, rm, prune: a job's provenance, and removing ended jobs (thin over tether.jobs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from tether import invocation

if TYPE_CHECKING:
    from tether.config import Target
    from tether.transport.channel import AgentChannel

SHOW_HELP = """Print a job's provenance: argv, target and host, commit, the diff (untracked files
that were pushed included), the python's path and version, its packages, GPUs, times,
state, exit code and reason.

Examples:

  tether show lr3

  tether show lr3 --on gpu --json
"""

RM_HELP = """Remove ended jobs: their record, log and snapshot (a snapshot a restart still
uses stays until its last job goes). Running and queued jobs are refused, each with
one line; the others are removed. Prints what each freed.

Examples:

  tether rm lr3 lr2

  tether rm sweep-0 --on gpu --json
"""

PRUNE_HELP = """Remove this project's ended jobs older than DUR on every default target (or
the --on ones): record, log and snapshot. Prints the jobs and bytes freed per target;
--dry-run removes nothing and says what it would free.

Examples:

  tether prune                       # older than 7 days

  tether prune --older-than 12h --dry-run

  tether prune --older-than 30m --on gpu --json
"""


def register(app: typer.Typer) -> None:
    """Add show, rm and prune."""
    app.command("show", help=SHOW_HELP)(show)
    app.command("rm", help=RM_HELP)(rm)
    app.command("prune", help=PRUNE_HELP)(prune)


def _find(targets: list[Target], names: list[str]) -> dict[str, list[Target]]:
    """name -> the targets where this project has a job of that name."""
    import asyncio

    from tether.jobs.backend import backend_for
    from tether.sync.targets import each_target

    async def ask(target: Target, channel: AgentChannel) -> set[str]:
        return {job.name for job in await backend_for(target).jobs(channel, project_only=True)}

    found = asyncio.run(each_target(targets, ask))
    return {
        name: [t for t, have in zip(targets, found, strict=True) if name in have] for name in names
    }


def _targets(on: list[str] | None) -> list[Target]:
    from tether import config as config_module

    config = config_module.load()
    return config.pick(on) if on else list(config.targets.values())


def show(
    name: str = typer.Argument(..., help="Job name."),
    on: str = typer.Option(None, "--on", help="Target where the job ran."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a job's provenance."""
    import asyncio

    from tether.cli.render import print_json
    from tether.jobs import housekeeping
    from tether.jobs.backend import backend_for, locate
    from tether.sync.targets import each_target

    target, _ = asyncio.run(locate(_targets([on] if on else None), name))

    async def ask(target: Target, channel: AgentChannel) -> dict[str, Any]:
        return await backend_for(target).show(channel, name)

    [info] = asyncio.run(each_target([target], ask))
    if as_json:
        print_json(info)
        return
    invocation.stdout().write("".join(line + "\n" for line in housekeeping.show_lines(info)))


def rm(
    names: list[str] = typer.Argument(..., help="Names of ended jobs."),
    on: str = typer.Option(None, "--on", help="Target where the jobs ran."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Remove ended jobs."""
    import asyncio

    from tether.cli.app import say_error
    from tether.cli.render import print_json
    from tether.errors import UsageError
    from tether.jobs import housekeeping
    from tether.sync.targets import each_target

    targets = _targets([on] if on else None)
    where = _find(targets, list(dict.fromkeys(names)))
    several = [name for name, found in where.items() if len(found) > 1]
    if several:
        listed = ", ".join(t.name for t in where[several[0]])
        raise UsageError(
            f"job {several[0]!r} exists on several targets ({listed})", "", "pass --on TARGET"
        )
    wanted: dict[str, list[str]] = {}
    results: list[dict[str, Any]] = []
    for name, found in where.items():
        if found:
            wanted.setdefault(found[0].name, []).append(name)
        else:
            results.append(
                {
                    "name": name,
                    "target": ", ".join(t.name for t in targets),
                    "removed": False,
                    "why": "nojob",
                }
            )
    chosen = [target for target in targets if target.name in wanted]

    async def go(target: Target, channel: AgentChannel) -> list[dict[str, Any]]:
        return await housekeeping.remove(target, channel, wanted[target.name])

    for batch in asyncio.run(each_target(chosen, go)):
        results.extend(batch)
    order = {name: index for index, name in enumerate(names)}
    results.sort(key=lambda entry: order.get(str(entry["name"]), 0))
    if as_json:
        print_json(results)
    for entry in results:
        if entry["removed"] and not as_json:
            kept = "" if entry.get("snapshot") else ", its snapshot kept (a restart uses it)"
            invocation.stdout().write(
                f"removed {entry['name']} on {entry['target']}: "
                f"freed {housekeeping.human(entry['bytes'])}{kept}\n"
            )
        elif not entry["removed"]:
            say_error(housekeeping.refusal(entry))
    if not all(entry["removed"] for entry in results):
        raise SystemExit(1)


def prune(
    older_than: str = typer.Option(
        "7d", "--older-than", metavar="DUR", help="How long ago they ended: 30m, 12h, 7d, 2w."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Remove nothing; say what it would."),
    on: list[str] = typer.Option(None, "--on", help="These targets (default: the defaults)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Remove old ended jobs."""
    import asyncio

    from tether import config as config_module
    from tether.cli.render import print_json
    from tether.jobs import housekeeping
    from tether.sync.targets import each_target

    seconds = housekeeping.parse_duration(older_than)
    config = config_module.load()
    targets = config.pick(on or [])

    async def go(target: Target, channel: AgentChannel) -> dict[str, Any]:
        return await housekeeping.prune(target, channel, seconds, dry_run)

    entries = asyncio.run(each_target(targets, go))
    if as_json:
        print_json(entries)
        return
    invocation.stdout().write("".join(housekeeping.prune_line(entry) + "\n" for entry in entries))
