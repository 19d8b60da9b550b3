"""demo: the whole tour on a throwaway sandbox."""

from __future__ import annotations

import typer

DEMO_HELP = """The whole tour on a throwaway local sandbox, one narrated line per step.

Starts a real sshd on 127.0.0.1, creates a small project, pushes, edits and pushes
again, runs it remotely, pulls results back, checks the host, and cleans up: no process,
no port left, ~/.ssh/config byte-identical.

Example:

  tether demo
"""


def register(app: typer.Typer) -> None:
    """Add demo."""
    app.command("demo", help=DEMO_HELP)(demo)


def demo() -> None:
    """Run the tour."""
    from tether.cli.demo import run_demo
    from tether.cli.render import console

    out = console(markup=True)  # the tour's own words only
    out.print("[bold]tether demo[/bold]: hosts, sync and results on a local sandbox")
    run_demo(out.print)
