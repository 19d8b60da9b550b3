"""tether run / jobs / logs / kill / wait on a real single-node Slurm reached through a sandbox.

The cluster (slurmctld, slurmd, munged; tests/harness/slurm.py) is started once per session
and stopped by its pidfiles. Skipped, with the reason shown, only where Slurm is not
installed (CI installs slurm-wlm and munge through .ci/system-packages.sh).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import slurm as harness_slurm
from tests.harness.env import write_config
from tests.integration.test_jobs import HOSTILE, Cli, jobs_json, wait_job

pytestmark = pytest.mark.integration

ARRAY = (
    "import os\n"
    "os.makedirs('outputs', exist_ok=True)\n"
    "i = os.environ['TETHER_ARRAY_INDEX']\n"
    "open('outputs/task-' + i, 'w').write(os.environ['SLURM_ARRAY_TASK_ID'] + ' ' + i)\n"
)
DUMP = "import json, sys\nprint('hello from slurm', flush=True)\nprint(json.dumps(sys.argv[1:]))\n"
HOG = (
    "import time\n"
    "x = bytearray(500 * 2**20)\n"
    "for i in range(0, len(x), 4096): x[i] = 1\n"
    "time.sleep(10)\n"
)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[harness_slurm.Cluster]:
    try:
        cluster = harness_slurm.start(Path("/tmp"))
    except harness_slurm.SlurmUnavailable as why:
        pytest.skip(f"no real Slurm on this machine: {why}")
    try:
        yield cluster
    finally:
        harness_slurm.stop(cluster)


@pytest.fixture
def cluster_project(
    sandbox: Any,
    project: Path,
    slurm_cluster: harness_slurm.Cluster,
    tether_cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The project with one Slurm target (`cluster`) in the sandbox; returns the remote dir."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("TETHER_SLURM_CONF", str(slurm_cluster.conf))
    (project / "dump.py").write_text(DUMP)
    (project / "tasks.py").write_text(ARRAY)
    (project / "hog.py").write_text(HOG)
    rel = f"slurm-{uuid.uuid4().hex[:8]}"
    config = project / "tether.toml"
    write_config(
        config,
        f'[targets.cluster]\nhost = "{sandbox.name}"\npath = "~/{rel}"\ndefault = true\n'
        'scheduler = "slurm"\n\n[targets.cluster.slurm]\nmem = "100M"\n\n'
        '[sync]\nresults = ["outputs/"]\n',
    )
    return Path(sandbox.home) / rel


def by_name(cli: Cli) -> dict[str, dict[str, Any]]:
    return {job["name"]: job for job in jobs_json(cli)}


def test_exit_code_exact_argv_and_logs(cluster_project: Path, tether_cli: Cli) -> None:
    done = tether_cli("run", "--name", "exit3", "--", "python3", "-c", "print('x'); exit(3)")
    assert done.returncode == 0, done.stderr
    assert "exit3" in done.stdout and "Slurm job" in done.stdout
    job = wait_job(tether_cli, "exit3", timeout=60)
    assert (job["state"], job["exit_code"], job["reason"]) == ("exited", 3, None)
    assert job["commit"] and job["target"] == "cluster"
    done = tether_cli("run", "--no-push", "--name", "argv", "--", "python3", "dump.py", *HOSTILE)
    assert done.returncode == 0, done.stderr
    assert wait_job(tether_cli, "argv", timeout=60)["exit_code"] == 0
    log = tether_cli("logs", "argv", "-f")
    assert log.returncode == 0, log.stderr
    lines = log.stdout.splitlines()
    assert lines[0] == "hello from slurm" and json.loads(lines[1]) == HOSTILE
    assert "argv exited 0" in log.stderr


def test_after_a_failed_job_the_dependent_is_cancelled(
    cluster_project: Path, tether_cli: Cli
) -> None:
    code = "import time, sys; time.sleep(3); sys.exit(1)"
    assert tether_cli("run", "--name", "first", "--", "python3", "-c", code).returncode == 0
    second = tether_cli("run", "--no-push", "--name", "second", "--after", "first", "--", "true")
    assert second.returncode == 0, second.stderr
    now = by_name(tether_cli)["second"]
    assert (now["state"], now["reason"]) == ("queued", "after first")
    waited = tether_cli("wait", "first", "second", timeout=90)
    assert waited.returncode == 1, waited.stderr
    # One line per job as wait sees it end: Slurm may show the dependent cancelled in the
    # same poll in which it still reports the first job completing, so no order is promised.
    assert sorted(waited.stdout.splitlines()) == [
        "first on cluster: exited 1",
        "second on cluster: cancelled (dependency first exited 1)",
    ]


def test_an_array_of_three(cluster_project: Path, tether_cli: Cli) -> None:
    done = tether_cli("run", "--name", "sweep", "--array", "3", "--", "python3", "tasks.py")
    assert done.returncode == 0, done.stderr
    waited = tether_cli("wait", "sweep-0", "sweep-1", "sweep-2", timeout=90)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    for index in range(3):
        written = (cluster_project / "outputs" / f"task-{index}").read_text()
        assert written == f"{index} {index}"


def test_kill_cancels_a_running_job(cluster_project: Path, tether_cli: Cli) -> None:
    done = tether_cli(
        "run", "--name", "scancelled", "--", "python3", "-c", "import time; time.sleep(120)"
    )
    assert done.returncode == 0, done.stderr
    for _ in range(100):
        if by_name(tether_cli)["scancelled"]["state"] == "running":
            break
        time.sleep(0.2)
    killed = tether_cli("kill", "scancelled")
    assert killed.returncode == 0, killed.stderr
    job = wait_job(tether_cli, "scancelled", timeout=30)
    assert job["state"] in ("exited", "cancelled") and job["reason"] == "killed by tether kill"
    assert job["exit_code"] != 0


def test_attach_to_a_slurm_job_is_one_line_pointing_to_its_log(
    cluster_project: Path, tether_cli: Cli
) -> None:
    # A Slurm job runs without a tmux session: attach says so instead of asking tmux.
    sleep = ["python3", "-c", "import time; time.sleep(120)"]
    assert tether_cli("run", "--name", "noattach", "--", *sleep).returncode == 0
    try:
        assert by_name(tether_cli)["noattach"]["state"] in ("queued", "running")
        attached = tether_cli("attach", "noattach")
        assert attached.returncode == 1, attached.stdout + attached.stderr
        (line,) = attached.stderr.splitlines()
        assert line.startswith("tether: error: noattach on cluster is a Slurm job"), line
        assert "tether logs noattach -f" in line
    finally:
        assert tether_cli("kill", "noattach").returncode == 0


def test_over_the_memory_limit_is_out_of_memory(cluster_project: Path, tether_cli: Cli) -> None:
    done = tether_cli("run", "--name", "hog", "--", "python3", "hog.py")
    assert done.returncode == 0, done.stderr
    job = wait_job(tether_cli, "hog", timeout=90)
    assert (job["state"], job["reason"]) == ("exited", "out of memory"), job
    assert job["exit_code"] not in (0, None)
    assert "exceeded memory limit" in tether_cli("logs", "hog").stdout


def test_a_refused_submission_is_one_line_with_slurms_text(
    cluster_project: Path, project: Path, tether_cli: Cli
) -> None:
    config = project / "tether.toml"
    write_config(
        config, config.read_text().replace('mem = "100M"', 'mem = "100M"\npartition = "nope"')
    )
    done = tether_cli("run", "--name", "refused", "--", "true")
    assert done.returncode == 1
    line = done.stderr.strip()
    assert line.startswith("tether: error: cluster: sbatch refused the job:"), line
    assert "partition" in line.lower() and len(line.splitlines()) == 1


def test_status_shows_the_partitions(cluster_project: Path, tether_cli: Cli) -> None:
    done = tether_cli("status", "--json")
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)[0]
    assert [part["partition"] for part in entry["partitions"]] == ["debug*"]
    text = tether_cli("status")
    assert "partition debug* (up): 1 node(s)" in text.stdout, text.stdout


def test_provenance_show_and_rm_on_slurm(
    cluster_project: Path, project: Path, tether_cli: Cli
) -> None:
    (project / "helper.py").write_text("HELPER = 1\n")
    done = tether_cli("run", "--name", "sprov", "--", "python3", "-c", "import helper")
    assert done.returncode == 0, done.stderr
    assert wait_job(tether_cli, "sprov", timeout=60)["exit_code"] == 0
    shown = tether_cli("show", "sprov", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert (info["state"], info["exit_code"], info["scheduler"]) == ("exited", 0, "slurm")
    assert info["python_path"] and info["python_version"]
    assert isinstance(info["packages"], list)
    assert "+HELPER = 1" in info["dirty_diff"]
    assert "helper.py" in {entry["path"] for entry in info["untracked"]}
    out, snap = Path(info["slurm_out"]), Path(info["snapshot"])
    assert out.exists() and snap.is_dir()
    removed = tether_cli("rm", "sprov")
    assert removed.returncode == 0, removed.stderr
    assert not out.exists() and not snap.exists()
    assert "sprov" not in by_name(tether_cli)


def test_the_env_is_built_on_the_login_node_and_sbatch_jobs_run_in_it(
    cluster_project: Path, project: Path, tether_cli: Cli
) -> None:
    home = cluster_project.parent  # the login node's home: the cluster's shared filesystem
    unique = f"# {uuid.uuid4().hex}\n"  # a spec of its own: built here, by this run
    (project / "requirements.txt").write_text("tabulate==0.9.0\n" + unique)
    code = "import sys, tabulate; print(tabulate.__version__, sys.prefix)"
    done = tether_cli("run", "--name", "senv", "--", "python", "-c", code, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "building the env" in done.stderr, done.stderr  # run built it first, over ssh
    job = wait_job(tether_cli, "senv", timeout=120)
    log = tether_cli("logs", "senv")
    assert job["exit_code"] == 0, log.stdout + log.stderr
    shown = json.loads(tether_cli("show", "senv", "--json").stdout)
    env_dir = home / ".cache" / "tether" / "envs" / shown["env_digest"]
    assert log.stdout.split() == ["0.9.0", str(env_dir)]
    assert "tabulate==0.9.0" in shown["packages"]
    status = tether_cli("env", "status")
    assert status.returncode == 0 and f"env {shown['env_digest']}: built" in status.stdout
    again = tether_cli("run", "--no-env-sync", "--name", "senv2", "--", "python", "-c", code)
    assert again.returncode == 0, again.stderr
    assert wait_job(tether_cli, "senv2", timeout=120)["exit_code"] == 0
