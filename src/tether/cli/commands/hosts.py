"""`tether host ...`: add, list and remove hosts in ~/.ssh/config."""

from __future__ import annotations

from typing import Annotated

import typer

host_app = typer.Typer(
    name="host",
    help="""Manage hosts in ~/.ssh/config (stanzas written where OpenSSH honours them).

\b
Examples:
  tether host add gpu1 --hostname 1.2.3.4 --user ubuntu --identity-file ~/.ssh/k.pem
  tether host ls
  tether host rm gpu1
""",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# `host check` and `host clean` are added to host_app by their own commands (same module).


def register(app: typer.Typer) -> None:
    """Add the `host` command group to the root app."""
    app.add_typer(host_app, name="host")


@host_app.command("add")
def add(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The alias to use with ssh and tether.")
    ],
    hostname: Annotated[
        str, typer.Option("--hostname", metavar="H", help="Real host name or IP address.")
    ],
    user: Annotated[
        str | None, typer.Option("--user", metavar="U", help="Remote user name.")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", metavar="P", min=1, max=65535, help="ssh port (default 22)."),
    ] = None,
    identity_file: Annotated[
        str | None,
        typer.Option("--identity-file", metavar="F", help="Private key file for this host."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing stanza for NAME in place.")
    ] = False,
) -> None:
    """Add `Host NAME` to ~/.ssh/config, before any block that would override it.

    \b
    Example:
      tether host add gpu1 --hostname 1.2.3.4 --user ubuntu --identity-file ~/.ssh/k.pem

    The file keeps its comments, order and other stanzas; a backup is kept in
    ~/.ssh/config.tether.bak and `tether host rm NAME` restores the exact bytes.
    """
    import os
    import sys

    from tether.cli import render
    from tether.hosts import sshconfig

    options: list[tuple[str, str]] = [("HostName", hostname)]
    if user is not None:
        options.append(("User", user))
    if port is not None:
        options.append(("Port", str(port)))
    if identity_file is not None:
        key = identity_file
        if not key.startswith(("~", "/", "%")):
            key = os.path.abspath(key)  # ssh would read a relative path against its cwd
        options.append(("IdentityFile", key))
    warnings = sshconfig.add_host(name, options, force=force)
    path = sshconfig.config_path()
    sys.stdout.write(f"added to {path}:\n{sshconfig.format_stanza(name, options)}")
    if identity_file is not None and not os.path.exists(os.path.expanduser(options[-1][1])):
        render.warn(f"identity file {options[-1][1]} does not exist (yet)")
    for line in warnings:
        render.warn(line)


@host_app.command("ls")
def ls(
    json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
) -> None:
    """List the hosts in ~/.ssh/config and the files it Includes.

    \b
    Example:
      tether host ls
      tether host ls --json
    """
    from tether.cli import render
    from tether.hosts import sshconfig

    entries = sshconfig.list_hosts()
    if json:
        render.print_json(
            [
                {
                    "alias": e.alias,
                    "hostname": e.hostname,
                    "user": e.user,
                    "port": int(e.port) if e.port and e.port.isdigit() else e.port,
                    "identity_file": e.identity_file,
                    "managed": e.managed,
                    "file": e.file,
                    "line": e.line,
                }
                for e in entries
            ]
        )
        return
    if not entries:
        render.note(f"no hosts in {sshconfig.config_path()}; add one with `tether host add`")
        return
    render.table(
        None,
        ["alias", "hostname", "user", "port", "identity file", "managed"],
        [
            (e.alias, e.hostname, e.user, e.port, e.identity_file, "yes" if e.managed else "")
            for e in entries
        ],
    )


@host_app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The alias whose stanza to remove.")],
) -> None:
    """Remove the `Host NAME` stanza from ~/.ssh/config (exactly as it was before `host add`).

    \b
    Example:
      tether host rm gpu1
    """
    import sys

    from tether.errors import HostError
    from tether.hosts import sshconfig

    path = sshconfig.config_path()
    if not sshconfig.remove_host(name):
        raise HostError(
            name,
            f"no `Host {name}` stanza in {path}",
            "run `tether host ls` to see the aliases there",
        )
    sys.stdout.write(f"removed host {name} from {path}\n")
