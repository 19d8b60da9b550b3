"""Job ops over a local agent with a real local tmux: snapshot, exact argv, exit codes, kill."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_agent import with_agent
from tether.agent.wire_jobs import JobKill, JobList, JobLog, JobStart
from tether.transport.channel import AgentChannel, AgentError

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

HOSTILE = ["a b", "$(touch /tmp/tether-pwned)", "--flag", "it's", "", "naïve ☃ 日本", "x\ny"]


async def wait_end(channel: AgentChannel, name: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer, _ = await channel.request(JobList())
        for job in answer["jobs"]:
            if job["name"] == name and job["state"] != "running":
                return dict(job)
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {name} did not end")


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "remote"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "dump.py").write_text(
        "import json, os, sys\n"
        "print('hello from job', flush=True)\n"
        "open(os.path.join('outputs', 'argv.json'), 'w').write(json.dumps(sys.argv[1:]))\n"
        "sys.exit(int(os.environ.get('CODE', '0')))\n"
    )
    os.symlink("pkg/mod.py", root / "link.py")
    return root


def start(channel: AgentChannel, root: Path, name: str, argv: list[str], sock: str, **kw: Any):
    return channel.request(
        JobStart(
            name=name,
            root=str(root),
            project="proj",
            argv=argv,
            socket=sock,
            results=["outputs/"],
            provenance={"commit": "abc", "target": "t", "host": "h"},
            **kw,
        )
    )


def test_exact_argv_exit_code_log_and_results_link(tmp_path: Path, tmux_socket: str) -> None:
    root = make_root(tmp_path)
    argv = [sys.executable, "-c", "import sys; print(sys.argv[1:]); sys.exit(3)", *HOSTILE]

    async def body(channel: AgentChannel) -> None:
        answer, _ = await start(channel, root, "j1", argv, tmux_socket)
        record = answer["record"]
        snap = Path(record["snapshot"])
        copied, live = snap / "pkg" / "mod.py", root / "pkg" / "mod.py"
        assert copied.read_bytes() == live.read_bytes()
        assert copied.stat().st_ino != live.stat().st_ino  # its own copy, never a hard link
        assert os.readlink(snap / "link.py") == "pkg/mod.py"
        assert os.readlink(snap / "outputs") == str(root / "outputs")
        done = await wait_end(channel, "j1")
        assert done["state"] == "exited" and done["exit_code"] == 3 and done["reason"] is None
        assert done["argv"] == argv and done["commit"] == "abc"
        header, data = await channel.request(JobLog(root=str(root), name="j1", offset=0))
        assert b"--flag" in data and "naïve ☃".encode() in data
        assert header["state"] == "exited"

    with_agent(body)
    assert not Path("/tmp/tether-pwned").exists()


def test_hostile_argv_reaches_the_program_unchanged(tmp_path: Path, tmux_socket: str) -> None:
    root = make_root(tmp_path)

    async def body(channel: AgentChannel) -> None:
        await start(channel, root, "j2", [sys.executable, "dump.py", *HOSTILE], tmux_socket)
        done = await wait_end(channel, "j2")
        assert done["exit_code"] == 0, done
        assert json.loads((root / "outputs" / "argv.json").read_text()) == HOSTILE

    with_agent(body)


def test_a_taken_name_is_refused_and_unknown_names_are_clear(
    tmp_path: Path, tmux_socket: str
) -> None:
    root = make_root(tmp_path)

    async def body(channel: AgentChannel) -> None:
        await start(channel, root, "j3", [sys.executable, "-c", "pass"], tmux_socket)
        with pytest.raises(AgentError) as caught:
            await start(channel, root, "j3", [sys.executable, "-c", "pass"], tmux_socket)
        assert caught.value.kind == "exists"
        with pytest.raises(AgentError) as unknown:
            await channel.request(JobLog(root=str(root), name="nope", offset=0))
        assert unknown.value.kind == "nojob"
        with pytest.raises(AgentError) as bad:
            await start(channel, root, "../x", [sys.executable], tmux_socket)
        assert bad.value.kind == "badname"
        await wait_end(channel, "j3")

    with_agent(body)


def test_kill_records_reason_and_signal_exit_code(tmp_path: Path, tmux_socket: str) -> None:
    root = make_root(tmp_path)
    argv = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]

    async def body(channel: AgentChannel) -> None:
        await start(channel, root, "j4", argv, tmux_socket)
        answer, _ = await channel.request(JobKill(root=str(root), name="j4", grace=2.0))
        record = answer["record"]
        assert record["ended"] is not None
        assert record["reason"] == "killed by tether kill"
        # Python turns SIGINT into KeyboardInterrupt -> exit 130 or signal 2 -> 130.
        assert record["exit_code"] in (1, 130)
        done = await wait_end(channel, "j4")
        assert done["state"] == "exited"

    with_agent(body)


def test_signal_death_is_128_plus_n(tmp_path: Path, tmux_socket: str) -> None:
    root = make_root(tmp_path)
    argv = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]

    async def body(channel: AgentChannel) -> None:
        await start(channel, root, "j5", argv, tmux_socket)
        done = await wait_end(channel, "j5")
        assert (done["exit_code"], done["reason"]) == (137, "signal 9"), done

    with_agent(body)


def test_snapshot_does_not_see_later_changes(tmp_path: Path, tmux_socket: str) -> None:
    root = make_root(tmp_path)
    argv = [
        sys.executable,
        "-c",
        "import time; time.sleep(1.0); print(open('pkg/mod.py').read(), flush=True)",
    ]

    async def body(channel: AgentChannel) -> None:
        await start(channel, root, "j6", argv, tmux_socket)
        temp = root / "pkg" / "mod.py.tmp"
        temp.write_text("X = 2\n")
        os.replace(temp, root / "pkg" / "mod.py")
        await wait_end(channel, "j6")
        _, data = await channel.request(JobLog(root=str(root), name="j6", offset=0))
        assert b"X = 1" in data and b"X = 2" not in data

    with_agent(body)


def test_a_session_gone_without_a_record_is_lost(tmp_path: Path, tmux_socket: str) -> None:
    root = make_root(tmp_path)
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]

    async def body(channel: AgentChannel) -> None:
        await start(channel, root, "j7", argv, tmux_socket)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listed, _ = await channel.request(JobList())
            (job,) = [j for j in listed["jobs"] if j["name"] == "j7"]
            if job["pid"]:
                break
            await asyncio.sleep(0.1)
        # Simulate a reboot: kill everything without letting the wrapper write the end.
        os.kill(job["wrapper_pid"], 9)
        os.killpg(job["pid"], 9)
        subprocess.run(["tmux", "-L", tmux_socket, "kill-server"], capture_output=True, check=False)
        listed, _ = await channel.request(JobList())
        (job,) = [j for j in listed["jobs"] if j["name"] == "j7"]
        assert job["state"] == "lost"

    with_agent(body)


def test_a_remote_without_tmux_is_told_how_to_install_it(
    tmp_path: Path, tmux_socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python3")
    monkeypatch.setenv("PATH", str(bin_dir))
    root = make_root(tmp_path)

    async def body(channel: AgentChannel) -> None:
        with pytest.raises(AgentError) as caught:
            await start(channel, root, "j8", [sys.executable, "-c", "pass"], tmux_socket)
        assert caught.value.kind == "notmux"
        assert "apt-get install tmux" in str(caught.value)

    with_agent(body)


def logging_tmux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `tmux` first on PATH that logs its argv and runs the real one; the log's path."""
    real = shutil.which("tmux")
    assert real is not None
    log = tmp_path / "tmux.log"
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "tmux").write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec "{real}" "$@"\n')
    (shim / "tmux").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    return log


