"""Two processes saving one base (`tether watch` beside a push, sync/state.py): each save
writes the rows its process changed over the file as it is then; a row another process
saved meanwhile is never put back to what this one read before (a lost record left a file
edited only here in a conflict that never cleared). Any interleaving of changes, saves
and loads; the journal's limit made small, so saves append and compact both."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.manifest import FILE, Entry
from tether.sync import state
from tether.sync.state import Base

PATHS = ["a.py", "d/b c", "drop.txt", "new\nline"]
Row = tuple[Entry, tuple[int, int] | None, tuple[int, int] | None]


@dataclass(frozen=True)
class Act:
    writer: int
    what: str  # "record", "forget", "save", "load"
    path: str
    entry: Entry
    remote: Entry | None


def _entry(size: int, mtime: int, digest: str) -> Entry:
    return Entry(FILE, size, mtime, 0o644, digest * 64)


ACTS = st.lists(
    st.builds(
        Act,
        st.integers(0, 1),
        st.sampled_from(["record", "record", "forget", "save", "save", "load"]),
        st.sampled_from(PATHS),
        st.builds(_entry, st.integers(0, 2), st.integers(0, 2), st.sampled_from("0123")),
        st.none() | st.builds(_entry, st.integers(0, 2), st.integers(0, 2), st.just("0")),
    ),
    max_size=30,
)


def rows(base: Base) -> dict[str, Row]:
    return {
        path: (entry, base.remote_stat.get(path), base.local_stat.get(path))
        for path, entry in base.entries.items()
    }


@pytest.fixture(autouse=True)
def small_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "_JOURNAL_MIN", 600)


@settings(max_examples=150, deadline=None)
@given(ACTS)
def test_each_save_writes_its_own_rows_over_the_other_process_s(acts: list[Act]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        file = Path(scratch) / "push.json"
        state._LOADED.clear()
        seed = Base(file)
        seed.record("a.py", _entry(1, 1, "9"), None, None)
        seed.save()
        saved = rows(seed)  # the file's rows, as each save should leave them
        bases = [Base.load(file), Base.load(file)]
        views: list[dict[str, Row]] = [dict(saved), dict(saved)]
        touched: list[set[str]] = [set(), set()]
        for act in acts:
            state._LOADED.clear()  # (each process has its own copy: none here)
            base, view, mine = bases[act.writer], views[act.writer], touched[act.writer]
            if act.what == "record":
                old = view.get(act.path)
                remote = (act.remote.size, act.remote.mtime_ns) if act.remote else None
                row = (act.entry, remote or (old[1] if old else None), (1, 1))
                base.record(act.path, act.entry, act.remote, Entry(FILE, 1, 1))
                if view.get(act.path) != row:
                    view[act.path] = row
                    mine.add(act.path)
            elif act.what == "forget":
                base.forget(act.path)
                if view.pop(act.path, None) is not None:
                    mine.add(act.path)
            elif act.what == "save":
                base.save()
                for path in mine:
                    if path in view:
                        saved[path] = view[path]
                    else:
                        saved.pop(path, None)
                if mine:
                    views[act.writer] = dict(saved)
                    touched[act.writer] = set()
                    assert rows(base) == saved
            else:
                bases[act.writer] = Base.load(file)
                views[act.writer], touched[act.writer] = dict(saved), set()
            assert rows(bases[act.writer]) == views[act.writer]
        state._LOADED.clear()
        assert rows(Base.load(file)) == saved
