"""What `tether console` shows: others' blocks, prompt numbers, outages, colour (#22 part 8).

Driven through the real CLI against the sandbox: the console in tmux (read as rendered
text) or on a pipe / pty (raw bytes), `tether send` as the other client, the cut proxy
for outages, and a Jupyter client on the sandbox's own connection file for cells run by
someone else while this laptop's link is down.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import env as harness
from tests.harness.tmuxconsole import TmuxConsole
from tests.integration.test_console import Cli
from tests.integration.test_console import kproject as kproject
from tests.integration.test_console_link import pproject as pproject

pytestmark = pytest.mark.integration

PROMPT = re.compile(r"^In \[(\d+)\]:")
COLOUR_SGR = re.compile(r"\x1b\[([0-9;]*)m")


def prompts(lines: list[str]) -> list[int]:
    """The numbers of the console's own prompts, in screen order."""
    return [int(m.group(1)) for m in map(PROMPT.match, lines) if m]


def last_prompt(console: TmuxConsole) -> int:
    """The number on the console's current (last) prompt line, once the screen settled."""
    lines = console.settle().splitlines()
    shown = [line.rstrip() for line in lines if line.strip()]
    match = PROMPT.match(shown[-1]) if shown else None
    assert match and shown[-1].endswith(":"), "\n".join(shown)  # an empty prompt, alone
    return int(match.group(1))


def colours(raw: bytes) -> list[str]:
    """The SGR sequences in raw output that set a colour (fore- or background)."""
    found = []
    for params in COLOUR_SGR.findall(raw.decode(errors="replace")):
        codes = [int(p) for p in params.split(";") if p.isdigit()]
        if any(30 <= c <= 49 or 90 <= c <= 107 for c in codes):
            found.append(params)
    return found


@pytest.fixture
def remote_client(sandbox: Any) -> Iterator[Any]:
    """make() -> a BlockingKernelClient on the newest kernel's connection file in the
    sandbox (another client on the remote itself: it runs cells while our link is down)."""
    from jupyter_client.blocking.client import BlockingKernelClient

    clients: list[Any] = []

    def make() -> Any:
        records = sorted(
            (Path(sandbox.home) / ".local/share/tether/kernels").glob("*/record.json"),
            key=lambda path: path.stat().st_mtime,
        )
        assert records, "no kernel on the sandbox"
        record = json.loads(records[-1].read_text())
        client = BlockingKernelClient(connection_file=record["connection_file"])
        client.load_connection_file()
        client.start_channels()
        clients.append(client)
        client.wait_for_ready(timeout=30)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.stop_channels()


def test_a_sent_block_shows_one_prefix_and_the_prompt_stays_the_consoles(
    kproject: Path, tether_cli: Cli, tmux_socket: str
) -> None:
    console = TmuxConsole(tmux_socket, kproject).start()
    console.wait_for(r"In \[1\]")
    console.type("a = 1")
    console.wait_for(r"In \[2\]")
    for code in ["x = 1", "x + 1", "for i in range(2):\n    print('loop', i)\nx * 10"]:
        done = tether_cli("send", input=code)
        assert done.returncode == 0, done.stderr
        time.sleep(1.0)  # each block lands while the console sits at its prompt
    done = tether_cli("send", "code.py:2-3")  # from a file: `if True:` and its body
    assert done.returncode == 0, done.stderr
    console.wait_for(r"In \[6\]")
    lines = [line.rstrip() for line in console.settle().splitlines() if line.strip()]
    shown = "\n".join(lines)
    sent = [line for line in lines if "[send" in line]
    assert sent == [
        "[send] In [2]: x = 1",
        "[send] In [3]: x + 1",
        "[send] In [4]: for i in range(2):",
        "[send code.py:2] In [5]: if True:",
    ], shown  # one prefix per block, on its first line, never glued to a prompt
    first = lines.index("[send] In [4]: for i in range(2):")
    assert lines[first + 1 : first + 3] == [
        "          ...:     print('loop', i)",
        "          ...: x * 10",
    ], shown  # continuation lines marked once, aligned under the block's prompt
    assert lines[lines.index(sent[-1]) + 1] == " " * 20 + "...:     value = 6 * 7", shown
    assert "Out[3]: 2" in lines and "Out[4]: 10" in lines, shown
    assert lines.count("loop 0") == 1 and lines.count("loop 1") == 1, shown
    assert prompts(lines) == [1, 6], shown  # the console's own: none left behind by sends
    assert last_prompt(console) == 6
    console.type("x + 2")
    console.wait_for(r"Out\[6\]: 3")
    console.leave()


