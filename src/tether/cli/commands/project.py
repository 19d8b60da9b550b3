"""tether init: write tether.toml for this project."""

from __future__ import annotations

import typer

INIT_HELP = """Write tether.toml here (target NAME, default = true) and ignore .tether/ in git.

Examples:

  tether init --host box1 --path ~/proj

  tether init --host gpu1 --path ~/work/myproj --target gpu --python python3.11
"""


def register(app: typer.Typer) -> None:
    """Add init."""
    app.command("init", help=INIT_HELP)(init)


def init(
    host: str = typer.Option(..., "--host", help="An ssh alias (or user@host)."),
    path: str = typer.Option(..., "--path", help="The remote project directory."),
    target: str = typer.Option(None, "--target", help="Target name (default: the host)."),
    python: str = typer.Option("python3", "--python", help="Remote interpreter."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing tether.toml."),
) -> None:
    """Write tether.toml."""
    from pathlib import Path

    from tether.cli.render import console
    from tether.project import init_project

    written = init_project(Path.cwd(), host, path, target, python, force)
    console().print(f"wrote {written} (target {target or host!r}, default = true)")
