"""The persistent remote kernel in other Jupyter frontends (a kernelspec and its proxy),
interrupts, tracebacks that name the sent file, and the connection file for outside
clients: real sshd sandbox, real ipykernel, real nbconvert / nbclient / jupyter_client."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_console import kproject as kproject
from tests.integration.test_console import pid_alive
from tests.integration.test_console_link import pproject as pproject

pytestmark = pytest.mark.integration

Cli = Callable[..., Any]


def jupyter(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`jupyter ARGS` from this venv, in the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "jupyter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def notebook(path: Path, *cells: str) -> Path:
    import nbformat

    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(book, path)
    return path


def outputs(path: Path) -> list[str]:
    """The text each cell printed (stream outputs joined), cell by cell."""
    import nbformat

    book = nbformat.read(path, as_version=4)
    return [
        "".join(o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream")
        for cell in book.cells
    ]


def my_kernel(tether_cli: Cli) -> dict[str, Any]:
    listed = tether_cli("kernel", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    kernels = [k for k in json.loads(listed.stdout) if k["this_project"]]
    assert len(kernels) == 1, kernels
    return dict(kernels[0])


def install_spec(tether_cli: Cli) -> str:
    """`tether kernel spec install` in the current project; the spec name it prints for
    nbconvert (`--ExecutePreprocessor.kernel_name=NAME`)."""
    done = tether_cli("kernel", "spec", "install")
    assert done.returncode == 0, done.stderr
    found = re.search(r"--ExecutePreprocessor\.kernel_name=(\S+)", done.stdout)
    assert found, done.stdout
    return found.group(1)


@pytest.fixture
def jupyter_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Jupyter data dir of the test's own (JUPYTER_DATA_DIR), for kernelspecs."""
    directory = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(directory))
    return directory