def test_prompt_numbers_follow_the_kernel_when_the_console_comes_back(
    kproject: Path, tether_cli: Cli, tmux_socket: str
) -> None:
    for code in ("y = 1", "y + 1", "y + 2"):
        assert tether_cli("send", input=code).returncode == 0
    console = TmuxConsole(tmux_socket, kproject).start()
    console.wait_for(r"In \[")
    assert last_prompt(console) == 4, console.screen()  # not In [1] after 3 cells ran
    console.type("y * 7")
    screen = console.wait_for(r"Out\[\d+\]: 7")
    assert "In [4]: y * 7" in screen and "Out[4]: 7" in screen, screen
    assert last_prompt(console) == 5
    console.leave()


def test_prompt_numbers_follow_the_kernel_after_a_reconnect(
    pproject: Path, proxy: Any, remote_client: Any, tmux_socket: str
) -> None:
    console = TmuxConsole(tmux_socket, pproject).start()
    console.wait_for(r"In \[1\]")
    console.type("z = 3")
    console.wait_for(r"In \[2\]")
    other = remote_client()
    proxy.refuse(True)
    proxy.cut()
    console.wait_for("lost the link", 15)
    for code in ("z += 1", "z += 1", "z += 1"):  # cells 2-4, run while our link is down
        reply = other.execute_interactive(code, timeout=30)
        assert reply["content"]["status"] == "ok", reply
    proxy.refuse(False)
    console.wait_for("reconnected", 60)
    assert last_prompt(console) == 5, console.screen()  # redrawn with the kernel's count
    console.type("z")
    screen = console.wait_for(r"Out\[\d+\]: 6")
    assert "Out[5]: 6" in screen, screen
    console.leave()


def test_no_prompt_while_the_consoles_cell_runs_through_an_outage(
    pproject: Path, proxy: Any, tmux_socket: str
) -> None:
    console = TmuxConsole(tmux_socket, pproject).start()
    console.wait_for(r"In \[1\]")
    console.type("import time")
    console.wait_for(r"In \[2\]")
    # Cell 2 runs on through the outage and after it.
    console.type("ticks = [print('tick', i, flush=True) or time.sleep(0.25) for i in range(40)]")
    console.wait_for("tick 3")
    proxy.refuse(True)
    proxy.cut()
    console.wait_for("lost the link", 15)
    time.sleep(3.0)  # the kernel's heartbeat is long silent now
    down = console.screen()
    assert "In [3]" not in down, down  # no prompt while cell 2 runs
    proxy.refuse(False)
    console.wait_for("reconnected", 60)
    console.wait_for("tick 39", 60)
    lines = [line.rstrip() for line in console.settle().splitlines() if line.strip()]
    shown = "\n".join(lines)
    assert prompts(lines) == [1, 2, 3], shown
    assert lines.index("In [3]:") > lines.index("tick 39"), shown  # after the cell's end
    for i in range(40):
        assert lines.count(f"tick {i}") == 1, shown  # replayed once, none lost
    assert sum("lost the link" in line for line in lines) == 1, shown
    assert sum("reconnected" in line for line in lines) == 1, shown

    # Cell 3 ends while the link is down: its reply is lost with the link; the console
    # still waits for the cell (no prompt), then takes its end from the replayed output.
    console.type("print('start'); time.sleep(2); print('end')")
    console.wait_for("start")
    proxy.refuse(True)
    proxy.cut()
    console.wait_for(r"lost the link(.|\n)*lost the link", 15)
    time.sleep(4.0)
    assert "In [4]" not in console.screen(), console.screen()
    proxy.refuse(False)
    console.wait_for(r"reconnected(.|\n)*reconnected", 60)
    console.wait_for(r"In \[4\]", 30)
    assert "end" in console.screen().split("In [4]")[0], console.screen()
    console.type("len(ticks)")
    console.wait_for(r"Out\[4\]: 40")
    console.leave()


