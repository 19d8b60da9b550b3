"""The sync daemon's kept local manifest (sync/kept.py, real inotify and git) is exactly a
fresh scan (scan_local + digests) after every random edit of a git work tree: files,
directories made and filled at once, renames, .gitignore files (nested too), [sync]
exclude/include, editors' temporary files, symlinks, modes."""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tether.agent import inotify
from tether.agent.fsops import DigestCache
from tether.core.manifest import Manifest
from tether.sync.kept import KeptScans
from tether.sync.local import Scope, fill_local_digests, scan_local

pytestmark = pytest.mark.skipif(
    inotify.fs_type("/tmp") not in inotify.LOCAL_FS, reason="no local file system to watch"
)
SCOPE = Scope.of(["secret*", "data/"], ["data/keep.csv"], ["outputs/"])


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        check=True,
        capture_output=True,
    )


def make(root: Path) -> None:
    for index in range(40):
        path = root / f"d{index % 4}" / f"e{index % 3}" / f"f{index}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"x = {index}\n")
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    (root / "data").mkdir()
    (root / "data" / "keep.csv").write_text("1,2\n")
    (root / "data" / "other.csv").write_text("3,4\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "start")


def mutate(root: Path, rng: random.Random, step: int) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts)
    dirs = sorted(p for p in root.rglob("*") if p.is_dir() and ".git" not in p.parts)
    folder = rng.choice([root, *dirs])
    victim = rng.choice(files)
    action = rng.choice(
        ["create", "edit", "delete", "mkfill", "rename-dir", "rename-file", "gitignore",
         "nested-gitignore", "temp", "log", "build", "symlink", "chmod", "file-to-dir",
         "rmtree", "secret", "include", "replace"]
    )  # fmt: skip
    if action == "create":
        (folder / f"new{step}.py").write_text("new")
    elif action == "edit":
        victim.write_bytes(victim.read_bytes() + b"more")
    elif action == "delete":
        victim.unlink()
    elif action == "mkfill":
        (folder / f"m{step}" / "sub").mkdir(parents=True)
        (folder / f"m{step}" / "sub" / "f.py").write_text("filled at once")
        (folder / f"m{step}" / "g.py").write_text("and here")
    elif action == "rename-dir" and folder != root:
        folder.rename(folder.with_name(f"moved{step}"))
    elif action == "rename-file":
        victim.rename(folder / f"renamed{step}.py")
    elif action == "gitignore":
        with (root / ".gitignore").open("a") as handle:
            handle.write(rng.choice(["f1*.py\n", "!f12.py\n", "e1/\n", "new*\n"]))
    elif action == "nested-gitignore":
        (folder / ".gitignore").write_text(rng.choice(["*.py\n", "g.py\n", ""]))
    elif action == "temp":
        (folder / f".f{step}.py.swp").write_text("vim")
    elif action == "log":
        (folder / f"run{step}.log").write_text("ignored")
    elif action == "build":
        (root / "build" / f"b{step}").mkdir(parents=True, exist_ok=True)
        (root / "build" / f"b{step}" / "o.py").write_text("ignored dir")
    elif action == "symlink":
        (folder / f"link{step}").symlink_to(f"target{step}")
    elif action == "chmod":
        victim.chmod(0o755 if victim.stat().st_mode & 0o100 == 0 else 0o644)
    elif action == "file-to-dir":
        victim.unlink()
        victim.mkdir()
        (victim / "inside.py").write_text("now a directory")
    elif action == "rmtree" and folder != root:
        for path in sorted(folder.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        folder.rmdir()
    elif action == "secret":
        (folder / f"secret{step}.py").write_text("excluded by [sync]")
    elif action == "include":
        (root / "data" / "keep.csv").write_text(f"{step}\n")
        (root / "data" / "other.csv").write_text(f"{step}\n")
    elif action == "replace":
        tmp = folder / f"tmp{step}"
        tmp.write_text(f"replacement {step}")
        os.replace(tmp, victim)
    if rng.random() < 0.1:
        git(root, "add", "-A")
    return f"{action} {victim.relative_to(root)} in {folder.relative_to(root)}"


def project(tmp_path: Path) -> tuple[Path, DigestCache, Callable[[], Manifest]]:
    """A made project, its digest cache and a fresh full scan of it."""
    root = tmp_path / "proj"
    root.mkdir()
    make(root)
    cache = DigestCache(str(tmp_path / "cache"), str(root))

    def fresh() -> Manifest:
        return fill_local_digests(root, scan_local(root, SCOPE), cache)

    return root, cache, fresh


def test_the_kept_manifest_is_a_fresh_scan_after_every_edit(tmp_path: Path) -> None:
    root, cache, fresh = project(tmp_path)
    scans = KeptScans()

    full = []

    def counted() -> Manifest:
        full.append(1)
        return fresh()

    rng = random.Random(26)
    steps = 120
    try:
        assert scans.manifest(root, SCOPE, counted, lambda: cache) == fresh()
        for step in range(steps):
            scans.release()  # as the daemon does after each push: the last one is patched
            what = [mutate(root, rng, step) for _ in range(rng.randrange(0, 4))]
            assert scans.manifest(root, SCOPE, counted, lambda: cache) == fresh(), (step, what)
    finally:
        scans.close()
    assert len(full) < steps // 2, "the kept manifest was hardly ever used"


def test_a_changed_gitignore_re_lists_everything_beside_and_under_it(tmp_path: Path) -> None:
    root, cache, fresh = project(tmp_path)
    scans = KeptScans()

    def kept() -> Manifest:
        return scans.manifest(root, SCOPE, fresh, lambda: cache)

    try:
        for path in ("d1/u.py", "d1/e0/v.py", "w.py", "d2/x.py"):
            (root / path).write_text("untracked")
        assert kept() == fresh()
        (root / "d1" / ".gitignore").write_text("*.py\n")
        assert kept() == fresh()
        assert "d1/u.py" not in kept() and "d1/e0/v.py" not in kept()
        (root / "d1" / ".gitignore").write_text("")
        with (root / ".gitignore").open("a") as handle:
            handle.write("x.py\n")
        assert kept() == fresh()
        assert "d1/e0/v.py" in kept() and "d2/x.py" not in kept()
    finally:
        scans.close()


def test_the_idle_daemon_drains_a_burst_so_the_next_push_scans_nothing(tmp_path: Path) -> None:
    # Three kernel queues' worth of events while no command runs (a long `git checkout`):
    # the daemon's loop reads them as they come, so the next push re-scans two files.
    from tether.cli.daemon import Daemon

    root = tmp_path / "proj"
    root.mkdir()
    make(root)
    cache = DigestCache(str(tmp_path / "cache"), str(root))
    daemon = Daemon(str(tmp_path / "d.sock"), "key")
    scans = daemon.scans = KeptScans()
    full: list[int] = []

    def fresh() -> Manifest:
        return fill_local_digests(root, scan_local(root, SCOPE), cache)

    def counted() -> Manifest:
        full.append(1)
        return fresh()

    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    files = [root / "d0" / "e0" / "f0.py", root / "d1" / "e1" / "f1.py"]

    async def idle_burst() -> Manifest:
        daemon.loop = asyncio.get_running_loop()
        scans.manifest(root, SCOPE, counted, lambda: cache)
        daemon.arm()
        handles = [os.open(path, os.O_WRONLY | os.O_APPEND) for path in files]
        try:
            for _ in range(12):  # a quarter of the queue at a time, the loop idle between
                for _ in range(limit // 8):
                    for handle in handles:
                        os.write(handle, b"#")
                await asyncio.sleep(0.1)
        finally:
            for handle in handles:
                os.close(handle)
        await asyncio.sleep(0.1)
        daemon.disarm()
        return scans.manifest(root, SCOPE, counted, lambda: cache)

    try:
        assert asyncio.run(idle_burst()) == fresh()
    finally:
        scans.close()
    assert full == [1], "the burst overflowed the queue: a full scan"


def git_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a `git` first on PATH that notes each call's arguments in a file, then runs git."""
    real = shutil.which("git")
    assert real is not None
    shim = tmp_path / "shim"
    shim.mkdir()
    log = tmp_path / "git.log"
    (shim / "git").write_text(
        f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"\n'
    )
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    return log


def test_an_edit_of_listed_files_asks_git_nothing_a_changed_gitignore_asks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, cache, fresh = project(tmp_path)
    log = git_log(tmp_path, monkeypatch)
    scans = KeptScans()

    def kept() -> tuple[Manifest, list[str]]:
        before = log.read_text().splitlines() if log.exists() else []
        manifest = scans.manifest(root, SCOPE, fresh, lambda: cache)
        after = log.read_text().splitlines()
        return manifest, [line for line in after[len(before) :] if "ls-files" in line]

    try:
        (root / "d1" / "u.py").write_text("untracked")
        assert kept()[0] == fresh()
        # A tracked and an untracked file edited: git's verdict on them cannot have changed.
        for path in ("d0/e0/f0.py", "d1/u.py"):
            with (root / path).open("a") as handle:
                handle.write("# edited\n")
        manifest, asked = kept()
        assert manifest == fresh()
        assert asked == [], "git listed again files the kept manifest holds"
        # The same edit beside a .gitignore that now hides the file: git decides again.
        (root / "d1" / ".gitignore").write_text("u.py\n")
        (root / "d1" / "u.py").write_text("edited again")
        manifest, asked = kept()
        assert manifest == fresh() and "d1/u.py" not in manifest and asked
        # A listed file that became a directory: git lists what it holds.
        victim = root / "d0" / "e0" / "f0.py"
        victim.unlink()
        victim.mkdir()
        (victim / "inside.py").write_text("now a directory")
        manifest, asked = kept()
        assert manifest == fresh() and "d0/e0/f0.py/inside.py" in manifest and asked
    finally:
        scans.close()


def test_a_manifest_the_command_under_way_holds_never_changes(tmp_path: Path) -> None:
    """After release() the next manifest is the last one patched; before it, a copy."""
    root, cache, fresh = project(tmp_path)
    scans = KeptScans()

    def kept() -> Manifest:
        return scans.manifest(root, SCOPE, fresh, lambda: cache)

    try:
        kept()
        scans.release()
        held = kept()  # a push's first target
        before = dict(held)
        (root / "d0" / "e0" / "f0.py").write_text("changed while held")
        (root / "d1" / "e1" / "f1.py").unlink()
        other = kept()  # the same push's second target
        assert held == before and other is not held and other == fresh()
        scans.release()
        (root / "d2" / "e2" / "f2.py").write_text("changed after")
        again = kept()
        assert again is other and again == fresh()  # patched: no copy of the tree
    finally:
        scans.close()
