"""push and pull end to end: the real CLI, real ssh, a real sshd sandbox (DESIGN.md 3, 5, 11).

Every test runs `python -m tether` in a project directory and checks the remote side on
disk (the sandbox's home is a local directory), so each invariant of section 5 is checked
against what really landed, not against what tether says it did.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.data import hostile_names
from tests.harness import env as harness
from tests.integration.conftest import (
    SyncProject,
    describe,
    one_error_line,
    run_cli,
    tmp_files,
    tree,
    unique_remote,
    without,
    write_toml,
)

pytestmark = pytest.mark.integration

MakeSynced = Callable[..., SyncProject]


def _json(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.stdout.strip(), describe(done)
    data = json.loads(done.stdout)
    assert isinstance(data, list) and len(data) == 1, data
    return data


def _stats(root: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, mode) of every entry: a rewrite, even identical, changes it."""
    found = {}
    for rel, st in hostile_names.walk(root):
        found[rel] = (st.st_ino, st.st_mtime_ns, st.st_mode)
    return found


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)


def _backups(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}.tether-conflict-*"))


def _expected_remote(local: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """What a full push of the harness project should leave: no ignored or results paths."""
    ignored = re.compile(r"(^|/)(data|outputs|runs|__pycache__)(/|$)|\.ckpt$")
    return {path: value for path, value in local.items() if not ignored.search(path)}


# ---------------------------------------------------------------- mirroring and no-ops


def test_push_mirrors_project_and_noop_push_changes_nothing(synced: SyncProject) -> None:
    root = synced.root
    _write(root / "notes.txt", "untracked but not ignored: pushed\n")
    _write(root / "data" / "big.bin", b"\0" * 1000)  # .gitignore
    _write(root / "model.ckpt", "checkpoint")  # .gitignore
    _write(root / "outputs" / "old.json", "{}")  # results (and .gitignore)
    _write(root / "runs" / "r0" / "log.txt", "results only")  # results, not in .gitignore
    _write(root / "pkg" / "__pycache__" / "model.cpython.pyc", b"\x00pyc")
    _write(root / "pkg" / ".gitignore", "secret.txt\n")  # a nested .gitignore counts too
    _write(root / "pkg" / "secret.txt", "never leaves the laptop")
    _write(root / "bin" / "run.sh", "#!/bin/sh\necho hi\n")
    (root / "bin" / "run.sh").chmod(0o755)
    _write(root / "big.bin", os.urandom(3 * 1024 * 1024 + 17))  # several chunks

    first = synced.push("--json")
    assert first.returncode == 0, describe(first)
    (report,) = _json(first)
    expected = without(_expected_remote(synced.local_tree()), "pkg/secret.txt")
    assert synced.remote_tree() == expected
    assert report["target"] == "box" and report["remote"] == synced.remote_spec
    files = {path for path, value in expected.items() if value[0] == "file"}
    assert files <= set(report["planned"]["uploads"])
    assert report["created"] >= len(files) and report["updated"] == report["deleted"] == 0
    assert report["bytes"] >= 3 * 1024 * 1024
    assert report["conflicts"] == [] and report["errors"] == []
    assert (synced.remote / "bin" / "run.sh").stat().st_mode & 0o777 == 0o755

    before = _stats(synced.remote)
    again = synced.push("--json")
    assert again.returncode == 0, describe(again)
    (noop,) = _json(again)
    assert (noop["created"], noop["updated"], noop["deleted"], noop["bytes"]) == (0, 0, 0, 0)
    assert noop["planned"] == {"uploads": [], "deletes": []}
    assert _stats(synced.remote) == before, "a no-op push rewrote or touched remote files"

    plain = synced.push()
    assert plain.returncode == 0, describe(plain)
    assert "0 new, 0 updated, 0 deleted" in plain.stdout
    assert plain.stderr.strip() == ""
    assert _stats(synced.remote) == before


def test_push_never_deletes_remote_created_files(synced: SyncProject) -> None:
    root, remote = synced.root, synced.remote
    _write(root / "lib" / "a.py", "a = 1\n")
    _write(root / "lib" / "deep" / "b.py", "b = 2\n")
    synced.push_ok()
    created = {
        "outputs/metrics.json": b'{"loss": 0.1}\n',
        "runs/r1/log.txt": b"epoch 1\n",
        "runs/r1/ckpt/model.bin": os.urandom(4096),
        "model.ckpt": b"a checkpoint next to the code",
        "pkg/remote_only.py": b"# written on the remote\n",
        "pkg/sub/also_remote.txt": b"deeper\n",
        "scratch/notes.md": b"remote notes\n",
        "lib/deep/remote.log": b"a log next to pushed code\n",
    }
    for rel, data in created.items():
        _write(remote / rel, data)

    def survived() -> None:
        for rel, data in created.items():
            assert (remote / rel).read_bytes() == data, f"remote-created {rel} was touched"

    synced.push_ok()
    survived()

    # Delete and rename local files: only tether's own copies may go.
    (root / "pkg" / "model.py").unlink()
    (root / "train.py").rename(root / "train2.py")
    (root / "pkg" / "__init__.py").unlink()
    (root / "pkg").rmdir()  # the whole directory is gone locally
    _write(root / "outputs" / "local.json", "local results are never pushed")
    done = synced.push_ok()
    survived()
    assert not (remote / "pkg" / "model.py").exists()
    assert not (remote / "pkg" / "__init__.py").exists()
    assert not (remote / "train.py").exists()
    assert (remote / "train2.py").read_text() == (root / "train2.py").read_text()
    assert not (remote / "outputs" / "local.json").exists()
    assert "3 deleted" in done.stdout, done.stdout  # pkg/ itself stays: not empty

    # Renaming a directory locally: its pushed files move, the remote's own file stays.
    (root / "lib").rename(root / "lib2")
    synced.push_ok()
    survived()
    assert set(tree(remote / "lib")) == {"deep", "deep/remote.log"}
    assert tree(remote / "lib2") == tree(root / "lib2")

    # A local file created at a path the remote already has (never pushed): not overwritten.
    _write(root / "scratch" / "notes.md", "local notes\n")
    clash = synced.push()
    assert clash.returncode == 3, describe(clash)
    assert "scratch/notes.md" in one_error_line(clash)
    survived()
    # And a later push that no longer has the clash leaves everything in place.
    (root / "scratch" / "notes.md").unlink()
    synced.push_ok()
    survived()


# ---------------------------------------------------------------- conflicts


def test_remote_change_is_a_conflict_exit_3_and_force_keeps_backup(synced: SyncProject) -> None:
    root, remote = synced.root, synced.remote
    _write(root / "doomed.txt", "pushed once\n")
    synced.push_ok()
    _write(remote / "pkg" / "model.py", "# edited on the remote\n")
    _write(root / "pkg" / "model.py", "# edited locally, longer than the remote edit\n")
    _write(remote / "doomed.txt", "changed on the remote\n")
    (root / "doomed.txt").unlink()
    _write(root / "README.md", "# proj\nlocal change without a conflict\n")

    done = synced.push()
    assert done.returncode == 3, describe(done)
    line = one_error_line(done)
    assert "2 conflict(s)" in line and "pkg/model.py" in line and "doomed.txt" in line, line
    assert (remote / "pkg" / "model.py").read_text() == "# edited on the remote\n"
    assert (remote / "doomed.txt").read_text() == "changed on the remote\n"
    assert _backups(remote / "pkg", "model.py") == []
    assert list(remote.rglob("*.tether-conflict-*")) == []
    # What does not conflict is still pushed.
    assert (remote / "README.md").read_bytes() == (root / "README.md").read_bytes()

    # Still a conflict the second time: the failed push did not record the remote as synced.
    second = synced.push("--json")
    assert second.returncode == 3, describe(second)
    (report,) = _json(second)
    assert sorted(c["path"] for c in report["conflicts"]) == ["doomed.txt", "pkg/model.py"]
    assert (remote / "pkg" / "model.py").read_text() == "# edited on the remote\n"

    forced = synced.push("--force")
    assert forced.returncode == 0, describe(forced)
    assert (remote / "pkg" / "model.py").read_bytes() == (root / "pkg" / "model.py").read_bytes()
    (backup,) = _backups(remote / "pkg", "model.py")
    assert backup.read_text() == "# edited on the remote\n"
    assert re.fullmatch(r"model\.py\.tether-conflict-\d{8}-\d{6}(-\d+)?", backup.name)
    assert not (remote / "doomed.txt").exists()
    (doomed_backup,) = _backups(remote, "doomed.txt")
    assert doomed_backup.read_text() == "changed on the remote\n"
    assert "kept a backup" in forced.stdout

    # The backups are remote-only files: later pushes keep them and have nothing to do.
    after = synced.push("--json")
    assert after.returncode == 0, describe(after)
    (noop,) = _json(after)
    assert noop["planned"] == {"uploads": [], "deletes": []}
    assert backup.read_text() == "# edited on the remote\n"
    assert doomed_backup.exists()


# ---------------------------------------------------------------- pull


def test_dry_run_tables_show_names_with_brackets_as_they_are(synced: SyncProject) -> None:
    # File names are data: rich markup in them ("[red]", "[/]") is printed, never applied.
    synced.push_ok()
    _write(synced.root / "[red]alert.py", "x\n")
    _write(synced.root / "w[" / "]x.py", "y\n")
    done = synced.push("--dry-run")
    assert done.returncode == 0, describe(done)
    assert "[red]alert.py" in done.stdout and "w[/]x.py" in done.stdout, done.stdout
    title = done.stdout.splitlines()[0]
    assert title.startswith("push ") and title.endswith("(dry run)"), "the title is one line"


def test_pull_brings_results_and_never_deletes_local_files(synced: SyncProject) -> None:
    root, remote = synced.root, synced.remote
    synced.push_ok()
    results = {
        "outputs/metrics.json": b'{"acc": 0.9}\n',
        "runs/r1/log.txt": b"epoch 1\nepoch 2\n",
        "runs/r1/ckpt/model.bin": os.urandom(2 * 1024 * 1024 + 5),  # several read chunks
        "runs/r1/empty.txt": b"",
    }
    for rel, data in results.items():
        _write(remote / rel, data)
    (remote / "runs" / "r1" / "plot.sh").write_text("#!/bin/sh\n")
    (remote / "runs" / "r1" / "plot.sh").chmod(0o755)
    os.symlink("log.txt", remote / "runs" / "r1" / "latest")
    _write(remote / "pkg" / "remote_only.py", "not a result\n")
    _write(root / "outputs" / "local_only.json", "made here\n")
    _write(root / "runs" / "r0" / "mine.txt", "an older local run\n")

    done = synced.pull("--json")
    assert done.returncode == 0, describe(done)
    (report,) = _json(done)
    assert report["conflicts"] == [] and report["errors"] == []
    for rel, data in results.items():
        assert (root / rel).read_bytes() == data, rel
    assert (root / "runs" / "r1" / "plot.sh").stat().st_mode & 0o777 == 0o755
    assert os.readlink(root / "runs" / "r1" / "latest") == "log.txt"
    assert not (root / "pkg" / "remote_only.py").exists(), "pull takes only the results"
    assert (root / "outputs" / "local_only.json").read_text() == "made here\n"
    assert (root / "runs" / "r0" / "mine.txt").read_text() == "an older local run\n"
    assert tmp_files(root) == []

    # Remote deletions never delete local files; remote updates of pulled files arrive.
    (remote / "outputs" / "metrics.json").unlink()
    (remote / "runs" / "r1" / "ckpt" / "model.bin").unlink()
    _write(remote / "runs" / "r1" / "log.txt", "epoch 1\nepoch 2\nepoch 3\n")
    again = synced.pull("--json")
    assert again.returncode == 0, describe(again)
    (counted,) = _json(again)
    assert (counted["created"], counted["updated"]) == (0, 1), "a changed result is not new"
    assert (root / "outputs" / "metrics.json").read_bytes() == results["outputs/metrics.json"]
    assert (root / "runs" / "r1" / "ckpt" / "model.bin").exists()
    assert (root / "runs" / "r1" / "log.txt").read_text() == "epoch 1\nepoch 2\nepoch 3\n"
    assert (root / "outputs" / "local_only.json").exists()

    # An explicit path pulls exactly that, even outside the results.
    named = synced.pull("pkg/remote_only.py")
    assert named.returncode == 0, describe(named)
    assert (root / "pkg" / "remote_only.py").read_text() == "not a result\n"
    assert (root / "pkg" / "model.py").exists()

    # A pull with nothing new changes nothing.
    before = _stats(root / "runs")
    quiet = synced.pull("--json")
    assert quiet.returncode == 0, describe(quiet)
    assert _json(quiet)[0]["created"] == 0
    assert _stats(root / "runs") == before


def test_pull_reports_local_change_as_conflict(synced: SyncProject) -> None:
    root, remote = synced.root, synced.remote
    synced.push_ok()
    _write(remote / "runs" / "log.txt", "remote v1\n")
    _write(remote / "outputs" / "table.csv", "a,b\n1,2\n")
    assert synced.pull().returncode == 0
    assert (root / "runs" / "log.txt").read_text() == "remote v1\n"

    _write(root / "runs" / "log.txt", "edited locally after the pull\n")
    _write(remote / "runs" / "log.txt", "remote v2, longer than before\n")
    _write(remote / "outputs" / "table.csv", "a,b\n1,2\n3,4\n")  # no local change: updates
    _write(root / "outputs" / "new.csv", "local file never pulled\n")
    _write(remote / "outputs" / "new.csv", "remote file of the same name\n")

    done = synced.pull()
    assert done.returncode == 3, describe(done)
    line = one_error_line(done)
    assert "runs/log.txt" in line and "outputs/new.csv" in line, line
    assert (root / "runs" / "log.txt").read_text() == "edited locally after the pull\n"
    assert (root / "outputs" / "new.csv").read_text() == "local file never pulled\n"
    assert (root / "outputs" / "table.csv").read_text() == "a,b\n1,2\n3,4\n"
    assert list(root.rglob("*.tether-conflict-*")) == []

    forced = synced.pull("--force")
    assert forced.returncode == 0, describe(forced)
    assert (root / "runs" / "log.txt").read_text() == "remote v2, longer than before\n"
    (backup,) = _backups(root / "runs", "log.txt")
    assert backup.read_text() == "edited locally after the pull\n"
    (other,) = _backups(root / "outputs", "new.csv")
    assert other.read_text() == "local file never pulled\n"
    # The remote side is never touched by a pull.
    assert (remote / "runs" / "log.txt").read_text() == "remote v2, longer than before\n"


# ---------------------------------------------------------------- hostile names


def _home_listing(home: Path, remote: Path) -> set[str]:
    """Every path in the sandbox home except the remote project and tether's own cache."""
    skip = {remote, home / ".cache" / "tether"}
    ancestors = {
        str(parent.relative_to(home))
        for path in skip
        for parent in path.parents
        if parent.is_relative_to(home)
    }
    found = set()
    for directory, dirnames, filenames in os.walk(home):
        dirnames[:] = [d for d in dirnames if Path(directory, d) not in skip]
        for name in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(directory, name), home))
    return found - ancestors


