"""tether init: write tether.toml for this project."""

from __future__ import annotations

import typer

from tether import invocation
from tether.cli.render import say

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


TARGET_HELP = """Add, list or remove targets in tether.toml (other lines are kept as they are).

Examples:

  tether target add gpu2 --host gpu2 --path ~/proj --map ../lib:~/lib

  tether target add cluster --host login1 --path ~/proj --no-default --primary

  tether target ls

  tether target rm gpu2
"""


def register(app: typer.Typer) -> None:
    """Add init, trust and target."""
    app.command("init", help=INIT_HELP)(init)
    app.command("trust", help=TRUST_HELP)(trust)
    target_app = typer.Typer(help=TARGET_HELP, no_args_is_help=True)
    target_app.command("add")(target_add)
    target_app.command("ls")(target_ls)
    target_app.command("rm")(target_rm)
    app.add_typer(target_app, name="target")


def target_add(
    name: str = typer.Argument(..., help="The target's name."),
    host: str = typer.Option(..., "--host", help="An ssh alias (or user@host)."),
    path: str = typer.Option(..., "--path", help="The remote project directory."),
    python: str = typer.Option("python3", "--python", help="Remote interpreter."),
    maps: list[str] = typer.Option(None, "--map", help="LOCAL:REMOTE directory pair."),
    default: bool = typer.Option(True, "--default/--no-default", help="Push to it by default."),
    primary: bool = typer.Option(False, "--primary", help="Single-target commands use it."),
) -> None:
    """Add a target."""
    from tether import config as config_module
    from tether import targets_edit
    from tether.errors import UsageError
    from tether.project import NAME_RE, remote_spelling
    from tether.trust import record

    if not NAME_RE.match(name):
        raise UsageError(f"bad target name {name!r}", "use letters, digits, '_', '.', '-'")
    pairs = []
    for item in maps or []:
        local, sep, remote = item.partition(":")
        if not sep or not local or not remote:
            raise UsageError(f"bad --map {item!r}", "expected LOCAL:REMOTE", "e.g. ../lib:~/lib")
        pairs.append((local, remote_spelling(remote)))
    config = config_module.load()  # the config as it is must be trusted before it grows
    values: dict[str, object] = {"host": host, "path": remote_spelling(path), "python": python}
    values["default"] = default
    written = targets_edit.add(config, name, values, pairs, primary)
    record(written)
    say(f"added target {name} to {written.file}")


def target_rm(name: str = typer.Argument(..., help="The target to remove.")) -> None:
    """Remove a target."""
    from tether import config as config_module
    from tether import targets_edit
    from tether.trust import record

    config = config_module.load(trusted=False)
    was_trusted = _trusted(config)
    written = targets_edit.remove(config, name)
    if was_trusted:
        record(written)
    say(f"removed target {name} from {written.file}")


def _trusted(config: object) -> bool:
    from tether import trust as trust_module

    return trust_module.changes(config) is None  # type: ignore[arg-type]


def target_ls(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List targets."""
    from tether import config as config_module
    from tether.cli.render import print_json, table

    config = config_module.load(trusted=False)  # reading the file contacts nothing
    primary = config.one(None).name if config.targets else None
    rows = [
        {
            "name": t.name,
            "host": t.host,
            "path": t.path,
            "python": t.python,
            "default": t.default or len(config.targets) == 1,
            "primary": t.name == primary,
            "mappings": [{"local": str(m.local), "remote": m.remote} for m in t.mappings],
        }
        for t in config.targets.values()
    ]
    if as_json:
        print_json(rows)
        return
    table(
        None,
        ["name", "host", "path", "default", "primary"],
        [
            (
                r["name"],
                r["host"],
                r["path"],
                "yes" if r["default"] else "",
                "yes" if r["primary"] else "",
            )
            for r in rows
        ],
    )


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
        say(
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

    written = init_project(Path(invocation.cwd()), host, path, target, python, force)
    say(f"wrote {written} (target {target or host!r}, default = true)")
