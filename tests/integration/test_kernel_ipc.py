"""Private local channels: a kernel's channels reach this machine only as unix sockets
(0600, in tether's 0700 runtime dir), never as local TCP ports, whether the remote kernel
listens on unix sockets or on 127.0.0.1; same sockets after a reconnect; gone after stop."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_console import kproject as kproject
from tests.integration.test_console import listening
from tether.agent.wire_jobs import KernelInfo, KernelStart

pytestmark = pytest.mark.integration

Cli = Callable[..., Any]


def tether_ssh_pids() -> list[int]:
    """Pids of the ssh processes tether started (their argv names tether's runtime dir)."""
    from tether.paths import runtime_dir

    mark = str(runtime_dir()).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if os.path.basename(argv[0]) == b"ssh" and any(mark in arg for arg in argv):
                found.append(int(entry.name))
    return found


def tcp_listeners() -> set[tuple[int, str]]:
    """(pid, local address) of every TCP socket tether's ssh processes listen on."""
    found = set()
    for pid in tether_ssh_pids():
        with contextlib.suppress(OSError):
            found.update((pid, address) for address in listening(pid))
    return found


def unix_listeners() -> set[str]:
    """Paths of the bound unix sockets on this machine (/proc/net/unix)."""
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    return {cells[7] for cells in (line.split() for line in lines) if len(cells) > 7}


def local_connection(target_name: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The local connection file of the project's kernel and what it says."""
    from tether import config
    from tether.kernel import names

    target = config.load().one(target_name)
    path = names.local_file(target, names.kernel_name(target, None))
    return path, json.loads(path.read_text())


def channel_sockets(info: dict[str, Any]) -> list[Path]:
    """The local unix sockets an ipc connection dict names (Jupyter: `{ip}-{port}`)."""
    channels = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
    return [Path(f"{info['ip']}-{info[channel]}") for channel in channels]


def assert_private_ipc(info: dict[str, Any]) -> list[Path]:
    """The connection is ipc on sockets only this user reaches (0600 in a 0700 dir chain)."""
    from tether.paths import runtime_dir

    assert info["transport"] == "ipc", info
    sockets = channel_sockets(info)
    for sock in sockets:
        assert len(str(sock).encode()) < 104, sock
        assert sock.parent == runtime_dir() / "kernels", sock
        st = sock.lstat()
        assert stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid(), sock
        assert stat.S_IMODE(st.st_mode) & 0o077 == 0, oct(st.st_mode)
        assert str(sock) in unix_listeners(), sock  # something listens: the forward
    for directory in (runtime_dir() / "kernels", runtime_dir()):
        st = directory.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid(), directory
    return sockets


def test_console_and_send_forward_to_private_unix_sockets(
    kproject: Path, tether_cli: Cli, tmux_socket: str
) -> None:
    import subprocess
    import time

    from tests.harness import env as harness
    from tether import config
    from tether.kernel import background, names
    from tether.transport.ssh import SshTransport

    def tmux(*args: str) -> str:
        done = subprocess.run(["tmux", "-L", tmux_socket, *args], capture_output=True, text=True)
        return done.stdout

    def wait_for(text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in tmux("capture-pane", "-p", "-S", "-200", "-t", "c"):
            assert time.monotonic() < deadline, f"{text!r} never showed"
            time.sleep(0.2)

    before = tcp_listeners()
    subprocess.run(
        ["tmux", "-L", tmux_socket, "new-session", "-d", "-s", "c", "-x", "160", "-y", "50",
         "-c", str(kproject), "--", *harness.tether_argv("console")],
        check=True,
    )  # fmt: skip
    wait_for("In [")
    tmux("send-keys", "-t", "c", "private = 'ipc'", "Enter")
    wait_for("In [2]")
    sent = tether_cli("send", input="print(private, 6 * 7)")
    assert sent.returncode == 0, sent.stderr
    assert "ipc 42" in sent.stdout
    wait_for("ipc 42")  # the console still sees other clients' output
    assert tether_ssh_pids(), "no ssh master of tether's found"
    assert tcp_listeners() - before == set()  # no local TCP port for the kernel's channels
    path, info = local_connection()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sockets = assert_private_ipc(info)
    tmux("send-keys", "-t", "c", "exit", "Enter")

    # A dead master leaves its socket files behind: the next connect re-forwards anyway.
    target = config.load().one(None)
    background.stop(target, names.kernel_name(target, None))
    SshTransport(target.host).stop_master()
    again = tether_cli("send", input="print(private * 2)")
    assert again.returncode == 0, again.stderr
    assert "ipcipc" in again.stdout  # the same kernel, reached through the same sockets
    assert local_connection()[1] == info
    assert_private_ipc(info)
    assert tcp_listeners() - before == set()

    stopped = tether_cli("kernel", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not path.exists()
    for sock in sockets:
        assert not sock.exists(), sock  # removed...
        assert str(sock) not in unix_listeners(), sock  # ...and cancelled from the master


def test_a_tcp_kernel_is_forwarded_to_a_local_unix_socket(kproject: Path, tether_cli: Cli) -> None:
    """A remote kernel on 127.0.0.1 ports (too long a path for ipc) is still reached
    through local unix sockets: -L /local/socket:127.0.0.1:PORT."""
    import asyncio

    from tether import config
    from tether.kernel import names, remote

    target = config.load().one(None)
    kernel = names.kernel_name(target, None)
    started = asyncio.run(
        remote.ask(
            target,
            KernelStart(kernel, target.path, python=remote.python_argv(target), transport="tcp"),
        )
    )
    assert started["connection"]["transport"] == "tcp"
    before = tcp_listeners()
    sent = tether_cli("send", input="print('over', 'tcp')")
    assert sent.returncode == 0, sent.stderr
    assert "over tcp" in sent.stdout
    assert tcp_listeners() - before == set()
    _, info = local_connection()
    assert info["key"] == started["connection"]["key"]
    assert_private_ipc(info)


def test_tcp_forwards_left_by_an_older_tether_are_cancelled(
    kproject: Path, tether_cli: Cli
) -> None:
    """A master still holding the 127.0.0.1 forwards an older tether made for this kernel
    (its local connection file said tcp) loses them at the next connect."""
    import asyncio
    import socket
    import subprocess

    from tether import config
    from tether.kernel import background, names, remote
    from tether.transport.ssh import control_path

    assert tether_cli("send", input="print('up')").returncode == 0
    target = config.load().one(None)
    kernel = names.kernel_name(target, None)
    background.stop(target, kernel)
    conn = asyncio.run(remote.ask(target, KernelInfo(kernel)))["connection"]
    channels = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
    held = [socket.create_server(("127.0.0.1", 0)) for _ in channels]
    ports = [sock.getsockname()[1] for sock in held]
    for sock in held:
        sock.close()
    ends = [
        f"{conn['ip']}-{conn[c]}" if conn["transport"] == "ipc" else f"127.0.0.1:{conn[c]}"
        for c in channels
    ]
    before = tcp_listeners()
    argv = ["ssh", "-o", f"ControlPath={control_path()}", "-O", "forward"]
    for port, end in zip(ports, ends, strict=True):
        argv += ["-L", f"127.0.0.1:{port}:{end}"]
    subprocess.run([*argv, target.host], check=True, capture_output=True, timeout=30)
    assert len(tcp_listeners() - before) == 5  # what an older tether left on the master
    old = {"transport": "tcp", "ip": "127.0.0.1", "key": conn["key"], "kernel_name": ""}
    path = names.local_file(target, kernel)
    path.write_text(json.dumps({**old, **dict(zip(channels, ports, strict=True))}))
    sent = tether_cli("send", input="print('now', 'ipc')")
    assert sent.returncode == 0, sent.stderr
    assert "now ipc" in sent.stdout
    assert tcp_listeners() - before == set()
    assert_private_ipc(local_connection()[1])


def test_restart_removes_the_old_sockets_and_forwards_new_ones(
    kproject: Path, tether_cli: Cli
) -> None:
    first = tether_cli("send", input="kept = 1")
    assert first.returncode == 0, first.stderr
    _, old = local_connection()
    old_sockets = assert_private_ipc(old)
    restarted = tether_cli("kernel", "restart")
    assert restarted.returncode == 0, restarted.stderr
    for sock in old_sockets:
        assert not sock.exists(), sock
        assert str(sock) not in unix_listeners(), sock  # cancelled from the master
    again = tether_cli("send", input="print('kept' in dir())")
    assert again.returncode == 0, again.stderr
    assert "False" in again.stdout  # the new kernel
    _, new = local_connection()
    assert new["key"] != old["key"] and new["ip"] != old["ip"]
    assert_private_ipc(new)
