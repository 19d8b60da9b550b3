"""A job's snapshot: time and disk of tether's copy next to the hard links it replaced.

Issue #21 made snapshots copies (a job writing into its snapshot must change nothing else;
hard links shared inodes with the live tree and every other snapshot). This measures what
that costs on this machine's filesystem, side by side in one run, on the ML-like bench tree
(5,000 small files + 3 x 45 MB; --small: 500 + 3 x 4.5 MB):

- "hard links (before)": os.link of every file, what tether did before;
- "copy (now)": tether.agent.snapshot.take, a reflink where the filesystem has them, else
  copy_file_range, else read/write;
- plain `cp -a` of the same tree, the obvious peer;

and the disk each adds (blocks of inodes the source does not share), then `tether run
--no-push -- true` end to end against a sandbox (0 ms added RTT, warm), which includes the
snapshot. Medians of interleaved runs.

    .venv/bin/python bench/snapshot.py [--small] [--runs N] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

RUNS = 7


def hard_links(src: Path, dest: Path) -> None:
    """The snapshot as tether took it before: hard links, directories made anew."""
    for current, dirs, files in os.walk(src):
        rel = os.path.relpath(current, src)
        target = dest / rel if rel != "." else dest
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(os.path.join(current, name), target / name)
        dirs.sort()


def added_bytes(src: Path, dest: Path) -> int:
    """Disk the snapshot adds: blocks of files whose inode the source does not have."""
    seen = {os.lstat(os.path.join(d, f)).st_ino for d, _, fs in os.walk(src) for f in fs}
    total = 0
    for current, _dirs, files in os.walk(dest):
        for name in files:
            st = os.lstat(os.path.join(current, name))
            if st.st_ino not in seen:
                total += st.st_blocks * 512
    return total


def main(argv: list[str] | None = None) -> int:
    args = common.arguments(__doc__ or "", argv)
    runs = args.runs or (3 if args.small else RUNS)
    spec = common.SMALL_TREE if args.small else common.FULL_TREE
    from tether.agent import snapshot

    with common.isolated() as isolation:
        src = isolation.home / "tree"
        tree = common.make_tree(src, spec)
        work = isolation.home / "snaps"
        work.mkdir()
        dests: dict[str, list[Path]] = {"links": [], "copy": [], "cp": []}

        def fresh(kind: str) -> Path:
            path = work / f"{kind}-{uuid.uuid4().hex[:8]}"
            dests[kind].append(path)
            return path

        methods: dict[str, int] = {}

        def take() -> None:
            stats = snapshot.take(str(src), str(fresh("copy")), None, [])
            for method, count in stats.methods.items():
                methods[method] = methods.get(method, 0) + count

        timings = common.side_by_side(
            runs,
            {
                "links": lambda: hard_links(src, fresh("links")),
                "copy": take,
                "cp": lambda: common.run(["cp", "-a", str(src), str(fresh("cp"))]),
            },
        )
        disk = {kind: added_bytes(src, paths[0]) for kind, paths in dests.items()}
        for paths in dests.values():
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)
        run_latency = bench_run(isolation.home, runs)
    table = common.Table(
        f"snapshot of {tree.files} files / {tree.bytes / 1e6:.0f} MB on this disk",
        ["how", "time s", "disk added MB", "vs hard links"],
    )
    labels = {"links": "hard links (before)", "copy": "tether copy (now)", "cp": "cp -a"}
    for kind in ("links", "copy", "cp"):
        table.rows.append(
            [
                labels[kind],
                common.seconds(timings[kind].median),
                f"{disk[kind] / 1e6:.1f}",
                common.ratio(timings[kind].median, timings["links"].median),
            ]
        )
    table.notes.append(
        f"median of {runs} interleaved runs; copy methods used: "
        + ", ".join(f"{name} {count}" for name, count in sorted(methods.items()))
    )
    table.notes.append(
        f"`tether run --no-push -- true`, warm, 0 ms RTT, {common.SMALL_TREE.small_files}-file "
        f"tree: {common.seconds(run_latency.median)} s (spread {run_latency.spread()})"
    )
    measures = [
        common.Measure("snapshot copy", 0, timings["copy"].median, timings["cp"].median,
                       "cp -a", runs=runs),
        common.Measure("snapshot hard links", 0, timings["links"].median,
                       timings["cp"].median, "cp -a", runs=runs),
        common.Measure("run --no-push", 0, run_latency.median, runs=runs),
    ]  # fmt: skip
    common.report(
        [table], args.results, "bench/snapshot.py", measures, "snapshot", common.variant_of(args)
    )
    return 0


def bench_run(home: Path, runs: int) -> common.Timing:
    """`tether run --no-push -- true` end to end (push done first), median of runs."""
    tether = common.tether_bin()
    project = home / "run-project"
    common.make_tree(project, common.SMALL_TREE)
    common.git_init(project)
    with common.sandbox("bench-snap") as box:
        common.write_config(
            project / "tether.toml",
            f'[targets.box]\nhost = "{box.name}"\npath = "~/snap-bench"\ndefault = true\n',
        )
        common.run([tether, "push"], cwd=project)
        common.run([tether, "run", "--no-push", "--name", "warm", "--", "true"], cwd=project)
        count = iter(range(runs))
        timing = common.median_of(
            runs,
            lambda: common.run(
                [tether, "run", "--no-push", "--name", f"r{next(count)}", "--", "true"],
                cwd=project,
            ),
        )
        subprocess.run(["ssh", box.name, "tmux", "-L", "tether", "kill-server"],
                       capture_output=True, check=False)  # fmt: skip
    return timing


if __name__ == "__main__":
    sys.exit(main())
