"""status: every target at a glance (served by the sync daemon, on its kept channels)."""

from __future__ import annotations

import typer

from tether import invocation

STATUS_HELP = """Every target at a glance, asked in parallel: reachable, load, GPUs, disk, jobs.

GPUs count as free when no process runs on them, less than 1 GiB of their memory is
used and no tether job holds them. --json prints one object per target.

Examples:

  tether status

  tether status --json
"""


def register(app: typer.Typer) -> None:
    """Add status."""
    app.command("status", help=STATUS_HELP)(status)


def status(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Show every target of the project."""

    from tether import config as config_module
    from tether import runtime
    from tether.cli.render import print_json
    from tether.envs.spec import find
    from tether.jobs import status as status_module

    config = config_module.load()
    here = runtime.of(ctx.obj)
    entries = here.run(status_module.gather(list(config.targets.values()), find(config), here))
    if as_json:
        print_json(entries)
        return
    invocation.stdout().write("".join(line + "\n" for line in status_module.lines(entries)))
