"""`ssh ALIAS true` with and without tether's ControlMaster, at 0 and 50 ms RTT.

Without a master every call pays TCP + key exchange + authentication (several round
trips and public-key crypto); through tether's master (`ssh_options()`: ControlMaster=auto,
ControlPath in tether's runtime dir, ControlPersist) it should cost about one round trip
plus process start-up. Median of 10 interleaved runs each; the master is opened before.

    .venv/bin/python bench/ssh_master.py [--small] [--runs N] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

RTTS_MS = (0, 50)
RUNS = 10
SANDBOX = "bench-ssh"
NO_MASTER = ("-o", "ControlMaster=no", "-o", "ControlPath=none")


def bench_rtt(alias: str, runs: int) -> dict[str, common.Timing]:
    """Plain ssh and ssh through the (already open) master, interleaved."""
    common.start_master(alias)
    try:
        return common.side_by_side(
            runs,
            {
                "plain": lambda: common.run(["ssh", *NO_MASTER, alias, "true"]),
                "master": lambda: common.run(["ssh", *common.master_options(), alias, "true"]),
            },
        )
    finally:
        common.stop_master(alias)


def main(argv: list[str] | None = None) -> int:
    args = common.arguments(__doc__ or "", argv)
    runs = args.runs or RUNS
    table = common.Table(
        "ssh ALIAS true: plain vs tether's ControlMaster",
        ["RTT", "plain s", "with master s", "master/plain", "master - RTT (ms)"],
    )
    measures: list[common.Measure] = []
    with common.isolated(), common.sandbox(SANDBOX) as box:
        for rtt_ms in RTTS_MS:
            with common.rtt_alias(box, rtt_ms) as alias:
                timings = bench_rtt(alias, runs)
            plain, master = timings["plain"], timings["master"]
            table.rows.append(
                [
                    f"{rtt_ms} ms",
                    common.seconds(plain.median),
                    common.seconds(master.median),
                    common.ratio(master.median, plain.median),
                    f"{(master.median - rtt_ms / 1000) * 1000:.0f}",
                ]
            )
            measures.append(
                common.Measure("ssh true", rtt_ms, master.median, plain.median,
                               "ssh without a master", runs=runs)
            )  # fmt: skip
            table.notes.append(
                f"spread @ {rtt_ms} ms: plain {plain.spread()} s, master {master.spread()} s"
            )
    table.notes.insert(0, f"median of {runs} interleaved runs; 50 ms = 25 ms each way (proxy)")
    common.report(
        [table], args.results, "bench/ssh_master.py", measures, "ssh_master",
        common.variant_of(args),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
