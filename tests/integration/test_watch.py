"""`tether watch` against real sandboxes: saves, deletes, ignores, conflicts, cuts, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import env as harness
from tests.integration.conftest import SyncProject, tmp_files
from tether.hosts.processes import end_process

pytestmark = pytest.mark.integration

WITHIN_S = 10.0


class Watch:
    """`tether watch ARGS` running in a project; stderr collected line by line."""

    def __init__(self, root: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            harness.tether_argv("watch", *args),
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, count: int = 1, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while self.text.count(needle) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"no {needle!r} from tether watch:\n{self.text}")
            time.sleep(0.02)

    def stop(self) -> int:
        code = end_process(self.process, signal.SIGINT, grace_s=30)
        self._reader.join(5)
        return code


@pytest.fixture
def watching() -> Iterator[Callable[..., Watch]]:
    """start(project_root, *args) -> a Watch that has done its first full sync."""
    started: list[Watch] = []

    def start(root: Path, *args: str, ready: int = 1) -> Watch:
        watch = Watch(root, *args)
        started.append(watch)
        watch.wait_for(": watching", count=ready)
        return watch

    yield start
    for watch in started:
        watch.stop()


def until(check: Callable[[], Any], what: str, within: float = WITHIN_S) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.01)


def content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def test_save_delete_and_gitignore(synced: SyncProject, watching: Callable[..., Watch]) -> None:
    watch = watching(synced.root)
    assert content(synced.remote / "train.py") == (synced.root / "train.py").read_bytes()
    (synced.root / "pkg" / "new.py").write_text("X = 1\n")
    until(lambda: content(synced.remote / "pkg" / "new.py") == b"X = 1\n", "a new file")
    (synced.root / "pkg" / "new.py").write_text("X = 2\n")
    until(lambda: content(synced.remote / "pkg" / "new.py") == b"X = 2\n", "an update")
    (synced.root / "pkg" / "new.py").unlink()
    until(lambda: not (synced.remote / "pkg" / "new.py").exists(), "a delete")
    # A new directory with files, and ignored files next to it.
    (synced.root / "data").mkdir()
    (synced.root / "data" / "big.bin").write_bytes(b"0" * 100)
    (synced.root / "model.ckpt").write_bytes(b"ckpt")
    (synced.root / "lib" / "deep").mkdir(parents=True)
    (synced.root / "lib" / "deep" / "m.py").write_text("M = 1\n")
    until(lambda: content(synced.remote / "lib" / "deep" / "m.py") == b"M = 1\n", "a new dir")
    time.sleep(0.3)
    assert not (synced.remote / "data").exists()
    assert not (synced.remote / "model.ckpt").exists()
    # A removed directory goes too (everything in it was pushed by tether).
    (synced.root / "lib" / "deep" / "m.py").unlink()
    (synced.root / "lib" / "deep").rmdir()
    until(lambda: not (synced.remote / "lib" / "deep" / "m.py").exists(), "a removed dir")
    assert watch.stop() in (0, 130), watch.text


def test_ignore_rules_changed_while_watching_count_from_the_next_save(
    synced: SyncProject, watching: Callable[..., Watch]
) -> None:
    """Saves are judged by the .gitignore and info/exclude as they are at each save."""
    watch = watching(synced.root)
    secret, notes = synced.root / "pkg" / "secret.env", synced.root / "notes.md"
    with (synced.root / ".gitignore").open("a") as gitignore:
        gitignore.write("secret.env\n")
    (synced.root / ".git" / "info" / "exclude").write_text("notes.md\n")
    until(lambda: b"secret.env" in (content(synced.remote / ".gitignore") or b""), "the .gitignore")
    secret.write_text("TOKEN=1\n")
    notes.write_text("mine\n")
    (synced.root / "pkg" / "seen.py").write_text("S = 1\n")
    until(lambda: content(synced.remote / "pkg" / "seen.py") == b"S = 1\n", "a plain save")
    time.sleep(0.3)
    assert not (synced.remote / "pkg" / "secret.env").exists()
    assert not (synced.remote / "notes.md").exists()
    # The pattern dropped: the next save of the file goes.
    (synced.root / ".git" / "info" / "exclude").write_text("")
    notes.write_text("shared\n")
    until(lambda: content(synced.remote / "notes.md") == b"shared\n", "a file no longer ignored")
    assert not (synced.remote / "pkg" / "secret.env").exists()
    assert watch.stop() in (0, 130), watch.text


def test_editor_save_dance_is_one_update(
    synced: SyncProject, watching: Callable[..., Watch]
) -> None:
    watch = watching(synced.root)
    target = synced.root / "pkg" / "model.py"
    for round_ in range(3):
        tmp = synced.root / "pkg" / f".model.py.swp{round_}"
        tmp.write_text(f"def forward(x):\n    return {round_} * x\n")
        backup = synced.root / "pkg" / "model.py~"
        os.link(target, backup)
        os.replace(tmp, target)
        backup.unlink()
        want = f"def forward(x):\n    return {round_} * x\n".encode()
        remote_file = synced.remote / "pkg" / "model.py"
        until(lambda: content(remote_file) == want, "the save")  # noqa: B023
    time.sleep(0.3)
    names = sorted(os.listdir(synced.remote / "pkg"))
    assert names == ["__init__.py", "model.py"], names
    assert tmp_files(synced.remote) == []
    assert watch.stop() in (0, 130), watch.text


def test_remote_edit_then_local_edit_is_a_conflict(
    synced: SyncProject, watching: Callable[..., Watch]
) -> None:
    watch = watching(synced.root)
    remote_file = synced.remote / "README.md"
    remote_file.write_text("# edited on the remote\n")
    os.utime(remote_file, ns=(time.time_ns(), time.time_ns() - 5_000_000_000))
    (synced.root / "README.md").write_text("# edited here\n")
    watch.wait_for("conflict: README.md", within=WITHIN_S)
    (synced.root / "pkg" / "other.py").write_text("O = 1\n")
    until(lambda: (synced.remote / "pkg" / "other.py").exists(), "a later save")
    assert remote_file.read_text() == "# edited on the remote\n"
    assert "1 conflict(s)" in watch.text or "conflict: README.md" in watch.text
    assert watch.stop() in (0, 130), watch.text
    assert remote_file.read_text() == "# edited on the remote\n"


def test_burst_of_500_files(synced: SyncProject, watching: Callable[..., Watch]) -> None:
    watch = watching(synced.root)
    folder = synced.root / "gen"
    folder.mkdir()
    for index in range(500):
        (folder / f"f{index:03d}.py").write_text(f"N = {index}\n")
    remote = synced.remote / "gen"

    def all_there() -> bool:
        return remote.is_dir() and len(os.listdir(remote)) == 500

    until(all_there, "500 files on the remote", within=30)
    assert content(remote / "f499.py") == b"N = 499\n"
    pushes = watch.text.count("pushed:")
    assert pushes < 50, watch.text  # coalesced: a few batches (load may split), not 500
    assert watch.stop() in (0, 130), watch.text


def test_cut_link_then_reconnect_pushes_what_changed(
    make_synced: Callable[..., SyncProject],
    proxy: Any,
    proxy_alias: str,
    watching: Callable[..., Watch],
) -> None:
    project = make_synced(proxy_alias)
    watch = watching(project.root)
    proxy.refuse(True)
    proxy.cut()
    watch.wait_for("reconnecting (attempt 1)", within=WITHIN_S)
    (project.root / "while_cut.py").write_text("CUT = 1\n")
    (project.root / "README.md").write_text("# changed while cut\n")
    time.sleep(1.0)
    assert not (project.remote / "while_cut.py").exists()
    proxy.refuse(False)
    until(lambda: content(project.remote / "while_cut.py") == b"CUT = 1\n", "after reconnect", 20)
    until(lambda: content(project.remote / "README.md") == b"# changed while cut\n", "README")
    watch.wait_for("reconnected")
    assert "conflict" not in watch.text, watch.text
    (project.root / "after.py").write_text("A = 1\n")
    until(lambda: (project.remote / "after.py").exists(), "a save after the reconnect")
    assert watch.stop() in (0, 130), watch.text
    assert tmp_files(project.remote) == []


def test_sigint_exits_cleanly_mid_burst(
    synced: SyncProject, watching: Callable[..., Watch]
) -> None:
    watch = watching(synced.root)
    big = synced.root / "blobs"
    big.mkdir()
    for index in range(20):
        (big / f"b{index}.bin").write_bytes(os.urandom(1 << 20))
    time.sleep(0.05)
    code = watch.stop()
    assert code in (0, 130), watch.text
    assert "Traceback" not in watch.text, watch.text
    assert tmp_files(synced.remote) == []
    assert tmp_files(synced.root) == []


def test_pull_brings_results_back(synced: SyncProject, watching: Callable[..., Watch]) -> None:
    watch = watching(synced.root, "--pull")
    produced = synced.remote / "outputs" / "run1" / "metrics.json"
    produced.parent.mkdir(parents=True)
    produced.write_text('{"loss": 0.1}\n')
    local = synced.root / "outputs" / "run1" / "metrics.json"
    until(lambda: content(local) == b'{"loss": 0.1}\n', "a pulled result")
    # A result never goes back up, and a local edit is never clobbered by the next pull.
    local.write_text("mine\n")
    produced.write_text('{"loss": 0.05}\n')
    watch.wait_for("conflict: outputs/run1/metrics.json", within=WITHIN_S)
    assert local.read_text() == "mine\n"
    assert watch.stop() in (0, 130), watch.text


def test_two_targets_and_a_mapping(
    make_synced: Callable[..., SyncProject],
    sandbox2: Any,
    tmp_path: Path,
    watching: Callable[..., Watch],
) -> None:
    from tests.integration.conftest import unique_remote

    shared = tmp_path / "shared-lib"
    shared.mkdir()
    (shared / "util.py").write_text("U = 1\n")
    mapped_spec, mapped_disk = unique_remote(sandbox2, "shared")
    spec2, disk2 = unique_remote(sandbox2)
    extra = (
        f'\n[targets.two]\nhost = "{sandbox2.name}"\npath = "{spec2}"\ndefault = true\n'
        f'\n[[targets.two.mappings]]\nlocal = "{shared}"\nremote = "{mapped_spec}"\n'
    )
    project = make_synced(extra_toml=extra)
    watch = watching(project.root, ready=2)
    assert content(mapped_disk / "util.py") == b"U = 1\n"
    (project.root / "both.py").write_text("B = 1\n")
    (shared / "util.py").write_text("U = 2\n")
    until(lambda: content(project.remote / "both.py") == b"B = 1\n", "target one")
    until(lambda: content(disk2 / "both.py") == b"B = 1\n", "target two")
    until(lambda: content(mapped_disk / "util.py") == b"U = 2\n", "the mapping")
    assert not (project.remote / "util.py").exists()
    assert watch.stop() in (0, 130), watch.text
