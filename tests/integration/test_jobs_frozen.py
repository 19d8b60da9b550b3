"""Frozen means frozen (issue #21): a job's snapshot is its own copy of what sync owns,
`python` in a job is the target's python, and a command that cannot start fails `run`
at once and leaves the name free."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.env import write_config
from tests.integration.test_jobs import jobs_json, remote_project, wait_job

pytestmark = pytest.mark.integration

Cli = Callable[..., subprocess.CompletedProcess[str]]
__all__ = ["remote_project"]  # a fixture, used by name


def snapshot_dirs(sandbox: Any) -> set[Path]:
    root = Path(sandbox.home) / ".cache" / "tether" / "snapshots"
    return {path for path in root.glob("*/*") if path.is_dir()}


def test_a_job_writing_its_snapshot_changes_nothing_else(
    sandbox: Any, remote_project: Path, project: Path, tether_cli: Cli
) -> None:
    before = snapshot_dirs(sandbox)
    first = tether_cli("run", "--name", "quiet", "--", "python3", "-c", "pass")
    assert first.returncode == 0, first.stderr
    assert wait_job(tether_cli, "quiet")["exit_code"] == 0
    (quiet_snap,) = snapshot_dirs(sandbox) - before
    live = (remote_project / "train.py").read_bytes()
    # A made-on-the-remote tree tether never pushed stays out of the next snapshot.
    (remote_project / ".venv" / "bin").mkdir(parents=True)
    (remote_project / ".venv" / "bin" / "python").write_text("not pushed\n")
    before = snapshot_dirs(sandbox)
    append = "open('train.py', 'a').write('# changed by the job\\n')"
    done = tether_cli("run", "--no-push", "--name", "writer", "--", "python3", "-c", append)
    assert done.returncode == 0, done.stderr
    assert wait_job(tether_cli, "writer")["exit_code"] == 0
    (writer_snap,) = snapshot_dirs(sandbox) - before
    assert (writer_snap / "train.py").read_bytes() == live + b"# changed by the job\n"
    assert (remote_project / "train.py").read_bytes() == live, "the live tree changed"
    assert (quiet_snap / "train.py").read_bytes() == live, "another job's snapshot changed"
    assert not (writer_snap / ".venv").exists(), "a remote-made .venv was snapshotted"
    assert (writer_snap / "pkg" / "model.py").is_file()
    pushed = tether_cli("push")
    assert pushed.returncode == 0, pushed.stderr  # no conflict: the live file is untouched


@pytest.fixture
def marker_python(tmp_path: Path) -> Path:
    """A venv (no pip) whose site-packages holds a module only it can import."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "tether_marker.py").write_text("WHO = 'the target venv'\n")
    return venv / "bin" / "python"


def test_python_in_a_job_is_the_targets_python(
    remote_project: Path, project: Path, tether_cli: Cli, marker_python: Path
) -> None:
    config = project / "tether.toml"
    text = config.read_text().replace("python3", str(marker_python), 1)
    assert str(marker_python) in text
    write_config(config, text)
    code = "import os, sys, tether_marker; print(tether_marker.WHO, sys.prefix, os.environ['SEED'])"
    for python in ("python", "python3"):
        name = f"py-{python}"
        done = tether_cli("run", "--name", name, "--env", "SEED=7", "--", python, "-c", code)
        assert done.returncode == 0, done.stderr
        ended = wait_job(tether_cli, name)
        log = tether_cli("logs", name).stdout.strip()
        assert ended["exit_code"] == 0, log
        assert log == f"the target venv {marker_python.parent.parent} 7", log


def test_a_command_that_cannot_start_fails_run_and_frees_the_name(
    remote_project: Path, project: Path, tether_cli: Cli, sandbox: Any
) -> None:
    before = snapshot_dirs(sandbox)
    missing = tether_cli("run", "--name", "nope", "--", "no-such-cmd-tether", "--x")
    assert missing.returncode == 1, missing.stderr
    (line,) = missing.stderr.splitlines()
    assert line.startswith("tether: error: cannot start no-such-cmd-tether on "), line
    # A script whose #! interpreter is missing: exec fails in the wrapper, run says so.
    script = project / "bad.sh"
    script.write_text("#!/no/such/interpreter\necho hi\n")
    script.chmod(0o755)
    bad = tether_cli("run", "--name", "nope", "--", "./bad.sh")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "interpreter (#!/no/such/interpreter) is missing" in bad.stderr, bad.stderr
    plain = project / "plain.sh"
    plain.write_text("echo hi\n")
    plain.chmod(0o644)
    not_exec = tether_cli("run", "--name", "nope", "--", "./plain.sh")
    assert not_exec.returncode == 1 and "not executable" in not_exec.stderr, not_exec.stderr
    assert "nope" not in {job["name"] for job in jobs_json(tether_cli)}
    assert snapshot_dirs(sandbox) == before, "a failed start left a snapshot behind"
    again = tether_cli("run", "--no-push", "--name", "nope", "--", "python", "-c", "print(5)")
    assert again.returncode == 0, again.stderr
    assert wait_job(tether_cli, "nope")["exit_code"] == 0


def test_bad_env_is_a_usage_error(remote_project: Path, tether_cli: Cli) -> None:
    done = tether_cli("run", "--env", "1X=2", "--", "true")
    assert done.returncode == 2, done.stderr
    assert "--env '1X=2'" in done.stderr


def test_a_job_record_names_its_snapshot_cost(
    sandbox: Any, remote_project: Path, tether_cli: Cli
) -> None:
    done = tether_cli("run", "--name", f"c{uuid.uuid4().hex[:4]}", "--", "true")
    assert done.returncode == 0, done.stderr
    records = Path(sandbox.home) / ".local" / "share" / "tether" / "jobs"
    newest = max(records.glob("*.json"), key=lambda path: path.stat().st_mtime)
    record = json.loads(newest.read_text())
    assert record["snapshot_files"] >= 4 and record["snapshot_bytes"] > 0
    assert set(record["snapshot_methods"]) <= {"reflink", "copy_file_range", "copy"}


def test_attach_to_an_ended_job_says_so_with_its_log_tail(
    remote_project: Path, tether_cli: Cli
) -> None:
    code = "for i in range(30): print('line', i)\nraise SystemExit(3)"
    done = tether_cli("run", "--name", "over", "--", "python", "-c", code)
    assert done.returncode == 0, done.stderr
    assert wait_job(tether_cli, "over")["exit_code"] == 3
    attached = tether_cli("attach", "over")
    assert attached.returncode == 1, attached.stdout + attached.stderr
    assert attached.stdout.splitlines() == [f"line {i}" for i in range(10, 30)]
    (line,) = attached.stderr.splitlines()
    assert line.startswith("tether: error: over on ") and "has ended (exited 3)" in line, line
    assert "no sessions" not in attached.stderr
