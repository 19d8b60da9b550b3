"""100,000 small files: `tether push` vs rsync, and the sync daemon's and agent's peak memory.

A generated git project of 100,000 small files (bench/push.py's file shapes: ~3 KB each,
15 to a directory, no large files; --small: 10,000; --quick: 2,000) is pushed to a sandbox
sshd at 0 and 50 ms added RTT (latency proxy, 25 ms each way; --rtt picks) with push.py's
scenarios, medians of 7 interleaved runs (tether, rsync, ...): first push with the sync
daemon cold and warm (one pass: cold, warm, rsync, ...), no-op push, one file changed.
After each scenario the peak resident set size (VmHWM) of the sync daemon and of the
agents (the remote side, on the sandbox) is read from /proc. Goals (issue #26, at 0 ms
RTT): no-op and one-file push <= 1 RTT + 50 ms, first push <= 0.5x rsync; daemon <= 150 MB
and agent <= 40 MB at 100,000 files.
PASS/MISS is printed, never asserted.

    .venv/bin/python bench/scale.py [--small|--quick] [--runs N] [--rtt 0,50]
                                    [--only noop,one] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import push

SANDBOX = "bench-scale"
FILES = {"full": 100_000, "small": 10_000, "quick": 2_000}
GOALS = {
    push.FIRST: push.Goal(0, of_rsync=0.5),
    push.COLD: push.Goal(0, of_rsync=0.5),
    push.NOOP: push.Goal(0, over_rtt_ms=50),
    push.ONE: push.Goal(0, over_rtt_ms=50),
}
DAEMON_GOAL_MB = 150
AGENT_GOAL_MB = 40


@dataclass
class Memory:
    """Peak RSS after one scenario: the sync daemon's and the largest agent's, in MB."""

    after: str
    rtt_ms: int
    daemon_mb: float | None
    agent_mb: float | None

    def cells(self) -> list[str]:
        def cell(value: float | None, goal: int) -> list[str]:
            if value is None:
                return ["-", ""]
            return [f"{value:.0f}", "PASS" if value <= goal else "MISS"]

        return [
            self.after,
            f"{self.rtt_ms} ms",
            *cell(self.daemon_mb, DAEMON_GOAL_MB),
            *cell(self.agent_mb, AGENT_GOAL_MB),
        ]


def agent_pids(isolation: common.Isolation) -> list[int]:
    """The agents the bench's tether commands started (python running tether_agent.server)."""
    found = []
    for pid, cmdline in isolation.session_processes():
        program = Path(cmdline.split(" ", 1)[0]).name
        if program.startswith("python") and "tether_agent.server" in cmdline:
            found.append(pid)
    return found


def sample(isolation: common.Isolation, scenario: str, rtt_ms: int) -> Memory:
    """The peak RSS of the running daemon and agents now (VmHWM: since each started)."""

    def largest(pids: list[int]) -> float | None:
        values = [mb for mb in map(common.peak_rss_mb, pids) if mb is not None]
        return max(values) if values else None

    return Memory(scenario, rtt_ms, largest(common.daemon_pids()), largest(agent_pids(isolation)))


def main(argv: list[str] | None = None) -> int:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--rtt", default="0,50", help="added RTTs in ms, comma-separated (default: 0,50)"
        )
        parser.add_argument(
            "--only", default=None, help="scenarios, comma-separated: " + ", ".join(push.ONLY)
        )

    args = common.arguments(__doc__ or "", argv, extra)
    size = common.variant_of(args)
    spec = common.TreeSpec(small_files=FILES[size], big_files=0, big_bytes=0)
    runs = args.runs or push.RUNS
    rtts = [int(value) for value in args.rtt.split(",")]
    scenarios = push.SCENARIOS
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(push.ONLY))
        if unknown:
            raise SystemExit(f"scale.py: no such scenario: {', '.join(unknown)}")
        scenarios = tuple(push.ONLY[name] for name in args.only.split(","))
    rows: list[push.Row] = []
    memory: list[Memory] = []
    notes: list[str] = []
    with common.isolated() as isolation:
        started = time.monotonic()
        tree = common.make_tree(isolation.home / "proj", spec)
        common.git_init(tree.root)
        folders = -(-spec.small_files // common.FILES_PER_DIR)
        notes.append(
            f"tree: {tree.files} files, {tree.bytes / 1e6:.0f} MB in {folders} directories, "
            f"git repository (written in {time.monotonic() - started:.0f} s); median of "
            f"{runs} interleaved runs per cell"
        )
        with common.sandbox(SANDBOX) as box:
            for rtt_ms in rtts:
                with common.rtt_alias(box, rtt_ms) as alias:

                    def after(scenario: str, rtt_ms: int = rtt_ms) -> None:
                        memory.append(sample(isolation, scenario, rtt_ms))

                    found, check = push.bench_rtt(
                        tree,
                        box.home,
                        alias,
                        rtt_ms,
                        runs,
                        scenarios,
                        without_daemon=False,
                        after=after,
                    )
                rows += found
                notes.append(f"{rtt_ms} ms: tether's and rsync's remote copies {check}")
    times = push.table(f"push at {tree.files} files: tether vs rsync", rows, GOALS)
    times.notes = [
        *notes,
        "tether s: wall time of `tether push --json` as a subprocess, served by the sync "
        f"daemon; {push.COLD}: the daemon is stopped before each of tether's runs; the two "
        "first pushes are one pass (cold, warm, rsync, ...: the warm run is served by the "
        "daemon the cold run started) and share rsync's samples",
        "rsync: `rsync -a --delete --exclude=/.git --exclude=/.tether` over tether's "
        "ControlMaster (opened before timing)",
        *(row.spread() for row in rows),
    ]
    peaks = common.Table(
        f"peak memory at {tree.files} files (VmHWM)",
        ["after", "RTT", "daemon MB", f"<= {DAEMON_GOAL_MB}", "agent MB", f"<= {AGENT_GOAL_MB}"],
        [m.cells() for m in memory],
    )
    peaks.notes = [
        "read after each scenario's runs: the peak of the daemon running then, since it "
        "started (the last cold first push started it: it served that push, a warm first "
        "push and the scenarios since); agent: the largest live `tether_agent.server` "
        "process on the sandbox",
    ]
    measures = [measure for row in rows for measure in row.measures(GOALS)]
    for kind, goal_mb in (("daemon", DAEMON_GOAL_MB), ("agent", AGENT_GOAL_MB)):
        values = [(m.daemon_mb if kind == "daemon" else m.agent_mb, m.rtt_ms) for m in memory]
        known = [(value, rtt) for value, rtt in values if value is not None]
        if known:
            peak, rtt = max(known)
            measures.append(
                common.Measure(f"{kind} MB", rtt, peak, None, "", f"<= {goal_mb} MB",
                               common.verdict(peak <= goal_mb), len(known), "MB")
            )  # fmt: skip
    common.report([times, peaks], args.results, f"bench/scale.py ({size})", measures, "scale", size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
