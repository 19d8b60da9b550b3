"""tether send through a latency/cut proxy: the link drops mid-run and comes back."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_console import kernel_pids, stop_helpers
from tests.integration.test_kernel_ipc import assert_private_ipc, local_connection, tcp_listeners

pytestmark = pytest.mark.integration

Cli = Callable[..., Any]
LOOP = "import time\nfor i in range(25):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"


@pytest.fixture
def pproject(
    sandbox: Any, proxy_alias: str, project: Path, tether_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The project initialised against the sandbox through the proxy (venv python)."""
    monkeypatch.chdir(project)
    rel = f"kern-{uuid.uuid4().hex[:8]}"
    done = tether_cli(
        "init", "--host", proxy_alias, "--path", f"~/{rel}", "--python", sys.executable
    )
    assert done.returncode == 0, done.stderr
    home = Path(sandbox.home)
    before = set(kernel_pids(home))
    try:
        yield project
    finally:
        tether_cli("kernel", "stop", timeout=60)
        for pid in set(kernel_pids(home)) - before:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stop_helpers()


def test_send_survives_a_cut_and_shows_what_ran_meanwhile(
    pproject: Path, proxy: Any, tether_cli: Cli
) -> None:
    from tests.harness import env as harness

    before = tcp_listeners()
    first = tether_cli("send", input="x = 41\nprint('defined')")
    assert first.returncode == 0, first.stderr
    assert "defined" in first.stdout
    _, forwarded = local_connection()
    assert_private_ipc(forwarded)
    (pproject / "loop.py").write_text(LOOP)
    loop = subprocess.Popen(
        harness.tether_argv("send", "loop.py"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.2)
        proxy.refuse(True)
        proxy.cut()
        time.sleep(2.0)
        proxy.refuse(False)
        out, err = loop.communicate(timeout=90)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    assert loop.returncode == 0, err
    ticks = [line for line in out.splitlines() if line.startswith("tick")]
    assert ticks == [f"tick {i}" for i in range(25)], out  # none lost, none twice
    assert "lost the link" in err and "reconnected" in err, err
    missed = re.search(r"\((\d+) missed messages\)", err)
    assert missed and int(missed.group(1)) > 0, err  # the gap came from the remote's buffer
    after = tether_cli("send", input="print(x + 1)")
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == "42"  # the kernel's state survived the cut
    # Re-forwarded on the same unix sockets (the dead master's stale files unlinked first).
    assert local_connection()[1] == forwarded
    assert_private_ipc(forwarded)
    assert tcp_listeners() - before == set()


def test_console_survives_a_cut_holds_a_line_and_replays_output(
    pproject: Path, proxy: Any, tether_cli: Cli, tmux_socket: str
) -> None:
    from tests.harness import env as harness
    from tests.harness.tmuxconsole import TmuxConsole

    console = TmuxConsole(tmux_socket, pproject).start()
    console.wait_for(r"In \[")
    console.type("y = 5")
    console.wait_for(r"In \[2\]")
    (pproject / "loop.py").write_text(LOOP.replace("'tick'", "'tock'"))
    loop = subprocess.Popen(
        harness.tether_argv("send", "loop.py"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        console.wait_for("tock 2")
        proxy.refuse(True)
        proxy.cut()
        console.wait_for("lost the link", 10)
        console.type("print('held', y * 2)")  # typed while down
        time.sleep(2.0)
        proxy.refuse(False)
        console.wait_for("reconnected", 60)
        loop.communicate(timeout=90)
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()
    console.wait_for("held 10", 60)
    console.wait_for("tock 24", 30)
    time.sleep(1.0)
    shown = console.screen()
    assert shown.count("held 10") == 1, shown  # run once, not lost, not twice
    for i in range(25):
        assert len(re.findall(rf"tock {i}\b", shown)) == 1, shown  # replayed, once
    assert_private_ipc(local_connection()[1])  # the console reconnected over unix sockets
    console.leave()
