"""The agent's watched scans (agent/watching.py, real inotify): every answer equals a fresh
full scan, through the races a watcher has (a directory filled before its watch, a
directory moved in or out, the kernel's event queue overflowing)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.fsevents import overflow_event_queue
from tether.agent import inotify
from tether.agent.fsops import DigestCache
from tether.agent.scan import ScanMemo, scan_rows, scan_tree
from tether.agent.watched import WatchedTree
from tether.agent.watching import Watching

SKIP = [".git", "outputs"]
pytestmark = pytest.mark.skipif(
    inotify.fs_type("/tmp") not in inotify.LOCAL_FS, reason="no local file system to watch"
)


class Client:
    """Holds the answers as tether's client does (rows by path, deltas applied)."""

    def __init__(self, root: Path, cache_dir: Path) -> None:
        self.root = str(root)
        self.watching = Watching(ScanMemo())
        self.cache = DigestCache(str(cache_dir), self.root)
        self.token: str | None = None
        self.rows: dict[str, Any] = {}
        self.answers: list[dict[str, Any]] = []

    def scan(self) -> dict[str, Any]:
        answer, _ = self.watching.scan("k", self.root, SKIP, self.cache, False, self.token)
        self.answers.append(answer)
        if answer.get("since") is None:
            self.rows = {}
        for row in answer["rows"]:
            self.rows[row[0]] = row
        for path in answer.get("gone", []):
            del self.rows[path]
        self.token = answer["token"]
        return self.rows

    def full(self) -> dict[str, Any]:
        return scan_tree(self.root, SKIP, self.cache, False)[0]

    def watched(self) -> bool:
        kept = self.watching.kept.get("k")
        return kept is not None and kept.watcher.fd >= 0


def tree(root: Path) -> None:
    for index in range(30):
        path = root / f"d{index % 3}" / f"e{index % 2}" / f"f{index}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"x = {index}\n")
    (root / "outputs").mkdir()


def watched_client(tmp_path: Path) -> tuple[Path, Client]:
    """A tree scanned twice by an agent, which now watches it."""
    root = tmp_path / "t"
    tree(root)
    client = Client(root, tmp_path / "cache")
    client.scan()
    client.scan()
    assert client.watched()
    return root, client


def assert_watched_as_a_walk(client: Client, root: Path, why: str) -> None:
    """The kept watcher of root holds the watches a fresh watcher's own walk sets up."""
    kept = client.watching.kept["k"]
    assert kept is not None
    apart = inotify.Watcher(str(root), set(SKIP))
    apart.start()
    try:
        assert set(kept.watcher.wds) == set(apart.wds), why
    finally:
        apart.close()


