"""A private `sshd` for a sandbox: its config, its sessions' environment, start and checks.

Used by tether.hosts.sandbox; nothing here knows about ~/.ssh/config or sandbox names.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from tether import invocation
from tether.errors import TetherError
from tether.hosts.processes import alive, terminate

SSHD = "/usr/sbin/sshd"

# Popen objects of the sshd processes this process started, so they get reaped.
_children: dict[int, subprocess.Popen[bytes]] = {}


def write_passwd(path: Path, uid: int, user: str, home: Path) -> None:
    """A copy of /etc/passwd in which the current user's home is the sandbox home."""
    try:
        lines = Path("/etc/passwd").read_text().splitlines()
    except OSError:
        lines = []
    out, found = [], False
    for line in lines:
        fields = line.split(":")
        if len(fields) == 7 and fields[2] == str(uid) and not found:
            fields[5] = str(home)
            if not os.access(fields[6], os.X_OK) or fields[6].endswith(("nologin", "false")):
                fields[6] = "/bin/sh"  # service accounts: the sandbox still needs a shell
            found = True
            line = ":".join(fields)
        out.append(line)
    if not found:
        shell = invocation.getenv("SHELL") or "/bin/sh"
        out.append(f"{user}:x:{uid}:{os.getgid()}::{home}:{shell}")
    path.write_text("\n".join(out) + "\n")


def sshd_config(
    directory: Path, port: int, home: Path, tmpdir: Path, tmux_tmpdir: Path, nss: str | None
) -> str:
    env = session_env(directory, home, tmpdir, tmux_tmpdir, nss)
    lines = [
        "# written by tether sandbox",
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {quote(directory / 'host_ed25519')}",
        "PidFile none",
        f"AuthorizedKeysFile {quote(directory / 'authorized_keys')}",
        "StrictModes no",
        "UsePAM no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password" if os.geteuid() == 0 else "PermitRootLogin no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "X11Forwarding no",
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding yes",
        "MaxSessions 64",
        "MaxStartups 64:30:128",
        "LoginGraceTime 30",
        "Subsystem sftp internal-sftp",
        "SetEnv " + " ".join(quote(f"{key}={value}") for key, value in env.items()),
    ]
    return "\n".join(lines) + "\n"


def session_env(
    directory: Path, home: Path, tmpdir: Path, tmux_tmpdir: Path, nss: str | None
) -> dict[str, str]:
    """Variables every session (and sshd itself) gets: home, temp dirs, nss_wrapper."""
    env = {
        "HOME": str(home),
        "TMPDIR": str(tmpdir),
        "TMUX_TMPDIR": str(tmux_tmpdir),
        "TETHER_SANDBOX_DIR": str(directory),
    }
    if nss is not None:
        env["LD_PRELOAD"] = nss
        env["NSS_WRAPPER_PASSWD"] = str(directory / "passwd")
        env["NSS_WRAPPER_GROUP"] = str(directory / "group")  # no `tty`: see sandbox_nss
    return env


def start_sshd(
    directory: Path, config: Path, port: int, session_env: dict[str, str]
) -> tuple[int, list[str]]:
    """Start sshd detached; return (pid, []) once it listens, or (0, what it logged)."""
    log = directory / "sshd.log"
    offset = log.stat().st_size if log.exists() else 0
    env = {
        key: value
        for key, value in invocation.environ().items()
        if not key.startswith("NSS_WRAPPER_") and key != "LD_PRELOAD"
    }
    env.update(session_env)
    process = subprocess.Popen(
        [SSHD, "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    _children[process.pid] = process
    (directory / "sshd.pid").write_text(f"{process.pid}\n")
    listening = f"Server listening on 127.0.0.1 port {port}"
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _children.pop(process.pid, None)
            return 0, log_lines(log, offset)
        if any(listening in line for line in log_lines(log, offset)) and port_open(port):
            return process.pid, []
        time.sleep(0.02)
    terminate([process.pid], grace_s=5.0, reap=reap)
    return 0, [*log_lines(log, offset), "sshd did not start listening within 5 s"]


def reap() -> None:
    for pid, process in list(_children.items()):
        if process.poll() is not None:
            _children.pop(pid, None)


def is_our_sshd(pid: int, directory: Path) -> bool:
    """True if PID is alive and is the sshd started with this sandbox's config."""
    if pid <= 1 or not alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return False
    # sshd rewrites its title ("sshd: /usr/sbin/sshd -D -f CONFIG ... [listener] ...").
    return b"sshd" in cmdline and str(directory / "sshd_config").encode() in cmdline


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def quote(value: object) -> str:
    """Quote a value for sshd_config if it has spaces."""
    text = str(value)
    if any(char in text for char in '"\\\n'):
        raise TetherError(f"cannot use the path {text!r} in sshd_config", "it has quotes")
    return f'"{text}"' if any(char.isspace() for char in text) else text


def log_lines(log: Path, offset: int = 0) -> list[str]:
    """Non-empty lines of the sshd log from byte OFFSET on."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def last_log_line(log: Path) -> str:
    lines = log_lines(log)
    return lines[-1] if lines else ""
