"""The sync daemon's and the agent's memory at 100,000 files, step by step (issue #26).

A generated git project (bench/push.py's shapes, --files N; --tree DIR keeps it between
runs) is pushed to a sandbox sshd at 0 ms added RTT: a first push with a cold daemon, then
--runs no-op pushes and --runs one-file pushes, each served by that daemon (and its kept
agent). After each step the peak (VmHWM) and current (VmRSS) resident set size of the
daemon and of the largest agent are printed, with the load average. With --trace DIR both
run with TETHER_TRACEMALLOC=DIR (agent/memtrace.py: a snapshot at each phase's peak) and
the top allocation sites of each peak are printed (by line, and the largest by traceback).
Numbers under --trace are tracemalloc's (traced Python memory), not RSS.

    flock /tmp/tether-bench.lock .venv/bin/python bench/memory.py [--files 100000]
        [--tree /tmp/tether-mem-tree] [--runs 2] [--trace DIR] [--top 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import push
import scale

if TYPE_CHECKING:
    pass

SANDBOX = "bench-memory"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def status_mb(pid: int, field: str) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def show_step(isolation: common.Isolation, step: str, seconds: float) -> None:
    def of(pids: list[int]) -> str:
        peaks = [(status_mb(pid, "VmHWM"), status_mb(pid, "VmRSS")) for pid in pids]
        known = [(hwm, rss) for hwm, rss in peaks if hwm is not None and rss is not None]
        if not known:
            return "-"
        hwm, rss = max(known)
        return f"peak {hwm:6.1f} MB, now {rss:6.1f} MB"

    daemon = of(common.daemon_pids())
    agent = of(scale.agent_pids(isolation))
    print(f"{step:<14} {seconds:6.2f} s  daemon {daemon}  agent {agent}  load {load()}", flush=True)


def the_tree(where: Path | None, home: Path, files: int) -> common.Tree:
    """The generated project: kept at `where` between runs (made there once), or in home."""
    root = where if where is not None else home / "proj"
    if (root / ".git").is_dir():
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "*.py"], capture_output=True, text=True
        ).stdout.split()
        return common.Tree(root, files, 0, listed)
    spec = common.TreeSpec(small_files=files, big_files=0, big_bytes=0)
    tree = common.make_tree(root, spec)
    common.git_init(root)
    return tree


def show_traces(where: Path, top: int) -> None:
    """The top allocation sites of each peak snapshot (by line; the largest tracebacks)."""
    for file in sorted(where.glob("*.snap"), key=lambda f: f.stat().st_mtime):
        snapshot = tracemalloc.Snapshot.load(str(file)).filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        lines = snapshot.statistics("lineno")
        total = sum(stat.size for stat in lines)
        print(f"\n== {file.name}: {total / 1e6:.1f} MB traced")
        for stat in lines[:top]:
            frame = stat.traceback[0]
            name = frame.filename.split("/src/", 1)[-1].split("site-packages/", 1)[-1]
            print(f"{stat.size / 1e6:8.1f} MB {stat.count:9d}  {name}:{frame.lineno}")
        print("-- by traceback (largest 6)")
        for stat in snapshot.statistics("traceback")[:6]:
            print(f"{stat.size / 1e6:8.1f} MB {stat.count:9d}")
            for frame in list(stat.traceback)[-8:]:
                name = frame.filename.split("/src/", 1)[-1].split("site-packages/", 1)[-1]
                print(f"      {name}:{frame.lineno}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--tree", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--trace", type=Path, default=None)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    trace: Path | None = args.trace.resolve() if args.trace else None
    if trace is not None:
        trace.mkdir(parents=True, exist_ok=True)
        for old in trace.glob("*.snap"):
            old.unlink()
    with common.isolated() as isolation:
        tree = the_tree(args.tree, isolation.home, args.files)
        common.remove(tree.root / ".tether")
        with common.sandbox(SANDBOX) as box:
            if trace is not None:
                common.set_session_env(box, "TETHER_TRACEMALLOC", str(trace))
            pusher = push.Pusher(tree, box.home, box.name, 0)
            pusher.init()
            common.stop_daemons()
            first_env = {"TETHER_TRACEMALLOC": str(trace)} if trace is not None else None
            print(f"tree: {tree.root}, {args.files} files; load {load()}", flush=True)
            seconds = common.timed(lambda: pusher.tether(first_env, "first"))
            show_step(isolation, "first push", seconds)
            for index in range(args.runs):
                show_step(isolation, f"no-op push {index + 1}", common.timed(pusher.tether))
            change = push.change_one_file(tree)
            for index in range(args.runs):
                change("tether", index)
                show_step(isolation, f"one file {index + 1}", common.timed(pusher.tether))
            common.stop_daemons()
            time.sleep(1.0)
            pusher.cleanup()
    if trace is not None:
        show_traces(trace, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
