"""The pure parts of `tether watch`: routing, coalescing and filtering of file events."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness.fsevents import overflow_event_queue
from tether.sync import events, filewatch, watch
from tether.sync.local import Scope, scan_local
from tether.sync.session import Pair

SCOPE = Scope.of(["*.ckpt", "data/"], ["data/keep.txt"], ["outputs/"])


def pair(root: Path, scope: Scope = SCOPE) -> Pair:
    return Pair("box", root, "~/p", scope, ("outputs/",))


def write(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


def git_init(root: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, capture_output=True)


def test_relative_and_route(tmp_path: Path) -> None:
    main, mapped = tmp_path / "proj", tmp_path / "lib"
    pairs = [pair(main), Pair("box", mapped, "~/lib", Scope.of((), (), ()))]
    assert events.relative(main, str(main / "a" / "b.py")) == "a/b.py"
    assert events.relative(main, str(main)) is None
    assert events.relative(main, str(tmp_path / "proj2" / "x")) is None
    routed = events.route(
        [
            str(main / "a.py"),
            str(main / ".git" / "index"),
            str(main / ".tether" / "base.json"),
            str(main / "outputs" / "m.json"),
            str(main / "x.ckpt"),
            str(mapped / "u.py"),
            str(tmp_path / "elsewhere.py"),
        ],
        pairs,
    )
    assert routed == {0: {"a.py"}, 1: {"u.py"}}


def test_minimal_drops_paths_beneath_others() -> None:
    assert events.minimal(["a/b", "a", "ab", "c/d/e", "c/d", "a/b/c"]) == ["a", "ab", "c/d"]


def test_pending_coalesces_and_keeps_the_first_time() -> None:
    async def go() -> None:
        pending = watch.Pending()
        pending.add({}, 1.0)
        assert not pending.wake.is_set() and pending.since is None
        pending.add({0: {"a", "b"}}, 2.0)
        pending.add({0: {"b", "c"}, 1: {"x"}}, 3.0)
        assert len(pending) == 4 and pending.wake.is_set()
        taken, since = pending.take()
        assert taken == {0: {"a", "b", "c"}, 1: {"x"}} and since == 2.0
        assert len(pending) == 0 and not pending.wake.is_set() and pending.since is None

    asyncio.run(go())


def test_split_and_walk(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "new/x.py", "new/sub/y.py", "new/data/z.bin", "new/w.ckpt")
    os.symlink("a.py", tmp_path / "link")
    os.symlink("new", tmp_path / "new" / "dirlink")
    present, dirs, gone = events.split(tmp_path, ["a.py", "link", "new", "gone.py"])
    assert (present, dirs, gone) == (["a.py", "link"], ["new"], ["gone.py"])
    walked = sorted(events.walk(tmp_path, "new", SCOPE))
    assert walked == ["new/dirlink", "new/sub/y.py", "new/x.py"]


@pytest.mark.parametrize("use_git", [False, True])
def test_filter_agrees_with_a_full_scan(tmp_path: Path, use_git: bool) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    if use_git:
        git_init(root)
    (root / ".gitignore").write_text("build/\n*.log\n!keep.log\n")
    write(root, "sub/.gitignore")
    (root / "sub" / ".gitignore").write_text("secret*\n")
    rels = [
        "a.py",
        "x.log",
        "keep.log",
        "build/out.o",
        "sub/secret.txt",
        "sub/ok.txt",
        "sub/deeper/secret2",
        "model.ckpt",
        "data/big.bin",
        "outputs/m.json",
        "pkg/n/m.py",
    ]
    write(root, *rels)
    full = {path for path in scan_local(root, SCOPE) if (root / path).is_file()}
    selected = events.EventFilter(pair(root)).select([*rels, ".gitignore", "sub/.gitignore"])
    assert set(selected) == full
    # New directories named by one event are walked with the same rules.
    assert set(events.EventFilter(pair(root)).select(["sub", "build", "pkg"])) == {
        p for p in full if p.startswith(("sub/", "pkg/"))
    }


def test_filter_keeps_vanished_paths_and_the_saved_file(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    git_init(root)
    (root / ".gitignore").write_text("*.log\n")
    write(root, "pkg/model.py")
    # An editor's save: temp written, renamed over, backup removed; all in one batch.
    selected = events.EventFilter(pair(root)).select(
        ["pkg/.model.py.swp", "pkg/model.py", "pkg/model.py~", "gone.log", "data/x"]
    )
    # The editor's temp and backup are never pushed (so never need deleting either).
    assert selected == ["gone.log", "pkg/model.py"]


@pytest.mark.parametrize(
    "name",
    ["a/.x.py.swp", "x.py.swo", "x.py~", "4913", "#x.py#", ".#x.py", "x.py___jb_tmp___",
     "x.py___jb_old___", "x.py.tmp.1234"],
)  # fmt: skip
def test_editor_temp_files_are_never_pushed_unless_included(name: str) -> None:
    assert Scope.of((), (), ()).excluded(name)
    pattern = "\\" + name if name.startswith("#") else name  # as .gitignore spells it
    assert not Scope.of((), [pattern], ()).excluded(name)
    assert not Scope.of((), (), ()).excluded("x.py")


def test_git_include_reaches_ignored_paths(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    git_init(root)
    (root / ".gitignore").write_text("data/\n")
    scope = Scope.of((), ["data/keep.txt"], ())
    write(root, "data/keep.txt", "data/other.txt")
    assert events.EventFilter(pair(root, scope)).select(["data"]) == ["data/keep.txt"]


def test_status_line_shows_the_state() -> None:
    state = watch.TargetState("gpu", state="watching", queue=3, pushed=5)
    state.last_sync = time.time()
    state.latency_s = 0.012
    state.conflicts = {"a.py": "changed"}
    line = state.line()
    assert line.startswith("gpu: watching | last sync ")
    assert "(12 ms)" in line and "queue 3" in line and "1 conflict(s): a.py" in line


@pytest.mark.parametrize("backend", ["inotify", "watchfiles"])
def test_a_burst_of_writes_is_a_few_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    if backend == "watchfiles":  # what a root inotify cannot promise is watched by
        monkeypatch.setattr(filewatch, "_started", lambda roots: None)
    batches: list[list[str]] = []
    whole: list[bool] = []

    def dispatch(paths: list[str], everything: bool) -> None:
        batches.append(paths)
        whole.append(everything)

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(filewatch.watch_paths([tmp_path], dispatch, stop))
        await asyncio.sleep(0.3)
        (tmp_path / "sub").mkdir()
        for index in range(300):
            (tmp_path / f"f{index}").write_text("x")
        await asyncio.sleep(0.5)
        (tmp_path / "sub" / "deep").write_text("x")  # in a directory made while watched
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    seen = {os.path.basename(path) for batch in batches for path in batch}
    assert seen >= {f"f{index}" for index in range(300)} | {"sub", "deep"}
    assert len(batches) <= 6, [len(batch) for batch in batches]
    assert not any(whole)


def test_lost_events_push_everything_and_watching_goes_on(tmp_path: Path) -> None:
    """An overflowed inotify queue: dispatch(everything) once, then watchfiles takes over."""
    calls: list[tuple[list[str], bool]] = []

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            filewatch.watch_paths([tmp_path], lambda p, e: calls.append((p, e)), stop)
        )
        await asyncio.sleep(0.3)
        # The loop reads nothing while this runs (no await): the kernel's queue overflows.
        overflow_event_queue(tmp_path / "a", tmp_path / "b")
        await asyncio.sleep(0.8)
        (tmp_path / "later").write_text("seen after the overflow")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
            path.endswith("later") for paths, _ in calls for path in paths
        ):
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    assert [everything for _, everything in calls].count(True) == 1
    assert any(path.endswith("later") for paths, _ in calls for path in paths)
