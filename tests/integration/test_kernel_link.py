"""The background link: `tether kernel link` keeps a kernel's forwards for outside Jupyter
clients after the command has exited, re-makes them after a cut, leaves after its idle
time without client activity or on `kernel stop`, and `kernel ls` says whether it is up
(real sshd sandbox behind the cutting proxy, real ipykernel, a plain jupyter_client)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_console import pid_alive
from tests.integration.test_console_link import pproject as pproject

pytestmark = pytest.mark.integration

Cli = Callable[..., Any]


def started_link(tether_cli: Cli, *args: str) -> Path:
    """`tether kernel link ARGS`, which has exited: the connection file it printed."""
    done = tether_cli("kernel", "link", *args)
    assert done.returncode == 0, done.stderr
    found = re.search(r"connection file: (\S+)", done.stdout)
    assert found, done.stdout
    return Path(found.group(1))


def link_state(tether_cli: Cli) -> dict[str, Any]:
    """The `link` field `kernel ls --json` gives this project's kernel."""
    listed = tether_cli("kernel", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    kernels = [k for k in json.loads(listed.stdout) if k["this_project"]]
    assert len(kernels) == 1, kernels
    return dict(kernels[0]["link"])


@contextmanager
def client_of(path: Path) -> Iterator[Any]:
    from jupyter_client.blocking.client import BlockingKernelClient

    client = BlockingKernelClient(connection_file=str(path))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield client
    finally:
        client.stop_channels()


def printed(client: Any, code: str) -> str:
    """What code prints, run by the client (60 s at most)."""
    seen: list[str] = []

    def keep(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream":
            seen.append(message["content"]["text"])

    reply = client.execute_interactive(code, output_hook=keep, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(seen)


def back_after_cut(tether_cli: Cli, client: Any) -> None:
    """Until the link is up again and the client's iopub is subscribed once more.

    What a careful plain client does after a drop: a request it sends before its SUB
    socket is back has its output published to nobody (zmq's slow joiner; tether's own
    clients replay it from the remote's recorder, a plain one cannot), so it asks for
    kernel_info until the kernel's status for that request reaches it (bounded)."""
    import queue

    deadline = time.monotonic() + 60
    while link_state(tether_cli)["state"] != "up":
        assert time.monotonic() < deadline, "the link never came back"
        time.sleep(0.2)
    while time.monotonic() < deadline:
        msg_id = client.kernel_info()
        asked = time.monotonic()
        while time.monotonic() - asked < 1.0:
            try:
                message = client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") == msg_id:
                return
    raise AssertionError("the client's iopub never came back")


def test_an_outside_client_works_after_the_command_exited_and_after_a_cut(
    pproject: Path, proxy: Any, tether_cli: Cli
) -> None:
    path = started_link(tether_cli)
    state = link_state(tether_cli)
    assert state["state"] == "up" and pid_alive(state["pid"]), state
    shown = tether_cli("kernel", "ls").stdout
    assert str(path) in shown and "link up" in shown, shown
    with client_of(path) as client:
        assert printed(client, "kept = 'by the link'; print(kept)") == "by the link\n"
        proxy.refuse(True)
        proxy.cut()  # the master dies with its forwards; nothing of the command is left
        time.sleep(2.0)
        proxy.refuse(False)
        back_after_cut(tether_cli, client)
        assert printed(client, "print(kept, 'again')") == "by the link again\n"
    stopped = tether_cli("kernel", "stop")
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 10
    while pid_alive(state["pid"]):  # `kernel stop` ends the link
        assert time.monotonic() < deadline, "the link outlived `kernel stop`"
        time.sleep(0.1)


def test_the_link_stays_while_clients_are_active_and_leaves_when_idle(
    pproject: Path, tether_cli: Cli
) -> None:
    path = started_link(tether_cli, "--idle", "6s")
    pid = link_state(tether_cli)["pid"]
    with client_of(path) as client:
        started = quiet = time.monotonic()
        while time.monotonic() - started < 10:  # activity past the idle time: kept
            assert printed(client, "print(1)") == "1\n"
            quiet = time.monotonic()  # the last activity was before this
            time.sleep(1.0)
        assert pid_alive(pid) and link_state(tether_cli)["state"] == "up"
        while pid_alive(pid):
            assert time.monotonic() - quiet < 30, "the idle link never left"
            time.sleep(0.2)
        assert time.monotonic() - quiet >= 5.0  # not before its idle time
    assert link_state(tether_cli)["state"] == "down"
    assert "link down" in tether_cli("kernel", "ls").stdout


def test_kernel_restart_starts_the_link_for_the_new_kernel(
    pproject: Path, proxy: Any, tether_cli: Cli
) -> None:
    started_link(tether_cli)
    old = link_state(tether_cli)["pid"]
    restarted = tether_cli("kernel", "restart")
    assert restarted.returncode == 0, restarted.stderr
    found = re.search(r"connection file: (\S+)", restarted.stdout)
    assert found, restarted.stdout
    state = link_state(tether_cli)
    assert state["state"] == "up" and state["pid"] != old and not pid_alive(old), state
    proxy.refuse(True)
    proxy.cut()
    time.sleep(1.0)
    proxy.refuse(False)
    deadline = time.monotonic() + 60
    while link_state(tether_cli)["state"] != "up":
        assert time.monotonic() < deadline, "the link never came back"
        time.sleep(0.2)
    with client_of(Path(found.group(1))) as client:
        assert printed(client, "print('fresh', 'kept' in dir())") == "fresh False\n"
