"""`tether push` against `rsync -a --delete` over the same ssh ControlMaster.

An ML-like git repository (~5,000 small files in nested packages plus three large
checkpoints, ~150 MB; `--small`: 500 files, ~15 MB) is pushed to a sandbox sshd at 0 ms
added RTT (direct) and at 50 ms RTT (latency proxy, 25 ms each way). Scenarios, each the
median of 7 interleaved runs (tether, rsync, tether, rsync, ...):

  first push        fresh remote dir every run (and no local .tether/, so no base and no
                    digest cache: a project's first push ever; the agent stays installed)
  first push, cold daemon
                    the same with the sync daemon stopped before each of tether's runs (the
                    first command after a login or an upgrade starts it)
                    (both first pushes are one pass: cold, warm, no daemon, rsync, ...; the
                    warm run is served by the daemon the cold run just started, and one
                    rsync sample per run is the peer of all three)
  no-op push        nothing changed
  one file changed  one source file rewritten before each run

tether is timed as the user runs it (`tether push` as a subprocess, startup included),
served by the sync daemon the bench's first tether command started (warm, as it is for a
user after the first push); its own report of the time spent syncing is shown beside it,
and so is the same command with TETHER_NO_DAEMON=1 (everything in its own process). rsync gets
`--exclude=/.git --exclude=/.tether`, so both move the same files. Goals (issue #26, at
50 ms RTT): no-op and one-file push <= 1 RTT + 30 ms, first push <= 0.5x rsync, cold or
warm daemon. PASS/MISS is printed, never asserted. bench/scale.py runs the same scenarios
on a 100,000-file tree.

    .venv/bin/python bench/push.py [--small|--quick] [--runs N] [--results bench/RESULTS.md]
                                   [--only first|cold|noop|one]   (one scenario, to iterate)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

RTTS_MS = (0, 50)
RUNS = 7
SANDBOX = "bench-push"
FIRST, COLD, NOOP, ONE = "first push", "first push, cold daemon", "no-op push", "one file changed"
SCENARIOS = (FIRST, COLD, NOOP, ONE)
FIRST_BOTH = "first push, cold and warm daemon"  # the pass that measures both


@dataclass(frozen=True)
class Goal:
    """Issue #26's goal for a scenario at one RTT: a share of rsync's time, or RTT + ms."""

    rtt_ms: int
    of_rsync: float | None = None
    over_rtt_ms: float | None = None

    def text(self) -> str:
        if self.of_rsync is not None:
            return f"<= {self.of_rsync:.1f}x rsync"
        return f"<= {self.rtt_ms + (self.over_rtt_ms or 0):.0f} ms"

    def met(self, tether_s: float, rsync_s: float) -> bool:
        if self.of_rsync is not None:
            return tether_s <= self.of_rsync * rsync_s
        return tether_s * 1000 <= self.rtt_ms + (self.over_rtt_ms or 0)


GOALS = {
    FIRST: Goal(50, of_rsync=0.5),
    COLD: Goal(50, of_rsync=0.5),
    NOOP: Goal(50, over_rtt_ms=30),
    ONE: Goal(50, over_rtt_ms=30),
}
HEADERS = [
    "scenario", "RTT", "tether s", "tether sync s", "rsync s", "tether/rsync", "goal",
    "verdict", "no daemon s", "no daemon/rsync",
]  # fmt: skip


