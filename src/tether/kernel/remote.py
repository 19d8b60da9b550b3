"""The client side of remote kernels: agent requests, forwards, the local connection file.

The kernel's five channels are forwarded through the host's ControlMaster (`ssh -O
forward -L 127.0.0.1:LPORT:SOCKET`), and a local connection file (0600, in tether's
0700 runtime dir) points jupyter_client at the local ports. The ports are kept across
calls (the file remembers them) so a reconnect re-makes the same forwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from tether.config import Target
from tether.errors import HostError
from tether.kernel.names import kernel_name as kernel_name
from tether.kernel.names import local_file as local_file
from tether.transport.ssh import SshTransport, control_path

CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
RECORDER = Path(__file__).with_name("recorder.py")


def python_argv(target: Target) -> list[str]:
    return target.python_argv


async def ensure(target: Target, name: str, restart: bool = False) -> dict[str, Any]:
    """Start the kernel unless it runs; the agent's answer (record, connection, started)."""
    from tether.sync.targets import open_channel

    channel = await open_channel(target)
    try:
        answer, _ = await channel.request(
            "kernel_start",
            RECORDER.read_bytes(),
            name=name,
            root=target.path,
            python=python_argv(target),
            restart=restart,
        )
    finally:
        await channel.close()
    return answer


async def ask(target: Target, op: str, **fields: Any) -> dict[str, Any]:
    """One agent request on the target (kernel_list, kernel_stop, kernel_info, ...)."""
    from tether.sync.targets import open_channel

    channel = await open_channel(target)
    try:
        answer, _ = await channel.request(op, **fields)
    finally:
        await channel.close()
    return answer


def free_ports(count: int) -> list[int]:
    held = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def forward_specs(remote: dict[str, Any], ports: dict[str, int]) -> list[str]:
    """-L specs binding 127.0.0.1 locally to the remote sockets (ipc) or loopback ports."""
    specs = []
    for channel in CHANNELS:
        if remote.get("transport") == "ipc":
            where = f"{remote['ip']}-{remote[channel]}"
        else:
            where = f"127.0.0.1:{remote[channel]}"
        specs.append(f"127.0.0.1:{ports[channel]}:{where}")
    return specs


def forward_argv(host: str, specs: list[str], cancel: bool = False) -> list[str]:
    argv = ["ssh", "-o", f"ControlPath={control_path()}", "-O", "cancel" if cancel else "forward"]
    for spec in specs:
        argv += ["-L", spec]
    return [*argv, host]


def local_info(remote: dict[str, Any], ports: dict[str, int]) -> dict[str, Any]:
    """The local connection dict: the remote's key and scheme, the local ports."""
    info: dict[str, Any] = {
        "transport": "tcp",
        "ip": "127.0.0.1",
        "key": remote["key"],
        "signature_scheme": remote.get("signature_scheme", "hmac-sha256"),
        "kernel_name": "",
    }
    info.update(ports)
    return info


def write_private(path: Path, data: dict[str, Any]) -> None:
    """JSON at path, mode 0600, written to a temporary name and renamed."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def _previous_ports(path: Path, key: str) -> dict[str, int] | None:
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or old.get("key") != key:
        return None
    try:
        return {channel: int(old[channel]) for channel in CHANNELS}
    except (KeyError, TypeError, ValueError):
        return None


async def connect(
    target: Target, name: str, remote: dict[str, Any], same_ports: bool = False
) -> Path:
    """Forward the kernel's channels through the master; the local connection file.

    The ports of the previous file for this kernel are reused when free; with same_ports
    (a reconnect: clients hold those ports) no others are tried.
    """
    transport = SshTransport(target.host)
    await transport.ensure_master()
    path = local_file(target, name)
    ports = _previous_ports(path, remote["key"])
    for attempt in range(1 if same_ports else 3):
        if ports is None or attempt:
            ports = dict(zip(CHANNELS, free_ports(len(CHANNELS)), strict=True))
        done = subprocess.run(
            forward_argv(target.host, forward_specs(remote, ports)),
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode == 0:
            write_private(path, local_info(remote, ports))
            return path
    raise HostError(target.host, "could not forward the kernel's ports", done.stderr.strip())
