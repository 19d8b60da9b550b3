"""Run every bench script and write bench/RESULTS.md (one section per script).

    .venv/bin/python bench/run_all.py [--small|--quick] [--results PATH] [--only SCRIPT ...]
                                      [--readme README.md] [--no-readme]

Every script in bench/ is a bench except the helpers (NOT_BENCHES) and the profilers
(profile_*.py). Each script runs as its own process (its own temporary home and sandbox)
with --small or --quick passed through, and appends its tables to the results file, which
is rewritten from scratch with the machine and date at the top. A script that fails is
reported in the file and the others still run; the exit status says whether all succeeded.
--quick (smaller trees, 2 runs per median) checks the plumbing in minutes; its numbers are
not for quoting.

Each script also records its numbers in the JSON file beside the results file
(RESULTS.json). A full run (no --small, --quick or --only) then rewrites the README's
"How it compares" table from them (bench/readme_table.py; --no-readme keeps it), and
only if every row of issue #26 was measured.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import readme_table

# Helpers, and the memory profilers (flags of their own; scale.py measures the peak RSS).
NOT_BENCHES = {
    "common.py", "measured.py", "run_all.py", "readme_table.py", "memory.py", "memory_local.py",
}  # fmt: skip
# Every bench script (each takes --results FILE, --small and --quick), cheapest first;
# the others in bench/ run after these.
SCRIPTS = (
    "startup.py", "ssh_master.py", "watch.py", "jobs.py", "snapshot.py", "push.py", "scale.py",
)  # fmt: skip
SCRIPT_TIMEOUT_S = 3600  # scale.py pushes 100,000 files 60 times
NOT_A_BENCH_PREFIX = "profile_"  # profilers (bench/profile_*.py) take their own flags


def bench_scripts(names: Iterable[str]) -> list[str]:
    """The bench scripts among the file names of bench/, in the order run_all runs them:
    SCRIPTS first, then any other script by name (not the helpers, not the profilers)."""
    extra = sorted(
        name
        for name in names
        if name.endswith(".py")
        and name not in NOT_BENCHES
        and name not in SCRIPTS
        and not name.startswith(NOT_A_BENCH_PREFIX)
    )
    return [*SCRIPTS, *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="the small variant of each bench")
    parser.add_argument("--quick", action="store_true", help="a smoke test of every bench")
    parser.add_argument("--results", type=Path, default=common.RESULTS, help="file to write")
    parser.add_argument("--only", nargs="+", metavar="SCRIPT", help="run only these scripts")
    parser.add_argument(
        "--readme",
        type=Path,
        default=common.REPO / "README.md",
        help="README whose table a full run rewrites (between its bench markers)",
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="leave the README alone even after a full run"
    )
    args = parser.parse_args(argv)
    results: Path = args.results
    flag = "--quick" if args.quick else "--small" if args.small else ""
    variant = f" ({flag})" if flag else ""
    results.write_text(
        f"# tether benchmarks{variant}\n\n{common.machine()}\n\n"
        "Written by `bench/run_all.py`; every number is a median of several runs, "
        "tether side by side with rsync or plain ssh over the same connection (the numbers "
        f"also in `{common.measures_path(results).name}`).\n\n",
        encoding="utf-8",
    )
    common.measures_path(results).write_text("{}\n", encoding="utf-8")
    failed = []
    scripts = bench_scripts(p.name for p in common.BENCH.glob("*.py"))
    if args.only:
        wanted = {name if name.endswith(".py") else f"{name}.py" for name in args.only}
        unknown = wanted - set(scripts)
        if unknown:
            parser.error(f"no such bench script: {', '.join(sorted(unknown))}")
        scripts = [name for name in scripts if name in wanted]
    for script in scripts:
        argv_script = [sys.executable, str(common.BENCH / script), "--results", str(results)]
        if flag:
            argv_script.append(flag)
        print(f"== {script}{variant}", flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run(argv_script, timeout=SCRIPT_TIMEOUT_S, check=False).returncode
        except subprocess.TimeoutExpired:
            code = -1
        elapsed = time.monotonic() - started
        print(f"== {script}: exit {code} in {elapsed:.0f} s", flush=True)
        if code != 0:
            failed.append(script)
            with results.open("a", encoding="utf-8") as handle:
                handle.write(f"## bench/{script}\n\nFAILED (exit {code}) after {elapsed:.0f} s\n\n")
    print(f"wrote {results}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if args.no_readme or not readme_table.full_run(args.quick, args.small, args.only):
        print(f"{args.readme} left as it is (only a full run rewrites its table)")
    else:
        missing = readme_table.update(args.readme, common.read_measures(results))
        if missing:
            print(f"{args.readme} left as it is: no full-run numbers for " + "; ".join(missing))
        else:
            print(f"rewrote the table of {args.readme}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
