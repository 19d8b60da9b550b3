"""Housekeeping and provenance parts without a sandbox: the jobs table's fit, durations,
the bytes rm/prune free (hard links shared with the live tree free nothing), the package
cache, and untracked files in the diff without touching the user's index."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.harness.env import make_git_project
from tether.agent import housekeeping, provenance
from tether.agent.jobstore import (
    job_key,
    logs_dir,
    read_record,
    record_path,
    snapshots_dir,
    write_json,
)
from tether.cli.render import Column, fit
from tether.config import SyncRules
from tether.errors import UsageError
from tether.jobs import untracked
from tether.jobs.housekeeping import age_text, busy_line, human, parse_duration

# ---- the jobs table -------------------------------------------------------------------

COLUMNS = [
    Column("name"),
    Column("target", drop=1),
    Column("state", shrink=12),
    Column("command", drop=7, shrink=12),
    Column("started", drop=6),
    Column("duration", drop=4),
    Column("commit", drop=2),
]


def width_of(widths: list[int | None]) -> int:
    kept = [w for w in widths if w is not None]
    return sum(kept) + 3 * len(kept) + 1


def test_a_long_name_is_never_cut_and_columns_go_in_their_order() -> None:
    name = "n" * 64
    rows = [[name, "box", "exited 0", "python train.py", "05-01 12:00", "3s", "abcdef1234"]]
    widths = fit(COLUMNS, rows, 80, shrink_from=4)
    assert widths[0] == 64 and widths[2] is not None
    assert width_of(widths) <= 80
    assert [w is None for w in widths] == [False, True, False, True, True, True, True]


def test_commit_goes_before_the_command_is_cut() -> None:
    rows = [["amber-otter-12", "box", "running", "python train.py --lr 3e-4", "05-01 12:00",
             "12m05s", "abcdef1234"]]  # fmt: skip
    widths = fit(COLUMNS, rows, 80, shrink_from=4)
    assert widths[6] is None and widths[1] is None  # commit, and the one target
    assert widths[3] == len("python train.py --lr 3e-4") and width_of(widths) <= 80
    narrow = fit(COLUMNS, rows, 60, shrink_from=4)
    assert narrow[3] is not None and 12 <= narrow[3] < len(rows[0][3])
    assert width_of(narrow) <= 60 and narrow[0] == len("amber-otter-12")
    assert fit(COLUMNS, rows, 200) == [len(max(c.header, r, key=len)) for c, r in
                                       zip(COLUMNS, rows[0], strict=True)]  # fmt: skip


# ---- words ----------------------------------------------------------------------------


def test_durations_and_sizes() -> None:
    assert [parse_duration(t) for t in ("7d", "12h", "30m", "45s", "2w", "90", "0")] == [
        7 * 86400, 12 * 3600, 1800, 45, 14 * 86400, 90, 0,
    ]  # fmt: skip
    for bad in ("soon", "-1d", "7 days", ""):
        with pytest.raises(UsageError):
            parse_duration(bad)
    assert (human(512), human(8 << 20), human(3 << 30)) == ("512 B", "8.0 MiB", "3.0 GiB")
    assert (age_text(7 * 86400), age_text(12 * 3600), age_text(90)) == ("7d", "12h", "90s")
    answer = {"jobs": [{"name": "a"}], "kernels": [{"name": "k"}, {"name": "j"}]}
    assert busy_line("box", answer) == (
        "box has 1 running or queued job (a) and 2 live kernels (k, j)"
    )
    assert busy_line("box", {"jobs": [], "kernels": []}) is None


# ---- bytes freed ----------------------------------------------------------------------


def fake_job(name: str, root: str, snap: Path, ended: float, **extra: Any) -> dict[str, Any]:
    key = job_key(name, root)
    log = Path(logs_dir()) / f"{key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"x" * 10_000)
    record = {"name": name, "key": key, "root": root, "snapshot": str(snap), "log": str(log),
              "created": ended - 5, "started": ended - 4, "ended": ended, "exit_code": 0,
              "state": "exited", "socket": "tether-unit-none", **extra}  # fmt: skip
    write_json(record_path(key), record)
    return record


def blocks(*paths: Path) -> int:
    return sum(os.lstat(path).st_blocks * 512 for path in paths)


def test_rm_counts_only_what_it_frees_and_keeps_a_shared_snapshot(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    root = str(tmp_path / "live")
    live = tmp_path / "live" / "data.bin"
    live.parent.mkdir()
    live.write_bytes(os.urandom(200_000))
    snap = Path(snapshots_dir()) / "unit" / f"s-{tag}"
    snap.mkdir(parents=True)
    os.link(live, snap / "data.bin")  # shared with the live tree: frees nothing
    (snap / "own.bin").write_bytes(os.urandom(300_000))
    first = fake_job(f"a-{tag}", root, snap, time.time() - 100)
    fake_job(f"b-{tag}", root, snap, time.time() - 50)
    own = blocks(Path(record_path(first["key"])), Path(first["log"]))
    answer, _ = housekeeping.job_rm({"names": [first["name"]], "root": root}, b"")
    [entry] = answer["results"]
    assert entry["removed"] and entry["bytes"] == own and not entry["snapshot"]
    assert snap.is_dir() and read_record(first["key"]) is None
    second = read_record(job_key(f"b-{tag}", root))
    assert second is not None
    expected = blocks(snap, snap / "own.bin", Path(record_path(second["key"])),
                      Path(second["log"]))  # fmt: skip
    answer, _ = housekeeping.job_rm({"names": [second["name"]], "root": root}, b"")
    assert answer["results"][0]["bytes"] == expected and answer["results"][0]["snapshot"]
    assert not snap.exists() and live.read_bytes()  # the live file stays
    other, _ = housekeeping.job_rm({"names": [second["name"]], "root": root}, b"")
    assert other["results"] == [{"name": second["name"], "removed": False, "why": "nojob"}]


def test_prune_dry_run_reports_what_prune_frees_and_removes_nothing(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    root = str(tmp_path / f"proj-{tag}")
    made = []
    for index, age in enumerate((10 * 86400, 9 * 86400, 60)):
        snap = Path(snapshots_dir()) / "unit" / f"p{index}-{tag}"
        snap.mkdir(parents=True)
        (snap / "w.bin").write_bytes(os.urandom(50_000 * (index + 1)))
        made.append(fake_job(f"p{index}-{tag}", root, snap, time.time() - age))
    header = {"root": root, "older_than": 7 * 86400}
    dry, _ = housekeeping.job_prune(dict(header, dry_run=True), b"")
    assert [job["name"] for job in dry["jobs"]] == [made[0]["name"], made[1]["name"]]
    assert all(read_record(job["key"]) for job in made)
    real, _ = housekeeping.job_prune(header, b"")
    assert real["bytes"] == dry["bytes"] >= 150_000
    assert [read_record(job["key"]) is None for job in made] == [True, True, False]
    housekeeping.job_rm({"names": [made[2]["name"]], "root": root}, b"")


# ---- packages -------------------------------------------------------------------------


def test_freeze_keeps_the_first_of_a_name_sorted() -> None:
    names = [["Zeta", "1"], ["alpha_pkg", "2"], ["Alpha-Pkg", "3"], ["", "9"], ["beta", None]]
    assert provenance.freeze(names) == ["alpha_pkg==2", "beta==", "Zeta==1"]


def make_venv(where: Path) -> tuple[Path, Path]:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return python, Path(done.stdout.strip())


def add_dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_packages_of_another_python_are_cached_until_its_site_packages_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python, site = make_venv(tmp_path / "venv")
    add_dist(site, "marker", "1.0")
    old = time.time() - 60
    os.utime(site, (old, old))
    first = provenance.interpreter(str(python))
    assert first["python_path"] == str(python) and first["packages"] == ["marker==1.0"]
    real_probe = provenance._probe

    def refuse(path: str) -> Any:
        raise AssertionError("probed again although nothing changed")

    monkeypatch.setattr(provenance, "_probe", refuse)
    assert provenance.interpreter(str(python)) == first
    add_dist(site, "second", "2.0")
    monkeypatch.setattr(provenance, "_probe", real_probe)
    assert provenance.interpreter(str(python))["packages"] == ["marker==1.0", "second==2.0"]
    missing = provenance.interpreter(str(tmp_path / "nope" / "python"))
    assert missing["packages"] is None and missing["python_version"] is None


# ---- untracked files ------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def test_untracked_files_in_the_diff_or_by_hash_and_the_index_untouched(tmp_path: Path) -> None:
    root = make_git_project(tmp_path / "p")
    (root / "small.py").write_text("A = 1\n")
    big = os.urandom(untracked.PER_FILE + 1)
    (root / "big.bin").write_bytes(big)
    (root / "skipped.txt").write_text("excluded by [sync]\n")
    (root / "data").mkdir()
    (root / "data" / "kept.csv").write_text("1,2\n")  # gitignored, but [sync] include
    (root / "data" / "other.csv").write_text("3,4\n")  # gitignored
    (root / "outputs").mkdir()
    (root / "outputs" / "r.txt").write_text("a result\n")
    before = git(root, "ls-files", "--stage")
    rules = SyncRules(exclude=("skipped.txt",), include=("data/kept.csv",), results=("outputs/",))
    paths = untracked.pushed_untracked(root, rules)
    assert paths == ["big.bin", "data/kept.csv", "small.py"]
    entries, small = untracked.describe(root, paths)
    by_path = {entry["path"]: entry for entry in entries}
    assert by_path["big.bin"] == {"path": "big.bin", "size": len(big), "in_diff": False,
                                  "sha256": hashlib.sha256(big).hexdigest()}  # fmt: skip
    assert small == ["data/kept.csv", "small.py"]
    diff = untracked.diff_with(root, small) or ""
    assert "+A = 1" in diff and "+1,2" in diff and "big.bin" not in diff
    assert git(root, "ls-files", "--stage") == before
    assert "?? small.py" in git(root, "status", "--porcelain")


def test_past_the_total_cap_files_are_hashed_only(tmp_path: Path) -> None:
    root = make_git_project(tmp_path / "p")
    for index in range(20):
        (root / f"f{index:02d}.txt").write_bytes(b"x" * 60_000)
    entries, small = untracked.describe(root, untracked.pushed_untracked(root, SyncRules()))
    assert len(entries) == 20 and len(small) == untracked.TOTAL // 60_000
    assert all(entry["sha256"] for entry in entries)


# ---- disk use: kept sizes of frozen snapshots ------------------------------------------


def fresh_use(root: str) -> dict[str, Any]:
    """disk_use as measured from scratch (no kept sizes)."""
    from tether.agent import du

    kept = Path(du._sizes_path())
    kept.unlink(missing_ok=True)
    answer, _ = housekeeping.disk_use({"root": root}, b"")
    kept.unlink(missing_ok=True)
    return dict(answer["snapshots"])


def test_status_walks_a_frozen_snapshot_once_and_its_totals_stay_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    root = str(tmp_path / f"proj-{tag}")
    snaps = [Path(snapshots_dir()) / "unit" / f"du{i}-{tag}" for i in range(4)]
    for index, snap in enumerate(snaps):
        (snap / "sub").mkdir(parents=True)
        (snap / "sub" / "w.bin").write_bytes(os.urandom(20_000 * (index + 1)))
    os.link(snaps[2] / "sub" / "w.bin", snaps[3] / "sub" / "shared.bin")  # shared: walked
    now = time.time()
    fake_job(f"d0-{tag}", root, snaps[0], now - 60)
    fake_job(f"d1-{tag}", root, snaps[1], now - 30)
    running = fake_job(f"d2-{tag}", root, snaps[2], now)
    running["ended"] = None  # may still write into its snapshot
    write_json(record_path(running["key"]), running)
    fake_job(f"d3-{tag}", root, snaps[3], now - 10)
    expected = fresh_use(root)
    housekeeping.disk_use({"root": root}, b"")  # measures and keeps the frozen ones
    listed: list[str] = []
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        listed.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    answer, _ = housekeeping.disk_use({"root": root}, b"")
    assert answer["snapshots"] == expected
    walked = {path for path in listed if f"-{tag}" in path}
    frozen_alone = [str(s) for s in snaps[:2]]
    assert not [p for p in walked if any(p.startswith(s) for s in frozen_alone)], walked
    assert any(p.startswith(str(snaps[2])) for p in walked)  # running: walked each time
    assert any(p.startswith(str(snaps[3])) for p in walked)  # shares an inode: walked
    monkeypatch.setattr(os, "scandir", real_scandir)
    # A file added at a frozen snapshot's top changes its directory: measured again.
    (snaps[0] / "late.bin").write_bytes(os.urandom(50_000))
    again, _ = housekeeping.disk_use({"root": root}, b"")
    assert again["snapshots"] == fresh_use(root)
    assert again["snapshots"]["project_bytes"] >= expected["project_bytes"] + 50_000
