"""The agent's kernel ops, run in-process against a temporary HOME."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.agent import fsops, kernels


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    short = Path("/tmp") / f"tk-{os.getpid()}-{tmp_path.name[-6:]}"
    short.mkdir()
    monkeypatch.setenv("HOME", str(short))
    yield short
    for name in os.listdir(kernels.kernels_dir()) if os.path.isdir(kernels.kernels_dir()) else []:
        kernels._stop(name, 1.0)
    import shutil

    shutil.rmtree(short, ignore_errors=True)


def test_connection_info_ipc_and_tcp(tmp_path: Path) -> None:
    ipc = kernels.connection_info("/k")
    assert ipc["transport"] == "ipc" and ipc["ip"] == "/k/k"
    assert kernels.socket_paths(ipc) == [f"/k/k-{n}" for n in range(1, 6)]
    assert len(ipc["key"]) == 64 and ipc["key"] != kernels.connection_info("/k")["key"]
    tcp = kernels.connection_info("/" + "x" * 120)
    assert tcp["transport"] == "tcp" and tcp["ip"] == "127.0.0.1"
    assert len({tcp[channel] for channel in kernels.CHANNELS}) == 5
    assert kernels.socket_paths(tcp) == []


def test_launch_argv_keeps_words() -> None:
    argv = kernels.launch_argv(["py thon", "-X", "dev"], "/a b/kernel.json")
    assert argv[:3] == ["py thon", "-X", "dev"]
    assert argv[3:7] == ["-m", "ipykernel_launcher", "-f", "/a b/kernel.json"]
    assert "--IPKernelApp.exec_lines=%autoreload 2" in argv


def test_missing_ipykernel_names_install(home: Path, tmp_path: Path) -> None:
    fake = tmp_path / "py"
    fake.write_text(
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ipykernel'\" >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(fsops.OpError, match="tether kernel install") as raised:
        kernels.kernel_start({"name": "k", "python": [str(fake)]}, b"")
    assert raised.value.kind == "noipykernel"


def test_bad_name_refused(home: Path) -> None:
    with pytest.raises(fsops.OpError, match="bad job name"):
        kernels.kernel_start({"name": "../x", "python": [sys.executable]}, b"")


def test_start_list_stop(home: Path) -> None:
    header = {"name": "k1", "python": [sys.executable], "root": "~/proj"}
    answer, _ = kernels.kernel_start(header, b"")
    assert answer["started"] is True
    directory = Path(kernels.kernel_dir("k1"))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "kernel.json").stat().st_mode) == 0o600
    assert answer["connection"]["transport"] == "ipc"
    again, _ = kernels.kernel_start(header, b"")
    assert again["started"] is False and again["record"]["pid"] == answer["record"]["pid"]
    listed = kernels.kernel_list({}, b"")[0]["kernels"]
    assert [(k["name"], k["state"]) for k in listed] == [("k1", "running")]
    pid = answer["record"]["pid"]
    stopped, _ = kernels.kernel_stop({"name": "k1"}, b"")
    assert stopped["was_alive"] is True
    # Exited: gone, or a zombie its parent (init, for a detached kernel) has yet to reap.
    assert kernels._ended(pid)
    assert kernels.kernel_list({}, b"")[0]["kernels"] == []
    with pytest.raises(fsops.OpError, match="no kernel named 'k1'"):
        kernels.kernel_stop({"name": "k1"}, b"")


def test_exit_keeps_the_kernel(home: Path) -> None:
    from jupyter_client.blocking.client import BlockingKernelClient

    answer, _ = kernels.kernel_start({"name": "k2", "python": [sys.executable]}, b"")
    client = BlockingKernelClient()
    client.load_connection_info(answer["connection"])
    client.start_channels()
    try:
        client.wait_for_ready(timeout=30)
        reply = client.execute_interactive("exit", timeout=30)
        assert reply["content"]["payload"][0]["keepkernel"] is True
    finally:
        client.stop_channels()
    assert kernels.kernel_list({}, b"")[0]["kernels"][0]["state"] == "running"


def test_catchup_after_msg_id_or_since() -> None:
    entries = [{"msg_id": f"m{n}", "header": {"date": f"2024-01-01T00:00:0{n}Z"}} for n in range(5)]
    assert kernels.catchup(entries, "m2", None) == (entries[3:], True)
    assert kernels.catchup(entries, "m4", None) == ([], True)
    assert kernels.catchup(entries, "gone", "2024-01-01T00:00:02Z") == (entries[3:], False)
    assert kernels.catchup(entries, None, None) == ([], False)


def test_recorder_keeps_iopub_and_stops_with_the_kernel(home: Path) -> None:
    import time

    from jupyter_client.blocking.client import BlockingKernelClient

    from tether.kernel import remote

    header = {"name": "k3", "python": [sys.executable]}
    answer, _ = kernels.kernel_start(header, remote.RECORDER.read_bytes())
    recorder = answer["record"]["recorder_pid"]
    assert fsops.pid_alive(recorder)
    client = BlockingKernelClient()
    client.load_connection_info(answer["connection"])
    client.start_channels()
    try:
        client.wait_for_ready(timeout=30)
        first = client.execute_interactive("print('one')", timeout=30)
        client.execute_interactive("print('two')", timeout=30)
    finally:
        client.stop_channels()
    deadline = time.monotonic() + 10
    while True:
        got, _ = kernels.kernel_catchup({"name": "k3", "after": None, "since": "0"}, b"")
        texts = [m["content"].get("text") for m in got["messages"] if m["msg_type"] == "stream"]
        if "two\n" in texts or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert texts[-2:] == ["one\n", "two\n"]
    # After the first execute's last message: only the second's.
    ones = [
        m
        for m in got["messages"]
        if m["parent_header"].get("msg_id") == first["parent_header"]["msg_id"]
    ]
    after, _ = kernels.kernel_catchup({"name": "k3", "after": ones[-1]["msg_id"]}, b"")
    assert [m["content"].get("text") for m in after["messages"] if m["msg_type"] == "stream"] == [
        "two\n"
    ]
    kernels.kernel_stop({"name": "k3"}, b"")
    deadline = time.monotonic() + 5
    while fsops.pid_alive(recorder) and time.monotonic() < deadline:
        with __import__("contextlib").suppress(ChildProcessError):
            os.waitpid(recorder, os.WNOHANG)
        time.sleep(0.05)
    assert not fsops.pid_alive(recorder)


def test_a_zombie_kernel_has_ended() -> None:
    # A detached kernel's parent is init, which in a container may reap it late or never:
    # `kernel stop` waited for that (pid_alive) though the kernel had exited.
    import signal
    import subprocess
    import time

    from tether.hosts.processes import end_process

    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, time; p = subprocess.Popen(['sleep', '60']);"
         " print(p.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not kernels._ended(child)
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not kernels._ended(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert kernels._ended(child) and fsops.pid_alive(child)  # a zombie: not reaped
    finally:
        end_process(parent)
        assert parent.stdout is not None
        parent.stdout.close()


def test_autoreload_checks_the_project_not_the_installed_modules(
    home: Path, tmp_path: Path
) -> None:
    """%autoreload 2 stat'ed every loaded module on each execute (~5 ms with a big stack):
    installed modules are marked skipped, the project's own still reload."""
    from jupyter_client.blocking.client import BlockingKernelClient

    project = home / "proj"
    project.mkdir()
    module = project / "mymod.py"
    module.write_text("VALUE = 1\n")
    header = {"name": "k-reload", "python": [sys.executable], "root": str(project)}
    answer, _ = kernels.kernel_start(header, b"")
    client = BlockingKernelClient()
    client.load_connection_info(answer["connection"])
    client.start_channels()
    out: list[str] = []

    def run(code: str) -> None:
        def keep(message: dict[str, object]) -> None:
            content = message.get("content")
            if isinstance(content, dict) and message["msg_type"] == "stream":
                out.append(str(content.get("text")))

        reply = client.execute_interactive(code, timeout=30, output_hook=keep)
        assert reply["content"]["status"] == "ok", reply["content"]

    try:
        client.wait_for_ready(timeout=30)
        run(
            f"import sys; sys.path.insert(0, {str(project)!r}); import mymod, json, email.mime.text"
        )
        run("pass")
        run(
            "r = get_ipython().magics_manager.registry['AutoreloadMagics']._reloader\n"
            "print(sorted({'json', 'email.mime.text', 'mymod'} & set(r.skip_modules)))"
        )
        assert out[-1].strip() == "['email.mime.text', 'json']"
        module.write_text("VALUE = 2\n")
        stamp = module.stat().st_mtime + 5
        os.utime(module, (stamp, stamp))
        run("print(mymod.VALUE)")
        assert out[-1].strip() == "2"
    finally:
        client.stop_channels()