@dataclass
class Row:
    """One scenario at one RTT."""

    scenario: str
    rtt_ms: int
    tether: common.Timing
    tether_sync_s: float
    rsync: common.Timing
    alone: common.Timing | None  # TETHER_NO_DAEMON=1: the whole push in its own process
    alone_rsync: common.Timing | None  # rsync, interleaved with `alone`

    def goal(self, goals: dict[str, Goal]) -> tuple[str, str]:
        """The goal in words and PASS/MISS, or two empty strings where none applies."""
        goal = goals.get(self.scenario)
        if goal is None or goal.rtt_ms != self.rtt_ms:
            return "", ""
        return goal.text(), common.verdict(goal.met(self.tether.median, self.rsync.median))

    def measures(self, goals: dict[str, Goal]) -> list[common.Measure]:
        """The row's numbers for run_all's README table (and the no-daemon pass's)."""
        key = KEYS[self.scenario]
        goal, verdict = self.goal(goals)
        runs = len(self.tether.samples)
        found = [
            common.Measure(key, self.rtt_ms, self.tether.median, self.rsync.median,
                           "rsync -a", goal, verdict, runs),
        ]  # fmt: skip
        if self.alone is not None and self.alone_rsync is not None:
            found.append(
                common.Measure(f"{key}, no daemon", self.rtt_ms, self.alone.median,
                               self.alone_rsync.median, "rsync -a", "", "", runs)
            )  # fmt: skip
        return found

    def cells(self, goals: dict[str, Goal]) -> list[str]:
        goal, verdict = self.goal(goals)
        alone = ["-", "-"]
        if self.alone is not None and self.alone_rsync is not None:
            alone = [
                common.seconds(self.alone.median),
                common.ratio(self.alone.median, self.alone_rsync.median),
            ]
        return [
            self.scenario,
            f"{self.rtt_ms} ms",
            common.seconds(self.tether.median),
            common.seconds(self.tether_sync_s),
            common.seconds(self.rsync.median),
            common.ratio(self.tether.median, self.rsync.median),
            goal or "-",
            verdict,
            *alone,
        ]

    def spread(self) -> str:
        """The min-max of every sample set, for the notes."""
        text = f"spread {self.scenario} @ {self.rtt_ms} ms: tether {self.tether.spread()} s, "
        text += f"rsync {self.rsync.spread()} s"
        if self.alone is not None and self.alone_rsync is not None:
            text += f"; no daemon {self.alone.spread()} s, rsync {self.alone_rsync.spread()} s"
        return text


class Pusher:
    """The two ways to mirror the project to one alias, and their remote dirs."""

    def __init__(self, tree: common.Tree, box_home: Path, alias: str, rtt_ms: int) -> None:
        self.tree = tree
        self.alias = alias
        self.tether_dir = f"tt{rtt_ms}"
        self.rsync_dir = f"rs{rtt_ms}"
        self.tether_remote = box_home / self.tether_dir
        self.rsync_remote = box_home / self.rsync_dir
        self.sync_seconds: dict[str, list[float]] = {}
        self.rsync_argv = [
            "rsync",
            "-a",
            "--delete",
            "--exclude=/.git",
            "--exclude=/.tether",
            "-e",
            common.ssh_command(),
            f"{tree.root}/",
            f"{alias}:{self.rsync_dir}/",
        ]

    def init(self) -> None:
        """Point the project's tether.toml at this alias and remote dir."""
        common.run(
            [common.tether_bin(), "init", "--force", "--host", self.alias,
             "--path", f"~/{self.tether_dir}", "--target", "t"],
            cwd=self.tree.root,
        )  # fmt: skip

    def tether(self, env: dict[str, str] | None = None, label: str = "warm") -> None:
        done = common.run([common.tether_bin(), "push", "--json"], cwd=self.tree.root, env=env)
        reports = json.loads(done.stdout)
        problems = [r for r in reports if r["errors"] or r["conflicts"]]
        if problems:
            raise RuntimeError(f"tether push reported problems: {problems}")
        if env is None:
            seconds = sum(float(r["seconds"]) for r in reports)
            self.sync_seconds.setdefault(label, []).append(seconds)

    def alone(self) -> None:
        """tether push without the sync daemon (its own process, ssh session and agent)."""
        self.tether({"TETHER_NO_DAEMON": "1"})

    def rsync(self) -> None:
        common.run(self.rsync_argv)

    def fresh(self, name: str, _index: int) -> None:
        """Before a first push: no remote dir (and for tether no local .tether/)."""
        if name.startswith("tether"):
            common.remove(self.tether_remote)
            common.remove(self.tree.root / ".tether")
        else:
            common.remove(self.rsync_remote)

    def fresh_cold(self, name: str, index: int) -> None:
        """Before a first push with a cold daemon: fresh(), and no sync daemon runs."""
        self.fresh(name, index)
        if name.startswith("tether"):
            common.stop_daemons()

    def measure(
        self,
        scenario: str,
        rtt_ms: int,
        runs: int,
        prepare: Callable[[str, int], None] | None,
        without_daemon: bool = True,
    ) -> Row:
        self.sync_seconds = {}
        timings = common.side_by_side(
            runs, {"tether": self.tether, "rsync": self.rsync}, prepare=prepare
        )
        synced = statistics.median(self.sync_seconds["warm"])
        if not without_daemon:
            return Row(scenario, rtt_ms, timings["tether"], synced, timings["rsync"], None, None)
        # Apart, so that neither variant's pushes disturb the other's state between runs.
        apart = common.side_by_side(
            runs, {"tether alone": self.alone, "rsync": self.rsync}, prepare=prepare
        )
        return Row(
            scenario,
            rtt_ms,
            timings["tether"],
            synced,
            timings["rsync"],
            apart["tether alone"],
            apart["rsync"],
        )

    def measure_first(self, rtt_ms: int, runs: int, without_daemon: bool = True) -> list[Row]:
        """FIRST and COLD in one pass: per run tether with the daemon stopped first, tether
        served by the daemon that run started (warm), [tether without a daemon,] rsync.

        Every run starts from an empty remote dir, so no variant leaves state for the
        next; rsync's samples are the peer of every row (one rsync pass, not one per row).
        """
        self.sync_seconds = {}
        actions: dict[str, Callable[[], None]] = {
            "tether cold": lambda: self.tether(label="cold"),
            "tether": self.tether,
        }
        if without_daemon:
            actions["tether alone"] = self.alone
        actions["rsync"] = self.rsync

        def prepare(name: str, index: int) -> None:
            (self.fresh_cold if name == "tether cold" else self.fresh)(name, index)

        timings = common.side_by_side(runs, actions, prepare=prepare)
        rsync = timings["rsync"]
        alone = timings.get("tether alone")
        return [
            Row(FIRST, rtt_ms, timings["tether"], statistics.median(self.sync_seconds["warm"]),
                rsync, alone, rsync if alone is not None else None),
            Row(COLD, rtt_ms, timings["tether cold"],
                statistics.median(self.sync_seconds["cold"]), rsync, None, None),
        ]  # fmt: skip

    def cleanup(self) -> None:
        common.remove(self.tether_remote)
        common.remove(self.rsync_remote)


