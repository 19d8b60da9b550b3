"""A base saved through its journal (sync/state.py, sync/journal.py) reads back as its
last complete save, whatever the sequence of saves and wherever a save is cut: an append
torn at any byte, a document written whole and cut before or between its renames, and a
new process that loads what the cut left and saves on top of it. Hostile path names
throughout; the journal's size limit made small, so both kinds of save come often. The
suite is checked to catch a journal that appends behind a torn line, or that replays a
journal beside a document it does not belong to (a property suite that can fail).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from tether.core.manifest import DIR, FILE, LINK, Entry
from tether.sync import journal, state
from tether.sync.state import Base

PATHS = ["a.py", "d", "d/b c", "d/\u00e9\u0301", 'q"\\x', "new\nline", "$(touch pwned)", "z"]
Contents = tuple[dict[str, Entry], dict[str, tuple[int, int]], dict[str, tuple[int, int]]]
EMPTY: Contents = ({}, {}, {})


@dataclass(frozen=True)
class Change:
    path: str
    entry: Entry | None  # None: forget the path
    remote: Entry | None
    local: Entry | None


@dataclass(frozen=True)
class Step:
    """One save: its changes, made by a new process (fresh) or the last one, and where a
    crash cut it (None: it completed; else a fraction of the bytes it wrote)."""

    changes: list[Change]
    fresh: bool
    cut: float | None


def _stat(kind: str) -> st.SearchStrategy[Entry | None]:
    sizes = st.integers(0, 3)
    return st.none() | st.builds(lambda size, mtime: Entry(kind, size, mtime), sizes, sizes)


@st.composite
def changes(draw: st.DrawFn) -> Change:
    path = draw(st.sampled_from(PATHS))
    if draw(st.integers(0, 4)) == 0:
        return Change(path, None, None, None)
    kind = draw(st.sampled_from([FILE, FILE, DIR, LINK]))
    entry = Entry(
        kind,
        draw(st.integers(0, 3)),
        draw(st.integers(0, 3)),
        draw(st.sampled_from([0o644, 0o755])),
        draw(st.none() | st.sampled_from(["d" * 64, "e" * 64])) if kind == FILE else None,
        draw(st.sampled_from(["a.py", "../x"])) if kind == LINK else None,
    )
    return Change(path, entry, draw(_stat(kind)), draw(_stat(kind)))


STEPS = st.lists(
    st.builds(
        Step,
        st.lists(changes(), max_size=6),
        st.booleans(),
        st.none() | st.none() | st.floats(0, 1),
    ),
    min_size=1,
    max_size=12,
)


def contents(base: Base) -> Contents:
    return (dict(base.entries), dict(base.remote_stat), dict(base.local_stat))


def files(file: Path) -> tuple[bytes | None, bytes | None]:
    def read(path: Path) -> bytes | None:
        with contextlib.suppress(FileNotFoundError):
            return path.read_bytes()
        return None

    return read(file), read(journal.journal_file(file))


def put(file: Path, found: tuple[bytes | None, bytes | None]) -> None:
    for path, data in zip((file, journal.journal_file(file)), found, strict=True):
        if data is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(data)


def cut(
    before: tuple[bytes | None, bytes | None], after: tuple[bytes | None, bytes | None], at: float
) -> tuple[tuple[bytes | None, bytes | None], bool]:
    """The files a crash at `at` of the save from before to after leaves, and whether the
    save was complete by then."""
    if before[0] is not None and before[0] == after[0]:  # an append to the journal
        old, new = before[1] or b"", after[1] or b""
        assert new.startswith(old)
        length = len(old) + int(at * (len(new) - len(old)))
        return (after[0], new[:length]), length == len(new)
    # Written whole: the document renamed first, the fresh journal second.
    if at < 0.5:
        return before, False
    return (after[0], before[1]), True


def holds(steps: list[Step]) -> bool:
    """Every load gives the contents of the last complete save."""
    with tempfile.TemporaryDirectory() as scratch:
        file = Path(scratch) / "state" / "push.json"
        expected = EMPTY
        state._LOADED.clear()
        for step in steps:
            if step.fresh:
                state._LOADED.clear()
            base = Base.load(file)
            if contents(base) != expected:
                return False
            before = files(file)
            for change in step.changes:
                if change.entry is None:
                    base.forget(change.path)
                else:
                    base.record(change.path, change.entry, change.remote, change.local)
            base.save()
            saved = contents(base)
            if step.cut is None:
                expected = saved
                continue
            left, complete = cut(before, files(file), step.cut)
            put(file, left)
            state._LOADED.clear()  # the process that saved is gone
            expected = saved if complete else expected
        state._LOADED.clear()
        return contents(Base.load(file)) == expected


@contextlib.contextmanager
def small_journal() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state, "_JOURNAL_MIN", 600)
        yield


@settings(max_examples=150, deadline=None)
@given(STEPS)
def test_a_base_reads_back_as_its_last_complete_save(steps: list[Step]) -> None:
    with small_journal():
        assert holds(steps)
    state._LOADED.clear()


def _fails(patch: Callable[[pytest.MonkeyPatch], None]) -> bool:
    def broken(steps: list[Step]) -> bool:
        with small_journal(), pytest.MonkeyPatch.context() as monkeypatch:
            patch(monkeypatch)
            return not holds(steps)

    find(
        STEPS,
        broken,
        settings=settings(max_examples=2000, database=None, deadline=None, phases=[Phase.generate]),
    )
    state._LOADED.clear()
    return True


def test_the_suite_catches_a_journal_that_appends_behind_a_torn_line() -> None:
    real = journal.read

    def whole(document: Path, ino: int, document_id: str) -> journal.Journal | None:
        found = real(document, ino, document_id)
        return None if found is None else journal.Journal(found.records, found.stamp, True)

    assert _fails(lambda patch: patch.setattr(journal, "read", whole))


def test_the_suite_catches_a_journal_replayed_beside_another_document() -> None:
    def trusting(document: Path, ino: int, document_id: str) -> journal.Journal | None:
        """Every line after the header replayed, whichever document it names."""
        path = journal.journal_file(document)
        try:
            lines, _ = journal.decode(path.read_bytes())
        except OSError:
            return journal.Journal([], journal.NO_FILE, False)
        return journal.Journal(lines[1:], journal.stat_stamp(path), False)

    assert _fails(lambda patch: patch.setattr(journal, "read", trusting))