def count_walks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The roots of the whole-tree walks the agent's watching makes from now on."""
    walks: list[str] = []

    def counting(scan: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if len(args) < 5 and kwargs.get("only") is None:  # a whole-tree walk
                walks.append(args[0])
            return scan(*args, **kwargs)

        return counted

    monkeypatch.setattr("tether.agent.watching.scan_tree", counting(scan_tree))
    monkeypatch.setattr("tether.agent.watching.scan_rows", counting(scan_rows))
    return walks


def test_watched_answers_follow_every_race(tmp_path: Path) -> None:
    root, client = watched_client(tmp_path)
    # A directory made and filled at once (before any watch on it), nested.
    (root / "new" / "deep" / "er").mkdir(parents=True)
    (root / "new" / "deep" / "er" / "f").write_text("unseen by any watch")
    assert client.scan() == client.full()
    (root / "new" / "deep" / "er" / "f").write_text("seen by its watch now")
    assert client.scan() == client.full()
    # A directory moved within the tree, then written under its new name.
    (root / "d0").rename(root / "moved")
    (root / "moved" / "e0" / "f0.py").write_text("after the move\n")
    assert client.scan() == client.full()
    # Moved out to a skipped directory and in from it; a file replaced by rename.
    (root / "d1").rename(root / "outputs" / "d1")
    (root / "outputs" / "d1" / "e1" / "f1.py").write_text("outside\n")
    assert client.scan() == client.full()
    (root / "outputs" / "d1").rename(root / "back")
    (root / "back" / "e1" / "f1.py").write_text("inside again\n")
    (root / "d2" / "e0" / "tmp").write_text("replacement")
    os.replace(root / "d2" / "e0" / "tmp", root / "d2" / "e0" / "f2.py")
    assert client.scan() == client.full()
    assert client.answers[-1].get("since") and client.watched()
    assert client.scan() == client.full() and client.answers[-1]["rows"] == []


def test_an_overflowed_event_queue_gives_a_full_answer(tmp_path: Path) -> None:
    root, client = watched_client(tmp_path)
    # The queue overflows: the file made after it has no event.
    overflow_event_queue(root / "d0" / "e0" / "f0.py", root / "d1" / "e1" / "f1.py")
    (root / "d0" / "last").write_text("after the overflow")
    assert client.scan() == client.full()
    assert "d0/last" in client.rows
    assert client.watched(), "the watcher starts again after an overflow"
    (root / "d1" / "later").write_text("seen by the new watcher")
    assert client.scan() == client.full()


def test_the_first_scan_sets_up_the_watches_in_its_own_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "t"
    tree(root)
    once = Client(root, tmp_path / "cache")
    once.scan()
    assert not once.watched(), "an agent that may scan once pays for no watch"
    client = Client(root, tmp_path / "cache")
    client.watching.eager = True  # a kept channel's agent (wire.Hello.watch)
    client.scan()
    assert client.watched(), "watched from the first scan on"
    assert_watched_as_a_walk(client, root, "the same watches as a walk of its own")
    walks = count_walks(monkeypatch)
    (root / "d0" / "e0" / "f0.py").write_text("seen by a watch of the first walk\n")
    assert client.scan() == client.full()
    assert client.answers[-1].get("since") and client.answers[-1]["rows"]
    assert walks == [], "the second scan re-stats what changed, no walk"


def test_a_change_no_event_reports_is_found_by_the_verification_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_VERIFY_S", "0.5")
    root = tmp_path / "t"
    tree(root)
    client = Client(root, tmp_path / "cache")
    client.scan()
    client.scan()
    kept = client.watching.kept["k"]
    assert kept is not None
    fd = kept.watcher.fd
    (root / "d1" / "e1" / "f1.py").write_text("written with no event\n")
    kept.watcher.drain(WatchedTree(60.0), 0.0)  # the event is lost (as for an mmap write)
    assert client.scan() != client.full(), "unseen while the kept state is young"
    time.sleep(0.6)
    assert client.scan() == client.full(), "found once the bound passed"
    assert kept.watcher.fd == fd, "the verification scan keeps the sound watcher"
    (root / "d1" / "e1" / "f1.py").write_text("seen again by the same watcher\n")
    assert client.scan() == client.full() and client.answers[-1].get("since")


def test_a_root_missing_at_the_first_scan_is_watched_from_the_first_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A first push: the kept channel's scan finds no root; the push's writes make it.
    root = tmp_path / "t"
    client = Client(root, tmp_path / "cache")
    client.watching.eager = True
    assert client.scan() == {}
    assert not client.watched()
    (root / "d0").mkdir(parents=True)  # the first write makes the root and a directory
    client.watching.wrote(str(root))
    assert client.watched(), "watched from the first write under the root"
    tree(root)  # the rest of the push: more directories, each after the first write
    for directory in sorted(p for p in root.rglob("*") if p.is_dir()):
        (directory / "w.py").write_text("written into it\n")
        client.watching.wrote(str(root))
    assert_watched_as_a_walk(client, root, "every directory watched after the push")
    walks = count_walks(monkeypatch)
    assert client.scan() == client.full(), "the answer after the writes holds all of them"
    assert client.answers[-1].get("since"), "a difference from the first (empty) answer"
    assert walks == [], "the scan after the push re-stats what changed, no walk"
    (root / "d1" / "later.py").write_text("seen through a watch\n")
    assert client.scan() == client.full()
    assert client.answers[-1]["rows"] and walks == []