def change_one_file(tree: common.Tree) -> Callable[[str, int], None]:
    """A prepare step that rewrites one source file before each of tether's turns."""

    def prepare(name: str, index: int) -> None:
        if not name.startswith("tether"):
            return
        path = tree.root / tree.sources[(index * 7919) % len(tree.sources)]
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"edited = {index} by {name}  # bench\n")

    return prepare


def tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    """path -> (size, sha256) of every file under root (links by target)."""
    found: dict[str, tuple[int, str]] = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            full = Path(directory) / name
            relative = str(full.relative_to(root))
            if full.is_symlink():
                found[relative] = (0, os.readlink(full))
                continue
            found[relative] = (full.stat().st_size, hashlib.sha256(full.read_bytes()).hexdigest())
    return found


def compare_remotes(pusher: Pusher) -> str:
    """Whether tether's and rsync's remote copies hold the same files, in one line."""
    ours, theirs = tree_digest(pusher.tether_remote), tree_digest(pusher.rsync_remote)
    if ours == theirs:
        return f"identical ({len(ours)} files)"
    differ = sorted(p for p in set(ours) | set(theirs) if ours.get(p) != theirs.get(p))
    return f"DIFFER in {len(differ)} paths, e.g. {differ[:5]}"


ONLY = {"first": FIRST, "cold": COLD, "noop": NOOP, "one": ONE}
KEYS = {scenario: key for key, scenario in ONLY.items()}


