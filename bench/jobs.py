"""`tether jobs` over 4 sandboxes at 50 ms added RTT, next to 4 sequential `ssh HOST tmux ls`.

Each sandbox is reached through a latency proxy (25 ms each way) and runs one job. The
ControlMasters are warm (opened before timing). `tether jobs` asks all 4 hosts in
parallel, one agent request each, so it should cost about one connection's round trips
plus process start, not four times that; 4 sequential `ssh HOST tmux ls` (through the
same masters) pay 4 round trips in a row. Median of 10 interleaved runs.

    .venv/bin/python bench/jobs.py [--small] [--runs N] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

RTT_MS = 50
RUNS = 10
HOSTS = 4


def write_project(root: Path, aliases: list[str]) -> None:
    """A git project whose tether.toml has one default target per alias."""
    root.mkdir(parents=True)
    (root / "job.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    common.git_init(root)
    lines = []
    for index, alias in enumerate(aliases):
        lines += [f"[targets.t{index}]", f'host = "{alias}"', 'path = "~/bench-jobs"']
        lines += ['python = "python3"', "default = true", ""]
    lines += ["[sync]", "exclude = []", "include = []", 'results = ["outputs/"]', ""]
    common.write_config(root / "tether.toml", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = common.arguments(__doc__ or "", argv)
    runs = args.runs or (3 if args.small else RUNS)
    tether = common.tether_bin()
    sock = f"tether-bench-{uuid.uuid4().hex[:8]}"
    with common.isolated() as isolation, contextlib.ExitStack() as stack:
        os.environ["TETHER_TMUX_SOCKET"] = sock
        boxes = [stack.enter_context(common.sandbox(f"bench-jobs{i}")) for i in range(HOSTS)]
        aliases = [stack.enter_context(common.rtt_alias(box, RTT_MS)) for box in boxes]
        project = isolation.home / "bench-project"
        write_project(project, aliases)
        common.run([tether, "run", "--name", "bench", "--", "python3", "job.py"], cwd=project)
        for alias in aliases:
            common.start_master(alias)
        common.run([tether, "jobs"], cwd=project)  # warm: agents installed, masters open
        tmux_ls = ["tmux", "-L", sock, "ls"]

        def sequential_ssh() -> None:
            for alias in aliases:
                common.run(["ssh", *common.master_options(), alias, *tmux_ls])

        timings = common.side_by_side(
            runs,
            {
                "tether jobs": lambda: common.run([tether, "jobs"], cwd=project),
                "ssh tmux ls x4": sequential_ssh,
                "ssh tmux ls x1": lambda: common.run(
                    ["ssh", *common.master_options(), aliases[0], *tmux_ls]
                ),
            },
        )
        for alias in aliases:
            common.run(["ssh", *common.master_options(), alias, "tmux", "-L", sock, "kill-server"])
    jobs, four, one = (timings[k] for k in ("tether jobs", "ssh tmux ls x4", "ssh tmux ls x1"))
    table = common.Table(
        f"tether jobs over {HOSTS} hosts at {RTT_MS} ms RTT vs sequential ssh tmux ls (warm)",
        ["tether jobs s", f"{HOSTS}x ssh tmux ls s", "1x ssh tmux ls s", "jobs / 4x ssh"],
    )
    table.rows.append(
        [
            common.seconds(jobs.median),
            common.seconds(four.median),
            common.seconds(one.median),
            common.ratio(jobs.median, four.median),
        ]
    )
    table.notes.append(
        f"median of {runs} interleaved runs; spread: jobs {jobs.spread()} s, "
        f"4x ssh {four.spread()} s, 1x ssh {one.spread()} s"
    )
    common.report([table], args.results, "bench/jobs.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