@pytest.mark.parametrize("layout", ["git", "plain"])
def test_hostile_names_sync_exactly(
    make_synced: MakeSynced, sandbox: Any, tmp_path: Path, layout: str
) -> None:
    if layout == "git":
        synced = make_synced()
    else:  # not a git work tree: tether's own walk with the .gitignore rules
        root = tmp_path / "plain"
        root.mkdir()
        _write(root / ".gitignore", "ignored.txt\n")
        _write(root / "ignored.txt", "not pushed\n")
        synced = make_synced(root=root)
    root, remote, home = synced.root, synced.remote, synced.home
    hostile_names.lay_out(root)
    if layout == "git":
        for argv in (["git", "add", "-A"], ["git", "commit", "-q", "-m", "hostile"]):
            subprocess.run(argv, cwd=root, check=True, capture_output=True, timeout=30)
    pwned_before = os.lstat(hostile_names.PWNED) if os.path.lexists(hostile_names.PWNED) else None
    home_before = _home_listing(home, remote)
    outside = remote.parent / "etc"
    assert not outside.exists()

    done = synced.push("--json")
    assert done.returncode == 0, describe(done)
    local = without(synced.local_tree(), "ignored.txt")
    got = synced.remote_tree()
    for item in hostile_names.items():
        assert got.get(item.path) == local[item.path], f"{item.why}: {item.path!r}"
        if item.kind == "file":
            assert got[item.path] == ("file", item.content, item.mode), item.why
        else:
            assert os.readlink(remote / item.path) == item.target, item.why
    assert got == local, sorted(set(got) ^ set(local))
    # Both forms of "é" are two distinct files on the remote.
    nfc, nfd = (remote / f"caf{e}.txt" for e in (hostile_names.E_NFC, hostile_names.E_NFD))
    assert nfc.read_bytes() == b"NFC form\n" and nfd.read_bytes() == b"NFD form\n"

    # Nothing outside the remote project; no shell ever ran a name.
    assert not outside.exists()
    assert _home_listing(home, remote) == home_before
    for trace in hostile_names.RELATIVE_TRACES:
        assert not (home / trace).exists() and not Path("/tmp", trace).exists(), trace
    pwned_after = os.lstat(hostile_names.PWNED) if os.path.lexists(hostile_names.PWNED) else None
    if pwned_before is None:
        assert pwned_after is None, "a name ran as a shell command: /tmp/pwned was created"
    else:
        assert pwned_after is not None and pwned_after.st_mtime_ns == pwned_before.st_mtime_ns

    noop = synced.push("--json")
    assert noop.returncode == 0, describe(noop)
    assert _json(noop)[0]["planned"] == {"uploads": [], "deletes": []}

    # Update every hostile file, then delete them all: exactly those paths change.
    for item in hostile_names.items():
        if item.kind == "file":
            (root / item.path).write_bytes(item.content + b"v2")
    assert synced.push().returncode == 0
    assert synced.remote_tree() == without(synced.local_tree(), "ignored.txt")
    for item in hostile_names.items():
        (root / item.path).unlink()
    deleted = synced.push("--json")
    assert deleted.returncode == 0, describe(deleted)
    got = synced.remote_tree()
    for item in hostile_names.items():
        assert item.path not in got, f"not deleted: {item.path!r}"
    assert {p for p, v in got.items() if v[0] != "dir"} == {
        p for p, v in without(synced.local_tree(), "ignored.txt").items() if v[0] != "dir"
    }

    # Pull brings the same names back exactly (as results).
    results = remote / "runs"
    hostile_names.lay_out(results)
    pulled = synced.pull()
    assert pulled.returncode == 0, describe(pulled)
    assert tree(root / "runs") == tree(results)
    assert _home_listing(home, remote) == home_before
    assert not (root.parent / "etc").exists() and tmp_files(root) == []

    # A remote directory swapped for a symlink out of the tree is never written through.
    _write(root / "through" / "x.txt", "x\n")
    synced.push_ok()
    victim = tmp_path / f"victim-{layout}"
    victim.mkdir()
    (remote / "through" / "x.txt").unlink()
    (remote / "through").rmdir()
    os.symlink(str(victim), remote / "through")
    _write(root / "through" / "x.txt", "x changed\n")
    _write(root / "through" / "y.txt", "new\n")
    attacked = synced.push()
    assert attacked.returncode in (1, 3), describe(attacked)
    one_error_line(attacked)
    assert list(victim.iterdir()) == [], "a push wrote through a remote symlink"
    assert os.readlink(remote / "through") == str(victim)


