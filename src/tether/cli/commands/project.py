"""tether init: write tether.toml for this project."""

from __future__ import annotations

import typer

INIT_HELP = """Write tether.toml here (target NAME, default = true) and ignore .tether/ in git.

Examples:

  tether init --host box1 --path ~/proj

  tether init --host gpu1 --path ~/work/myproj --target gpu --python python3.11
"""


TRUST_HELP = """Review what this project's tether.toml makes tether do, and trust it.

A config comes with every clone: until you trust it, tether contacts no host and runs no
hook because of it. This prints every value that decides what runs or where files go
(hosts, remote paths, python commands, mappings, [sync] include, notify hooks, slurm
extras) and records them for you (in your state dir, never in the project). A later change
of any of them makes tether ask again, naming it.

Examples:

  tether trust --show     # print it, record nothing

  tether trust            # print it and trust it
"""


def register(app: typer.Typer) -> None:
    """Add init and trust."""
    app.command("init", help=INIT_HELP)(init)
    app.command("trust", help=TRUST_HELP)(trust)


def say(line: str) -> None:
    """A plain line (never wrapped: paths and commands must be copyable)."""
    print(line)


def trust(
    show: bool = typer.Option(False, "--show", help="Print the summary; record nothing."),
    as_json: bool = typer.Option(False, "--json", help="The values as JSON."),
) -> None:
    """Review and trust this project's config."""
    import json

    from tether import config as config_module
    from tether import trust as trust_module

    config = config_module.load(trusted=False)
    changed = trust_module.changes(config)
    if as_json:
        state = "trusted" if changed is None else ("changed" if changed else "untrusted")
        print(
            json.dumps(
                {
                    "file": str(config.file),
                    "state": state,
                    "changes": changed or [],
                    "values": trust_module.decisive(config),
                    "recorded": not show,
                }
            )
        )
    else:
        say(f"{config.file} makes tether:")
        for line in trust_module.summary(config):
            say(f"  {line}")
        if changed:
            say("changed since you trusted it:")
            for line in changed:
                say(f"  {line}")
    if show:
        if not as_json:
            state = "trusted" if changed is None else "not trusted (run `tether trust`)"
            say(f"this config is {state}")
        return
    trust_module.record(config)
    if not as_json:
        say(f"trusted {config.file}")


def init(
    host: str = typer.Option(..., "--host", help="An ssh alias (or user@host)."),
    path: str = typer.Option(..., "--path", help="The remote project directory."),
    target: str = typer.Option(None, "--target", help="Target name (default: the host)."),
    python: str = typer.Option("python3", "--python", help="Remote interpreter."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing tether.toml."),
) -> None:
    """Write tether.toml."""
    from pathlib import Path

    from tether.project import init_project

    written = init_project(Path.cwd(), host, path, target, python, force)
    say(f"wrote {written} (target {target or host!r}, default = true)")
