"""tunnel and shell: the two reasons users still opened a second ssh."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import typer

from tether import invocation
from tether.cli.render import say

if TYPE_CHECKING:
    from tether.config import Target

TUNNEL_HELP = """Forward the target's 127.0.0.1:PORT to local 127.0.0.1:LOCALPORT (default PORT).

Goes through tether's ControlMaster, stays in the foreground, and re-makes the forward on
the same local port after the link returns. Ctrl-C ends it and removes the forward.

Examples:

  tether tunnel 6006            # TensorBoard on the remote, at http://127.0.0.1:6006

  tether tunnel 8888:18888 --on gpu
"""

SHELL_HELP = """An interactive login shell on the target, in its remote project directory.

Exits with the shell's exit code. Examples:

  tether shell

  tether shell --on gpu
"""

CHECK_EVERY_S = 2.0
BACKOFF_MAX_S = 10.0


def register(app: typer.Typer) -> None:
    """Add tunnel and shell."""
    app.command("tunnel", help=TUNNEL_HELP)(tunnel)
    app.command("shell", help=SHELL_HELP)(shell)


# ---- pure parts (unit-tested) -------------------------------------------------------


def parse_ports(spec: str) -> tuple[int, int]:
    """(remote port, local port) from 'PORT' or 'PORT:LOCALPORT'."""
    from tether.errors import UsageError

    remote_text, colon, local_text = spec.partition(":")
    try:
        remote = int(remote_text)
        local = int(local_text) if colon else remote
    except ValueError:
        remote = local = 0
    if not (1 <= remote <= 65535 and 1 <= local <= 65535):
        raise UsageError(f"bad port {spec!r}", "", "use PORT or PORT:LOCALPORT, e.g. 6006:16006")
    return remote, local


def forward_spec(remote: int, local: int) -> str:
    """The -L argument: local 127.0.0.1 only, to the remote's 127.0.0.1."""
    return f"127.0.0.1:{local}:127.0.0.1:{remote}"


def control_argv(host: str, op: str, *extra: str) -> list[str]:
    """`ssh -O OP` on tether's master for host (same ControlPath as the transport)."""
    from tether.transport.ssh import checked_host, control_path

    path = f"ControlPath={control_path()}"
    return ["ssh", "-o", path, "-O", op, *extra, "--", checked_host(host)]


def shell_script(path: str, command: str | None = None) -> str:
    """The remote sh script: cd into path, then exec a login shell (or sh -c command).

    Only '~' and a leading '~/' are left to the remote shell ($HOME); every user-given
    part is quoted.
    """
    if path == "~":
        where = '"$HOME"'
    elif path.startswith("~/"):
        where = '"$HOME"/' + shlex.quote(path[2:])
    else:
        where = shlex.quote(path)
    run = 'exec "${SHELL:-/bin/sh}" -l' if command is None else "exec sh -c " + shlex.quote(command)
    missing = (
        "printf '%s\\n' "
        + shlex.quote(f"tether: error: no project directory {path} on the remote, ")
        + "'run `tether push` first' >&2"
    )
    return f"if cd -- {where} 2>/dev/null; then {run}; else {missing}; exit 1; fi"


def shell_argv(target: Target, command: str | None = None) -> list[str]:
    """The local ssh argv of `tether shell` (a tty unless a command is given)."""
    from tether.transport.ssh import interactive_argv

    script = shell_script(target.path, command)
    return interactive_argv(target.host, ["sh", "-c", script], tty=command is None)


def port_free(port: int) -> bool:
    """True if nothing listens on local 127.0.0.1:port."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ssh binds it
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ---- commands -----------------------------------------------------------------------


def shell(
    on: str = typer.Option(None, "--on", help="Target (default: the default target)."),
    command: str = typer.Option(None, "--command", hidden=True, help="Run this, not a shell."),
) -> None:
    """Log in to the target's project directory."""
    import os

    from tether import config as config_module

    target = config_module.load().one(on)
    argv = shell_argv(target, command)
    os.execvp(argv[0], argv)  # noqa: S606 - argv list, no local shell


def tunnel(
    ports: str = typer.Argument(..., help="PORT or PORT:LOCALPORT."),
    on: str = typer.Option(None, "--on", help="Target (default: the default target)."),
) -> None:
    """Keep a port forward up."""
    import signal
    import time

    from tether import config as config_module
    from tether.errors import TetherError, UsageError

    remote, local = parse_ports(ports)
    target = config_module.load().one(on)
    if not port_free(local):
        raise UsageError(
            f"local port {local} is taken",
            "",
            f"pick another: tether tunnel {remote}:{local + 10000 if local < 55536 else 18080}",
        )
    spec = forward_spec(remote, local)

    def tell(line: str) -> None:
        invocation.stderr().write(line + "\n")
        invocation.stderr().flush()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        _make(target.host, spec)
        say(
            f"tunnel: http://127.0.0.1:{local} -> {target.name}:127.0.0.1:{remote} (Ctrl-C ends it)"
        )
        delay = 1.0
        while True:
            time.sleep(CHECK_EVERY_S)
            if _master_alive(target.host):
                continue
            tell(f"tether: the link to {target.host} dropped; re-making the tunnel")
            while True:
                try:
                    _make(target.host, spec)
                except TetherError as error:
                    tell(f"tether: {error.line()}; retrying in {delay:.0f} s")
                    time.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    continue
                delay = 1.0
                tell(f"tether: tunnel re-made on 127.0.0.1:{local}")
                break
    except KeyboardInterrupt:
        _run(control_argv(target.host, "cancel", "-L", spec))
        tell("tether: tunnel closed")


def _run(argv: list[str]) -> tuple[int, str]:
    import subprocess

    from tether.hosts.processes import run_text

    try:
        done = run_text(argv, timeout=30)
    except subprocess.TimeoutExpired:
        return 255, "ssh did not answer within 30 s"
    return done.returncode, done.stderr.strip()


def _master_alive(host: str) -> bool:
    return _run(control_argv(host, "check"))[0] == 0


def _make(host: str, spec: str) -> None:
    """Start the master if needed and add the forward to it."""
    import asyncio

    from tether.errors import HostError
    from tether.transport.ssh import SshTransport

    asyncio.run(SshTransport(host).ensure_master())
    code, err = _run(control_argv(host, "forward", "-L", spec))
    if code != 0:
        raise HostError(host, err.splitlines()[-1] if err else "ssh -O forward failed")