# ---------------------------------------------------------------- explicit paths


def test_push_paths_outside_project_refused(synced: SyncProject, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of the project\n")
    os.symlink(str(tmp_path), synced.root / "escape")
    for path in ("../outside.txt", str(outside), "/etc/passwd", ".", "pkg/../..", "escape/.."):
        done = synced.push(path)
        assert done.returncode == 2, f"{path}: {describe(done)}"
        line = one_error_line(done)
        assert "outside the project" in line or "project root" in line, line
    assert not synced.remote.exists(), "a refused push must not touch the remote"
    assert not (synced.root / ".tether").exists()
    # From a subdirectory the same rule holds.
    inner = run_cli(synced.root / "pkg", "push", "../../outside.txt")
    assert inner.returncode == 2, describe(inner)
    one_error_line(inner)
    assert not synced.remote.exists()


def test_push_explicit_paths_only_touch_those(synced: SyncProject) -> None:
    root, remote = synced.root, synced.remote
    synced.push_ok()
    original = synced.remote_tree()
    _write(root / "README.md", "# changed, not named\n")
    _write(root / "train.py", "print('changed, named from pkg/')\n")
    _write(root / "pkg" / "model.py", "# named\n")
    _write(root / "pkg" / "new.py", "# new in pkg, not named\n")
    _write(remote / "pkg" / "remote_only.py", "# remote\n")

    done = synced.push("--json", "pkg/model.py")
    assert done.returncode == 0, describe(done)
    (report,) = _json(done)
    # Parent directories may be re-asserted (mkdir -p); no other file is planned.
    files = [p for p in report["planned"]["uploads"] if not (root / p).is_dir()]
    assert files == ["pkg/model.py"], report["planned"]
    assert report["planned"]["deletes"] == [] and report["updated"] == 1
    assert (remote / "pkg" / "model.py").read_text() == "# named\n"
    assert (remote / "README.md").read_bytes() == original["README.md"][1]
    assert (remote / "train.py").read_bytes() == original["train.py"][1]
    assert not (remote / "pkg" / "new.py").exists()

    (root / "pkg" / "__init__.py").unlink()
    whole_dir = synced.push("pkg")
    assert whole_dir.returncode == 0, describe(whole_dir)
    assert not (remote / "pkg" / "__init__.py").exists()
    assert (remote / "pkg" / "new.py").read_text() == "# new in pkg, not named\n"
    assert (remote / "pkg" / "remote_only.py").read_text() == "# remote\n"
    assert (remote / "README.md").read_bytes() == original["README.md"][1]

    inner = run_cli(root / "pkg", "push", "../train.py")
    assert inner.returncode == 0, describe(inner)
    assert (remote / "train.py").read_text() == "print('changed, named from pkg/')\n"
    assert (remote / "README.md").read_bytes() == original["README.md"][1]

    # A path .gitignore hides is pushed when named, and a later full push leaves it alone.
    _write(root / "data" / "small.csv", "x\n1\n")
    _write(root / "data" / "huge.csv", "not named\n")
    named = synced.push("data/small.csv")
    assert named.returncode == 0, describe(named)
    assert (remote / "data" / "small.csv").read_text() == "x\n1\n"
    assert not (remote / "data" / "huge.csv").exists()
    full = synced.push("--json")
    assert full.returncode == 0, describe(full)
    assert (remote / "README.md").read_text() == "# changed, not named\n"
    assert (remote / "data" / "small.csv").read_text() == "x\n1\n", (
        "a full push deleted a file that .gitignore hides (ignored paths are never touched)"
    )
    assert not (remote / "data" / "huge.csv").exists()


def test_dry_run_changes_nothing(synced: SyncProject) -> None:
    root, remote = synced.root, synced.remote
    first = synced.push("--dry-run", "--json")
    assert first.returncode == 0, describe(first)
    planned = set(_json(first)[0]["planned"]["uploads"])
    assert {"README.md", "pkg/model.py", "train.py", "tether.toml"} <= planned
    assert not remote.exists(), "a dry run created the remote directory"
    state = root / ".tether" / "state"
    assert not state.exists() or not any(state.rglob("*.json"))

    synced.push_ok()
    _write(root / "README.md", "# changed\n")
    _write(root / "new.txt", "new\n")
    (root / "train.py").unlink()
    _write(remote / "runs" / "r" / "out.txt", "a result\n")
    remote_before = _stats(remote)
    remote_tree_before = synced.remote_tree()
    bases_before = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}
    local_before = without(_stats(root), ".tether")  # .tether/ holds tether's digest cache

    table = synced.push("--dry-run")
    assert table.returncode == 0, describe(table)
    for word in ("README.md", "new.txt", "train.py", "update", "create", "delete"):
        assert word in table.stdout, table.stdout
    as_json = synced.push("--dry-run", "--json")
    assert as_json.returncode == 0, describe(as_json)
    (report,) = _json(as_json)
    assert sorted(report["planned"]["uploads"]) == ["README.md", "new.txt"]
    assert report["planned"]["deletes"] == ["train.py"]
    assert (report["created"], report["updated"], report["deleted"]) == (0, 0, 0)

    pull = synced.pull("--dry-run")
    assert pull.returncode == 0, describe(pull)
    assert "runs/r/out.txt" in pull.stdout
    assert not (root / "runs" / "r").exists()

    assert _stats(remote) == remote_before
    assert synced.remote_tree() == remote_tree_before
    assert {p: p.read_bytes() for p in state.rglob("*") if p.is_file()} == bases_before
    assert without(_stats(root), ".tether") == local_before

    # The real push then does exactly what the dry run announced.
    real = synced.push("--json")
    assert real.returncode == 0, describe(real)
    (done,) = _json(real)
    assert sorted(done["planned"]["uploads"]) == ["README.md", "new.txt"]
    assert (done["created"], done["updated"], done["deleted"]) == (1, 1, 1)


