"""The command tree. Each module registers thin commands; heavy imports happen inside them."""

from __future__ import annotations

from collections.abc import Sequence

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
    "env", "misc", "status",
)  # fmt: skip
# Top-level command -> the module in MODULES that registers it: running one command builds
# only its module's part of the tree (converting every command's parameters costs ~20 ms).
# tests/unit/test_cli_start.py checks this against what the modules register.
COMMAND_MODULES = {
    "host": "hosts", "sandbox": "sandbox", "init": "project", "trust": "project",
    "target": "project", "push": "sync", "pull": "sync", "watch": "watch", "run": "jobs",
    "jobs": "jobs", "logs": "jobs", "attach": "jobs", "kill": "jobs", "wait": "jobs",
    "restart": "jobs", "show": "housekeeping", "rm": "housekeeping", "prune": "housekeeping",
    "tunnel": "remote", "shell": "remote", "console": "kernel", "send": "kernel",
    "kernel": "kernel", "env": "env", "demo": "misc", "status": "status",
}  # fmt: skip


def build_app(modules: Sequence[str] = MODULES) -> typer.Typer:
    """Assemble the Typer app from the command modules (cheap: they import only typer);
    `modules` picks some of them (the part of the tree one command needs)."""
    import importlib

    app = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
    )
    for name in modules:
        try:
            module = importlib.import_module(f"tether.cli.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"tether.cli.commands.{name}":
                raise
            continue
        module.register(app)
    return app