def bench_rtt(
    tree: common.Tree,
    box_home: Path,
    alias: str,
    rtt_ms: int,
    runs: int,
    scenarios: Sequence[str] = SCENARIOS,
    without_daemon: bool = True,
    after: Callable[[str], None] | None = None,
) -> tuple[list[Row], str]:
    """The scenarios, in SCENARIOS' order, through one alias; the rows and how the two
    remote copies compare. after(scenario) runs once each scenario is measured."""
    pusher = Pusher(tree, box_home, alias, rtt_ms)
    try:
        pusher.init()
        common.start_master(alias)
        if scenarios[0] not in (FIRST, COLD):
            # The later scenarios start from a pushed tree.
            pusher.fresh("tether", 0)
            pusher.tether()
            pusher.rsync()
        prepares: dict[str, Callable[[str, int], None] | None] = {
            FIRST: pusher.fresh,
            COLD: pusher.fresh_cold,
            NOOP: None,
            ONE: change_one_file(tree),
        }
        rows = []
        together = FIRST in scenarios and COLD in scenarios
        for scenario in (name for name in SCENARIOS if name in scenarios):
            if together and scenario == COLD:
                continue  # measured with FIRST
            if together and scenario == FIRST:
                rows += pusher.measure_first(rtt_ms, runs, without_daemon)
                if after is not None:
                    after(FIRST_BOTH)
                continue
            # The cold daemon costs the same with or without it: one pass is enough.
            alone = without_daemon and scenario != COLD
            rows.append(pusher.measure(scenario, rtt_ms, runs, prepares[scenario], alone))
            if after is not None:
                after(scenario)
        return rows, compare_remotes(pusher)
    finally:
        common.stop_master(alias)
        pusher.cleanup()


def table(title: str, rows: list[Row], goals: dict[str, Goal]) -> common.Table:
    """The rows as one table, by scenario then RTT."""
    ordered = sorted(rows, key=lambda r: (SCENARIOS.index(r.scenario), r.rtt_ms))
    cells = [row.cells(goals) for row in ordered]
    if all(row.alone is None for row in rows):  # measured with the daemon only
        return common.Table(title, HEADERS[:-2], [line[:-2] for line in cells])
    return common.Table(title, HEADERS, cells)


def main(argv: list[str] | None = None) -> int:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--only", choices=sorted(ONLY), default=None, help="one scenario, to iterate"
        )

    args = common.arguments(__doc__ or "", argv, extra)
    spec = common.SMALL_TREE if args.small else common.FULL_TREE
    runs = args.runs or RUNS
    scenarios = SCENARIOS if args.only is None else (ONLY[args.only],)
    rows: list[Row] = []
    checks: list[str] = []
    with common.isolated() as isolation:
        tree = common.make_tree(isolation.home / "proj", spec)
        common.git_init(tree.root)
        with common.sandbox(SANDBOX) as box:
            for rtt_ms in RTTS_MS:
                with common.rtt_alias(box, rtt_ms) as alias:
                    found, check = bench_rtt(tree, box.home, alias, rtt_ms, runs, scenarios)
                rows += found
                checks.append(f"{rtt_ms} ms: tether's and rsync's remote copies {check}")
    result = table(f"push: tether vs rsync ({'small' if args.small else 'full'} tree)", rows, GOALS)
    result.notes = [
        f"tree: {tree.files} files, {tree.bytes / 1e6:.0f} MB, git repository; "
        f"median of {runs} interleaved runs per cell",
        "tether s: wall time of `tether push --json` as a subprocess (interpreter start-up "
        "included), served by the sync daemon (started by the first run of the bench, then "
        "warm, as for a user); tether sync s: the time tether itself reports for the sync",
        "no daemon s: the same command with TETHER_NO_DAEMON=1 (its own process imports the "
        "CLI, opens an ssh session and starts an agent: tether before the daemon), measured "
        "in a second pass interleaved with rsync again (its ratio is to that pass's rsync); "
        "for first pushes in the same pass as the cold and warm runs",
        f"{COLD}: the sync daemon is stopped before each of tether's runs, so the command "
        "starts it (and its agent); warm rows are served by a running daemon; the first "
        "pushes are one pass (cold, warm, no daemon, rsync, ...) whose rsync samples are the "
        "peer of every first-push row",
        "rsync: `rsync -a --delete --exclude=/.git --exclude=/.tether -e 'ssh <tether's "
        "ControlMaster options>'`; the master is opened before timing and shared by both",
        *checks,
        *(row.spread() for row in rows),
    ]
    common.report(
        [result],
        args.results,
        "bench/push.py" + (" --small" if args.small else ""),
        [measure for row in rows for measure in row.measures(GOALS)],
        "push",
        common.variant_of(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
