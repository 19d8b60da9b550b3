"""The command tree. Each module registers thin commands; heavy imports happen inside them."""

from __future__ import annotations

import typer

HELP = """tether: research on remote machines over your own OpenSSH.

Hosts in ~/.ssh/config, the project mirrored to every target on save, jobs in tmux
against a frozen snapshot, and a remote Python console that survives disconnects.

Examples:

  tether sandbox up box1 && tether init --host box1 --path ~/proj

  tether push            tether watch            tether pull

  tether run --name lr3e-4 -- python train.py --lr 3e-4
"""

MODULES = (
    "hosts", "sandbox", "project", "sync", "watch", "jobs", "housekeeping", "remote", "kernel",
    "env", "misc",
)  # fmt: skip


def build_app() -> typer.Typer:
    """Assemble the Typer app from the command modules (cheap: they import only typer)."""
    import importlib

    app = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
    )
    for name in MODULES:
        try:
            module = importlib.import_module(f"tether.cli.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"tether.cli.commands.{name}":
                raise
            continue
        module.register(app)
    return app
