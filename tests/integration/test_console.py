"""tether send / kernel against a real sandbox with a real ipykernel (the venv's python)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.env import write_config

pytestmark = pytest.mark.integration

Cli = Callable[..., Any]
LOOPBACK = ("0100007F", "00000000000000000000000001000000")
CODE = """\
def helper():
    if True:
        value = 6 * 7
        message = "made"

        print(message, value)
        return value
"""


def kernel_pids(home: Path) -> list[int]:
    pids = []
    for record in (home / ".local/share/tether/kernels").glob("*/record.json"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(record.read_text())
            pids.append(int(data["pid"]))
            if "recorder_pid" in data:
                pids.append(int(data["recorder_pid"]))
    return pids


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


@pytest.fixture
def kproject(
    sandbox: Any, project: Path, tether_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """The project initialised against the sandbox with the venv's python as remote python."""
    monkeypatch.chdir(project)
    (project / "code.py").write_text(CODE)
    rel = f"kern-{uuid.uuid4().hex[:8]}"
    done = tether_cli(
        "init", "--host", sandbox.name, "--path", f"~/{rel}", "--python", sys.executable
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


def stop_helpers() -> None:
    """Kill every send helper left (their pidfiles are in tether's runtime dir)."""
    from tether.paths import runtime_dir

    for pidfile in (runtime_dir() / "kernels").glob("h-*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            if b"tether.kernel.helper" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
            pidfile.unlink()


def listening(pid: int) -> list[str]:
    """Local addresses of the TCP sockets the process listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cells = line.split()
            if cells[3] == "0A" and cells[9] in inodes:  # LISTEN
                found.append(cells[1])
    return found


def test_send_range_state_errors_ls_and_stop(kproject: Path, sandbox: Any, tether_cli: Cli) -> None:
    # Lines 3-6 are indented two levels and hold a blank line: they must run on their own.
    first = tether_cli("send", "code.py:3-6")
    assert first.returncode == 0, first.stderr
    assert "made 42" in first.stdout
    second = tether_cli("send", input="print(value + 1)\nvalue * 2\n")
    assert second.returncode == 0, second.stderr
    assert "43" in second.stdout and "84" in second.stdout  # state kept across invocations
    failed = tether_cli("send", input="    1 / 0\n")
    assert failed.returncode == 1
    assert "ZeroDivisionError" in failed.stderr
    one = tether_cli("send", "code.py:1-7")
    assert one.returncode == 0, one.stderr
    assert "42" in tether_cli("send", input="helper()").stdout

    listed = tether_cli("kernel", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    kernels = json.loads(listed.stdout)
    mine = [k for k in kernels if k["root"].startswith(str(sandbox.home))]
    assert [k["state"] for k in mine] == ["running"]
    kernel = mine[0]
    assert kernel["python"] == [sys.executable]
    assert "running" in tether_cli("kernel", "ls").stdout

    directory = Path(kernel["connection_file"]).parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(kernel["connection_file"]).stat().st_mode) == 0o600
    info = json.loads(Path(kernel["connection_file"]).read_text())
    assert len(info["key"]) >= 32
    # Only loopback or unix sockets (ipykernel may hold a loopback helper socket).
    addresses = listening(kernel["pid"])
    assert all(a.split(":")[0] in LOOPBACK for a in addresses), addresses
    if info["transport"] == "tcp":
        assert addresses
    from tether.paths import runtime_dir

    local = list((runtime_dir() / "kernels").glob("*.json"))
    assert local
    for path in local:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    stopped = tether_cli("kernel", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_alive(kernel["pid"])
    assert json.loads(tether_cli("kernel", "ls", "--json").stdout) == [
        k for k in kernels if k not in mine
    ]
    again = tether_cli("send", input="print('value' in dir())")
    assert again.returncode == 0 and "False" in again.stdout  # a fresh kernel after stop


def test_bad_input_gives_one_error_line(kproject: Path, tether_cli: Cli) -> None:
    from tests.integration.conftest import one_error_line

    assert "bad line range" in one_error_line(tether_cli("send", "code.py:5-2"))
    assert "has 7 lines" in one_error_line(tether_cli("send", "code.py:50"))
    assert "no such file" in one_error_line(tether_cli("send", "nope.py:1"))
    assert "no kernel named" in one_error_line(tether_cli("kernel", "stop", "nosuch"))


def test_missing_ipykernel_names_install(kproject: Path, sandbox: Any, tether_cli: Cli) -> None:
    from tests.integration.conftest import one_error_line

    toml = kproject / "tether.toml"
    write_config(toml, toml.read_text().replace(json.dumps(sys.executable), '"/usr/bin/python3"'))
    assert "/usr/bin/python3" in toml.read_text()
    line = one_error_line(tether_cli("send", input="1"))
    assert "ipykernel" in line and "tether kernel install" in line
    if not Path("/usr/lib/python3.11/EXTERNALLY-MANAGED").exists():
        return  # Debian 12's python3 is PEP 668-managed; elsewhere pip may just install
    installed = tether_cli("kernel", "install", "--yes")
    assert installed.returncode == 1, installed.stdout + installed.stderr
    line = one_error_line(installed)
    assert "PEP 668" in line and "venv" in line, line


def test_console_in_tmux_sees_sends_and_keeps_the_kernel(
    kproject: Path, tether_cli: Cli, tmux_socket: str
) -> None:
    from tests.harness.tmuxconsole import TmuxConsole

    console = TmuxConsole(tmux_socket, kproject, height=50).start()
    console.wait_for(r"In \[")
    console.type("secret_remote_name = 41")
    console.wait_for(r"In \[2\]")
    sent = tether_cli("send", input="print('from send', secret_remote_name + 1)")
    assert sent.returncode == 0, sent.stderr
    console.wait_for("from send 42")  # output of another client shown in the console
    console.leave()
    # Leaving kept the kernel: a new console finds the same state.
    console.start()
    console.wait_for(r"In \[")
    console.type("print(secret_remote_name * 2)")
    console.wait_for("82")
    console.tmux("send-keys", "-t", "c", "-l", "secret_remote_n")
    console.keys("Tab")  # completion from the remote kernel
    console.wait_for("secret_remote_name", 30)


PNG_1X1 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


def test_a_figure_is_saved_under_tether_figures(kproject: Path, tether_cli: Cli) -> None:
    code = (
        "import base64\nfrom IPython.display import Image, display\n"
        f"display(Image(data=base64.b64decode('{PNG_1X1}')))\n"
    )
    done = tether_cli("send", input=code)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("figure saved: ")]
    assert len(lines) == 1, done.stdout
    saved = Path(lines[0].removeprefix("figure saved: "))
    assert saved.parent == kproject / ".tether" / "figures"
    import base64

    assert saved.read_bytes() == base64.b64decode(PNG_1X1)


def test_autoreload_is_on_unless_the_target_turns_it_off(kproject: Path, tether_cli: Cli) -> None:
    probe = "print(any('autoreload' in name for name in get_ipython().extension_manager.loaded))"
    assert tether_cli("send", input=probe).stdout.strip() == "True"
    toml = kproject / "tether.toml"
    write_config(
        toml, toml.read_text().replace("default = true", "default = true\nautoreload = false")
    )
    assert tether_cli("kernel", "restart").returncode == 0
    done = tether_cli("send", input=probe)
    assert done.stdout.strip() == "False", done.stdout + done.stderr
