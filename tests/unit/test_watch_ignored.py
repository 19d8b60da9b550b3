"""watch's ignore verdicts: git's own answer, without a `git` process where none can ignore.

Each test runs the real git (through a logging shim on PATH where it counts the calls) on
a real repository, with every source git reads ignore patterns from: .gitignore files,
info/exclude, core.excludesFile (the global config's and git's default), tracked files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tether.sync import events, ignored
from tether.sync.local import Scope
from tether.sync.session import Pair

NO_RULES = Scope.of((), (), ())


def pair(root: Path) -> Pair:
    return Pair("box", root, "~/p", NO_RULES)


def write(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def git_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `git` first on PATH that logs its arguments (one line a call) and runs the real git."""
    real = shutil.which("git")
    assert real is not None
    shim = tmp_path / "shim"
    shim.mkdir()
    log = tmp_path / "git-calls.log"
    script = shim / "git"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.fixture
def git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own global git config (and XDG config dir), empty at first."""
    config = tmp_path / "gitconfig"
    config.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return config


def check_ignore_calls(log: Path) -> list[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if "check-ignore" in line]


def by_git(root: Path, rels: list[str]) -> list[str]:
    """What a batch naming rels selects when git is asked about every path (as before)."""
    return sorted(set(rels) - events.git_ignored(root, rels))


def test_a_save_no_ignore_pattern_reaches_asks_git_nothing(
    tmp_path: Path, git_calls: Path, git_config: Path
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    write(root, "pkg/model.py", "pkg/run.log")
    watched = events.EventFilter(pair(root))
    git_calls.unlink()  # where the sources are was learnt with the filter: the first save
    assert watched.select(["pkg/model.py"]) == ["pkg/model.py"]  # runs no git at all
    assert watched.select(["pkg/model.py"]) == ["pkg/model.py"]
    assert not git_calls.exists()
    # A path a pattern reaches is still git's to decide.
    assert watched.select(["pkg/run.log", "pkg/model.py"]) == ["pkg/model.py"]
    assert len(check_ignore_calls(git_calls)) == 1


def test_the_filter_agrees_with_git_on_every_source(tmp_path: Path, git_config: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitignore").write_text("*.log\nbuild/\n!keep.log\nvendor/*\n!vendor/ours.py\n")
    write(root, "sub/.gitignore")
    (root / "sub" / ".gitignore").write_text("secret*\n/local.cfg\n")
    (root / ".git" / "info" / "exclude").write_text("notes.md\n")
    global_ignore = tmp_path / "global-ignore"
    global_ignore.write_text("*.swapfile\n")
    git_config.write_text(f"[core]\n\texcludesFile = {global_ignore}\n")
    (tmp_path / "xdg" / "git").mkdir(parents=True)
    (tmp_path / "xdg" / "git" / "ignore").write_text("never-read-when-set\n")
    rels = [
        "a.py", "x.log", "keep.log", "build/out.o", "build/keep.log", "vendor/lib.py",
        "vendor/ours.py", "sub/secret.txt", "sub/ok.txt", "sub/local.cfg", "sub/deep/local.cfg",
        "sub/deeper/secret2", "notes.md", "sub/notes.md", "x.swapfile", "never-read-when-set",
        "tracked.log", "pkg/n/m.py",
    ]  # fmt: skip
    write(root, *rels)
    git(root, "add", "-f", "tracked.log")  # tracked: never ignored, though a pattern matches
    selected = events.EventFilter(pair(root)).select(rels)
    assert selected == by_git(root, rels)
    assert {"a.py", "keep.log", "tracked.log", "sub/deep/local.cfg"} <= set(selected)
    # Without core.excludesFile, git's default file (under XDG_CONFIG_HOME) is read.
    git_config.write_text("")
    selected = events.EventFilter(pair(root)).select(rels)
    assert selected == by_git(root, rels) and "never-read-when-set" not in selected


def test_a_root_below_the_top_of_the_work_tree_gets_the_patterns_above_it(
    tmp_path: Path, git_config: Path
) -> None:
    top = tmp_path / "repo"
    root = top / "project"
    root.mkdir(parents=True)
    git(top, "init", "-q")
    (top / ".gitignore").write_text("*.tmp\nproject/cache/\n")
    rels = ["a.py", "b.tmp", "cache/x.py", "pkg/c.tmp", "pkg/d.py"]
    write(root, *rels)
    selected = events.EventFilter(pair(root)).select(rels)
    assert selected == by_git(root, rels) == ["a.py", "pkg/d.py"]


def test_changed_ignore_rules_count_from_the_next_batch(
    tmp_path: Path, git_calls: Path, git_config: Path
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q")
    write(root, "a.py", "b.py", "c.py")
    watched = events.EventFilter(pair(root))
    assert watched.select(["a.py", "b.py", "c.py"]) == ["a.py", "b.py", "c.py"]
    (root / ".gitignore").write_text("a.py\n")
    assert watched.select(["a.py", "b.py", "c.py"]) == ["b.py", "c.py"]
    (root / ".git" / "info" / "exclude").write_text("b.py\n")
    assert watched.select(["a.py", "b.py", "c.py"]) == ["c.py"]
    global_ignore = tmp_path / "global-ignore"
    global_ignore.write_text("c.py\n")
    git_config.write_text(f"[core]\n\texcludesFile = {global_ignore}\n")
    assert watched.select(["a.py", "b.py", "c.py"]) == []


@pytest.mark.parametrize(
    "text",
    [b"a.py\r\n", b"\xef\xbb\xbfa.py\n", b"a.p\xffy\n", b"a.py\x0c\n"],
    ids=["carriage-return", "byte-order-mark", "not-utf8", "form-feed"],
)
def test_an_ignore_file_not_read_as_git_reads_it_leaves_the_verdict_to_git(
    tmp_path: Path, git_calls: Path, git_config: Path, text: bytes
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitignore").write_bytes(text)
    rels = ["a.py", "b.py"]
    write(root, *rels)
    assert events.EventFilter(pair(root)).select(rels) == by_git(root, rels)
    assert len(check_ignore_calls(git_calls)) == 2  # the filter's and by_git's


def test_ignore_case_leaves_the_verdict_to_git(
    tmp_path: Path, git_calls: Path, git_config: Path
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "core.ignoreCase", "true")
    (root / ".gitignore").write_text("README\n")
    write(root, "readme", "a.py")
    assert events.EventFilter(pair(root)).select(["readme", "a.py"]) == by_git(
        root, ["readme", "a.py"]
    )
    assert len(check_ignore_calls(git_calls)) == 2


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_gitignore_that_is_no_plain_file_is_never_opened_and_left_to_git(
    tmp_path: Path, git_config: Path, kind: str
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q")
    write(root, "sub/a.py", "sub/b.log", "elsewhere.log")
    (tmp_path / "outside").write_text("*.log\n")
    if kind == "fifo":
        os.mkfifo(root / "sub" / ".gitignore")  # opening it to read would wait for a writer
    else:
        os.symlink(tmp_path / "outside", root / "sub" / ".gitignore")  # git does not follow
    asked: list[str] = []

    def ask(where: Path, rels: list[str]) -> set[str]:
        asked.extend(rels)
        return set()

    answers: list[set[str]] = []
    verdicts = ignored.GitIgnored(root, ask)
    worker = threading.Thread(target=lambda: answers.append(verdicts.ignored(["sub/a.py"])))
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader, then fail
        with open(root / "sub" / ".gitignore", "w"):
            pass
        worker.join(10)
        pytest.fail("the filter waited on sub/.gitignore")
    assert answers == [set()] and asked == ["sub/a.py"]
