"""`tether jobs` (and `status`) over 4 sandboxes at 0 and 50 ms added RTT, next to 4 sequential
`ssh HOST tmux ls`.

Each sandbox runs one job and is reached directly (0 ms) or through a latency proxy (25 ms
each way). The ControlMasters are warm (opened before timing). `tether jobs` asks all 4
hosts in parallel, one agent request each, so it should cost about one connection's round
trips plus process start, not four times that; `tether status` asks every host all its
questions in one round trip too. Both are served by the warm sync daemon on its kept
agent channels. 4 sequential `ssh HOST tmux ls` (through the same masters) pay 4 round
trips in a row. Median of 10 interleaved runs. Goal (issue #26, at 50 ms): 1 RTT + 40 ms
for each of jobs and status. PASS/MISS is printed, never asserted.

    .venv/bin/python bench/jobs.py [--small] [--runs N] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

if TYPE_CHECKING:
    from tether.hosts.sandbox import Sandbox

RTTS_MS = (0, 50)
GOAL_RTT_MS = 50
GOAL_EXTRA_MS = 40
RUNS = 10
HOSTS = 4


def write_project(root: Path, aliases: list[str], remote: str) -> None:
    """A git project whose tether.toml has one default target per alias."""
    root.mkdir(parents=True)
    (root / "job.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    common.git_init(root)
    lines = []
    for index, alias in enumerate(aliases):
        lines += [f"[targets.t{index}]", f'host = "{alias}"', f'path = "~/{remote}"']
        lines += ['python = "python3"', "default = true", ""]
    lines += ["[sync]", "exclude = []", "include = []", 'results = ["outputs/"]', ""]
    common.write_config(root / "tether.toml", "\n".join(lines))


def bench_rtt(
    boxes: list[Sandbox], rtt_ms: int, home: Path, sock: str, runs: int
) -> dict[str, common.Timing]:
    """tether jobs, 4 and 1 ssh tmux ls through aliases with rtt_ms added; one job running."""
    tether = common.tether_bin()
    with contextlib.ExitStack() as stack:
        aliases = [stack.enter_context(common.rtt_alias(box, rtt_ms)) for box in boxes]
        project = home / f"bench-project-{rtt_ms}"
        write_project(project, aliases, f"bench-jobs-{rtt_ms}")
        common.run([tether, "run", "--name", "bench", "--", "python3", "job.py"], cwd=project)
        for alias in aliases:
            common.start_master(alias)
        common.run([tether, "jobs"], cwd=project)  # warm: agents installed, masters open
        common.run([tether, "status"], cwd=project)
        tmux_ls = ["tmux", "-L", sock, "ls"]

        def sequential_ssh() -> None:
            for alias in aliases:
                common.run(["ssh", *common.master_options(), alias, *tmux_ls])

        return common.side_by_side(
            runs,
            {
                "tether jobs": lambda: common.run([tether, "jobs"], cwd=project),
                "tether status": lambda: common.run([tether, "status"], cwd=project),
                "ssh tmux ls x4": sequential_ssh,
                "ssh tmux ls x1": lambda: common.run(
                    ["ssh", *common.master_options(), aliases[0], *tmux_ls]
                ),
            },
        )


def main(argv: list[str] | None = None) -> int:
    args = common.arguments(__doc__ or "", argv)
    runs = args.runs or (3 if args.small else RUNS)
    sock = f"tether-bench-{uuid.uuid4().hex[:8]}"
    table = common.Table(
        f"tether jobs over {HOSTS} hosts vs sequential ssh tmux ls (warm)",
        ["RTT", "tether jobs s", "tether status s", f"{HOSTS}x ssh tmux ls s", "1x ssh tmux ls s",
         "jobs / 4x ssh", "goal s", ""],
    )  # fmt: skip
    measures: list[common.Measure] = []
    with common.isolated() as isolation, contextlib.ExitStack() as stack:
        os.environ["TETHER_TMUX_SOCKET"] = sock
        boxes = [stack.enter_context(common.sandbox(f"bench-jobs{i}")) for i in range(HOSTS)]
        try:
            for rtt_ms in RTTS_MS:
                timings = bench_rtt(boxes, rtt_ms, isolation.home, sock, runs)
                jobs, status, four, one = (
                    timings[k]
                    for k in ("tether jobs", "tether status", "ssh tmux ls x4", "ssh tmux ls x1")
                )
                goal = (rtt_ms + GOAL_EXTRA_MS) / 1000
                held = rtt_ms == GOAL_RTT_MS
                for key, timing in (("jobs", jobs), ("status", status)):
                    measures.append(
                        common.Measure(
                            key, rtt_ms, timing.median, four.median,
                            f"{HOSTS} x ssh tmux ls", f"<= {goal * 1000:.0f} ms" if held else "",
                            common.verdict(timing.median <= goal) if held else "", runs,
                        )
                    )  # fmt: skip
                table.rows.append(
                    [
                        f"{rtt_ms} ms",
                        common.seconds(jobs.median),
                        common.seconds(status.median),
                        common.seconds(four.median),
                        common.seconds(one.median),
                        common.ratio(jobs.median, four.median),
                        f"<= {goal:.3f}" if held else "-",
                        ("PASS" if max(jobs.median, status.median) <= goal else "MISS")
                        if held
                        else "",
                    ]
                )
                table.notes.append(
                    f"spread @ {rtt_ms} ms: jobs {jobs.spread()} s, status {status.spread()} s, "
                    f"4x ssh {four.spread()} s, 1x ssh {one.spread()} s"
                )
        finally:
            for box in boxes:  # the jobs' tmux servers (none if the bench failed early)
                with contextlib.suppress(RuntimeError):
                    common.run(["ssh", *common.master_options(), box.name, "tmux", "-L", sock,
                                "kill-server"])  # fmt: skip
    table.notes.insert(
        0,
        f"median of {runs} interleaved runs; 50 ms = 25 ms each way (proxy); goal (issue #26): "
        f"1 RTT + {GOAL_EXTRA_MS} ms at {GOAL_RTT_MS} ms, for jobs and status",
    )
    common.report([table], args.results, "bench/jobs.py", measures, "jobs", common.variant_of(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
