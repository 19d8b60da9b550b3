"""Command start: `tether --help`, `--version`, `jobs` and `status` next to a bare `python -c pass`.

Every command is a subprocess, as a user or an editor runs it, with tether's interpreter;
`python -c pass` with the same interpreter is the floor. The help and version lines do no
remote work: their time is the start (imports, building the command tree). `tether jobs`
and `tether status` (served by the warm sync daemon, and with TETHER_NO_DAEMON=1 in their
own process) ask one sandbox at 0 ms added RTT, next to `ssh ALIAS true` over the same
warm ControlMaster. Medians of 15 interleaved runs (--small: 7, --quick: 2). Goal (issue
#26): any command's start <= python + 60 ms. PASS/MISS is printed, never asserted.

    .venv/bin/python bench/startup.py [--small|--quick] [--runs N] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

RUNS = 15
SMALL_RUNS = 7
SANDBOX = "bench-startup"
GOAL_OVER_PYTHON_MS = 60
PYTHON = "python -c pass"
# Commands that do no remote work: their whole time is the start, held to the goal.
STARTS = ("tether --version", "tether --help", "tether status --help", "tether jobs --help")


def main(argv: list[str] | None = None) -> int:
    args = common.arguments(__doc__ or "", argv)
    runs = args.runs or (SMALL_RUNS if args.small else RUNS)
    tether = common.tether_bin()
    with common.isolated() as isolation, common.sandbox(SANDBOX) as box:
        os.environ["TETHER_TMUX_SOCKET"] = f"tether-bench-{uuid.uuid4().hex[:8]}"
        project = isolation.home / "startup-project"
        project.mkdir()
        (project / "README.md").write_text("# startup bench\n")
        common.git_init(project)
        common.write_config(
            project / "tether.toml",
            f'[targets.box]\nhost = "{box.name}"\npath = "~/startup"\ndefault = true\n',
        )
        common.start_master(box.name)
        common.run([tether, "push"], cwd=project)  # agent installed, daemon warm

        ssh_true = ["ssh", *common.master_options(), box.name, "true"]

        def command(*argv: str, env: dict[str, str] | None = None) -> Callable[[], object]:
            return lambda: common.run([tether, *argv], cwd=project, env=env)

        actions: dict[str, Callable[[], object]] = {
            PYTHON: lambda: common.run([sys.executable, "-c", "pass"], cwd=project),
            "tether --version": command("--version"),
            "tether --help": command("--help"),
            "tether status --help": command("status", "--help"),
            "tether jobs --help": command("jobs", "--help"),
            "tether jobs": command("jobs"),
            "tether jobs, no daemon": command("jobs", env={"TETHER_NO_DAEMON": "1"}),
            "tether status": command("status"),
            "tether status, no daemon": command("status", env={"TETHER_NO_DAEMON": "1"}),
            "ssh ALIAS true": lambda: common.run(ssh_true),
        }
        for action in actions.values():
            action()  # each once untimed: page cache, the daemon's agent channel
        timings = common.side_by_side(runs, actions)
        common.stop_master(box.name)
    python_ms = timings[PYTHON].median * 1000
    goal_ms = python_ms + GOAL_OVER_PYTHON_MS
    table = common.Table(
        "command start: tether vs python -c pass (0 ms RTT)",
        ["command", "ms", "- python ms", "goal ms", "", "spread s"],
    )
    for name, timing in timings.items():
        ms = timing.median * 1000
        held = name in STARTS
        table.rows.append(
            [
                f"`{name}`",
                f"{ms:.0f}",
                f"{ms - python_ms:.0f}",
                f"<= {goal_ms:.0f}" if held else "-",
                ("PASS" if ms <= goal_ms else "MISS") if held else "",
                timing.spread(),
            ]
        )
    measures = [
        common.Measure(
            name, 0, timing.median, timings[PYTHON].median, PYTHON,
            f"<= python + {GOAL_OVER_PYTHON_MS} ms" if name in STARTS else "",
            common.verdict(timing.median * 1000 <= goal_ms) if name in STARTS else "", runs,
        )
        for name, timing in timings.items()
    ]  # fmt: skip
    table.notes = [
        f"median of {runs} interleaved runs; {sys.executable}; tether's sources byte-compiled "
        "first (as pip installs them)",
        "jobs and status ask one sandbox over tether's warm ControlMaster; both are served by "
        "the warm sync daemon on its kept agent channel; `..., no daemon` (TETHER_NO_DAEMON=1) "
        "imports the CLI framework and opens its own agent channel",
        f"goal (issue #26): a start <= python + {GOAL_OVER_PYTHON_MS} ms, held to the commands "
        "that do no remote work",
    ]
    common.report(
        [table], args.results, "bench/startup.py", measures, "startup", common.variant_of(args)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
