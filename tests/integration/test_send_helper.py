"""The send helper against a real sandbox kernel: one helper for racing first sends; a dead
kernel fails a send with one line in bounded time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import env as harness
from tests.integration.test_console import kernel_pids, pid_alive, stop_helpers

pytestmark = pytest.mark.integration

Cli = Callable[..., Any]


@pytest.fixture
def hproject(
    sandbox: Any, project: Path, tether_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The project against the sandbox, the venv's python as remote python; all stopped."""
    monkeypatch.chdir(project)
    done = tether_cli(
        "init",
        "--host",
        sandbox.name,
        "--path",
        f"~/helper-{uuid.uuid4().hex[:8]}",
        "--python",
        sys.executable,
    )
    assert done.returncode == 0, done.stderr
    home = Path(sandbox.home)
    before = set(kernel_pids(home))
    try:
        yield project
    finally:
        tether_cli("kernel", "stop")
        for pid in set(kernel_pids(home)) - before:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stop_helpers()


def helper_processes(host: str, name: str) -> list[int]:
    """Pids of live send helpers for (host, kernel)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"tether.kernel.helper" not in argv or not pid_alive(int(entry.name)):
                continue
            spec = json.loads(argv[argv.index(b"tether.kernel.helper") + 1])
            if spec["target"]["host"] == host and spec["name"] == name:
                found.append(int(entry.name))
    return found


def test_two_spawns_at_once_start_one_helper(hproject: Path, tether_cli: Cli) -> None:
    from tether import config
    from tether.kernel import background, names, remote

    target = config.load().one(None)
    kernel = names.kernel_name(target, None)
    answer = asyncio.run(remote.ensure(target, kernel))
    pids: list[int] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(2)

    def start() -> None:
        try:
            gate.wait()
            pids.append(background.spawn(target, kernel, answer["connection"]))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert len(pids) == 2 and pids[0] == pids[1], pids
    sock_path, pid_path = names.helper_paths(target, kernel)
    deadline = time.monotonic() + 60
    while background.ping(sock_path) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert background.ping(sock_path) is not None
    assert int(pid_path.read_text()) == pids[0]
    assert helper_processes(target.host, kernel) == [pids[0]]
    sent = tether_cli("send", input="print(6 * 7)")
    assert sent.returncode == 0, sent.stderr
    assert "42" in sent.stdout
    assert helper_processes(target.host, kernel) == [pids[0]]  # the send used it


def kill_the_kernel(sandbox: Any) -> int:
    """SIGKILL the project's remote kernel (its record in the sandbox); its pid."""
    from tether import config

    rel = config.load().one(None).path.removeprefix("~/")
    records = Path(sandbox.home, ".local/share/tether/kernels").glob("*/record.json")
    loaded = [json.loads(path.read_text()) for path in records]
    mine = [r for r in loaded if str(r.get("root", "")).endswith(rel)]
    assert len(mine) == 1, loaded
    pid = int(mine[0]["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return pid


def test_send_to_a_dead_kernel_fails_with_one_line(
    hproject: Path, sandbox: Any, tether_cli: Cli
) -> None:
    first = tether_cli("send", input="print('up')")
    assert first.returncode == 0 and "up" in first.stdout, first.stderr
    kill_the_kernel(sandbox)
    started = time.monotonic()
    done = tether_cli("send", input="print('never')", timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 1, done
    assert took < 30, took
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "kernel" in lines[0] and "dead" in lines[0] and "tether kernel restart" in lines[0]
    assert "never" not in done.stdout


@pytest.mark.parametrize("state", ["idle", "running-a-cell", "kernel-gone"])
def test_the_helper_is_gone_when_kernel_stop_returns(
    hproject: Path, sandbox: Any, tether_cli: Cli, state: str
) -> None:
    """Whatever the helper was doing: waiting, serving a send's cell (it takes no request
    then), or holding a link to a kernel that died (zmq kept it on its way out)."""
    from tether import config
    from tether.kernel import background, names

    linked = tether_cli("kernel", "link")
    assert linked.returncode == 0, linked.stderr
    target = config.load().one(None)
    kernel = names.kernel_name(target, None)
    (helper,) = helper_processes(target.host, kernel)
    send = None
    if state == "running-a-cell":
        send = subprocess.Popen(
            harness.tether_argv("send"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert send.stdin is not None and send.stdout is not None
        send.stdin.write("print('started', flush=True)\nimport time\ntime.sleep(120)\n")
        send.stdin.close()
        ready, _, _ = select.select([send.stdout], [], [], 60)
        assert ready and send.stdout.readline() == "started\n"
    elif state == "kernel-gone":
        gone = kill_the_kernel(sandbox)
        deadline = time.monotonic() + 30
        while pid_alive(gone) and time.monotonic() < deadline:
            time.sleep(0.05)
    try:
        if state == "idle":  # the step of `kernel stop` (and restart) that ends the helper
            background.stop(target, kernel)
            assert not pid_alive(helper), "background.stop returned with the helper alive"
        done = tether_cli("kernel", "stop")
        assert done.returncode == 0, done.stderr
        assert not pid_alive(helper), "kernel stop returned with the helper alive"
        assert helper_processes(target.host, kernel) == []
        sock_path, pid_path = names.helper_paths(target, kernel)
        assert not sock_path.exists() and not pid_path.exists()
    finally:
        if send is not None and send.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                send.wait(timeout=60)
            if send.poll() is None:
                send.kill()
    if send is not None:
        assert send.stderr is not None
        err = send.stderr.read()
        send.stderr.close()
        send.stdout.close()
        lines = [line for line in err.splitlines() if line.strip()]
        assert send.returncode == 1 and len(lines) == 1, err
        assert lines[0].startswith("tether: error: "), err


def _connected_and_asleep(pid: int) -> bool:
    """pid sleeps and holds a connected unix socket (the send, once it connected to the
    helper and sent its code, waits in select() for the answer)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        mine = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            link = os.readlink(fd)
            if link.startswith("socket:["):
                mine.add(link[len("socket:[") : -1])
        rows = Path("/proc/net/unix").read_text().splitlines()[1:]
    except (OSError, ValueError):
        return False
    connected = [row for row in rows if row.split()[6] in mine and row.split()[5] == "03"]
    return state == "S" and bool(connected)


def test_a_helper_killed_before_it_took_the_send_leaves_it_to_the_direct_path(
    hproject: Path, tether_cli: Cli, tmp_path: Path
) -> None:
    """The send connected while the helper was being killed (its request still in the
    socket's backlog): the cell never reached the kernel there, so the send runs it the
    direct way instead of failing with "the send helper went away during the run"."""
    from tests.integration.test_daemon import kill_while_it_waits
    from tether import config
    from tether.kernel import names

    first = tether_cli("send", input="print('up')")
    assert first.returncode == 0 and "up" in first.stdout, first.stderr
    target = config.load().one(None)
    (helper,) = helper_processes(target.host, names.kernel_name(target, None))
    code = tmp_path / "cell.py"
    code.write_text("print(6 * 7)")
    os.kill(helper, signal.SIGSTOP)  # it accepts nothing: the send's connection waits
    with code.open() as stdin:
        process = subprocess.Popen(
            harness.tether_argv("send"), cwd=hproject, stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    code, out, err = kill_while_it_waits(helper, process, _connected_and_asleep)
    assert code == 0, f"{code} {out} {err}"
    assert out.splitlines().count("42") == 1, out
