"""--gpus N on a real sandbox with real tmux and a fake nvidia-smi: the remote FIFO."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.env import write_config

pytestmark = pytest.mark.integration

Cli = Callable[..., subprocess.CompletedProcess[str]]
DATA = Path(__file__).resolve().parents[1] / "data"


def install_fake_gpus(home: Path, count: int) -> Path:
    """The fake nvidia-smi where the agent looks first (~/.local/share/tether/bin)."""
    bin_dir = home / ".local" / "share" / "tether" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "nvidia-smi-fake", bin_dir / "nvidia-smi")
    rows = [
        {"index": i, "uuid": f"GPU-fake-{i}", "name": "Fake H100", "memory_used": 0,
         "memory_total": 81559, "utilization": 0}
        for i in range(count)
    ]  # fmt: skip
    state = bin_dir / "fake-gpus.json"
    state.write_text(json.dumps({"gpus": rows, "apps": []}))
    return state


@pytest.fixture
def gpu_box(
    fresh_sandbox: Callable[..., Any],
    tmux_socket: str,
    project: Path,
    tether_cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    """A fresh sandbox with two fake GPUs and the project initialised for it."""
    box = fresh_sandbox("tt-gpu")
    install_fake_gpus(Path(box.home), 2)
    monkeypatch.chdir(project)
    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    done = tether_cli("init", "--host", box.name, "--path", "~/gp")
    assert done.returncode == 0, done.stderr
    yield box


def states(cli: Cli) -> dict[str, dict[str, Any]]:
    done = cli("jobs", "--json")
    assert done.returncode == 0, done.stderr
    return {job["name"]: job for job in json.loads(done.stdout)}


def wait_state(cli: Cli, name: str, want: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = states(cli).get(name)
        if job and job["state"] == want:
            return job
        time.sleep(0.2)
    raise AssertionError(f"{name} never became {want}: {states(cli).get(name)}")


def test_fifo_of_jobs_on_two_fake_gpus(gpu_box: Any, tether_cli: Cli) -> None:
    gates = Path(gpu_box.home) / "gates"
    gates.mkdir()
    code = (
        "import os, sys, time\n"
        "print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True)\n"
        f"while not os.path.exists(os.path.join({str(gates)!r}, sys.argv[1])): time.sleep(0.05)\n"
    )
    names = ["fa", "fb", "fc", "fd"]
    for i, name in enumerate(names):
        push = () if i == 0 else ("--no-push",)
        done = tether_cli("run", *push, "--name", name, "--gpus", "1", "--", "python3", "-c",
                          code, name)  # fmt: skip
        assert done.returncode == 0, done.stderr
        expected = "queued" if i >= 2 else "started"
        assert done.stdout.startswith(f"{expected} {name}"), done.stdout
    jobs = states(tether_cli)
    assert sorted(jobs[n]["gpus"] for n in ("fa", "fb")) == ["0", "1"]
    assert [jobs[n]["state"] for n in ("fc", "fd")] == ["queued", "queued"]
    assert jobs["fc"]["reason"] == "waiting for 1 GPU" and jobs["fc"]["gpus"] is None
    # The laptop side goes away entirely: the queue lives on the remote.
    from tether.transport.ssh import SshTransport

    SshTransport(gpu_box.name).stop_master()
    (gates / "fa").touch()
    fc = wait_state(tether_cli, "fc", "running")
    assert fc["gpus"] == states(tether_cli)["fa"]["gpus"]
    assert states(tether_cli)["fd"]["state"] == "queued"  # FIFO: fd waits behind fc
    (gates / "fb").touch()
    fd = wait_state(tether_cli, "fd", "running")
    assert {fc["gpus"], fd["gpus"]} == {"0", "1"}
    for name in ("fc", "fd"):
        (gates / name).touch()
        job = wait_state(tether_cli, name, "exited")
        assert job["exit_code"] == 0
    assert tether_cli("logs", "fd").stdout.strip() == fd["gpus"]


def test_kill_a_queued_job_and_too_many_gpus(gpu_box: Any, tether_cli: Cli) -> None:
    code = "import time; time.sleep(60)"
    for name in ("ka", "kb", "kc"):
        done = tether_cli("run", "--name", name, "--gpus", "1", "--", "python3", "-c", code)
        assert done.returncode == 0, done.stderr
    killed = tether_cli("kill", "kc")
    assert killed.returncode == 0, killed.stderr
    assert "kc on" in killed.stdout and "cancelled (killed by tether kill)" in killed.stdout
    job = states(tether_cli)["kc"]
    assert (job["state"], job["exit_code"]) == ("cancelled", None)
    for name in ("ka", "kb"):
        assert tether_cli("kill", name, "--grace", "0.5").returncode == 0
    many = tether_cli("run", "--no-push", "--name", "km", "--gpus", "3", "--", "true")
    assert many.returncode == 1
    assert many.stderr.startswith("tether: error: ") and "asked for 3 GPUs" in many.stderr
    assert len(many.stderr.strip().splitlines()) == 1, many.stderr


def test_status_one_entry_per_target_with_gpus_and_jobs(
    gpu_box: Any, tether_cli: Cli, project: Path
) -> None:
    config = project / "tether.toml"
    write_config(
        config, config.read_text() + '\n[targets.dead]\nhost = "tt-no-such-host"\npath = "~/x"\n'
    )
    done = tether_cli("run", "--name", "st", "--gpus", "1", "--", "python3", "-c",
                      "import time; time.sleep(30)")  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = tether_cli("status", "--json")
    assert shown.returncode == 0, shown.stderr
    entries = {entry["target"]: entry for entry in json.loads(shown.stdout)}
    assert set(entries) == {"dead", *[t for t in entries if t != "dead"]} and len(entries) == 2
    dead = entries.pop("dead")
    assert dead["reachable"] is False and dead["error"]
    (live,) = entries.values()
    assert live["reachable"] is True and len(live["load"]) == 3 and live["disk_free"] > 0
    assert [(g["index"], g["free"], g["job"]) for g in live["gpus"]] == [
        (0, False, "st"),
        (1, True, None),
    ] or [(g["index"], g["free"], g["job"]) for g in live["gpus"]] == [
        (0, True, None),
        (1, False, "st"),
    ]
    assert live["project_jobs"] == {"running": 1} and live["jobs"]["running"] >= 1
    screen = tether_cli("status")
    assert screen.returncode == 0, screen.stderr
    assert "1/2 free" in screen.stdout and "1 running" in screen.stdout
    assert tether_cli("kill", "st", "--on", live["target"], "--grace", "0.5").returncode == 0
