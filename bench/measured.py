"""The numbers of a bench run, kept for run_all: each script's measures in a JSON file.

common.report() records them beside the results file (RESULTS.md -> RESULTS.json) as
{script: {"variant": "full"|"small"|"quick", "machine": "...", "measures": [...]}};
bench/readme_table.py builds the README's table from them. Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Measure:
    """One number of a bench, kept for bench/readme_table.py: tether's value beside its peer's.

    key names the measurement within its script ("noop", "first", "help", ...); value and
    peer are seconds (unit "s") or megabytes ("MB"); goal is the issue's goal in words
    ("<= 80 ms", "<= 0.5x rsync") and verdict "PASS", "MISS" or "" where no goal applies.
    """

    key: str
    rtt_ms: int
    value: float
    peer: float | None = None
    peer_name: str = ""
    goal: str = ""
    verdict: str = ""
    runs: int = 0
    unit: str = "s"


def verdict(met: bool) -> str:
    """PASS or MISS."""
    return "PASS" if met else "MISS"


def measures_path(results: Path) -> Path:
    """The JSON file that holds the measures of the scripts writing to results."""
    return results.with_suffix(".json")


def read_measures(results: Path) -> dict[str, Any]:
    """{script: {"variant", "machine", "measures": [Measure as a dict, ...]}} (empty if none)."""
    path = measures_path(results)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def write_measures(
    results: Path, script: str, variant: str, machine: str, measures: Sequence[Measure]
) -> None:
    """Record script's measures (and its machine line) in the JSON file beside results;
    the other scripts' are kept."""
    data = read_measures(results)
    data[script] = {
        "variant": variant,
        "machine": machine,
        "measures": [dataclasses.asdict(m) for m in measures],
    }
    path = measures_path(results)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
