"""The local side of a kernel's forwards: unix sockets named after (host, kernel, key)."""

from __future__ import annotations

from pathlib import Path

from tether.config import Target
from tether.kernel import names, remote
from tether.paths import runtime_dir

IPC = {"transport": "ipc", "ip": "/r/k/k", "key": "a" * 64, "signature_scheme": "hmac-sha256"}
IPC.update(shell_port=1, iopub_port=2, stdin_port=3, control_port=4, hb_port=5)
TCP = {**IPC, "transport": "tcp", "ip": "127.0.0.1"}
TCP.update(shell_port=40001, iopub_port=40002, stdin_port=40003, control_port=40004, hb_port=4005)


def test_sockets_are_short_private_and_named_after_the_key() -> None:
    box = Target(name="box", host="gpu.example.org", path="~/p")
    prefix = names.socket_prefix(box, "box", "k1")
    assert prefix.parent == runtime_dir() / "kernels"
    assert len(f"{prefix}-5".encode()) < len(str(runtime_dir())) + 30
    assert names.socket_prefix(box, "box", "k1") == prefix  # a reconnect: the same sockets
    assert names.socket_prefix(box, "box", "k2") != prefix  # a new kernel: others
    assert names.socket_prefix(box, "other", "k1") != prefix
    assert names.socket_prefix(Target(name="b", host="h2", path="~"), "box", "k1") != prefix


def test_local_unix_sockets_forward_to_remote_sockets_or_loopback_ports() -> None:
    prefix = Path("/run/t/kernels/k-0123456789ab")
    assert remote.forward_specs(IPC, prefix) == [f"{prefix}-{n}:/r/k/k-{n}" for n in range(1, 6)]
    assert remote.forward_specs(TCP, prefix)[0] == f"{prefix}-1:127.0.0.1:40001"
    assert remote.forward_specs(TCP, prefix)[4] == f"{prefix}-5:127.0.0.1:4005"
    info = remote.local_info(TCP, prefix)
    assert info["transport"] == "ipc" and info["ip"] == str(prefix)
    assert [info[c] for c in remote.CHANNELS] == [1, 2, 3, 4, 5]
    assert info["key"] == TCP["key"] and info["signature_scheme"] == "hmac-sha256"
    assert info[remote.FORWARDS] == remote.forward_specs(TCP, prefix)


def test_only_sockets_in_tethers_own_dir_are_ever_removed() -> None:
    own = names.socket_prefix(Target(name="b", host="h", path="~"), "b", "k")
    assert remote.socket_paths({**IPC, "ip": str(own)}) == [Path(f"{own}-{n}") for n in range(1, 6)]
    assert remote.socket_paths(IPC) == []  # /r/k: not tether's
    assert remote.socket_paths({**IPC, "ip": str(own.parent / ".." / "x")}) == []
    assert remote.socket_paths({**TCP}) == []