# ---------------------------------------------------------------- remote path problems


def test_remote_path_is_a_file_gives_one_clear_line(make_synced: MakeSynced, sandbox: Any) -> None:
    spec, on_disk = unique_remote(sandbox, "file")
    on_disk.parent.mkdir(parents=True, exist_ok=True)
    on_disk.write_text("I am a file\n")
    synced = make_synced(remote=(spec, on_disk))
    done = synced.push()
    assert done.returncode == 1, describe(done)
    line = one_error_line(done)
    assert "not a directory" in line.lower(), line
    assert on_disk.read_text() == "I am a file\n"

    # A path beneath that file: same answer, nothing created.
    synced = make_synced(remote=(spec + "/sub/dir", on_disk / "sub" / "dir"))
    below = synced.push()
    assert below.returncode == 1, describe(below)
    assert "not a directory" in one_error_line(below).lower()
    assert on_disk.read_text() == "I am a file\n"
    pulled = synced.pull()
    assert pulled.returncode == 1, describe(pulled)
    one_error_line(pulled)


def test_permission_denied_on_remote_gives_one_clear_line(synced: SyncProject) -> None:
    """We run as root, who ignores file modes: the remote directory is made immutable
    (chattr +i, which binds root too) instead of read-only."""
    root, remote = synced.root, synced.remote
    synced.push_ok()
    before = synced.remote_tree()
    _write(root / "pkg" / "model.py", "# a change that cannot land\n")
    _write(root / "pkg" / "fresh.py", "# a new file that cannot land\n")
    if os.getuid() != 0:
        (remote / "pkg").chmod(0o555)
    else:
        locked = subprocess.run(["chattr", "+i", str(remote / "pkg")], capture_output=True)
        if locked.returncode != 0:
            pytest.skip(f"root, and this filesystem has no chattr +i: {locked.stderr!r}")
    try:
        done = synced.push()
        assert done.returncode == 1, describe(done)
        line = one_error_line(done)
        assert "permission denied" in line.lower(), line
        assert "pkg" in line
        assert synced.remote_tree() == before
        assert tmp_files(remote) == []
    finally:
        subprocess.run(["chattr", "-i", str(remote / "pkg")], capture_output=True)
        (remote / "pkg").chmod(0o755)
    # Once the directory is writable again the next push converges.
    synced.push_ok()
    assert synced.remote_tree() == _expected_remote(synced.local_tree())


