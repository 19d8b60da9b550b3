"""tether rm / prune, snapshot disk use in status, host clean's refusal, a readable jobs table.

Real sandboxes, real tmux. Where a test needs a job's files it asks `tether show --json`
for their paths (the sandbox's home is a local directory), never builds them itself.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import describe, one_error_line
from tests.integration.test_jobs import Cli, jobs_json, wait_job
from tests.integration.test_jobs import remote_project as remote_project

pytestmark = pytest.mark.integration

SLEEP = "import time; time.sleep(60)"
BIG = 8 << 20


def run_ok(cli: Cli, *args: str) -> None:
    done = cli("run", "--no-push", *args)
    assert done.returncode == 0, describe(done)


def show(cli: Cli, name: str) -> dict[str, Any]:
    done = cli("show", name, "--json")
    assert done.returncode == 0, describe(done)
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def own_bytes(paths: list[Path]) -> int:
    """Disk blocks under paths that no link outside them keeps (what removing them frees)."""
    seen: dict[tuple[int, int], list[int]] = {}  # inode -> [links seen, nlink, blocks, dir]

    def visit(full: str) -> None:
        st = os.lstat(full)
        entry = seen.setdefault(
            (st.st_dev, st.st_ino), [0, st.st_nlink, st.st_blocks, stat.S_ISDIR(st.st_mode)]
        )
        entry[0] += 1

    for top in paths:
        visit(str(top))
        if top.is_dir() and not top.is_symlink():
            for directory, dirnames, filenames in os.walk(top):
                for name in dirnames + filenames:
                    visit(os.path.join(directory, name))
    return sum(blocks * 512 for links, nlink, blocks, is_dir in seen.values()
               if is_dir or links >= nlink)  # fmt: skip


def status_entry(cli: Cli) -> dict[str, Any]:
    done = cli("status", "--json")
    assert done.returncode == 0, describe(done)
    entries = json.loads(done.stdout)
    return dict(entries[0])


def test_rm_frees_what_it_reports_and_refuses_running_jobs(
    remote_project: Path, tether_cli: Cli
) -> None:
    done = tether_cli("run", "--name", "done1", "--", "python3", "-c", "print('one')")
    assert done.returncode == 0, describe(done)
    run_ok(tether_cli, "--name", "busy", "--", "python3", "-c", SLEEP)
    wait_job(tether_cli, "done1")
    info = show(tether_cli, "done1")
    snap, log, record = Path(info["snapshot"]), Path(info["log"]), Path(info["record_file"])
    (snap / "big.bin").write_bytes(os.urandom(BIG))
    (snap / "outputs" / "kept.txt").write_text("result\n")  # a results link: the live dir
    expected = own_bytes([snap, log, record])
    assert expected >= BIG
    before = status_entry(tether_cli)["snapshots"]
    assert before["project_bytes"] >= BIG and before["bytes"] >= before["project_bytes"]
    try:
        mixed = tether_cli("rm", "done1", "busy", "--json")
        assert mixed.returncode == 1, describe(mixed)
        line = one_error_line(mixed)
        assert "busy" in line and "running" in line and "tether kill busy" in line, line
        removed = json.loads(mixed.stdout)
        assert [(e["name"], e["removed"]) for e in removed] == [("done1", True), ("busy", False)]
        assert removed[0]["bytes"] == expected
        assert not snap.exists() and not log.exists() and not record.exists()
        assert (remote_project / "train.py").is_file()  # the live tree stays
        assert (remote_project / "outputs" / "kept.txt").read_text() == "result\n"
        after = status_entry(tether_cli)["snapshots"]
        assert before["project_bytes"] - after["project_bytes"] >= BIG
        assert show(tether_cli, "busy")["state"] == "running"
        gone = tether_cli("show", "done1")
        assert gone.returncode == 1 and "no job named 'done1'" in one_error_line(gone)
        text = tether_cli("status")
        assert "snapshots" in text.stdout, describe(text)
    finally:
        tether_cli("kill", "busy", "--grace", "0.5")


def test_rm_keeps_a_snapshot_a_restart_still_uses(remote_project: Path, tether_cli: Cli) -> None:
    done = tether_cli("run", "--name", "orig", "--", "python3", "-c", "print('x')")
    assert done.returncode == 0, describe(done)
    wait_job(tether_cli, "orig")
    again = tether_cli("restart", "orig")
    assert again.returncode == 0, describe(again)
    wait_job(tether_cli, "orig-2")
    snap = Path(show(tether_cli, "orig")["snapshot"])
    assert Path(show(tether_cli, "orig-2")["snapshot"]) == snap
    first = tether_cli("rm", "orig")
    assert first.returncode == 0, describe(first)
    assert "removed orig on box" in first.stdout or "removed orig on " in first.stdout
    assert snap.is_dir() and (snap / "train.py").is_file()
    assert show(tether_cli, "orig-2")["snapshot"] == str(snap)
    second = tether_cli("rm", "orig-2")
    assert second.returncode == 0, describe(second)
    assert not snap.exists()


def test_prune_dry_run_removes_nothing_then_prune_frees_old_ended_jobs(
    remote_project: Path, tether_cli: Cli
) -> None:
    done = tether_cli("run", "--name", "old1", "--", "python3", "-c", "print('old')")
    assert done.returncode == 0, describe(done)
    run_ok(tether_cli, "--name", "new1", "--", "python3", "-c", "print('new')")
    wait_job(tether_cli, "old1")
    wait_job(tether_cli, "new1")
    run_ok(tether_cli, "--name", "busy2", "--", "python3", "-c", SLEEP)
    old = show(tether_cli, "old1")
    record = Path(old["record_file"])
    data = json.loads(record.read_text())
    for key in ("created", "started", "ended"):
        data[key] = float(data[key]) - 8 * 24 * 3600
    record.write_text(json.dumps(data))
    snap = Path(old["snapshot"])
    (snap / "weights.bin").write_bytes(os.urandom(1 << 20))
    try:
        dry = tether_cli("prune", "--dry-run", "--json")
        assert dry.returncode == 0, describe(dry)
        [entry] = json.loads(dry.stdout)
        assert entry["dry_run"] is True and [j["name"] for j in entry["jobs"]] == ["old1"]
        assert entry["bytes"] >= 1 << 20
        assert record.exists() and snap.is_dir() and Path(old["log"]).exists()
        text = tether_cli("prune", "--dry-run")
        assert text.returncode == 0 and "would free" in text.stdout, describe(text)
        assert record.exists()
        real = tether_cli("prune", "--json")
        assert real.returncode == 0, describe(real)
        [pruned] = json.loads(real.stdout)
        assert [j["name"] for j in pruned["jobs"]] == ["old1"]
        assert pruned["bytes"] == entry["bytes"] and pruned["dry_run"] is False
        assert not record.exists() and not snap.exists() and not Path(old["log"]).exists()
        names = {job["name"] for job in jobs_json(tether_cli)}
        assert "new1" in names and "old1" not in names
        everything = tether_cli("prune", "--older-than", "0s")
        assert everything.returncode == 0, describe(everything)
        assert "removed 1 job" in everything.stdout and "freed" in everything.stdout
        names = {job["name"] for job in jobs_json(tether_cli)}
        assert "new1" not in names and "busy2" in names
        bad = tether_cli("prune", "--older-than", "soon")
        assert bad.returncode == 2 and "--older-than" in one_error_line(bad)
    finally:
        tether_cli("kill", "busy2", "--grace", "0.5")


def test_host_clean_refuses_while_a_job_runs_or_a_kernel_lives_and_force_stops_them(
    fresh_sandbox: Callable[..., Any],
    project: Path,
    tmux_socket: str,
    tether_cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = fresh_sandbox()
    monkeypatch.chdir(project)
    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    done = tether_cli("init", "--host", box.name, "--path", f"~/hc-{uuid.uuid4().hex[:6]}")
    assert done.returncode == 0, describe(done)
    run = tether_cli("run", "--name", "longjob", "--", "python3", "-c", SLEEP)
    assert run.returncode == 0, describe(run)
    data = Path(box.home) / ".local" / "share" / "tether"
    kernel_dir = data / "kernels" / "k1"
    kernel_dir.mkdir(parents=True)
    connection = kernel_dir / "kernel.json"
    connection.write_text("{}")
    kernel = subprocess.Popen(
        [sys.executable, "-c", SLEEP, str(connection)], start_new_session=True
    )
    try:
        (kernel_dir / "record.json").write_text(
            json.dumps({"name": "k1", "pid": kernel.pid, "connection_file": str(connection)})
        )
        time.sleep(1)  # the job has started
        refused = tether_cli("host", "clean", box.name, "--yes")
        assert refused.returncode == 1, describe(refused)
        line = one_error_line(refused)
        assert "longjob" in line and "k1" in line and "--force" in line, line
        assert data.is_dir() and (Path(box.home) / ".cache" / "tether").is_dir()
        assert [job["state"] for job in jobs_json(tether_cli)] == ["running"]
        pid = show(tether_cli, "longjob")["pid"]
        assert isinstance(pid, int)
        forced = tether_cli("host", "clean", box.name, "--yes", "--force")
        assert forced.returncode == 0, describe(forced)
        assert "stopped job longjob" in forced.stdout and "stopped kernel k1" in forced.stdout
        assert kernel.wait(timeout=15) is not None
        assert not data.exists() and not (Path(box.home) / ".cache" / "tether").exists()
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


def test_jobs_table_keeps_a_long_name_whole_at_80_columns(
    remote_project: Path, tether_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "a-rather-long-job-name-for-the-sweep-" + "x" * 24
    done = tether_cli("run", "--name", name, "--", "python3", "-c", "print('ok')", "--lr", "3")
    assert done.returncode == 0, describe(done)
    run_ok(tether_cli, "--name", "short", "--", "python3", "train.py", "4")
    wait_job(tether_cli, name)
    wait_job(tether_cli, "short")
    monkeypatch.setenv("COLUMNS", "80")
    table = tether_cli("jobs")
    assert table.returncode == 0, describe(table)
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), table.stdout
    assert any(name in line for line in lines), table.stdout
    monkeypatch.setenv("COLUMNS", "120")
    wide = tether_cli("jobs")
    assert wide.returncode == 0, describe(wide)
    assert all(len(line) <= 120 for line in wide.stdout.splitlines()), wide.stdout
    assert "command" in wide.stdout and "python3 train.py 4" in wide.stdout, wide.stdout
    assert any(name in line for line in wide.stdout.splitlines()), wide.stdout
