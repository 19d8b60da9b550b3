"""Output helpers: rich tables for people, JSON for scripts, one place for both."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether import invocation

if TYPE_CHECKING:
    from rich.console import Console

    from tether.jobs.model import JobRecord


def console(stderr: bool = False, markup: bool = False) -> Console:
    """A rich console on stdout (or stderr), imported lazily. No markup unless asked for
    (tether's own fixed text only): what it prints (file names, job commands) is data, and
    `[/]` in a name would be a markup error."""
    from rich.console import Console

    stream = invocation.stderr() if stderr else invocation.stdout()
    return Console(
        file=stream,
        highlight=False,
        soft_wrap=False,
        markup=markup,
        _environ=invocation.environ(),
    )


def print_json(data: Any) -> None:
    """Print data as indented JSON on stdout."""
    invocation.stdout().write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table with the given column names and rows, its title on a line of its
    own above it (a rich title is wrapped to the table's width: a narrow table cut
    "push gpu1:~/proj (dry run)" into three lines)."""
    from rich.table import Table

    grid = Table(show_lines=False, header_style="bold")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    out = console()
    if title:
        out.print(title, style="italic", soft_wrap=True)
    out.print(grid)


def say(line: str) -> None:
    """A plain line on stdout (never wrapped: paths and commands must be copyable)."""
    stream = invocation.stdout()
    stream.write(line + "\n")
    stream.flush()


def note(message: str) -> None:
    """A short progress or status line on stderr."""
    console(stderr=True).print(message)


def warn(message: str) -> None:
    """The `tether: warning: ...` line on stderr."""
    invocation.stderr().write(f"tether: warning: {message}\n")


@dataclass(frozen=True)
class Column:
    """A table column: drop (0: never; else dropped in rising order while the table is too
    wide) and shrink (0: never cut; else cut with an ellipsis down to that many cells)."""

    header: str
    drop: int = 0
    shrink: int = 0


OVERHEAD = 3  # per column: a cell of padding each side and a border


def fit(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int, shrink_from: int = 0
) -> list[int | None]:
    """Per column: its width in cells, or None where it is dropped to fit `width`.

    Columns are dropped in their `drop` order; once those with drop <= shrink_from are
    gone, the shrinkable ones may also be cut (down to their minimum) before more go.
    Columns that may neither shrink nor be dropped (names) are never cut: the table is
    wider instead.
    """
    from rich.cells import cell_len

    natural = [
        max([cell_len(column.header), *(cell_len(str(row[i])) for row in rows)])
        for i, column in enumerate(columns)
    ]
    order = sorted((c.drop, i) for i, c in enumerate(columns) if c.drop)
    early = sum(1 for level, _ in order if level <= shrink_from)
    for count in range(len(order) + 1):
        gone = {i for _, i in order[:count]}
        kept = [i for i in range(len(columns)) if i not in gone]
        widths: list[int | None] = [natural[i] if i in kept else None for i in range(len(columns))]
        spare = width - (sum(natural[i] for i in kept) + OVERHEAD * len(kept) + 1)
        if spare >= 0:
            return widths
        if count < early and count < len(order):
            continue
        least = {i: min(natural[i], columns[i].shrink) for i in kept if columns[i].shrink}
        spare += sum(natural[i] - low for i, low in least.items())
        if spare >= 0 or count == len(order):
            for i, low in least.items():
                grow = min(natural[i] - low, max(spare, 0))
                spare -= grow
                widths[i] = low + grow
            return widths
    raise AssertionError("unreachable")  # pragma: no cover


def fitted_table(
    columns: Sequence[Column], rows: Sequence[Sequence[Any]], shrink_from: int = 0
) -> None:
    """A table that fits the terminal's width by dropping and cutting columns (never names)."""
    from rich.table import Table

    out = console()
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = fit(columns, cells, out.width, shrink_from)
    kept = [i for i, w in enumerate(widths) if w is not None]
    need = sum(widths[i] or 0 for i in kept) + OVERHEAD * len(kept) + 1
    if need > out.width:
        out.width = need  # a name is never cut: a line too long beats a wrong name
    grid = Table(show_lines=False, header_style="bold")
    for i in kept:
        grid.add_column(
            columns[i].header,
            no_wrap=True,
            overflow="ellipsis",
            min_width=widths[i],
            max_width=widths[i],
        )
    for row in cells:
        grid.add_row(*(row[i] for i in kept))
    out.print(grid)


def jobs_table(records: list[JobRecord], target_count: int, projects: bool = False) -> None:
    """Name, target, state, command, GPUs, start, duration, commit: columns are dropped
    (commit first) to fit the terminal, never the name, which is never cut."""
    import time

    from tether.jobs.housekeeping import command_text

    rows: list[tuple[str, ...]] = []
    for job in records:
        seconds = job.duration()
        started = (
            "" if job.started is None else time.strftime("%m-%d %H:%M", time.localtime(job.started))
        )
        rows.append(
            (
                job.name,
                job.target,
                job.state_text() + (f" ({job.reason})" if job.reason else ""),
                command_text(job.argv),
                job.gpus or "",
                started,
                "" if seconds is None else short_duration(seconds),
                (job.commit or "")[:10],
            )
        )
    gpus = any(job.gpus for job in records)
    columns = [
        Column("name"),
        Column("target", drop=5 if target_count > 1 else 1),
        Column("state", shrink=12),
        Column("command", drop=7, shrink=12),
        Column("gpus", drop=3 if gpus else 1),
        Column("started", drop=6),
        Column("duration", drop=4),
        Column("commit", drop=2),
    ]
    if not gpus:  # an empty column says nothing
        columns.pop(4)
        rows = [row[:4] + row[5:] for row in rows]
    if projects:  # --all: whose job it is (the project's remote directory), after the name
        rows = [(row[0], records[i].root or "", *row[1:]) for i, row in enumerate(rows)]
        columns.insert(1, Column("project", drop=5, shrink=12))
    fitted_table(columns, rows, shrink_from=4)


def short_duration(seconds: float) -> str:
    """'45s', '12m05s', '3h02m', '2d03h'."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
