"""The README's "How it compares" table, built from the numbers of one full `make bench`.

Every bench script records its numbers (common.Measure) in the JSON file beside the
results file (bench/RESULTS.json), as {script: {"variant", "machine", "measures"}}. This
module turns them into one table row per row of issue #26's table (tether, the peer, the
ratio, the goal and PASS/MISS) and splices it into README.md between BEGIN and END,
leaving the prose around the markers alone. Only a full run rewrites the README
(full_run); a row whose numbers are missing, or come from a --quick or --small run, keeps
the README as it is (update returns what was missing). Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin (written by bench/run_all.py from bench/RESULTS.json) -->"
END = "<!-- bench:end -->"
HEADERS = ("work (issue #26)", "tether", "peer", "tether/peer", "goal", "verdict")


@dataclass(frozen=True)
class Part:
    """One measure of a script: its key at one RTT (None: whichever RTT it was read at)."""

    script: str
    key: str
    rtt_ms: int | None


@dataclass(frozen=True)
class Line:
    """One row of the README table: the issue's row in words and the measures it shows
    (several are joined with " / "). over_peer: show tether as "peer + N ms"."""

    work: str
    parts: tuple[Part, ...]
    over_peer: str = ""


LINES = (
    Line("no-op push, 5,000 files, 50 ms RTT", (Part("push", "noop", 50),)),
    Line(
        "no-op / one-file push, 100,000 small files, 0 ms RTT",
        (Part("scale", "noop", 0), Part("scale", "one", 0)),
    ),
    Line(
        "first push, 100,000 small files, 0 ms RTT, daemon warm / cold",
        (Part("scale", "first", 0), Part("scale", "cold", 0)),
    ),
    Line("one-file push, 5,000 files, 50 ms RTT", (Part("push", "one", 50),)),
    Line("a save visible on the remote (`watch`), 50 ms RTT", (Part("watch", "save visible", 50),)),
    Line("`tether send` of `print(1)`, 50 ms RTT", (Part("send", "send", 50),)),
    Line(
        "`tether jobs` / `status` over 4 hosts, 50 ms RTT",
        (Part("jobs", "jobs", 50), Part("jobs", "status", 50)),
    ),
    Line(
        "`tether --help` / `status --help` (a command's start)",
        (Part("startup", "tether --help", 0), Part("startup", "tether status --help", 0)),
        over_peer="python",
    ),
    Line(
        "first push, 5,000 files / 154 MB, 50 ms RTT, daemon warm / cold",
        (Part("push", "first", 50), Part("push", "cold", 50)),
    ),
    Line(
        "peak RSS at 100,000 files: daemon / agent",
        (Part("scale", "daemon MB", None), Part("scale", "agent MB", None)),
    ),
)
# Said under the table when measured: the push without the sync daemon.
ALONE = Part("push", "noop, no daemon", 50)
MASTER = Part("ssh_master", "ssh true", 50)


def full_run(quick: bool, small: bool, only: Sequence[str] | None) -> bool:
    """Whether run_all's run may rewrite the README: every script, at full size."""
    return not quick and not small and not only


def find(data: Mapping[str, Any], part: Part) -> dict[str, Any] | None:
    """The measure part names in data, or None (also for a --quick or --small run's)."""
    entry = data.get(part.script)
    if not isinstance(entry, dict) or entry.get("variant") != "full":
        return None
    for measure in entry.get("measures", []):
        if measure.get("key") == part.key and part.rtt_ms in (None, measure.get("rtt_ms")):
            return dict(measure)
    return None


def amount(value: float, unit: str) -> str:
    """A number for a cell: ms below a second, else seconds; MB as whole MB."""
    if unit == "MB":
        return f"{value:.0f} MB"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def joined(cells: Sequence[str]) -> str:
    """Cells of several measures as one: "a / b", or "a" when they all agree."""
    return cells[0] if len(set(cells)) == 1 else " / ".join(cells)


