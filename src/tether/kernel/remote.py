"""The client side of remote kernels: agent requests, forwards, the local connection file.

The kernel's five channels are forwarded through the host's ControlMaster to unix sockets
in tether's 0700 runtime dir (`ssh -O forward -L /local/socket:REMOTE`, REMOTE being the
kernel's own unix socket or its 127.0.0.1 port), never to local TCP ports, which any
local user could connect to and read iopub from. The local connection file (0600, beside
them) says transport "ipc" with ip = the sockets' prefix: Jupyter's ipc address is
`ipc://{ip}-{port}`, so the sockets are `{prefix}-1` .. `{prefix}-5`. The prefix is named
after (host, kernel, key), so a reconnect re-makes the same forwards on the same sockets
and every client's zmq sockets find them again; `disconnect` cancels them and removes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tether.agent.wire import Frame, Request
from tether.agent.wire_jobs import KernelStart
from tether.config import Target
from tether.envs.spec import EnvSpec
from tether.errors import HostError, UsageError
from tether.kernel.names import kernel_name as kernel_name
from tether.kernel.names import kernels_dir, socket_prefix
from tether.kernel.names import local_file as local_file
from tether.transport.ssh import SshTransport, checked_host, control_path

CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
RECORDER = Path(__file__).with_name("recorder.py")
LOCAL_PORTS = {channel: number for number, channel in enumerate(CHANNELS, 1)}
FORWARDS = "tether_forwards"  # the local file's -L specs, for `disconnect`
SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
LOCK_WAIT_S = 60.0


def python_argv(target: Target) -> list[str]:
    return target.python_argv


async def ensure(
    target: Target, name: str, restart: bool = False, spec: EnvSpec | None = None
) -> dict[str, Any]:
    """Start the kernel unless it runs; the agent's answer (record, connection, started).

    With the project's env spec the kernel runs in its env (built first where missing)."""
    from tether.envs.client import in_env
    from tether.sync.targets import open_channel

    request = KernelStart(
        name,
        target.path,
        restart=restart,
        autoreload=target.autoreload,
        python=python_argv(target),
        env_spec=None if spec is None else spec.wire(False),
        payload=RECORDER.read_bytes(),
    )
    channel = await open_channel(target)
    try:
        answer, _ = await in_env(
            channel,
            target,
            spec,
            True,
            lambda: channel.call(request),
        )
    finally:
        await channel.close()
    return answer


async def ask(target: Target, request: Request[Frame]) -> dict[str, Any]:
    """One agent request on the target (KernelList(), KernelStop(name), ...): its answer."""
    from tether.sync.targets import open_channel

    channel = await open_channel(target)
    try:
        answer, _ = await channel.call(request)
    finally:
        await channel.close()
    return answer


def remote_end(remote: dict[str, Any], channel: str) -> str:
    """Where a channel's forward leads on the remote: its unix socket or loopback port."""
    if remote.get("transport") == "ipc":
        return f"{remote['ip']}-{remote[channel]}"
    return f"127.0.0.1:{remote[channel]}"


def forward_specs(remote: dict[str, Any], prefix: Path | str) -> list[str]:
    """-L specs from the local unix sockets `{prefix}-N` to the kernel's channels."""
    return [f"{prefix}-{LOCAL_PORTS[c]}:{remote_end(remote, c)}" for c in CHANNELS]


def forward_argv(host: str, specs: list[str], cancel: bool = False) -> list[str]:
    argv = ["ssh", "-o", f"ControlPath={control_path()}", "-O", "cancel" if cancel else "forward"]
    for spec in specs:
        argv += ["-L", spec]
    return [*argv, "--", checked_host(host)]


def local_info(remote: dict[str, Any], prefix: Path | str) -> dict[str, Any]:
    """The local connection dict: the remote's key and scheme, ipc on the local sockets."""
    info: dict[str, Any] = {
        "transport": "ipc",
        "ip": str(prefix),
        "key": remote["key"],
        "signature_scheme": remote.get("signature_scheme", "hmac-sha256"),
        "kernel_name": "",
        FORWARDS: forward_specs(remote, prefix),
    }
    info.update(LOCAL_PORTS)
    return info


