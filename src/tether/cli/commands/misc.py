"""demo (and status): commands that span the other parts."""

from __future__ import annotations

import typer

DEMO_HELP = """The whole tour on a throwaway local sandbox, one narrated line per step.

Starts a real sshd on 127.0.0.1, creates a small project, pushes, edits and pushes
again, runs it remotely, pulls results back, checks the host, and cleans up: no process,
no port left, ~/.ssh/config byte-identical.

Example:

  tether demo
"""


STATUS_HELP = """Every target at a glance, asked in parallel: reachable, load, GPUs, disk, jobs.

GPUs count as free when no process runs on them, less than 1 GiB of their memory is
used and no tether job holds them. --json prints one object per target.

Examples:

  tether status

  tether status --json
"""


def register(app: typer.Typer) -> None:
    """Add demo and status."""
    app.command("demo", help=DEMO_HELP)(demo)
    app.command("status", help=STATUS_HELP)(status)


def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show every target of the project."""
    import asyncio
    import sys

    from tether import config as config_module
    from tether.cli.render import print_json
    from tether.envs.spec import find
    from tether.jobs import status as status_module

    config = config_module.load()
    entries = asyncio.run(status_module.gather(list(config.targets.values()), find(config)))
    if as_json:
        print_json(entries)
        return
    sys.stdout.write("".join(line + "\n" for line in status_module.lines(entries)))


def demo() -> None:
    """Run the tour."""
    from tether.cli.demo import run_demo
    from tether.cli.render import console

    out = console(markup=True)  # the tour's own words only
    out.print("[bold]tether demo[/bold]: hosts, sync and results on a local sandbox")
    run_demo(out.print)
