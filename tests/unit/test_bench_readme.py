"""bench/readme_table.py: the README's "How it compares" table from a run's recorded numbers.

A small fixture of results (as the bench scripts record them through common.report) is
turned into the table; only a full run's numbers rewrite the README, and only between the
markers. No sshd: the generator is pure apart from reading and writing the README.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import readme_table  # noqa: E402
import run_all  # noqa: E402

# (script, key, rtt_ms, value, peer, peer_name, goal, verdict, unit): one per Part in LINES.
FIXTURE = [
    ("push", "noop", 50, 0.139, 0.707, "rsync -a", "<= 80 ms", "MISS", "s"),
    ("push", "one", 50, 0.070, 0.744, "rsync -a", "<= 80 ms", "PASS", "s"),
    ("push", "first", 50, 1.834, 4.905, "rsync -a", "<= 0.5x rsync", "PASS", "s"),
    ("push", "cold", 50, 2.494, 4.686, "rsync -a", "<= 0.5x rsync", "MISS", "s"),
    ("push", "noop, no daemon", 50, 0.535, 0.713, "rsync -a", "", "", "s"),
    ("push", "noop", 0, 0.103, 0.093, "rsync -a", "", "", "s"),
    ("scale", "noop", 0, 1.85, 0.64, "rsync -a", "<= 50 ms", "MISS", "s"),
    ("scale", "one", 0, 2.0, 0.61, "rsync -a", "<= 50 ms", "MISS", "s"),
    ("scale", "first", 0, 26.1, 19.3, "rsync -a", "<= 0.5x rsync", "MISS", "s"),
    ("scale", "cold", 0, 27.0, 19.0, "rsync -a", "<= 0.5x rsync", "MISS", "s"),
    ("scale", "daemon MB", 50, 321.0, None, "", "<= 150 MB", "MISS", "MB"),
    ("scale", "agent MB", 0, 35.0, None, "", "<= 40 MB", "PASS", "MB"),
    ("watch", "save visible", 50, 0.044, 0.441, "rsync -a", "<= 40 ms", "MISS", "s"),
    ("send", "send", 50, 0.094, 0.125, "ssh host python3 -c", "<= 90 ms", "MISS", "s"),
    ("jobs", "jobs", 50, 0.097, 0.467, "4 x ssh tmux ls", "<= 90 ms", "MISS", "s"),
    ("jobs", "status", 50, 0.088, 0.467, "4 x ssh tmux ls", "<= 90 ms", "PASS", "s"),
    ("startup", "tether --help", 0, 0.087, 0.012, "python -c pass", "<= python + 60 ms",
     "MISS", "s"),
    ("startup", "tether status --help", 0, 0.030, 0.012, "python -c pass",
     "<= python + 60 ms", "PASS", "s"),
]  # fmt: skip
PROSE_BEFORE = "## How it compares\n\nSome prose before.\n\n"
PROSE_AFTER = "\nProse after, with 1.23 s in it.\n\n## Clusters\n"


def recorded(tmp_path: Path, variants: dict[str, str] | None = None) -> dict[str, Any]:
    """The fixture written as the scripts write it (common.report) and read back."""
    results = tmp_path / "RESULTS.md"
    by_script: dict[str, list[common.Measure]] = {}
    for script, key, rtt, value, peer, name, goal, verdict, unit in FIXTURE:
        by_script.setdefault(script, []).append(
            common.Measure(key, rtt, value, peer, name, goal, verdict, 7, unit)
        )
    for script, measures in by_script.items():
        table = common.Table(script, ["a"], [["1"]])
        variant = (variants or {}).get(script, "full")
        common.report([table], results, f"bench/{script}.py", measures, script, variant)
    return common.read_measures(results)


def readme(tmp_path: Path, table: str = "| old | table |\n") -> Path:
    path = tmp_path / "README.md"
    text = PROSE_BEFORE + readme_table.BEGIN + "\n" + table + readme_table.END + PROSE_AFTER
    path.write_text(text)
    return path


def rows_of(block: str) -> dict[str, list[str]]:
    """The table's body rows by their first cell."""
    found = {}
    for line in block.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        found[cells[0]] = cells
    return found