def row(line: Line, measures: Sequence[dict[str, Any]]) -> list[str]:
    """The README cells of one line."""
    peer_name = str(measures[0].get("peer_name") or "")
    peers = [m.get("peer") for m in measures]
    if line.over_peer:
        tether = " / ".join(f"{(m['value'] - (m.get('peer') or 0)) * 1000:.0f}" for m in measures)
        tether = f"{line.over_peer} + {tether} ms"
    else:
        tether = " / ".join(amount(float(m["value"]), str(m.get("unit", "s"))) for m in measures)
    if any(peer is None for peer in peers):
        peer = ratio = "-"
    else:
        unit = str(measures[0].get("unit", "s"))
        peer = joined([amount(float(value or 0), unit) for value in peers])
        peer += f" (`{peer_name}`)" if peer_name else ""
        ratio = " / ".join(
            f"{float(m['value']) / float(m['peer']):.2f}x" if m["peer"] else "n/a" for m in measures
        )
    goals = [str(m.get("goal") or "-") for m in measures]
    verdicts = [str(m.get("verdict") or "-") for m in measures]
    return [line.work, tether, peer, ratio, joined(goals), joined(verdicts)]


def spread(runs: Sequence[int]) -> str:
    """How many runs the medians are of: "7" or "7 to 15"."""
    if not runs:
        return "?"
    low, high = min(runs), max(runs)
    return str(low) if low == high else f"{low} to {high}"


def load(machine: str) -> str:
    """The 1-minute load average of a script's machine line ("?" if it has none)."""
    found = re.search(r"load average ([0-9.]+)", machine)
    return found.group(1) if found else "?"


def build(data: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The table (markdown, with its notes) and the lines whose numbers are missing."""
    rows: list[list[str]] = []
    missing: list[str] = []
    runs: list[int] = []
    for line in LINES:
        measures = [find(data, part) for part in line.parts]
        found = [m for m in measures if m is not None]
        if len(found) != len(measures):
            missing.append(line.work)
            continue
        rows.append(row(line, found))
        runs += [int(m.get("runs") or 0) for m in found if m.get("unit", "s") == "s"]
    widths = [max(len(cells[i]) for cells in [list(HEADERS), *rows]) for i in range(len(HEADERS))]

    def text(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [text(HEADERS), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [text(cells) for cells in rows]
    scripts = sorted({part.script for line in LINES for part in line.parts})
    machines = {
        s: str(data[s].get("machine", "")) for s in scripts if isinstance(data.get(s), dict)
    }
    first = next(iter(machines.values()), "")
    out += [
        "",
        f"Measured by `make bench` ({first.split('; load average')[0].removeprefix('machine: ')}"
        "); load average (1 min) "
        "when each script finished: "
        + ", ".join(f"{s} {load(m)}" for s, m in sorted(machines.items()))
        + ". tether is timed as the user runs it (a subprocess, the sync daemon warm unless "
        f"said); medians of {spread(runs)} interleaved runs; every number at 0 and 50 ms "
        "added RTT, with its spread, is in `bench/RESULTS.md`.",
    ]
    alone = find(data, ALONE)
    if alone is not None and alone.get("peer"):
        out.append(
            f"Without the sync daemon (`TETHER_NO_DAEMON=1`) a no-op push at 50 ms takes "
            f"{amount(float(alone['value']), 's')} "
            f"({float(alone['value']) / float(alone['peer']):.2f}x rsync)."
        )
    master = find(data, MASTER)
    if master is not None and master.get("peer"):
        out.append(
            f"`ssh host true` through tether's ControlMaster at 50 ms: "
            f"{amount(float(master['value']), 's')}, against "
            f"{amount(float(master['peer']), 's')} for plain ssh."
        )
    return "\n".join(out) + "\n", missing


def splice(readme: str, block: str) -> str:
    """readme with the text between BEGIN and END replaced by block (ValueError without them)."""
    start = readme.find(BEGIN)
    end = readme.find(END, start + len(BEGIN)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise ValueError(f"the README has no {BEGIN!r} ... {END!r} markers")
    return readme[: start + len(BEGIN)] + "\n" + block + readme[end:]


def update(readme: Path, data: Mapping[str, Any]) -> list[str]:
    """Rewrite readme's table from data unless a line's numbers are missing (returned)."""
    block, missing = build(data)
    if missing:
        return missing
    text = readme.read_text(encoding="utf-8")
    readme.write_text(splice(text, block), encoding="utf-8")
    return []
