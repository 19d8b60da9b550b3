"""The last-synced base on disk: round trip, the older format, and the in-process copy."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tether.core.manifest import DIR, FILE, LINK, Entry
from tether.sync import state
from tether.sync.state import Base


def sample(file: Path) -> Base:
    base = Base(file)
    base.record("a.py", Entry(FILE, 3, 10, 0o644, "d" * 64), Entry(FILE, 3, 10), Entry(FILE, 3, 10))
    # Remote and local stats that differ from the entry's own, and one side unknown.
    base.record("b", Entry(FILE, 5, 20, 0o755, "e" * 64), Entry(FILE, 5, 99), None)
    base.record("d", Entry(DIR, 0, 30, 0o755), Entry(DIR, 0, 31), Entry(DIR, 0, 30))
    base.record("l", Entry(LINK, 0, 40, 0o777, None, "a.py"), None, Entry(LINK, 0, 41))
    base.record("c", Entry(FILE, 1, 50, 0o644, "f" * 64), None, None)
    base.pending = {"up": "0" * 64}
    return base


def contents(base: Base) -> tuple[object, ...]:
    return (base.entries, base.remote_stat, base.local_stat, base.pending)


def test_a_saved_base_loads_back_the_same(tmp_path: Path) -> None:
    file = tmp_path / "state" / "push.json"
    base = sample(file)
    base.save()
    state._LOADED.clear()
    loaded = Base.load(file)
    assert contents(loaded) == contents(base)
    assert not loaded.dirty
    assert loaded.remote_stat["b"] == (5, 99) and "b" not in loaded.local_stat
    assert "c" not in loaded.remote_stat and "c" not in loaded.local_stat


def test_a_version_1_base_is_still_read(tmp_path: Path) -> None:
    file = tmp_path / "push.json"
    base = sample(file)
    entries = {}
    for path, entry in base.entries.items():
        raw = entry.to_json()
        if path in base.remote_stat:
            raw["r"] = list(base.remote_stat[path])
        if path in base.local_stat:
            raw["l"] = list(base.local_stat[path])
        entries[path] = raw
    file.write_text(json.dumps({"version": 1, "entries": entries, "pending": base.pending}))
    assert contents(Base.load(file)) == contents(base)


def test_a_version_2_base_is_still_read_and_saved_whole_on_change(tmp_path: Path) -> None:
    file = tmp_path / "push.json"
    base = sample(file)
    rows = [base._row(path, entry) for path, entry in base.entries.items()]
    file.write_text(json.dumps({"version": 2, "rows": rows, "pending": base.pending}))
    loaded = Base.load(file)
    assert contents(loaded) == contents(base)
    loaded.forget("c")
    loaded.save()
    assert json.loads(file.read_text())["version"] == state.VERSION
    state._LOADED.clear()
    assert "c" not in Base.load(file).entries and "b" in Base.load(file).entries


def test_an_unreadable_base_is_empty(tmp_path: Path) -> None:
    file = tmp_path / "push.json"
    for text in ("not json", "[]", '{"version": 2, "rows": [[1, 2]]}', '{"version": 9}'):
        file.write_text(text)
        assert contents(Base.load(file)) == ({}, {}, {}, {})


def test_a_base_replaced_on_disk_is_read_again(tmp_path: Path) -> None:
    """The in-process copy serves only the very file it came from."""
    file = tmp_path / "push.json"
    first = sample(file)
    first.save()
    loaded = Base.load(file)
    assert contents(loaded) == contents(first)
    # Another process writes a base of the same size at once (temp + rename, as save does).
    other = sample(file)
    other.record("a.py", Entry(FILE, 3, 10, 0o644, "9" * 64), None, None)
    document = json.loads(file.read_text())
    (row,) = (row for row in document["rows"] if row[0] == "a.py")  # rows in any order
    row[5] = "9" * 64
    tmp = tmp_path / "other.tmp"
    tmp.write_text(json.dumps(document))
    assert tmp.stat().st_size == file.stat().st_size
    os.replace(tmp, file)
    again = Base.load(file)
    assert again.entries["a.py"].digest == "9" * 64
    # Changes to a loaded base never leak into the next load until saved.
    again.record("new", Entry(FILE, 1, 1, 0o644, "1" * 64), None, None)
    assert "new" not in Base.load(file).entries
    again.save()
    assert "new" in Base.load(file).entries


def test_pending_uploads_live_in_a_small_file_beside_the_base(tmp_path: Path) -> None:
    file = tmp_path / "state" / "push.json"
    base = sample(file)
    base.pending = {}
    base.save()
    before = file.stat()
    side = file.with_name("push.pending.json")
    assert not side.exists()
    base.expect_uploads({"new.py": "1" * 64})
    # Recorded at once, without rewriting the (large) base (a save replaces its inode).
    after = file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert json.loads(side.read_text()) == {"new.py": "1" * 64}
    for cached in (True, False):
        if not cached:
            state._LOADED.clear()
        assert Base.load(file).pending == {"new.py": "1" * 64}
    base.settle_upload("new.py")
    base.save()
    assert not side.exists()
    for cached in (True, False):
        if not cached:
            state._LOADED.clear()
        assert Base.load(file).pending == {}


def test_a_changed_base_appends_its_change_and_reads_back_as_written_whole(
    tmp_path: Path,
) -> None:
    file = tmp_path / "state" / "push.json"
    base = sample(file)
    base.save()
    document = file.stat()
    base.record("a.py", Entry(FILE, 4, 11, 0o644, "9" * 64), Entry(FILE, 4, 12), None)
    base.forget("c")
    base.record("n", Entry(FILE, 2, 60, 0o600, "8" * 64), Entry(FILE, 2, 60), Entry(FILE, 2, 61))
    base.forget("b")
    base.record("b", Entry(FILE, 5, 21, 0o755, "e" * 64), None, Entry(FILE, 5, 21))
    base.save()
    # The change went to the journal: the document is the very file written first.
    assert (file.stat().st_ino, file.stat().st_mtime_ns) == (document.st_ino, document.st_mtime_ns)
    assert file.with_name("push.journal").stat().st_size > 0
    state._LOADED.clear()
    again = Base.load(file)
    assert contents(again) == contents(base)
    fresh = tmp_path / "fresh" / "push.json"
    copy = again.copy()
    copy.file = fresh
    copy.dirty = True
    copy.save()  # no stamp of its own files: written whole
    document_rows = json.loads(fresh.read_text())
    assert document_rows["version"] == state.VERSION
    found = {row[0]: row for row in document_rows["rows"]}  # rows in any order
    assert len(found) == len(document_rows["rows"]) == len(again.entries)
    state._LOADED.clear()
    assert contents(Base.load(fresh)) == contents(again)
    assert again.remote_stat.get("b") is None and again.local_stat["b"] == (5, 21)
    assert again.entries["a.py"].size == 4 and again.remote_stat["a.py"] == (4, 12)
    assert "c" not in again.entries and again.local_stat["n"] == (2, 61)


def test_a_save_removes_the_temp_files_of_a_process_killed_while_saving(tmp_path: Path) -> None:
    import subprocess

    file = tmp_path / "state" / "push.json"
    file.parent.mkdir()
    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    dead = int(gone.stdout)  # a pid that has ended (reaped)
    live = os.getppid()  # a running process: its save may be under way
    left = [
        file.parent / f".push.json.{dead}.tmp",
        file.parent / f".push.pending.json.{dead}.tmp",
        file.parent / f".push.journal.{dead}.tmp",
    ]
    kept = [
        file.parent / f".push.json.{live}.tmp",
        file.parent / ".push.json.x1.tmp",
        file.parent / ".other.json.1.tmp",
    ]
    for path in left + kept:
        path.write_text("{")
    sample(file).save()
    assert [path for path in left if path.exists()] == []
    assert [path for path in kept if not path.exists()] == []
    assert Base.load(file).entries == sample(file).entries


def test_a_saved_base_changed_again_never_leaks_into_the_next_load(tmp_path: Path) -> None:
    """The in-process copy shares its dictionaries with the saved base until it changes."""
    file = tmp_path / "push.json"
    base = sample(file)
    base.save()
    base.record("a.py", Entry(FILE, 9, 90, 0o644, "9" * 64), Entry(FILE, 9, 91), None)
    base.record("n", Entry(FILE, 1, 1, 0o644, "1" * 64), None, None)
    base.forget("b")
    loaded = Base.load(file)
    assert contents(loaded) == contents(sample(file))
    loaded.forget("a.py")
    assert "a.py" in Base.load(file).entries and "a.py" in base.entries
    assert base.remote_stat["a.py"] == (9, 91) and base.local_stat["a.py"] == (3, 10)


def test_two_bases_of_one_file_saved_in_turn_each_write_their_own_rows(tmp_path: Path) -> None:
    """Blocks encoded for one save serve only the base they were encoded from."""
    file = tmp_path / "push.json"
    sample(file).save()
    first, second = Base.load(file), Base.load(file)
    first.record("a.py", Entry(FILE, 4, 11, 0o644, "9" * 64), Entry(FILE, 4, 11), None)
    first.save()
    second.record("n", Entry(FILE, 1, 1, 0o644, "1" * 64), None, None)
    second.forget("b")
    second.save()
    state._LOADED.clear()
    again = Base.load(file)
    assert contents(again) == contents(second)
    # Each save wrote its own rows over the other's: first's a.py, second's b and n.
    assert again.entries["a.py"].digest == "9" * 64 and "b" not in again.entries
    again.record("c", Entry(FILE, 7, 70, 0o644, "7" * 64), None, Entry(FILE, 7, 71))
    again.save()
    state._LOADED.clear()
    assert contents(Base.load(file)) == contents(again)


def test_a_load_after_a_save_changes_the_saved_rows_in_place_and_a_read_base_is_shared(
    tmp_path: Path,
) -> None:
    """No copy of every row for the push after a push; never a change seen by another."""
    file = tmp_path / "push.json"
    saved = sample(file)
    saved.save()
    taken = Base.load(file)
    taken.record("n", Entry(FILE, 1, 1, 0o644, "1" * 64), None, None)
    assert taken.entries is saved.entries, "the rows saved were copied for the next push"
    assert "n" not in Base.load(file).entries  # read again from the file: as saved
    # A base read from the file is shared with the copy kept: a second load copies it.
    state._LOADED.clear()
    first, second = Base.load(file), Base.load(file)
    second.forget("a.py")
    assert "a.py" in first.entries and "a.py" in Base.load(file).entries
    taken.save()
    state._LOADED.clear()
    assert contents(Base.load(file)) == contents(taken)


def test_a_base_taken_and_saved_unchanged_is_not_read_from_the_file_again(
    tmp_path: Path,
) -> None:
    """A no-op push (its base taken, saved with nothing changed) leaves the next push the
    same rows in memory: not a second copy of every row parsed from the file."""
    file = tmp_path / "push.json"
    saved = sample(file)
    saved.save()
    taken = Base.load(file)
    assert taken.entries is saved.entries
    taken.save()  # nothing changed: nothing written
    again = Base.load(file)
    assert again.entries["a.py"] is saved.entries["a.py"], "the file was parsed again"
    assert contents(again) == contents(sample(file))
    again.forget("a.py")
    assert "a.py" in Base.load(file).entries


def test_a_base_saved_after_another_process_saved_keeps_that_process_rows(
    tmp_path: Path,
) -> None:
    """`tether watch` and a push (the sync daemon) save the same base: each save writes the
    rows it changed over the file as it is then, never its stale copy of the others.
    (One process recorded drop.txt's new upload; the other, loaded before and saving a
    change of its own, used to write the whole base back with drop.txt's old row: the
    next local edit of drop.txt was then a conflict that never cleared.)"""
    file = tmp_path / "push.json"
    old = Entry(FILE, 2, 10, 0o644, "0" * 64)
    base = Base(file)
    base.record("drop.txt", old, old, old)
    base.record("other", Entry(FILE, 1, 5, 0o644, "5" * 64), None, None)
    base.save()
    watcher, daemon = Base.load(file), Base.load(file)
    new = Entry(FILE, 2, 20, 0o644, "1" * 64)
    daemon.record("drop.txt", new, new, new)
    daemon.save()
    # What watch's save was seen doing: only its pending upload settled, no row changed.
    watcher.expect_uploads({"drop.txt": "1" * 64})
    watcher.settle_upload("drop.txt")
    watcher.save()
    assert Base.load(file).entries["drop.txt"] == new, "a save lost another process's record"
    watcher = Base.load(file)
    watcher.record("other", Entry(FILE, 1, 6, 0o644, "6" * 64), None, None)
    watcher.forget("gone-here")
    daemon = Base.load(file)
    daemon.record("drop.txt", new, new, new)  # (the same row again: a change of stats)
    daemon.record("third", Entry(FILE, 3, 3, 0o644, "3" * 64), None, None)
    daemon.save()
    watcher.save()
    for cached in (True, False):
        if not cached:
            state._LOADED.clear()
        merged = Base.load(file)
        assert merged.entries["drop.txt"] == new, "a save lost another process's record"
        assert merged.remote_stat["drop.txt"] == (2, 20)
        assert merged.entries["other"].digest == "6" * 64 and "third" in merged.entries
    # Both files replaced by a compaction of the other process: the same.
    daemon = Base.load(file)
    watcher = Base.load(file)
    daemon.record("n", Entry(FILE, 1, 1, 0o644, "1" * 64), None, None)
    daemon.stamp = None  # (its next save writes the document whole)
    daemon.save()
    watcher.forget("other")
    watcher.save()
    state._LOADED.clear()
    merged = Base.load(file)
    assert "n" in merged.entries and "other" not in merged.entries
    assert merged.entries["drop.txt"] == new


def test_pending_uploads_of_two_processes_saving_one_base_are_both_kept(tmp_path: Path) -> None:
    """An upload in flight is pending until answered; another process's save of the same
    base (watch beside a push) keeps it: else a write that landed unanswered in a cut
    reads as a remote edit, a conflict once the file is edited here again."""
    file = tmp_path / "push.json"
    sample(file).save()
    watcher, daemon = Base.load(file), Base.load(file)
    daemon.expect_uploads({"d.txt": "d" * 64})
    watcher.expect_uploads({"w.txt": "e" * 64})
    assert Base.load(file).pending == {"up": "0" * 64, "d.txt": "d" * 64, "w.txt": "e" * 64}
    watcher.settle_upload("w.txt")
    watcher.settle_upload("up")
    watcher.save()
    assert Base.load(file).pending == {"d.txt": "d" * 64}
    daemon.settle_upload("d.txt")
    daemon.save()  # (its copy still lists "up", settled by the other: not brought back)
    assert Base.load(file).pending == {}