def test_kernelspec_runs_a_notebook_in_the_persistent_remote_kernel(
    kproject: Path, sandbox: Any, tether_cli: Cli, jupyter_dir: Path, tmp_path: Path
) -> None:
    from tether import config

    target = config.load().one(None)
    spec_name = install_spec(tether_cli)
    listed = jupyter("kernelspec", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    specs = json.loads(listed.stdout)["kernelspecs"]
    assert spec_name in specs, specs
    spec = specs[spec_name]
    assert Path(spec["resource_dir"]).parent.parent == jupyter_dir
    assert (
        kproject.name in spec["spec"]["display_name"]
        and target.name in spec["spec"]["display_name"]
    )

    remote_dir = Path(sandbox.home) / target.path.removeprefix("~/")
    book = notebook(
        tmp_path / "analysis.ipynb",
        "import os\nprint(os.getcwd())",
        "from_notebook = 6 * 7\nprint('defined', from_notebook)",
    )
    done = jupyter(
        "nbconvert", "--to", "notebook", "--execute", "--inplace",
        f"--ExecutePreprocessor.kernel_name={spec_name}", str(book),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = outputs(book)
    assert printed[0].strip() == str(remote_dir), printed  # it ran on the remote
    assert printed[1].strip() == "defined 42", printed
    kernel = my_kernel(tether_cli)
    assert kernel["state"] == "running" and pid_alive(kernel["pid"])  # shutdown detached
    sent = tether_cli("send", input="print(from_notebook + 1)")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "43"  # the notebook's state, seen by send
    again = jupyter(
        "nbconvert", "--to", "notebook", "--execute", "--inplace",
        f"--ExecutePreprocessor.kernel_name={spec_name}", str(notebook(
            tmp_path / "second.ipynb", "print('still', from_notebook)")),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert outputs(tmp_path / "second.ipynb") == ["still 42\n"]
    assert my_kernel(tether_cli)["pid"] == kernel["pid"]  # the same kernel, twice attached


def test_frontend_restart_and_interrupt_act_on_the_remote_kernel(
    kproject: Path, tether_cli: Cli, jupyter_dir: Path
) -> None:
    from jupyter_client.manager import KernelManager

    spec_name = install_spec(tether_cli)
    assert tether_cli("send", input="before_restart = 1").returncode == 0
    first = my_kernel(tether_cli)
    manager = KernelManager(kernel_name=spec_name)
    manager.start_kernel()
    try:
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=90)
        reply = client.execute_interactive("print('seen' if before_restart else '')", timeout=60)
        assert reply["content"]["status"] == "ok"
        msg_id = client.execute("import time\nprint('sleeping', flush=True)\ntime.sleep(30)")
        time.sleep(1.5)
        started = time.monotonic()
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=10)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - started < 5
        client.stop_channels()
        manager.restart_kernel(now=False)
        client = manager.client()
        client.start_channels()
        client.wait_for_ready(timeout=90)
        reply = client.execute_interactive("print('before_restart' in dir())", timeout=60)
        assert reply["content"]["status"] == "ok"
        client.stop_channels()
    finally:
        manager.shutdown_kernel(now=False)
    after = my_kernel(tether_cli)
    assert after["pid"] != first["pid"] and after["state"] == "running"  # restarted remotely
    assert not pid_alive(first["pid"])
    sent = tether_cli("send", input="print('before_restart' in dir())")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "False"


def started_send(code: str, cwd: Path) -> subprocess.Popen[str]:
    """`tether send` of code, running, once its first line was printed."""
    from tests.harness import env as harness

    process = subprocess.Popen(
        harness.tether_argv("send"),
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(code)
    process.stdin.close()
    process.stdin = None  # communicate() must not flush it
    line = process.stdout.readline()
    assert line.strip() == "sleeping", line
    return process


SLEEP = "import time\nprint('sleeping', flush=True)\ntime.sleep(30)\nprint('woke')\n"


def test_ctrl_c_in_send_interrupts_the_remote_cell(kproject: Path, tether_cli: Cli) -> None:
    assert tether_cli("send", input="print('warm')").returncode == 0
    process = started_send(SLEEP, kproject)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "woke" not in out
    started = time.monotonic()
    after = tether_cli("send", input="print('free')", timeout=30)
    took = time.monotonic() - started
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == "free"
    assert took < 2.0, took  # the kernel was idle again: nothing waited for the sleep


def test_kernel_interrupt_stops_the_running_cell(kproject: Path, tether_cli: Cli) -> None:
    assert tether_cli("send", input="print('warm')").returncode == 0
    process = started_send(SLEEP, kproject)
    started = time.monotonic()
    done = tether_cli("kernel", "interrupt")
    assert done.returncode == 0, done.stderr
    out, err = process.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert process.returncode == 1 and "KeyboardInterrupt" in err, err
    assert "woke" not in out


TRAIN = """\
import math


def step(x):
    scale = 2
    return math.sqrt(x) / (x - 4) * scale


for x in (9, 4):
    print("step", step(x))
"""


@pytest.mark.parametrize("no_color", [False, True])
def test_a_traceback_names_the_sent_file_and_its_lines_without_colour(
    kproject: Path, tether_cli: Cli, monkeypatch: pytest.MonkeyPatch, no_color: bool
) -> None:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    (kproject / "train.py").write_text(TRAIN)
    defined = tether_cli("send", "train.py:1-6")
    assert defined.returncode == 0, defined.stderr
    failed = tether_cli("send", "train.py:9-10")
    assert failed.returncode == 1
    assert "step 1.2" in failed.stdout
    err = failed.stderr
    assert "ZeroDivisionError" in err, err
    assert "\x1b" not in err, repr(err)  # stderr is a pipe here: plain text
    assert "train.py:10" in err, err  # the loop's line in the file, not "Cell In[n], line 2"
    assert "train.py:6" in err, err  # the function defined by the earlier send, line 6
    assert "Cell In[" not in err, err
    assert "return math.sqrt(x) / (x - 4) * scale" in err, err  # the source line shown


def test_kernel_ls_shows_a_connection_file_any_client_can_use(
    kproject: Path, tether_cli: Cli
) -> None:
    from jupyter_client.blocking.client import BlockingKernelClient

    assert tether_cli("send", input="shared = 'from send'").returncode == 0
    kernel = my_kernel(tether_cli)
    path = Path(kernel["local_connection_file"])
    assert path.exists()
    assert str(path) in tether_cli("kernel", "ls").stdout
    client = BlockingKernelClient(connection_file=str(path))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        seen: list[str] = []

        def keep(message: dict[str, Any]) -> None:
            if message["msg_type"] == "stream":
                seen.append(message["content"]["text"])

        client.execute_interactive("print(shared)", output_hook=keep, timeout=60)
        assert "".join(seen).strip() == "from send"
    finally:
        client.stop_channels()


def test_ctrl_c_in_the_console_interrupts_the_remote_cell(kproject: Path, tmux_socket: str) -> None:
    from tests.harness.tmuxconsole import TmuxConsole

    console = TmuxConsole(tmux_socket, kproject, height=50).start()
    console.wait_for(r"In \[")
    console.type("import time; print('sleeping'); time.sleep(30)")
    console.wait_for("sleeping")
    time.sleep(0.5)
    started = time.monotonic()
    console.keys("C-c")
    screen = console.wait_for("KeyboardInterrupt", 10)
    assert "Cannot interrupt" not in screen, screen
    console.wait_for(r"In \[2\]", 10)
    assert time.monotonic() - started < 5
    console.type("print('after', 6 * 7)")
    console.wait_for("after 42", 10)
    console.leave()


TICKS = """\
import pathlib, time
pathlib.Path('started').write_text('yes')
for i in range(25):
    print('tick', i, flush=True)
    time.sleep(0.2)
"""


def test_a_notebook_cell_survives_a_cut_with_every_line_once(
    pproject: Path, sandbox: Any, proxy: Any, tether_cli: Cli, jupyter_dir: Path, tmp_path: Path
) -> None:
    import threading

    from tether import config

    target = config.load().one(None)
    spec_name = install_spec(tether_cli)
    started = Path(sandbox.home) / target.path.removeprefix("~/") / "started"
    book = notebook(tmp_path / "ticks.ipynb", TICKS, "print('after', 6 * 7)")
    result: list[subprocess.CompletedProcess[str]] = []

    def execute() -> None:
        kernel = f"--ExecutePreprocessor.kernel_name={spec_name}"
        try:
            result.append(jupyter("nbconvert", "--to", "notebook", "--execute", "--inplace",
                                  kernel, str(book), timeout=120))  # fmt: skip
        except subprocess.TimeoutExpired as error:
            stderr = error.stderr.decode() if isinstance(error.stderr, bytes) else error.stderr
            result.append(subprocess.CompletedProcess(error.cmd, -1, "", f"timeout: {stderr}"))

    runner = threading.Thread(target=execute)
    runner.start()
    try:
        deadline = time.monotonic() + 90
        while not started.exists():
            assert time.monotonic() < deadline, "the cell never started"
            time.sleep(0.05)
        time.sleep(1.0)
        proxy.refuse(True)
        proxy.cut()
        time.sleep(2.0)
        proxy.refuse(False)
    finally:
        runner.join(180)
    assert result and result[0].returncode == 0, result and result[0].stderr[-3000:]
    printed = outputs(book)
    assert printed[0].splitlines() == [f"tick {i}" for i in range(25)], printed[0]  # each once
    assert printed[1] == "after 42\n"
    assert "lost the link" in result[0].stderr and "reconnected" in result[0].stderr


def test_kernel_restart_rewrites_the_connection_file_at_once(
    kproject: Path, tether_cli: Cli
) -> None:
    from jupyter_client.blocking.client import BlockingKernelClient

    assert tether_cli("send", input="print('up')").returncode == 0
    old = json.loads(Path(my_kernel(tether_cli)["local_connection_file"]).read_text())
    restarted = tether_cli("kernel", "restart")
    assert restarted.returncode == 0, restarted.stderr
    path = Path(my_kernel(tether_cli)["local_connection_file"] or "")
    assert path.is_file()  # written by the restart, before any send
    assert json.loads(path.read_text())["key"] != old["key"]
    client = BlockingKernelClient(connection_file=str(path))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive("fresh = 1", timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        client.stop_channels()


def test_a_figure_shown_in_the_console_is_saved(kproject: Path, tmux_socket: str) -> None:
    from tests.harness.tmuxconsole import TmuxConsole
    from tests.integration.test_console import PNG_1X1

    console = TmuxConsole(tmux_socket, kproject, width=200, height=50).start()
    console.wait_for(r"In \[")
    console.type(
        "import base64; from IPython.display import Image, display; "
        f"display(Image(data=base64.b64decode('{PNG_1X1}')))"
    )
    shown = console.wait_for("figure saved: ", 30)
    saved = [p for p in (kproject / ".tether" / "figures").glob("*.png")]
    assert len(saved) == 1, shown
    assert str(saved[0]) in shown.replace("\n", "") or saved[0].name in shown
    import base64

    assert saved[0].read_bytes() == base64.b64decode(PNG_1X1)
    console.leave()
