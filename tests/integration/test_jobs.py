"""tether run / jobs / logs / kill on a real sandbox with real tmux."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.env import write_config

pytestmark = pytest.mark.integration

Cli = Callable[..., subprocess.CompletedProcess[str]]
HOSTILE = ["a b", "$(touch /tmp/tether-pwned-cli)", "--flag", "it's", "", "naïve ☃ 日本"]
DUMP = (
    "import json, os, sys\n"
    "print('hello from the job', flush=True)\n"
    "os.makedirs('outputs', exist_ok=True)\n"
    "open('outputs/argv.json', 'w').write(json.dumps(sys.argv[1:]))\n"
)


@pytest.fixture
def remote_project(
    sandbox: Any, project: Path, tmux_socket: str, tether_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The project, initialised for the sandbox and pushed; returns the remote dir."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    (project / "dump.py").write_text(DUMP)
    rel = f"jobs-{uuid.uuid4().hex[:8]}"
    done = tether_cli("init", "--host", sandbox.name, "--path", f"~/{rel}")
    assert done.returncode == 0, done.stderr
    return Path(sandbox.home) / rel


def jobs_json(cli: Cli) -> list[dict[str, Any]]:
    done = cli("jobs", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert isinstance(data, list)
    return data


def wait_job(cli: Cli, name: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in jobs_json(cli):
            if job["name"] == name and job["state"] not in ("running", "queued"):
                return job
        time.sleep(0.3)
    raise AssertionError(f"job {name} did not end")


def test_exit_code_log_and_jobs_json_shape(remote_project: Path, tether_cli: Cli) -> None:
    started = tether_cli("run", "--name", "ec", "--", "python3", "-c", "print('hi'); exit(3)")
    assert started.returncode == 0, started.stderr
    assert "ec" in started.stdout
    job = wait_job(tether_cli, "ec")
    keys = {"name", "target", "host", "state", "exit_code", "reason", "started", "ended"}
    assert keys | {"gpus", "commit"} <= set(job)
    assert (job["state"], job["exit_code"], job["reason"]) == ("exited", 3, None)
    assert job["commit"] and len(job["commit"]) == 40
    log = tether_cli("logs", "ec")
    assert log.returncode == 0 and log.stdout == "hi\n"
    taken = tether_cli("run", "--no-push", "--name", "ec", "--", "true")
    assert taken.returncode == 1
    assert taken.stderr.startswith("tether: error: a job named 'ec' already exists")


def test_hostile_argv_reaches_the_program_unchanged(remote_project: Path, tether_cli: Cli) -> None:
    done = tether_cli("run", "--name", "hostile", "--", "python3", "dump.py", *HOSTILE)
    assert done.returncode == 0, done.stderr
    assert wait_job(tether_cli, "hostile")["exit_code"] == 0
    assert json.loads((remote_project / "outputs" / "argv.json").read_text()) == HOSTILE
    assert not Path("/tmp/tether-pwned-cli").exists()
    follow = tether_cli("logs", "hostile", "-f")
    assert follow.stdout == "hello from the job\n"


def test_a_push_after_start_does_not_change_the_job(
    remote_project: Path, project: Path, tether_cli: Cli
) -> None:
    code = "import time; time.sleep(2); print(open('pkg/model.py').read())"
    done = tether_cli("run", "--name", "snap", "--", "python3", "-c", code)
    assert done.returncode == 0, done.stderr
    (project / "pkg" / "model.py").write_text("CHANGED = True\n")
    pushed = tether_cli("push")
    assert pushed.returncode == 0, pushed.stderr
    assert (remote_project / "pkg" / "model.py").read_text() == "CHANGED = True\n"
    assert wait_job(tether_cli, "snap")["exit_code"] == 0
    log = tether_cli("logs", "snap").stdout
    assert "return 2 * x" in log and "CHANGED" not in log


def test_kill_records_the_reason_and_exit_code(remote_project: Path, tether_cli: Cli) -> None:
    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    done = tether_cli("run", "--name", "victim", "--", "python3", "-c", code)
    assert done.returncode == 0, done.stderr
    killed = tether_cli("kill", "victim", "--grace", "1")
    assert killed.returncode == 0, killed.stderr
    job = wait_job(tether_cli, "victim")
    # SIGINT is ignored, so SIGTERM ends it: 128 + 15.
    assert (job["exit_code"], job["reason"]) == (143, "killed by tether kill")


def test_a_job_survives_the_master_going_away(
    sandbox: Any, remote_project: Path, tether_cli: Cli
) -> None:
    from tether.transport.ssh import SshTransport

    code = "import sys, time; time.sleep(3); sys.exit(5)"
    done = tether_cli("run", "--name", "survivor", "--", "python3", "-c", code)
    assert done.returncode == 0, done.stderr
    SshTransport(sandbox.name).stop_master()
    time.sleep(0.5)
    job = wait_job(tether_cli, "survivor")
    assert (job["state"], job["exit_code"]) == ("exited", 5)


def test_unknown_names_get_one_clear_line(remote_project: Path, tether_cli: Cli) -> None:
    for args in (("logs", "nope"), ("kill", "nope")):
        done = tether_cli(*args)
        assert done.returncode == 1
        assert done.stderr.startswith("tether: error: no job named 'nope'"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_run_follow_streams_the_log_to_the_end(remote_project: Path, tether_cli: Cli) -> None:
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True); time.sleep(0.3)"
    done = tether_cli("run", "--name", "fol", "--follow", "--", "python3", "-c", code)
    assert done.returncode == 0, done.stderr
    assert "tick 0\ntick 1\ntick 2\n" in done.stdout
    assert "fol exited 0" in done.stderr


def test_jobs_lists_this_project_and_hides_old_finished_jobs_unless_all(
    sandbox: Any, remote_project: Path, tether_cli: Cli
) -> None:
    for args in (("--name", "mine"), ("--no-push", "--name", "old")):
        done = tether_cli("run", *args, "--", "true")
        assert done.returncode == 0, done.stderr
        wait_job(tether_cli, args[-1])
    records = Path(sandbox.home) / ".local" / "share" / "tether" / "jobs"
    (old_file,) = records.glob("*-old.json")  # the project's tag, then the name
    old = json.loads(old_file.read_text())
    old["ended"] = old["started"] = time.time() - 8 * 24 * 3600
    old_file.write_text(json.dumps(old))
    other = dict(old, name="other-proj", root=str(remote_project) + "-elsewhere")
    other["ended"] = time.time()
    (records / "other-proj.json").write_text(json.dumps(other))
    try:
        names = {job["name"] for job in jobs_json(tether_cli)}
        assert "mine" in names and "old" not in names and "other-proj" not in names
        done = tether_cli("jobs", "--all", "--json")  # every project's, of any age
        listed = {job["name"]: job for job in json.loads(done.stdout)}
        assert {"mine", "old", "other-proj"} <= set(listed)
        assert listed["other-proj"]["root"] == str(remote_project) + "-elsewhere"
        assert listed["mine"]["root"] == str(remote_project)
        table = tether_cli("jobs", "--all").stdout
        assert "other-proj" in table and "project" in table
    finally:
        (records / "other-proj.json").unlink()


def test_a_name_on_two_targets_needs_on(
    sandbox: Any, sandbox2: Any, remote_project: Path, project: Path, tether_cli: Cli
) -> None:
    config = project / "tether.toml"
    rel = remote_project.name
    write_config(
        config,
        config.read_text() + f'\n[targets.two]\nhost = "{sandbox2.name}"\npath = "~/{rel}"\n',
    )
    done = tether_cli("run", "--on", sandbox.name, "--on", "two", "--name", "fan", "--",
                      "python3", "-c", "import time; time.sleep(30)")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for args in (("logs", "fan"), ("kill", "fan")):
        ambiguous = tether_cli(*args)
        assert ambiguous.returncode == 2, ambiguous.stderr
        line = ambiguous.stderr.strip()
        assert line.startswith("tether: error: job 'fan' runs on several targets"), line
        assert sandbox.name in line and "two" in line and "--on" in line
        assert len(line.splitlines()) == 1
    for target in (sandbox.name, "two"):
        killed = tether_cli("kill", "fan", "--on", target, "--grace", "0.5")
        assert killed.returncode == 0, killed.stderr
        assert f"fan on {target}: exited" in killed.stdout
