"""Fixtures and helpers for the sync tests: a configured project against a real sandbox.

  synced      function: a SyncProject — the harness's `project` git repository with a
              tether.toml whose only target "box" is tt-box1 at a unique remote directory.
  make_synced function: factory make(host=None, root=None, remote=None, results=...,
              exclude=..., extra_toml="") -> SyncProject (a new project and remote dir
              per call) for tests that need another host, layout or remote path.

The remote side is read straight from disk: the sandbox's home is a local directory, so
`SyncProject.remote` is the remote project directory as a Path.
"""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import env as harness

SKIP_TOP = (".git", ".tether")


@dataclass
class SyncProject:
    """A local project configured to sync to one remote directory of a sandbox."""

    root: Path
    host: str
    remote_spec: str  # as written in tether.toml, e.g. "~/work/p-1a2b3c"
    remote: Path  # the same directory on this machine's disk
    home: Path  # the sandbox's home (the remote $HOME)
    target: str = "box"

    def run(
        self, *args: str, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`tether ARGS` as a subprocess in the project directory (harness environment)."""
        return run_cli(self.root, *args, timeout=timeout, input=input)

    def push(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run("push", *args, timeout=timeout)

    def pull(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run("pull", *args, timeout=timeout)

    def push_ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.push(*args)
        assert done.returncode == 0, describe(done)
        return done

    def local_tree(self) -> dict[str, tuple[Any, ...]]:
        return tree(self.root)

    def remote_tree(self) -> dict[str, tuple[Any, ...]]:
        return tree(self.remote)


def run_cli(
    cwd: Path, *args: str, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI (`python -m tether`) in cwd with the harness's isolated environment."""
    return subprocess.run(
        harness.tether_argv(*args),
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def describe(done: subprocess.CompletedProcess[str]) -> str:
    """A compact account of a finished CLI run for assertion messages."""
    return f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """Assert stderr is exactly one `tether: error: ...` line (no traceback); return it."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, describe(done)
    assert lines[0].startswith("tether: error: "), describe(done)
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, describe(done)
    return lines[0]


def tree(root: Path, skip_top: Iterable[str] = SKIP_TOP) -> dict[str, tuple[Any, ...]]:
    """Everything under root, never following symlinks.

    rel path -> ("file", bytes, mode) | ("link", target) | ("dir",). Top-level names in
    skip_top (.git, .tether) are left out.
    """
    skipped = set(skip_top)
    found: dict[str, tuple[Any, ...]] = {}
    if not root.is_dir():
        return found
    for directory, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        if not rel_dir:
            dirnames[:] = [name for name in dirnames if name not in skipped]
            filenames = [name for name in filenames if name not in skipped]
        for name in dirnames + filenames:
            full = os.path.join(directory, name)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir",)
            else:
                with open(full, "rb") as handle:
                    found[rel] = ("file", handle.read(), stat.S_IMODE(st.st_mode))
    return found


def without(entries: dict[str, tuple[Any, ...]], *prefixes: str) -> dict[str, tuple[Any, ...]]:
    """entries minus the given paths and everything beneath them."""
    return {
        path: value
        for path, value in entries.items()
        if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)
    }


def tmp_files(root: Path) -> list[str]:
    """tether's temporary files (`.tether-tmp.`) anywhere under root."""
    return sorted(path for path in tree(root, ()) if ".tether-tmp." in path)


def write_toml(
    root: Path,
    host: str,
    remote_spec: str,
    *,
    results: Iterable[str] = ("outputs/", "runs/"),
    exclude: Iterable[str] = (),
    extra: str = "",
) -> None:
    """tether.toml with one default target "box"."""

    def array(values: Iterable[str]) -> str:
        return "[" + ", ".join(_toml_string(value) for value in values) + "]"

    harness.write_config(
        root / "tether.toml",
        "[targets.box]\n"
        f"host = {_toml_string(host)}\n"
        f"path = {_toml_string(remote_spec)}\n"
        "default = true\n\n"
        "[sync]\n"
        f"results = {array(results)}\n"
        f"exclude = {array(exclude)}\n" + extra,
    )


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unique_remote(sandbox: Any, prefix: str = "p") -> tuple[str, Path]:
    """(path as tether.toml spells it, the same directory on disk) — not created."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    return f"~/work/{name}", Path(sandbox.home) / "work" / name


@pytest.fixture
def make_synced(sandbox: Any, tmp_path: Path) -> Callable[..., SyncProject]:
    """Factory for SyncProjects; every call makes a new project and remote directory."""
    count = 0

    def make(
        host: str | None = None,
        *,
        root: Path | None = None,
        results: Iterable[str] = ("outputs/", "runs/"),
        exclude: Iterable[str] = (),
        extra_toml: str = "",
        remote: tuple[str, Path] | None = None,
    ) -> SyncProject:
        nonlocal count
        count += 1
        if root is None:
            root = harness.make_git_project(tmp_path / f"proj{count}")
        spec, on_disk = remote or unique_remote(sandbox)
        write_toml(root, host or sandbox.name, spec, results=results, exclude=exclude,
                   extra=extra_toml)  # fmt: skip
        return SyncProject(root, host or sandbox.name, spec, on_disk, Path(sandbox.home))

    return make


@pytest.fixture
def synced(make_synced: Callable[..., SyncProject], project: Path) -> SyncProject:
    """The harness's `project` repository configured against tt-box1 (unique remote dir)."""
    return make_synced(root=project)


def masters_in(runtime: Path) -> list[int]:
    """Pids of live ssh masters (-N) whose control socket lies in runtime (a test's own)."""
    return ssh_masters(f"ControlPath={runtime}/")


def ssh_masters(word: str) -> list[int]:
    """Pids of live ssh masters (-N) with an argument that starts with or equals word."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if (
            argv[0].endswith(b"ssh")
            and b"-N" in argv
            and state != "Z"
            and any(arg.startswith(word.encode()) for arg in argv)
        ):
            found.append(int(entry.name))
    return found


def end_masters(runtime: Path) -> None:
    """End the ssh masters a test started with a runtime dir of its own (by pid)."""
    from tether.hosts.processes import terminate

    terminate(masters_in(runtime))
