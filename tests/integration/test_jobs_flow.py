"""--after, wait, restart, --notify and --array on a real sandbox with real tmux."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.env import write_config
from tests.integration.test_jobs import Cli, jobs_json, wait_job
from tests.integration.test_jobs import remote_project as remote_project

pytestmark = pytest.mark.integration

SLEEP_EXIT = "import sys, time; time.sleep(float(sys.argv[1])); sys.exit(int(sys.argv[2]))"


def run_ok(cli: Cli, *args: str) -> subprocess.CompletedProcess[str]:
    done = cli("run", "--no-push", *args)
    assert done.returncode == 0, done.stderr
    return done


def by_name(cli: Cli) -> dict[str, dict[str, Any]]:
    return {job["name"]: job for job in jobs_json(cli)}


def test_a_chain_whose_middle_fails_cancels_the_third(
    remote_project: Path, tether_cli: Cli
) -> None:
    done = tether_cli("run", "--name", "prep", "--", "python3", "-c", SLEEP_EXIT, "3", "0")
    assert done.returncode == 0, done.stderr
    train = run_ok(tether_cli, "--name", "train", "--after", "prep", "--",
                   "python3", "-c", SLEEP_EXIT, "0.2", "3")  # fmt: skip
    assert "queued train" in train.stdout and "after prep" in train.stdout
    run_ok(tether_cli, "--name", "eval", "--after", "train", "--", "python3", "-c", "pass")
    now = by_name(tether_cli)
    assert (now["eval"]["state"], now["eval"]["reason"]) == ("queued", "after train")
    where = now["eval"]["target"]
    waited = tether_cli("wait", "prep", "train", "eval", timeout=60)
    assert waited.returncode == 1, waited.stderr
    assert waited.stdout.splitlines() == [
        f"prep on {where}: exited 0",
        f"train on {where}: exited 3",
        f"eval on {where}: cancelled (dependency train exited 3)",
    ]
    job = by_name(tether_cli)["eval"]
    assert (job["state"], job["exit_code"], job["reason"]) == (
        "cancelled",
        None,
        "dependency train exited 3",
    )
    # A dependency that already failed: recorded cancelled, `run` exits 1 naming it.
    late = tether_cli("run", "--no-push", "--name", "late", "--after", "train", "--", "true")
    assert late.returncode == 1
    assert late.stderr.strip() == (
        "tether: error: late on " + job["target"] + " was not started, dependency train exited 3"
    )
    assert by_name(tether_cli)["late"]["state"] == "cancelled"


def test_unknown_and_self_dependencies_are_refused(remote_project: Path, tether_cli: Cli) -> None:
    done = tether_cli("run", "--name", "x1", "--after", "nope", "--", "true")
    assert done.returncode == 1
    assert done.stderr.startswith("tether: error: ") and "no job named 'nope'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    itself = tether_cli("run", "--no-push", "--name", "x2", "--after", "x2", "--", "true")
    assert itself.returncode == 2
    assert itself.stderr.startswith("tether: error: job 'x2' cannot run after itself")
    assert "x1" not in by_name(tether_cli)


def test_a_chain_completes_while_no_tether_process_runs(
    remote_project: Path, tether_cli: Cli
) -> None:
    done = tether_cli("run", "--name", "c1", "--", "python3", "-c", SLEEP_EXIT, "1", "0")
    assert done.returncode == 0, done.stderr
    run_ok(tether_cli, "--name", "c2", "--after", "c1", "--", "python3", "-c", SLEEP_EXIT,
           "0.5", "0")  # fmt: skip
    run_ok(tether_cli, "--name", "c3", "--after", "c2", "--after", "c1", "--",
           "python3", "dump.py", "chained")  # fmt: skip
    time.sleep(4)  # nothing of tether runs here: the chain is kept on the remote
    jobs = by_name(tether_cli)
    assert [jobs[name]["exit_code"] for name in ("c1", "c2", "c3")] == [0, 0, 0]
    assert jobs["c2"]["started"] >= jobs["c1"]["ended"]
    assert jobs["c3"]["started"] >= jobs["c2"]["ended"]
    assert json.loads((remote_project / "outputs" / "argv.json").read_text()) == ["chained"]
    waited = tether_cli("wait", "c1", "c3")
    assert waited.returncode == 0 and len(waited.stdout.splitlines()) == 2


def test_wait_defaults_to_active_jobs_and_exit_codes(remote_project: Path, tether_cli: Cli) -> None:
    # Long enough that w1 still runs when `wait` starts, even on a loaded machine.
    done = tether_cli("run", "--name", "w1", "--", "python3", "-c", SLEEP_EXIT, "4", "0")
    assert done.returncode == 0, done.stderr
    run_ok(tether_cli, "--name", "w2", "--", "python3", "-c", SLEEP_EXIT, "4", "0")
    waited = tether_cli("wait")
    assert waited.returncode == 0, waited.stderr
    assert sorted(line.split(" ")[0] for line in waited.stdout.splitlines()) == ["w1", "w2"]
    run_ok(tether_cli, "--name", "w3", "--", "python3", "-c", SLEEP_EXIT, "0.5", "2")
    assert tether_cli("wait", "w3").returncode == 1
    unknown = tether_cli("wait", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("tether: error: no job named 'nope'")


def test_wait_survives_a_link_drop(
    sandbox: Any, proxy: Any, proxy_alias: str, project: Path, tether_cli: Cli,
    tmux_socket: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(project)
    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    assert tether_cli("init", "--host", proxy_alias, "--path", "~/wait-drop").returncode == 0
    done = tether_cli("run", "--name", "wd", "--", "python3", "-c", SLEEP_EXIT, "4", "0")
    assert done.returncode == 0, done.stderr
    from tests.harness.env import tether_argv

    waiter = subprocess.Popen(tether_argv("wait", "wd"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(1.5)
        proxy.refuse(True)
        proxy.cut()
        time.sleep(1.5)
        proxy.refuse(False)
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, err
    assert out.strip().endswith("wd on " + proxy_alias + ": exited 0"), (out, err)


def test_restart_reuses_argv_and_snapshot(
    remote_project: Path, project: Path, tether_cli: Cli
) -> None:
    code = "import sys; print(open('pkg/model.py').read().strip()); sys.exit(int(sys.argv[1]))"
    done = tether_cli("run", "--name", "rs", "--", "python3", "-c", code, "4")
    assert done.returncode == 0, done.stderr
    first = wait_job(tether_cli, "rs")
    (project / "pkg" / "model.py").write_text("CHANGED = True\n")
    assert tether_cli("push").returncode == 0
    again = tether_cli("restart", "rs")
    assert again.returncode == 0, again.stderr
    assert "started rs-2" in again.stdout
    second = wait_job(tether_cli, "rs-2")
    assert second["exit_code"] == 4 and second["argv"] == first["argv"]
    assert second["snapshot"] == first["snapshot"]
    assert "CHANGED" not in tether_cli("logs", "rs-2").stdout
    fresh = tether_cli("restart", "rs", "--fresh")
    assert fresh.returncode == 0 and "started rs-3" in fresh.stdout, fresh.stderr
    third = wait_job(tether_cli, "rs-3")
    assert third["snapshot"] != first["snapshot"]
    assert "CHANGED = True" in tether_cli("logs", "rs-3").stdout
    assert {"rs", "rs-2", "rs-3"} <= set(by_name(tether_cli))


def test_notify_hook_runs_on_the_remote_with_the_variables(
    sandbox: Any, remote_project: Path, project: Path, tether_cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    out = remote_project.parent / f"notify-{remote_project.name}.txt"
    hook = (
        'printf "%s|%s|%s|%s\\n%s" "$TETHER_JOB" "$TETHER_STATE" "$TETHER_EXIT_CODE" '
        f'"$TETHER_HOST" "$TETHER_LOG_TAIL" > {out}'
    )
    code = "import sys\nfor i in range(25): print('line', i)\nsys.exit(6)"
    done = tether_cli("run", "--name", "nt", "--notify", hook, "--", "python3", "-c", code)
    assert done.returncode == 0, done.stderr
    job = wait_job(tether_cli, "nt")
    deadline = time.monotonic() + 15
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    head, *tail = out.read_text().splitlines()
    assert head == f"nt|exited|6|{sandbox.name}"
    assert tail == [f"line {i}" for i in range(5, 25)]
    assert (job["state"], job["exit_code"], job["reason"]) == ("exited", 6, None)
    # [jobs] notify from tether.toml; a failing and a hanging hook change nothing.
    config = project / "tether.toml"
    write_config(config, config.read_text() + '\n[jobs]\nnotify = "exit 5"\n')
    monkeypatch.setenv("TETHER_NOTIFY_TIMEOUT", "1")
    run_ok(tether_cli, "--name", "nf", "--", "true")
    run_ok(tether_cli, "--name", "nh", "--notify", "sleep 60", "--", "true")
    for name in ("nf", "nh"):
        job = wait_job(tether_cli, name)
        assert (job["state"], job["exit_code"], job["reason"]) == ("exited", 0, None)
    logs = Path(sandbox.home) / ".local" / "share" / "tether" / "logs"
    deadline = time.monotonic() + 15
    texts: list[Path] = []
    while time.monotonic() < deadline:  # logs are named by the job's key: <tag>-<name>
        texts = [next(iter(logs.glob(f"*-{name}.notify.log")), logs / "-") for name in ("nf", "nh")]
        if all(path.exists() for path in texts) and "killed after" in texts[1].read_text():
            break
        time.sleep(0.2)
    assert "notify exited 5" in texts[0].read_text()
    assert "notify killed after 1 s" in texts[1].read_text()


def test_array_starts_numbered_tasks_with_their_index(
    remote_project: Path, tether_cli: Cli
) -> None:
    code = "import os; print('task', os.environ['TETHER_ARRAY_INDEX'])"
    done = tether_cli("run", "--name", "arr", "--array", "3", "--", "python3", "-c", code)
    assert done.returncode == 0, done.stderr
    for index in range(3):
        assert wait_job(tether_cli, f"arr-{index}")["exit_code"] == 0
        assert tether_cli("logs", f"arr-{index}").stdout == f"task {index}\n"
    snaps = {
        job["snapshot"] for name, job in by_name(tether_cli).items() if name.startswith("arr-")
    }
    assert len(snaps) == 1
    assert os.path.isdir(next(iter(snaps)))
