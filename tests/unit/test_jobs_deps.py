"""--after, notify hooks, array index and restart over a local agent with a real local tmux."""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_agent import with_agent
from tests.unit.test_jobs_agent import make_root, start
from tether.agent import deps
from tether.agent.wire_jobs import JobKill, JobList, JobLog, JobStart
from tether.transport.channel import AgentChannel, AgentError

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
PY = sys.executable


async def ended(channel: AgentChannel, name: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer, _ = await channel.request(JobList())
        for job in answer["jobs"]:
            if job["name"] == name and job["state"] not in ("running", "queued"):
                return dict(job)
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {name} did not end")


async def state_of(channel: AgentChannel, name: str) -> dict[str, Any]:
    answer, _ = await channel.request(JobList())
    return next(dict(job) for job in answer["jobs"] if job["name"] == name)


def test_verdict_reasons() -> None:
    records: dict[str, dict[str, Any]] = {
        "ok": {"name": "ok", "ended": 1.0, "exit_code": 0},
        "bad": {"name": "bad", "ended": 1.0, "exit_code": 3},
        "gone": {"name": "gone", "ended": 1.0, "exit_code": None},
        "run": {"name": "run", "ended": None, "created": 100.0},
    }
    assert deps.verdict(["ok", "run"], records.get, 101.0, 15) == (["run"], None)
    assert deps.verdict(["ok", "bad"], records.get, 101.0, 15)[1] == "dependency bad exited 3"
    assert deps.verdict(["gone"], records.get, 101.0, 15)[1] == "dependency gone was cancelled"
    assert deps.verdict(["run"], records.get, 500.0, 15)[1] == "dependency run was lost"
    assert deps.after_reason(["a", "b"]) == "after a, b"


def test_check_after_refuses_unknown_self_and_cycles() -> None:
    records: dict[str, dict[str, Any]] = {"a": {"name": "a", "after": ["c"]}, "c": {"name": "c"}}
    assert deps.check_after("b", ["a", "a"], records.get) == ["a"]
    for value, kind in ((["zz"], "nodep"), (["b"], "cycle"), ("a", "badafter")):
        with pytest.raises(Exception) as caught:
            deps.check_after("b", value, records.get)
        assert getattr(caught.value, "kind", None) == kind
    with pytest.raises(Exception) as cyc:
        deps.check_after("c", ["a"], records.get)
    assert getattr(cyc.value, "kind", None) == "cycle"


def test_a_chain_waits_and_a_failure_cancels_the_rest(tmp_path: Path, tmux_socket: str) -> None:
    root = make_root(tmp_path)
    gate = tmp_path / "gate"
    wait_gate = f"import os, sys, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"

    async def body(channel: AgentChannel) -> None:
        await start(channel, root, "d-a", [PY, "-c", wait_gate], tmux_socket)
        await start(channel, root, "d-b", [PY, "-c", "print('b ran')"], tmux_socket, after=["d-a"])
        await start(channel, root, "d-c", [PY, "-c", "raise SystemExit(3)"], tmux_socket,
                    after=["d-b"])  # fmt: skip
        await start(channel, root, "d-d", [PY, "-c", "pass"], tmux_socket, after=["d-c"])
        await asyncio.sleep(0.8)
        b = await state_of(channel, "d-b")
        assert (b["state"], b["reason"]) == ("queued", "after d-a")
        gate.write_text("go")
        assert (await ended(channel, "d-b"))["exit_code"] == 0
        dc = await ended(channel, "d-c")
        assert dc["exit_code"] == 3, dc
        d = await ended(channel, "d-d")
        assert (d["state"], d["exit_code"], d["reason"]) == (
            "cancelled",
            None,
            "dependency d-c exited 3",
        )
        # Already failed: recorded cancelled at once, no tmux session.
        answer, _ = await start(channel, root, "d-e", [PY], tmux_socket, after=["d-c"])
        assert answer["record"]["state"] == "cancelled"
        assert answer["record"]["reason"] == "dependency d-c exited 3"
        # Already done: starts at once.
        answer, _ = await start(channel, root, "d-f", [PY, "-c", "pass"], tmux_socket,
                                after=["d-b"])  # fmt: skip
        assert answer["record"]["state"] in ("starting", "running", "exited")  # not queued
        assert (await ended(channel, "d-f"))["exit_code"] == 0
        with pytest.raises(AgentError) as unknown:
            await start(channel, root, "d-g", [PY], tmux_socket, after=["nope"])
        assert unknown.value.kind == "nodep"

    with_agent(body)


def test_kill_cancels_a_job_waiting_on_a_dependency(tmp_path: Path, tmux_socket: str) -> None:
    root = make_root(tmp_path)

    async def body(channel: AgentChannel) -> None:
        await start(channel, root, "k-a", [PY, "-c", "import time; time.sleep(30)"], tmux_socket)
        await start(channel, root, "k-b", [PY, "-c", "pass"], tmux_socket, after=["k-a"])
        await asyncio.sleep(0.5)
        answer, _ = await channel.request(JobKill(root=str(root), name="k-b", grace=0.5))
        assert answer["record"]["state"] == "cancelled"
        assert answer["record"]["reason"] == "killed by tether kill"
        await channel.request(JobKill(root=str(root), name="k-a", grace=0.5))

    with_agent(body)


def test_notify_hook_env_failure_and_timeout(tmp_path: Path, tmux_socket: str) -> None:
    root = make_root(tmp_path)
    out = tmp_path / "hook.json"
    script = tmp_path / "hook.py"
    script.write_text(f"import json, os\njson.dump(dict(os.environ), open({str(out)!r}, 'w'))\n")
    dump = f"{shlex.quote(PY)} {shlex.quote(str(script))}"
    code = "import sys\nfor i in range(30): print('line', i)\nsys.exit(4)"

    async def body(channel: AgentChannel) -> None:
        await start(channel, root, "n-a", [PY, "-c", code], tmux_socket, notify=dump)
        record = await ended(channel, "n-a")
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        env = json.loads(out.read_text())
        assert env["TETHER_JOB"] == "n-a" and env["TETHER_STATE"] == "exited"
        assert env["TETHER_EXIT_CODE"] == "4" and env["TETHER_HOST"] == "h"
        tail = env["TETHER_LOG_TAIL"].splitlines()
        assert len(tail) == 20 and tail[-1] == "line 29"
        assert record["exit_code"] == 4
        notify_logs = {}
        for name, hook in (("n-b", "exit 9"), ("n-c", "sleep 30")):
            await start(channel, root, name, [PY, "-c", "pass"], tmux_socket, notify=hook,
                        notify_timeout=0.5)  # fmt: skip
            job = await ended(channel, name)
            assert (job["state"], job["exit_code"], job["reason"]) == ("exited", 0, None)
            notify_logs[name] = Path(str(job["log"])[: -len(".log")] + ".notify.log")
        log = notify_logs["n-c"]
        deadline = time.monotonic() + 10
        while "killed after" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the hanging hook was not killed"
            await asyncio.sleep(0.1)
        assert "notify exited 9" in notify_logs["n-b"].read_text()

    with_agent(body)


def test_array_index_and_restart_reuse_the_snapshot(tmp_path: Path, tmux_socket: str) -> None:
    root = make_root(tmp_path)
    code = "import os; print('idx', os.environ.get('TETHER_ARRAY_INDEX'))"

    async def body(channel: AgentChannel) -> None:
        first, _ = await start(channel, root, "r-0", [PY, "-c", code], tmux_socket, array_index=0)
        await start(channel, root, "r-1", [PY, "-c", code], tmux_socket, array_index=1,
                    snapshot_of="r-0")  # fmt: skip
        for index in (0, 1):
            await ended(channel, f"r-{index}")
            _, data = await channel.request(JobLog(root=str(root), name=f"r-{index}", offset=0))
            assert data == f"idx {index}\n".encode()
        again, _ = await channel.request(
            JobStart("r-0-2", str(root), ["restart"], socket=tmux_socket, restart_of="r-0")
        )
        assert again["record"]["snapshot"] == first["record"]["snapshot"]
        assert again["record"]["argv"] == first["record"]["argv"]
        assert again["record"]["commit"] == "abc"
        fresh, _ = await channel.request(
            JobStart(
                "r-0-3", str(root), ["restart"], socket=tmux_socket, restart_of="r-0", fresh=True
            )
        )
        assert fresh["record"]["snapshot"] != first["record"]["snapshot"]
        await ended(channel, "r-0-2")
        await ended(channel, "r-0-3")

    with_agent(body)
