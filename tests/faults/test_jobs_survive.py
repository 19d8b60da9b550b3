"""Jobs keep running while the client and the ControlMaster are killed (DESIGN.md 5.6):
each ends with its own exit code, visible via `tether jobs --json` afterwards."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.conftest import COUNTS, start_cli
from tests.integration.conftest import SyncProject, describe

pytestmark = pytest.mark.integration

SLEEP = "import time; time.sleep(2.5); "
JOBS = {
    "ok": (SLEEP + "print('done')", 0),
    "three": (SLEEP + "raise SystemExit(3)", 3),
    "selfkill": (SLEEP + "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 137),
}


def test_jobs_outlive_client_and_master(
    make_synced: Callable[..., SyncProject],
    sandbox: Any,
    tmux_socket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tether.transport.ssh import SshTransport

    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    synced = make_synced()
    synced.push_ok()
    for name, (code, _) in JOBS.items():
        done = synced.run("run", "--no-push", "--name", name, "--", "python3", "-c", code)
        assert done.returncode == 0, describe(done)
    follow = start_cli(synced.root, "run", "--no-push", "--name", "followed", "--follow",
                       "--", "python3", "-c", SLEEP + "raise SystemExit(7)")  # fmt: skip
    deadline = time.monotonic() + 20
    while "followed" not in synced.run("jobs", "--json").stdout:
        assert time.monotonic() < deadline, "the followed job never started"
        time.sleep(0.2)
    follow.kill()  # SIGKILL the client mid `run --follow`
    follow.communicate(timeout=30)
    SshTransport(sandbox.name).stop_master()  # and the ControlMaster (`ssh -O exit`)
    COUNTS["kills"] += 2
    want = {name: code for name, (_, code) in JOBS.items()} | {"followed": 7}
    deadline = time.monotonic() + 40
    while True:
        listed = synced.run("jobs", "--json")
        assert listed.returncode == 0, describe(listed)
        jobs = {job["name"]: job for job in json.loads(listed.stdout)}
        if all(jobs.get(n, {}).get("state") == "exited" for n in want):
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.5)
    assert {n: jobs[n]["exit_code"] for n in want} == want, jobs
    COUNTS["jobs survived"] += len(want)
