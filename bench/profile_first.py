"""Where a first push's time goes: cProfile of the local side and of every agent.

A generated tree (bench/push.py's shapes: ~3 KB files, 15 to a directory; --files N) is
pushed to a sandbox sshd at 0 ms added RTT with TETHER_NO_DAEMON=1 (the whole local side
in one process, run under cProfile) and TETHER_AGENT_PROFILE set in the sandbox's session
environment (each agent leaves its own profile, agent/server.py). Prints the wall time of
an unprofiled push and of rsync beside it, the CPU seconds of each side, and the top
functions of each side by own time. Profiles are left in --out.

    .venv/bin/python bench/profile_first.py [--files 10000] [--out /tmp/tether-profile]
                                            [--top 25] [--runs 1]
"""

from __future__ import annotations

import argparse
import pstats
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import push

if TYPE_CHECKING:
    pass

SANDBOX = "bench-profile"


def cpu_split(stats: pstats.Stats) -> float:
    return float(stats.total_tt)  # type: ignore[attr-defined]


def show(title: str, files: list[Path], top: int) -> None:
    if not files:
        print(f"== {title}: no profile")
        return
    stats = pstats.Stats(*(str(f) for f in files))
    print(f"== {title}: {len(files)} process(es), {cpu_split(stats):.2f} s profiled")
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tether-profile"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--runs", type=int, default=1, help="unprofiled runs timed")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.prof"):
        old.unlink()
    spec = common.TreeSpec(small_files=args.files, big_files=0, big_bytes=0)
    with common.isolated() as isolation:
        tree = common.make_tree(isolation.home / "proj", spec)
        common.git_init(tree.root)
        with common.sandbox(SANDBOX) as box:
            pusher = push.Pusher(tree, box.home, box.name, 0)
            pusher.init()
            common.start_master(box.name)
            alone = {"TETHER_NO_DAEMON": "1"}
            for index in range(args.runs):
                for name in ("tether", "rsync"):
                    pusher.fresh(name, index)
                    action = pusher.rsync if name == "rsync" else lambda: pusher.tether(alone)
                    print(f"{name}: {common.timed(action):.2f} s  load {load()}", flush=True)
            common.set_session_env(box, "TETHER_AGENT_PROFILE", str(out))
            # The master's connection has the old session environment: a new one.
            common.stop_master(box.name)
            common.start_master(box.name)
            pusher.fresh("tether", 0)
            profiled = [
                sys.executable, "-m", "cProfile", "-o", str(out / "local.prof"),
                "-m", "tether", "push", "--json",
            ]  # fmt: skip
            started = time.perf_counter()
            common.run(profiled, cwd=tree.root, env=alone)
            print(f"tether under cProfile: {time.perf_counter() - started:.2f} s", flush=True)
            time.sleep(1.0)  # the agents write their profiles as they end
            pusher.cleanup()
    show("local (tether push, no daemon)", [out / "local.prof"], args.top)
    show("agents", sorted(out.glob("agent-*.prof")), args.top)
    return 0


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