def test_listing_started_jobs_runs_no_tmux(
    tmp_path: Path, tmux_socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each `tmux list-sessions` is a process start on the remote (4 hosts at once in
    `tether jobs`): a job whose wrapper is known is told running or ended without one."""
    log = logging_tmux(tmp_path, monkeypatch)
    root = make_root(tmp_path)
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]

    async def listed(channel: AgentChannel, name: str) -> dict[str, Any]:
        answer, _ = await channel.request(JobList())
        (job,) = [j for j in answer["jobs"] if j["name"] == name]
        return dict(job)

    async def body(channel: AgentChannel) -> None:
        await start(channel, root, "j9", argv, tmux_socket)
        await start(channel, root, "j10", [sys.executable, "-c", "pass"], tmux_socket)
        deadline = time.monotonic() + 10
        while not (await listed(channel, "j9"))["pid"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await wait_end(channel, "j10")
        log.write_text("")
        for _ in range(3):
            running, ended = await listed(channel, "j9"), await listed(channel, "j10")
            assert (running["state"], running["alive"]) == ("running", True)
            assert ended["state"] == "exited" and ended["exit_code"] == 0
        assert "list-sessions" not in log.read_text()
        # The wrapper killed outright (as by a reboot): lost, still without tmux.
        os.kill(running["wrapper_pid"], 9)
        os.killpg(running["pid"], 9)
        deadline = time.monotonic() + 10
        while (await listed(channel, "j9"))["state"] == "running":
            assert time.monotonic() < deadline, "a killed wrapper still counts as running"
            await asyncio.sleep(0.05)
        assert (await listed(channel, "j9"))["state"] == "lost"
        assert "list-sessions" not in log.read_text()

    with_agent(body)


def test_a_wrapper_stamp_names_one_process_while_it_runs(tmp_path: Path) -> None:
    """A reused pid, a zombie or a stamp from another boot never count as the wrapper."""
    from tether.agent.jobstore import process_stamp, wrapper_alive

    me = {"wrapper_pid": os.getpid(), "wrapper_stamp": process_stamp(os.getpid())}
    assert me["wrapper_stamp"] is not None and wrapper_alive(me) is True
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = process_stamp(child.pid)
        assert theirs is not None and theirs != me["wrapper_stamp"]
        assert wrapper_alive({"wrapper_pid": os.getpid(), "wrapper_stamp": theirs}) is False
        boot, started = str(me["wrapper_stamp"]).rsplit(":", 1)
        other_boot = {"wrapper_pid": os.getpid(), "wrapper_stamp": f"x{boot}:{started}"}
        assert wrapper_alive(other_boot) is False
        child.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert wrapper_alive({"wrapper_pid": child.pid, "wrapper_stamp": theirs}) is False
    finally:
        child.kill()
        child.wait()
    assert wrapper_alive({"wrapper_pid": 1}) is None  # no stamp kept: ask tmux
    assert wrapper_alive({"wrapper_pid": True, "wrapper_stamp": theirs}) is None
