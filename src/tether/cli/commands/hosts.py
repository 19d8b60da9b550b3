"""`tether host ...`: add, list and remove hosts in ~/.ssh/config."""

from __future__ import annotations

from typing import Annotated

import typer

from tether import invocation

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

    from tether.cli import render
    from tether.hosts import sshconfig, sshtext

    options: list[tuple[str, str]] = [("HostName", hostname)]
    if user is not None:
        options.append(("User", user))
    if port is not None:
        options.append(("Port", str(port)))
    if identity_file is not None:
        key = identity_file
        if not key.startswith(("~", "/", "%")):
            key = os.path.normpath(
                invocation.absolute(key)
            )  # ssh would read a relative path against its cwd
        options.append(("IdentityFile", key))
    warnings = sshconfig.add_host(name, options, force=force)
    path = sshconfig.config_path()
    invocation.stdout().write(f"added to {path}:\n{sshtext.format_stanza(name, options)}")
    if identity_file is not None and not os.path.exists(invocation.expanduser(options[-1][1])):
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

    from tether.errors import HostError
    from tether.hosts import sshconfig

    path = sshconfig.config_path()
    if not sshconfig.remove_host(name):
        raise HostError(
            name,
            f"no `Host {name}` stanza in {path}",
            "run `tether host ls` to see the aliases there",
        )
    invocation.stdout().write(f"removed host {name} from {path}\n")


CHECK_HELP = """Check a host in one round trip: reachable, RTT, python, tmux, ipykernel, GPUs, disk.

Examples:

  tether host check box1

  tether host check gpu1 --python python3.11 --json
"""


@host_app.command("check", help=CHECK_HELP)
def check(
    name: str = typer.Argument(..., help="An ssh alias."),
    python: str = typer.Option(
        None, "--python", help="Remote interpreter to probe (default: the target's, else python3)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check a host."""
    import asyncio

    from tether.cli.render import console, print_json, warn
    from tether.envs.client import env_line
    from tether.errors import HostError
    from tether.hosts.check import CHECK_TIMEOUT_S, check_host, project_env, target_python

    python = python or target_python(name)
    env = project_env(name)
    try:
        report = asyncio.run(asyncio.wait_for(check_host(name, python, env), CHECK_TIMEOUT_S))
    except TimeoutError:
        raise HostError(
            name, f"no answer within {CHECK_TIMEOUT_S:.0f} s", "check the network, VPN or HostName"
        ) from None
    if as_json:
        print_json(report.to_json())
    elif report.reachable:
        probe = report.probe
        gpus = probe.get("gpus") or []
        gpu_text = ", ".join(
            f"#{g['index']} {g['name']} {g['memory_used']}/{g['memory_total']} MiB" for g in gpus
        )
        free = probe.get("disk_free", 0) / 2**30
        from rich.text import Text

        out = console()
        out.print(
            Text.assemble((name, "bold"), f": reachable (connect {report.connect_seconds:.2f} s)")
        )
        out.print(f"  round trip  {report.rtt_ms:.1f} ms")
        out.print(f"  python      {probe.get('python')} ({probe.get('python_path')})")
        out.print(f"  tmux        {probe.get('tmux') or 'missing'}")
        out.print(f"  ipykernel   {probe.get('ipykernel') or 'missing'}")
        out.print(f"  GPUs        {gpu_text or 'none (no nvidia-smi)'}")
        out.print(f"  disk free   {free:.1f} GiB at {probe.get('disk_path')}")
        if probe.get("env"):
            out.print(f"  env         {env_line(probe['env'])}", markup=False)
        for line in report.warnings:
            warn(line)
    if not report.reachable:
        raise HostError(
            name, report.error or "unreachable", "check its stanza with `tether host ls`"
        )


CLEAN_HELP = """Remove everything tether put on a host (~/.cache/tether, ~/.local/share/tether).

Job records, logs, snapshots and kernels' state go with it; the project directories stay.
Refused while jobs run or are queued or kernels live there (any project's): --force
stops them first (kills the jobs, stops the kernels) and says so.

Examples:

  tether host clean gpu1 --yes

  tether host clean gpu1 --yes --force
"""


@host_app.command("clean", help=CLEAN_HELP)
def clean(
    name: str = typer.Argument(..., help="An ssh alias."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    force: bool = typer.Option(False, "--force", help="Stop running jobs and kernels first."),
    python: str = typer.Option("python3", "--python", help="Remote interpreter for the agent."),
) -> None:
    """Remove tether's remote state."""
    import asyncio

    from tether.cli.render import console, warn
    from tether.jobs.housekeeping import busy_line, host_busy, stopped_lines
    from tether.transport.ssh import SshTransport

    answer = host_busy(name, python, stop=False, force=force, warn=warn)
    busy = busy_line(name, answer) if answer is not None else None
    if busy and not force:
        from tether.errors import JobError

        raise JobError(
            busy,
            "host clean would delete their snapshots, logs and state",
            "stop them (tether kill, tether kernel stop) or pass --force to stop them first",
        )
    ask = f"remove ~/.cache/tether and ~/.local/share/tether on {name}?"
    if busy:
        ask = f"{busy}: stop them, then remove ~/.cache/tether and ~/.local/share/tether?"
    if not yes and not typer.confirm(ask):
        raise typer.Abort()
    out = console()
    if busy:
        stopped = host_busy(name, python, stop=True, force=force, warn=warn) or {}
        for line in stopped_lines(stopped):
            out.print(f"{name}: {line}")
    script = 'rm -rf -- "$HOME/.cache/tether" "$HOME/.local/share/tether"'
    result = asyncio.run(SshTransport(name).run(["sh", "-c", script]))
    if result.returncode != 0:
        from tether.errors import RemoteError

        raise RemoteError(name, "host clean", result.stderr.decode(errors="replace"))
    out.print(f"{name}: removed tether's files")
