"""Watched scans end to end: the sync daemon's kept local manifest (sync/kept.py) and the
agent's watched remote tree (agent/watching.py) never hide an edit.

Real CLI, real daemon, real ssh to the sandbox, real inotify on both sides: edits made
between pushes (right after a push, a burst like `git checkout`, a directory made and
filled at once, a file replaced by rename) are always uploaded; an overflowed event queue
(the kernel's own: more events than max_queued_events) falls back to a full scan.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import SyncProject, describe

pytestmark = pytest.mark.integration


def write(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)


def same(synced: SyncProject) -> None:
    local, remote = synced.local_tree(), synced.remote_tree()
    assert local == remote, sorted(set(local.items()) ^ set(remote.items()))[:6]


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        check=True,
        capture_output=True,
    )


def hammer(files: list[Path], times: int) -> None:
    """Writes to files in turn: one event each (the kernel merges only repeats)."""
    handles = [os.open(path, os.O_WRONLY | os.O_APPEND) for path in files]
    try:
        for _ in range(times):
            for handle in handles:
                os.write(handle, b"#")
    finally:
        for handle in handles:
            os.close(handle)


def test_edits_between_daemon_pushes_are_always_uploaded(synced: SyncProject) -> None:
    root = synced.root
    synced.push_ok()
    synced.push_ok()  # the agent watches from its second scan, the daemon from its first
    same(synced)
    write(root / "pkg" / "model.py", "def forward(x):\n    return 5 * x\n")  # right after
    synced.push_ok()
    same(synced)
    synced.push_ok()  # nothing changed: the kept manifests
    same(synced)
    (root / "fresh" / "deep").mkdir(parents=True)
    write(root / "fresh" / "deep" / "made.py", "filled before any watch\n")
    synced.push_ok()
    same(synced)
    write(root / "fresh" / "deep" / "made.py", "changed under its watch\n")
    write(root / "fresh" / "swap.tmp", "replacement by rename\n")
    os.replace(root / "fresh" / "swap.tmp", root / "pkg" / "model.py")
    synced.push_ok()
    same(synced)
    # A burst like `git checkout`: many files rewritten, removed and added at once.
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    git(root, "checkout", "-qb", "other")
    for index in range(60):
        write(root / "burst" / f"b{index % 6}" / f"f{index}.py", f"x = {index}\n")
    (root / "pkg" / "model.py").unlink()
    git(root, "add", "-A")
    git(root, "commit", "-qm", "other")
    synced.push_ok()
    same(synced)
    git(root, "checkout", "-q", "-")
    done = synced.push_ok()
    assert "burst" not in {p.split("/")[0] for p in synced.local_tree()}, describe(done)
    same(synced)


def test_an_overflowed_local_queue_still_uploads_everything(synced: SyncProject) -> None:
    root = synced.root
    synced.push_ok()
    synced.push_ok()
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    write(root / "a.txt", "a")
    write(root / "b.txt", "b")
    synced.push_ok()
    hammer([root / "a.txt", root / "b.txt"], limit // 2 + 100)
    write(root / "late.py", "made after the queue overflowed\n")
    synced.push_ok()
    same(synced)


def test_an_overflowed_remote_queue_still_shows_every_remote_change(
    make_synced: Callable[..., SyncProject], project: Path
) -> None:
    # A results glob: pull scans the whole remote tree (a scan the agent watches).
    synced = make_synced(root=project, results=("*.out",))
    root, remote = synced.root, synced.remote
    write(root / "a.txt", "a")
    write(root / "b.txt", "b")
    synced.push_ok()
    for _ in range(3):  # the agent watches the pulled tree from its second scan on
        assert synced.pull().returncode == 0
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    hammer([remote / "a.txt", remote / "b.txt"], limit // 2 + 100)
    write(remote / "r.out", "written on the remote after the overflow\n")
    done = synced.pull()
    assert done.returncode == 0, describe(done)
    assert (root / "r.out").read_text() == "written on the remote after the overflow\n"


def test_what_steers_git_from_outside_the_tree_is_seen_without_an_event(
    synced: SyncProject,
) -> None:
    # .git/info/exclude and git's index change no file of the tree (no event): a kept
    # manifest must still follow them.
    root = synced.root
    exclude = root / ".git" / "info" / "exclude"
    write(exclude, "*.log\n")
    write(root / "notes.log", "ignored at first\n")
    write(root / ".gitignore", "*.dat\n")
    write(root / "table.dat", "ignored, then added by force\n")
    synced.push_ok()
    synced.push_ok()
    assert not (synced.remote / "notes.log").exists()
    assert not (synced.remote / "table.dat").exists()
    write(exclude, "# nothing excluded now\n")
    synced.push_ok()
    assert (synced.remote / "notes.log").read_text() == "ignored at first\n"
    git(root, "add", "-f", "table.dat")
    synced.push_ok()
    assert (synced.remote / "table.dat").read_text() == "ignored, then added by force\n"
