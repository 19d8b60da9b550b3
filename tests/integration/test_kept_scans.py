"""Watched scans end to end: the sync daemon's kept local manifest (sync/kept.py) and the
agent's watched remote tree (agent/watching.py) never hide an edit.

Real CLI, real daemon, real ssh to the sandbox, real inotify on both sides: edits made
between pushes (right after a push, a burst like `git checkout`, a directory made and
filled at once, a file replaced by rename) are always uploaded; an overflowed event queue
(the kernel's own: more events than max_queued_events) falls back to a full scan.
"""

from __future__ import annotations

import contextlib
import json
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
    synced.push_ok()  # both sides watch from the first push through the daemon
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


def _watched_inodes(host: str) -> set[int]:
    """The inodes the daemon's agents on host watch (their /proc fdinfo: the sandbox is
    this machine; several agents where commands served at once each took a channel)."""
    from tether.cli import daemon
    from tether.cli.fastpath import socket_path

    answer = daemon.ping(socket_path())
    assert answer is not None, "no sync daemon answers"
    pids = [c["agent_pid"] for c in answer["channels"] if c["host"] == host]
    assert pids, f"the daemon keeps no agent on {host}"
    inodes: set[int] = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
                        fields = dict(f.split(":", 1) for f in line.split() if ":" in f)
                        if line.startswith("inotify wd:") and "ino" in fields:
                            inodes.add(int(fields["ino"], 16))
    return inodes


def test_the_daemons_agent_watches_every_directory_of_the_project(synced: SyncProject) -> None:
    synced.push_ok()  # one push of a fresh daemon: the tree was made by it
    directories = [p for p, found in synced.remote_tree().items() if found[0] == "dir"]
    wanted = {(synced.remote / d).stat().st_ino for d in directories}
    wanted.add(synced.remote.stat().st_ino)
    missing = wanted - _watched_inodes(synced.host)
    assert not missing, f"{len(missing)} of the project's {len(wanted)} directories unwatched"
    write(synced.root / "pkg" / "later.py", "seen through the agent's watches\n")
    synced.push_ok()
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


def test_incremental_pushes_keep_every_safety_rule(synced: SyncProject) -> None:
    """Pushes through the daemon plan only what changed (sync/incremental.py): a remote edit
    between them is a conflict, never overwritten; the conflict is reported again by the
    next push though nothing changed since (a path left out of sync is planned again); a
    local delete deletes; a remote delete is uploaded again."""
    root, remote = synced.root, synced.remote
    write(root / "kept.py", "kept = 1\n")
    write(root / "doomed.py", "doomed = 1\n")
    write(root / "gone.py", "gone = 1\n")
    synced.push_ok()
    synced.push_ok()  # the daemon's mark: from here on, pushes plan what changed
    write(remote / "kept.py", "edited on the remote\n")
    for _ in range(2):
        done = synced.push()
        assert done.returncode == 3, describe(done)
        assert "kept.py" in done.stdout + done.stderr, describe(done)
        assert (remote / "kept.py").read_text() == "edited on the remote\n"
    (root / "doomed.py").unlink()
    (remote / "gone.py").unlink()
    write(remote / "kept.py", "kept = 1\n")  # put back: in sync again
    synced.push_ok()
    assert not (remote / "doomed.py").exists()
    assert (remote / "gone.py").read_text() == "gone = 1\n"
    synced.push_ok()
    same(synced)


def test_the_push_after_a_first_push_plans_only_what_changed(synced: SyncProject) -> None:
    """The first push of a fresh daemon scans both trees in full and uploads everything;
    it still leaves a mark, so the next push plans only the changed paths (and a remote
    edit after the first push is still a conflict, never overwritten)."""
    root, remote = synced.root, synced.remote
    for index in range(40):
        write(root / "many" / f"d{index % 4}" / f"f{index}.py", f"x = {index}\n")
    write(root / "kept.py", "kept = 1\n")
    first = json.loads(synced.push_ok("--json").stdout)[0]
    assert first["considered"] is None, first  # a first push plans the whole tree
    write(root / "pkg" / "model.py", "def forward(x):\n    return 7 * x\n")
    write(remote / "kept.py", "edited on the remote\n")
    done = synced.push("--json")
    assert done.returncode == 3, describe(done)
    second = json.loads(done.stdout)[0]
    assert second["planned"]["uploads"] == ["pkg/model.py"], second
    assert [c["path"] for c in second["conflicts"]] == ["kept.py"], second
    assert (remote / "kept.py").read_text() == "edited on the remote\n"
    # The changed file, the remote's edit, and at most the directories (a directory's
    # mtime changes with what the push put in it): not the ~50 paths of the tree.
    directories = sum(1 for found in synced.local_tree().values() if found[0] == "dir")
    assert second["considered"] is not None, second
    assert second["considered"] <= 2 + directories < len(synced.local_tree()) // 2, second
    write(remote / "kept.py", "kept = 1\n")
    third = json.loads(synced.push_ok("--json").stdout)[0]
    assert third["considered"] is not None and third["considered"] <= 4, third
    same(synced)