def test_missing_remote_dir_is_created(make_synced: MakeSynced, sandbox: Any) -> None:
    name = f"deep-{os.urandom(4).hex()}"
    spec, on_disk = f"~/work/{name}/a/b c/d", Path(sandbox.home) / "work" / name / "a" / "b c" / "d"
    synced = make_synced(remote=(spec, on_disk))
    synced.push_ok()
    assert synced.remote_tree() == _expected_remote(synced.local_tree())

    absolute = Path(sandbox.home) / "abs" / name
    synced = make_synced(remote=(str(absolute), absolute))
    synced.push_ok()
    assert synced.remote_tree() == _expected_remote(synced.local_tree())


# ---------------------------------------------------------------- configuration errors


def test_unknown_target_and_bad_toml_give_one_line_and_change_nothing(
    synced: SyncProject,
) -> None:
    root, remote = synced.root, synced.remote
    good = (root / "tether.toml").read_text()

    def unchanged() -> None:
        assert not remote.exists(), "the remote was touched"
        assert not (root / ".tether").exists(), "local state was written"

    for command in ("push", "pull"):
        flag = "--to" if command == "push" else "--from"
        done = synced.run(command, flag, "nope")
        assert done.returncode == 2, describe(done)
        line = one_error_line(done)
        assert "unknown target 'nope'" in line and "box" in line, line
    unchanged()

    flag = "default = true"
    bad_cases = {
        'default = "yes"': ("targets.box.default", good.replace(flag, 'default = "yes"')),
        "syntax": ("not valid TOML", good + "\n[sync\n"),
        "unknown key": ("colour", good.replace(flag, flag + '\ncolour = "red"')),
        "no path": ("path", good.replace(f"path = {json.dumps(synced.remote_spec)}\n", "")),
        "wrong type": ("exclude", good.replace("exclude = []", 'exclude = "data/"')),
    }
    assert all(text != good for _, text in bad_cases.values())
    for case, (needle, text) in bad_cases.items():
        (root / "tether.toml").write_text(text)
        for command in ("push", "pull"):
            done = synced.run(command)
            assert done.returncode == 1, f"{case}: {describe(done)}"
            line = one_error_line(done)
            assert "tether.toml" in line and needle in line, f"{case}: {line}"
    unchanged()

    (root / "tether.toml").unlink()
    missing = synced.push()
    assert missing.returncode == 1, describe(missing)
    assert "tether.toml" in one_error_line(missing)
    unchanged()

    write_toml(root, "tt-no-such-host.invalid", synced.remote_spec)
    unreachable = synced.push(timeout=60)
    assert unreachable.returncode == 1, describe(unreachable)
    assert "tt-no-such-host.invalid" in one_error_line(unreachable)
    unchanged()