def socket_paths(info: dict[str, Any]) -> list[Path]:
    """The local sockets an ipc connection dict names, those in tether's kernels dir only."""
    if info.get("transport") != "ipc" or not isinstance(info.get("ip"), str):
        return []
    try:
        paths = [Path(f"{info['ip']}-{int(info[channel])}") for channel in CHANNELS]
    except (KeyError, TypeError, ValueError):
        return []
    return [path for path in paths if path.parent == kernels_dir()]


def write_private(path: Path, data: dict[str, Any]) -> None:
    """JSON at path, mode 0600, written to a temporary name and renamed."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) else None


def _mux(host: str, specs: list[str], cancel: bool = False) -> subprocess.CompletedProcess[str]:
    """`ssh -O forward|cancel` on the host's master (never a new connection)."""
    from tether.hosts.processes import run_text

    return run_text(forward_argv(host, specs, cancel), timeout=30)


def stale(path: Path) -> bool:
    """A socket file nothing listens on any more: its master died (ssh leaves it)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(path))
    except (FileNotFoundError, TimeoutError):
        return False
    except OSError:
        return True
    finally:
        probe.close()
    return False


def _unlink(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _retire(host: str, old: dict[str, Any] | None, remote: dict[str, Any]) -> None:
    """Undo what an earlier connect for another incarnation left: TCP forwards an older
    tether made for this kernel, the dead sockets of a kernel since replaced."""
    if old is None:
        return
    if old.get("transport") == "tcp" and old.get("key") == remote["key"]:
        with contextlib.suppress(KeyError, TypeError, ValueError, OSError):
            specs = [f"127.0.0.1:{int(old[c])}:{remote_end(remote, c)}" for c in CHANNELS]
            _mux(host, specs, cancel=True)
    elif old.get("key") != remote["key"]:
        _unlink(path for path in socket_paths(old) if stale(path))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the flock beside a kernel's local file: its clients re-forward one at a time
    (two at once could each find the other's new socket stale and remove it)."""
    from tether.ipc import lock_within

    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        lock_within(fd, LOCK_WAIT_S)  # past that, go on: better than never
        yield
    finally:
        os.close(fd)


def _forward(host: str, specs: list[str], sockets: list[Path]) -> None:
    """Make the forwards: the master keeps ones it has, binds the rest. A dead master's
    sockets are still there (refusing): they are removed and the forward made again;
    failing that (another ssh holds them), the forwards are cancelled and every socket
    removed before a last try."""
    for attempt in range(3):
        if attempt == 1:
            _unlink(sock for sock in sockets if stale(sock))
        elif attempt == 2:
            _mux(host, specs, cancel=True)
            _unlink(sockets)
        done = _mux(host, specs)
        if done.returncode == 0:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    os.chmod(sock, 0o600)
            return
    raise HostError(host, "could not forward the kernel's channels", done.stderr.strip())


async def connect(target: Target, name: str, remote: dict[str, Any]) -> Path:
    """Forward the kernel's channels through the master; the local connection file.

    The sockets depend on (host, kernel, key) only, so a reconnect gets the same ones.
    """
    transport = SshTransport(target.host)
    await transport.ensure_master()
    path = local_file(target, name)
    prefix = socket_prefix(target, name, remote["key"])
    if len(str(prefix).encode()) + 2 > SOCKET_MAX:
        raise UsageError(
            f"tether's runtime dir is too long for unix sockets: {prefix}",
            "",
            "set TETHER_RUNTIME_DIR to a short directory, e.g. /tmp/t",
        )
    info = local_info(remote, prefix)
    with _locked(path):
        _retire(target.host, _read(path), remote)
        _forward(target.host, info[FORWARDS], socket_paths(info))
        write_private(path, info)
    return path


def disconnect(target: Target, name: str) -> None:
    """Cancel the kernel's forwards on the master; remove its sockets and connection file."""
    path = local_file(target, name)
    with _locked(path):
        old = _read(path)
        if old is not None:
            specs = old.get(FORWARDS)
            if isinstance(specs, list) and specs and all(isinstance(s, str) for s in specs):
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    _mux(target.host, specs, cancel=True)
            _unlink(socket_paths(old))
        _unlink([path])