def test_a_cell_that_ends_the_kernel_is_not_waited_for_as_an_outage(
    kproject: Path, tmux_socket: str
) -> None:
    console = TmuxConsole(tmux_socket, kproject).start()
    console.wait_for(r"In \[1\]")
    started = time.monotonic()
    console.type("import os; os._exit(1)")
    # One line says why, then a prompt (its number is moot: the kernel may die before
    # its execute_input leaves).
    screen = console.wait_for(r"is dead, leave and run `tether console` again.*\n+In \[\d+\]:", 45)
    assert time.monotonic() - started < 30, screen
    console.keys("C-d")


def read_until(stream: Any, pattern: bytes, timeout: float = 60) -> bytes:
    """Read a pipe until PATTERN (a regex) is in what came; all of it."""
    import select

    seen = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen):
        left = deadline - time.monotonic()
        assert left > 0, f"no {pattern!r} in {seen!r}"
        ready, _, _ = select.select([stream], [], [], left)
        chunk = os.read(stream.fileno(), 65536) if ready else b""
        assert chunk or not ready, f"the pipe closed without {pattern!r}: {seen!r}"
        seen += chunk
    return seen


def test_no_colour_when_stdout_is_not_a_terminal(kproject: Path, tether_cli: Cli) -> None:
    assert tether_cli("send", input="w = 2").returncode == 0
    console = subprocess.Popen(
        harness.tether_argv("console"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=kproject,
    )
    try:
        assert console.stdin is not None
        console.stdin.write(b"w * 21\n")
        console.stdin.flush()
        seen = read_until(console.stdout, rb"Out\[2\]: 42\n")  # numbered after the send
        sent = tether_cli("send", input="print('sent', w)")
        assert sent.returncode == 0, sent.stderr
        seen += read_until(console.stdout, rb"sent 2\n")
        out, err = console.communicate(b"1 / 0\nprint('after')\n", timeout=60)
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()
    assert console.returncode == 0, err
    stdout, stderr = (seen + out).decode(), err.decode()
    assert "\x1b" not in stdout + stderr, stdout + stderr  # no colour, no cursor movements
    lines = stdout.splitlines()
    assert "[send] In [3]: print('sent', w)" in lines, stdout  # on a line of its own
    assert lines[lines.index("[send] In [3]: print('sent', w)") + 1] == "sent 2", stdout
    assert "ZeroDivisionError" in stderr and "after" in stdout, stdout + stderr


def test_no_colour_on_a_terminal_with_no_color(kproject: Path, tether_cli: Cli) -> None:
    from tests.harness.ptys import spawn

    assert tether_cli("send", input="v = 5").returncode == 0
    env = {**os.environ, "NO_COLOR": "1", "TERM": "xterm-256color"}
    console = spawn(harness.tether_argv("console"), cwd=kproject, env=env)
    try:
        console.expect(rb"In \[")
        console.send(b"1 / 0\r")
        console.expect(rb"ZeroDivisionError")
        console.send(b"v * 3\r")
        console.expect(rb"15")
        sent = tether_cli("send", input="print('sent', v + 1)")
        assert sent.returncode == 0, sent.stderr
        console.expect(rb"sent 6")
        console.send(b"exit\r")
        assert console.wait(60) == 0, console.text()
    finally:
        console.close()
    assert colours(console.seen) == [], console.text()