# ---------------------------------------------------------------- the agent


def _agents(home: Path) -> list[Path]:
    return sorted((home / ".cache" / "tether").glob("agent-*.pyz"))


def _agent_ok(path: Path) -> bool:
    wanted = path.name[len("agent-") : -len(".pyz")]
    return hashlib.sha256(path.read_bytes()).hexdigest()[: len(wanted)] == wanted


def test_agent_is_uploaded_once_and_a_corrupt_agent_is_replaced(
    synced: SyncProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether.agent.bundle import agent_zip

    # Each push starts its own agent (the sync daemon would keep one running).
    monkeypatch.setenv("TETHER_NO_DAEMON", "1")

    data, version = agent_zip()
    home = synced.home
    for old in _agents(home):
        old.unlink()
    synced.push_ok()
    (agent,) = _agents(home)
    assert agent.name == f"agent-{version}.pyz" and agent.read_bytes() == data
    first = agent.stat()

    _write(synced.root / "README.md", "# again\n")
    synced.push_ok()
    synced.pull()
    (same,) = _agents(home)
    now = same.stat()
    assert (now.st_ino, now.st_mtime_ns) == (first.st_ino, first.st_mtime_ns), "uploaded again"

    corruptions = {
        "flipped bytes": bytes(b ^ 0xFF for b in data[:64]) + data[64:],
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "garbage": b"#!/bin/sh\ntouch /tmp/pwned\n",
    }
    for case, bad in corruptions.items():
        agent.write_bytes(bad)
        _write(synced.root / "README.md", f"# {case}\n")
        done = synced.push()
        assert done.returncode == 0, f"{case}: {describe(done)}"
        assert (synced.remote / "README.md").read_text() == f"# {case}\n"
        (fixed,) = _agents(home)
        assert fixed.read_bytes() == data and _agent_ok(fixed), case
    assert not list((home / ".cache" / "tether").glob("agent-*.tmp"))


# ---------------------------------------------------------------- a link cut mid-push

CUT_FILES = 20
CUT_SIZE = 2 * 1024 * 1024


def _generation(root: Path, gen: int) -> dict[str, bytes]:
    """Write generation `gen` of the big files (content unique per file and generation)."""
    contents = {}
    for index in range(CUT_FILES):
        rel = f"big/f{index:02d}.bin"
        seed = hashlib.sha256(f"{gen}:{index}".encode()).digest()
        data = (seed * (CUT_SIZE // len(seed) + 1))[: CUT_SIZE - gen]
        _write(root / rel, data)
        contents[rel] = data
    return contents


def _remote_files(remote: Path) -> dict[str, bytes]:
    """The remote's files; walked again (bounded) when one vanishes during the walk: after a
    cut the agent, seeing its input end, removes the temp file of its unfinished write."""
    for _ in range(50):
        try:
            return {p: v[1] for p, v in tree(remote).items() if v[0] == "file"}
        except FileNotFoundError:
            time.sleep(0.1)
    return {p: v[1] for p, v in tree(remote).items() if v[0] == "file"}


def _push_cut_after(
    root: Path, proxy: Any, after_bytes: int, deadline_s: float
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Start `tether push`, cut every proxied connection once `after_bytes` more bytes went
    up (or at deadline_s); return the finished process and whether the cut came first."""
    process = subprocess.Popen(
        harness.tether_argv("push"), cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    start_bytes, started = proxy.stats.bytes_up, time.monotonic()
    cut = False
    try:
        while process.poll() is None:
            sent = proxy.stats.bytes_up - start_bytes
            if sent >= after_bytes or time.monotonic() - started > deadline_s:
                cut = proxy.cut() > 0
                break
            time.sleep(0.001)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), cut


def test_link_cut_mid_push_leaves_old_or_new_and_next_push_converges(
    make_synced: MakeSynced, proxy: Any, proxy_alias: str
) -> None:
    rng = random.Random(os.environ.get("TETHER_TEST_SEED", "cut"))
    synced = make_synced(host=proxy_alias)
    root, remote = synced.root, synced.remote
    proxy.set_delay(3)
    _generation(root, 0)
    synced.push_ok()  # the agent is on the remote, the base exists
    _generation(root, 1)
    before = proxy.stats.bytes_up
    synced.push_ok()
    full = proxy.stats.bytes_up - before  # what one push of every big file sends
    assert full > CUT_FILES * CUT_SIZE

    outcomes = []
    for gen in range(2, 12):
        new = _generation(root, gen)
        old = _remote_files(remote)
        # Mostly mid-transfer, sometimes during connect, bootstrap or scan.
        after = int(rng.uniform(-0.1, 1.0) * full) if gen % 3 else rng.randrange(0, 30_000)
        done, cut = _push_cut_after(root, proxy, max(after, 0), deadline_s=20)
        outcomes.append((gen, after, cut, done.returncode))
        if done.returncode != 0:
            assert done.returncode == 1, describe(done)
            line = one_error_line(done)
            assert proxy_alias in line, line
        # Every remote file is the old or the new content, never a mix or a prefix.
        now = _remote_files(remote)
        for rel, data in now.items():
            if ".tether-tmp." in rel:
                continue
            allowed = [content for content in (old.get(rel), new.get(rel)) if content is not None]
            assert any(data == content for content in allowed), (
                f"gen {gen}, cut after {after} bytes: {rel} is neither the old nor the new "
                f"content ({len(data)} bytes)"
            )
        for rel in old:
            assert rel in now, f"{rel} vanished in a cut push"
        # A clean push converges: remote == local, no temporary file left anywhere.
        clean = synced.push()
        assert clean.returncode == 0, f"gen {gen}, cut after {after} bytes: {describe(clean)}"
        assert synced.remote_tree() == _expected_remote(synced.local_tree()), f"gen {gen}"
        assert tmp_files(remote) == [], f"gen {gen}: temporary files left behind"
    assert sum(1 for *_, code in outcomes if code != 0) >= 5, outcomes


# ---------------------------------------------------------------- non-UTF-8 names


def test_non_utf8_file_name_gives_one_clear_line(make_synced: MakeSynced, tmp_path: Path) -> None:
    synced = make_synced()
    root = synced.root
    bad = os.path.join(os.fsencode(root), b"bad\xff.txt")
    with open(bad, "wb") as handle:
        handle.write(b"latin-1 name\n")
    done = synced.push()
    assert done.returncode == 1, describe(done)
    line = one_error_line(done)
    assert "not UTF-8" in line and "bad" in line and "exclude" in line, line
    assert not synced.remote.exists(), "nothing may be pushed when a name cannot be sent"

    # Excluded via [sync] exclude, the rest of the project goes.
    write_toml(root, synced.host, synced.remote_spec, exclude=["bad*.txt"])
    synced.push_ok()
    assert synced.remote_tree() == _expected_remote(
        {p: v for p, v in tree(root).items() if not p.startswith("bad")}
    )
    assert not any(name.startswith(b"bad") for name in os.listdir(os.fsencode(synced.remote)))

    # Such names made on the remote: a result comes back byte for byte, others stay put.
    remote = os.fsencode(synced.remote)
    os.makedirs(os.path.join(remote, b"runs"))
    for name in (b"runs/res\xff.txt", b"pkg/remote\xfe.py"):
        with open(os.path.join(remote, name), "wb") as handle:
            handle.write(name)
    pulled = synced.pull()
    assert pulled.returncode == 0, describe(pulled)
    with open(os.path.join(os.fsencode(root), b"runs/res\xff.txt"), "rb") as handle:
        assert handle.read() == b"runs/res\xff.txt"
    synced.push_ok()
    with open(os.path.join(remote, b"pkg/remote\xfe.py"), "rb") as handle:
        assert handle.read() == b"pkg/remote\xfe.py"

    # Outside git (tether's own walk) the same name is the same one clear line.
    plain = tmp_path / "plain-bad"
    plain.mkdir()
    _write(plain / "ok.txt", "fine\n")
    with open(os.path.join(os.fsencode(plain), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"x")
    other = make_synced(root=plain)
    refused = other.push()
    assert refused.returncode == 1, describe(refused)
    assert "not UTF-8" in one_error_line(refused)
    assert not other.remote.exists()