def test_one_row_per_issue_row_with_peer_ratio_goal_and_verdict(tmp_path: Path) -> None:
    block, missing = readme_table.build(recorded(tmp_path))
    assert missing == []
    rows = rows_of(block)
    assert list(rows) == [line.work for line in readme_table.LINES]
    assert rows["no-op push, 5,000 files, 50 ms RTT"][1:] == [
        "139 ms", "707 ms (`rsync -a`)", "0.20x", "<= 80 ms", "MISS",
    ]  # fmt: skip
    first = rows["first push, 5,000 files / 154 MB, 50 ms RTT, daemon warm / cold"]
    assert first[1:] == [
        "1.83 s / 2.49 s", "4.91 s / 4.69 s (`rsync -a`)", "0.37x / 0.53x", "<= 0.5x rsync",
        "PASS / MISS",
    ]  # fmt: skip
    jobs = rows["`tether jobs` / `status` over 4 hosts, 50 ms RTT"]
    assert jobs[2:4] == ["467 ms (`4 x ssh tmux ls`)", "0.21x / 0.19x"]  # one peer, shown once
    start = rows["`tether --help` / `status --help` (a command's start)"]
    assert start[1] == "python + 75 / 18 ms"
    memory = rows["peak RSS at 100,000 files: daemon / agent"]
    assert memory[1:] == ["321 MB / 35 MB", "-", "-", "<= 150 MB / <= 40 MB", "MISS / PASS"]
    assert re.search(r"when each script finished: jobs [0-9.]+, push [0-9.]+, scale", block)
    assert "no-op push at 50 ms takes 535 ms (0.75x rsync)" in block
    assert "medians of 7 interleaved runs" in block  # as many as the fixture's measures say


def test_a_full_run_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    path = readme(tmp_path)
    assert readme_table.update(path, recorded(tmp_path)) == []
    text = path.read_text()
    assert text.startswith(PROSE_BEFORE + readme_table.BEGIN + "\n| work (issue #26)")
    assert text.endswith(readme_table.END + PROSE_AFTER)
    assert "| old | table |" not in text
    assert readme_table.update(path, recorded(tmp_path)) == []
    assert path.read_text() == text  # the same numbers give the same README


@pytest.mark.parametrize("variant", ["quick", "small"])
def test_numbers_of_a_partial_run_never_reach_the_readme(tmp_path: Path, variant: str) -> None:
    path = readme(tmp_path)
    before = path.read_text()
    missing = readme_table.update(path, recorded(tmp_path, {"push": variant}))
    assert "no-op push, 5,000 files, 50 ms RTT" in missing
    assert "`tether jobs` / `status` over 4 hosts, 50 ms RTT" not in missing
    assert path.read_text() == before


def test_a_missing_script_keeps_the_readme(tmp_path: Path) -> None:
    data = recorded(tmp_path)
    del data["scale"]
    path = readme(tmp_path)
    before = path.read_text()
    missing = readme_table.update(path, data)
    assert missing == [line.work for line in readme_table.LINES if line.parts[0].script == "scale"]
    assert path.read_text() == before


def test_a_readme_without_markers_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text(PROSE_BEFORE + PROSE_AFTER)
    with pytest.raises(ValueError, match="markers"):
        readme_table.update(path, recorded(tmp_path))
    assert path.read_text() == PROSE_BEFORE + PROSE_AFTER


def test_only_a_full_run_may_rewrite_the_readme() -> None:
    assert readme_table.full_run(quick=False, small=False, only=None)
    assert not readme_table.full_run(quick=True, small=False, only=None)
    assert not readme_table.full_run(quick=False, small=True, only=None)
    assert not readme_table.full_run(quick=False, small=False, only=["push"])


def test_the_project_readme_has_the_markers() -> None:
    text = (BENCH.parent / "README.md").read_text()
    assert text.count(readme_table.BEGIN) == 1
    assert text.index(readme_table.BEGIN) < text.index(readme_table.END)


def test_run_all_runs_every_bench_script_but_not_the_helpers_or_profilers() -> None:
    names = ["common.py", "measured.py", "readme_table.py", "run_all.py", "profile_first.py",
             "zz_new.py", "RESULTS.md", "RESULTS.json", "push.py", "env.py", "send.py"]  # fmt: skip
    assert run_all.bench_scripts(names) == [*run_all.SCRIPTS, "env.py", "send.py", "zz_new.py"]
    on_disk = run_all.bench_scripts(path.name for path in BENCH.glob("*"))
    assert set(on_disk) >= {"push.py", "scale.py", "watch.py", "send.py", "jobs.py", "startup.py"}


def test_every_script_run_all_picks_takes_its_flags() -> None:
    """A script in bench/ that run_all would run takes --results, --small and --quick (a
    profiler with flags of its own belongs in NOT_BENCHES or under profile_*)."""
    import subprocess
    import sys

    for name in run_all.bench_scripts(path.name for path in BENCH.glob("*.py")):
        done = subprocess.run(
            [sys.executable, str(BENCH / name), "--help"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, f"{name}: {done.stderr}"
        for flag in ("--results", "--small", "--quick"):
            assert flag in done.stdout, f"{name} has no {flag}"
