"""GPU picking: nvidia-smi CSV parsing (stored output), free-ness, and the FIFO over a local
agent with real tmux and a fake nvidia-smi."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_agent import with_agent
from tether.agent import gpus
from tether.agent.wire_jobs import JobKill, JobList, JobLog, JobStart, Status
from tether.transport.channel import AgentChannel, AgentError

DATA = Path(__file__).resolve().parents[1] / "data"


def test_parse_stored_nvidia_smi_output() -> None:
    parsed = gpus.parse_gpus((DATA / "nvidia-smi-gpus.csv").read_text())
    assert [g["index"] for g in parsed] == [0, 1, 2, 3, 4]
    assert parsed[0]["name"] == "NVIDIA A100-SXM4-80GB"
    assert parsed[2]["memory_used"] == 65012 and parsed[2]["memory_total"] == 81920
    assert parsed[4]["utilization"] is None  # [N/A]
    apps = gpus.parse_apps((DATA / "nvidia-smi-apps.csv").read_text())
    assert [(a["pid"], a["memory"]) for a in apps] == [(48211, 64990), (51377, None)]


def test_parse_the_header_and_units_format() -> None:
    parsed = gpus.parse_gpus((DATA / "nvidia-smi-gpus-header.csv").read_text())
    assert [(g["index"], g["memory_used"], g["utilization"]) for g in parsed] == [
        (0, 0, 0),
        (1, 80100, 100),
    ]
    assert gpus.parse_gpus("No devices were found\n") == []
    assert gpus.parse_apps("") == []


def test_free_means_no_process_little_memory_and_no_tether_job() -> None:
    parsed = gpus.parse_gpus((DATA / "nvidia-smi-gpus.csv").read_text())
    apps = gpus.parse_apps((DATA / "nvidia-smi-apps.csv").read_text())
    marked = gpus.annotate(parsed, apps, {4: "mine"})
    # 1: a process with little memory; 2: a process; 3: 1410 MiB used; 4: a tether job.
    assert [g["index"] for g in marked if g["free"]] == [0]
    assert marked[4]["job"] == "mine" and marked[2]["processes"] == 1


def test_held_by_jobs_counts_live_unfinished_jobs_only() -> None:
    now = 1000.0
    records: list[dict[str, Any]] = [
        {"name": "a", "gpus": "0,1", "created": 999.0},  # just started: holds
        {"name": "b", "gpus": "2", "created": 1.0, "wrapper_pid": 2**22 + 7},  # dead
        {"name": "c", "gpus": "3", "ended": 990.0},  # ended
        {"name": "d", "gpus": None, "created": 999.0},
        {"name": "q", "gpus": None, "state": "queued", "created": 999.0},
    ]
    assert gpus.held_by_jobs(records, now, 15.0) == {0: "a", 1: "a"}


# ---- the FIFO over a local agent ---------------------------------------------------


def fake_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: int | None = None) -> Path:
    state = tmp_path / "gpus.json"
    rows = [
        {"index": i, "uuid": f"GPU-fake-{i}", "name": "Fake GPU", "memory_used": 0,
         "memory_total": 81559, "utilization": 0}
        for i in range(2)
    ]  # fmt: skip
    apps = [] if busy is None else [{"uuid": f"GPU-fake-{busy}", "pid": 4242, "memory": 9000}]
    state.write_text(json.dumps({"gpus": rows, "apps": apps}))
    monkeypatch.setenv("TETHER_NVIDIA_SMI", str(DATA / "nvidia-smi-fake"))
    monkeypatch.setenv("FAKE_NVIDIA_SMI_STATE", str(state))
    return state


def start(channel: AgentChannel, root: Path, name: str, sock: str, code: str, n: int) -> Any:
    argv = [sys.executable, "-c", code]
    return channel.request(
        JobStart(
            name=name,
            root=str(root),
            project="gp",
            argv=argv,
            socket=sock,
            gpu_count=n,
            provenance={},
        )
    )


async def jobs_by_name(channel: AgentChannel) -> dict[str, dict[str, Any]]:
    answer, _ = await channel.request(JobList())
    return {job["name"]: job for job in answer["jobs"]}


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_busy_gpu_skipped_too_many_refused_kill_cancels_queued(
    tmp_path: Path, tmux_socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gpus(tmp_path, monkeypatch, busy=0)
    root = tmp_path / "remote"
    root.mkdir()
    tag = tmux_socket[-6:]
    code = "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(30)"

    async def body(channel: AgentChannel) -> None:
        with pytest.raises(AgentError) as caught:
            await start(channel, root, f"g3-{tag}", tmux_socket, "pass", 3)
        assert caught.value.kind == "nogpus"
        first, _ = await start(channel, root, f"g1-{tag}", tmux_socket, code, 1)
        assert first["record"]["gpus"] == "1"  # GPU 0 has a foreign process
        second, _ = await start(channel, root, f"g2-{tag}", tmux_socket, code, 1)
        assert second["record"]["state"] == "queued"
        assert second["record"]["reason"] == "waiting for 1 GPU"
        listed = await jobs_by_name(channel)
        assert listed[f"g2-{tag}"]["state"] == "queued"
        killed, _ = await channel.request(JobKill(root=str(root), name=f"g2-{tag}", grace=1.0))
        assert killed["record"]["state"] == "cancelled"
        assert killed["record"]["exit_code"] is None
        listed = await jobs_by_name(channel)
        assert listed[f"g2-{tag}"]["state"] == "cancelled"
        await channel.request(JobKill(root=str(root), name=f"g1-{tag}", grace=1.0))
        status, _ = await channel.request(Status())
        assert [g["free"] for g in status["gpus"]] == [False, True]
        assert status["nvidia_smi"] is True and len(status["load"]) == 3

    with_agent(body)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_queued_job_starts_when_a_gpu_frees_up(
    tmp_path: Path, tmux_socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gpus(tmp_path, monkeypatch)
    root = tmp_path / "remote"
    root.mkdir()
    tag = tmux_socket[-6:]
    gate = tmp_path / "gate"
    hold = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)"
    show = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['CUDA_DEVICE_ORDER'])"

    async def body(channel: AgentChannel) -> None:
        names = [f"a-{tag}", f"b-{tag}", f"c-{tag}"]
        for name, code in zip(names, (hold, hold, show), strict=True):
            await start(channel, root, name, tmux_socket, code, 1)
        listed = await jobs_by_name(channel)
        assert sorted(listed[n]["gpus"] for n in names[:2]) == ["0", "1"]
        assert listed[names[2]]["state"] == "queued"
        await asyncio.sleep(1.0)
        assert (await jobs_by_name(channel))[names[2]]["state"] == "queued"
        gate.write_text("go")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            job = (await jobs_by_name(channel))[names[2]]
            if job["state"] == "exited":
                break
            await asyncio.sleep(0.1)
        assert job["state"] == "exited" and job["exit_code"] == 0, job
        _, log = await channel.request(JobLog(root=str(root), name=names[2], offset=0))
        assert log.decode().split() == [job["gpus"], "PCI_BUS_ID"]

    with_agent(body)
