"""Random edit histories against the real sandbox, checked against a model (DESIGN.md 5).

Each example gets its own project and remote directory. A history mixes local edits,
creates, deletes and renames, remote-side creates and edits (written straight into the
sandbox home, as a user or a job on the remote would), pushes and pulls, all through the
real `tether` CLI. After every push or pull the model says what must have happened:

- a file written on the remote and not pushed since is never lost or overwritten
  (invariant 1), and a push that would overwrite or delete one stops with exit 3 naming
  exactly those paths (invariant 2);
- results are never pushed, pull never deletes and never overwrites a local change
  without exit 3 (invariant 3);
- a final push (with --force when something is still in conflict) converges: remote ==
  local, every remote version it overwrote kept as a backup.

Examples stop doing real work after BUDGET_S seconds, so the test stays bounded in time.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import describe, run_cli, tmp_files, tree, write_toml

pytestmark = pytest.mark.integration

SYNCED = ("a.txt", "b c.txt", "-n.txt", "d/x.py", "d/e/y.py")
RESULTS = ("runs/r.txt", "runs/s/t.txt")
PATHS = SYNCED + RESULTS
BACKUP = ".tether-conflict-"
BUDGET_S = 50.0  # generation stops doing real work past this (shrinking a failure may not)

_counter = itertools.count()
_clock: dict[str, float] = {}


def _content(tag: str) -> bytes:
    """Unique content of varying size (no two writes ever produce the same bytes)."""
    n = next(_counter)
    return (f"{tag} #{n}\n" * (1 + n % 4)).encode()


# ---------------------------------------------------------------- the model


@dataclass
class Model:
    local: dict[str, bytes] = field(default_factory=dict)
    remote: dict[str, bytes] = field(default_factory=dict)
    base: dict[str, bytes] = field(default_factory=dict)  # what the last push synced
    pulled: dict[str, bytes] = field(default_factory=dict)  # what the last pull synced
    remote_backups: dict[str, list[bytes]] = field(default_factory=dict)
    local_backups: dict[str, list[bytes]] = field(default_factory=dict)

    def push(self, force: bool) -> set[str]:
        """Apply a push; return the paths it must report as conflicts."""
        conflicts = set()
        for path in SYNCED:
            here, there, base = self.local.get(path), self.remote.get(path), self.base.get(path)
            if here is not None:
                if there is None or there == base:
                    self.remote[path] = self.base[path] = here
                elif there == here:
                    self.base[path] = here
                elif force:
                    self.remote_backups.setdefault(path, []).append(there)
                    self.remote[path] = self.base[path] = here
                else:
                    conflicts.add(path)
            elif base is not None:
                if there is None or there == base:
                    self.remote.pop(path, None)
                    self.base.pop(path)
                elif force:
                    self.remote_backups.setdefault(path, []).append(self.remote.pop(path))
                    self.base.pop(path)
                else:
                    conflicts.add(path)
        return conflicts

    def pull(self, force: bool) -> set[str]:
        """Apply a pull of the results; return the paths it must report as conflicts."""
        conflicts = set()
        for path in RESULTS:
            there = self.remote.get(path)
            if there is None:
                continue
            here, base = self.local.get(path), self.pulled.get(path)
            if here is None or here == there:
                self.local[path] = self.pulled[path] = there
            elif base is not None and there == base:
                continue
            elif base is not None and here == base:
                self.local[path] = self.pulled[path] = there
            elif force:
                self.local_backups.setdefault(path, []).append(here)
                self.local[path] = self.pulled[path] = there
            else:
                conflicts.add(path)
        return conflicts


# ---------------------------------------------------------------- operations

local_write = st.tuples(st.just("local-write"), st.sampled_from(PATHS))
local_delete = st.tuples(st.just("local-delete"), st.sampled_from(PATHS))
local_rename = st.tuples(st.just("local-rename"), st.sampled_from(SYNCED), st.sampled_from(SYNCED))
remote_write = st.tuples(st.just("remote-write"), st.sampled_from(PATHS))
remote_same = st.tuples(st.just("remote-same-as-local"), st.sampled_from(SYNCED))
sync_op = st.sampled_from(
    [
        ("push", ""),
        ("push", ""),
        ("push", ""),
        ("push", "--force"),
        ("pull", ""),
        ("pull", "--force"),
    ]
)
edit_op = st.one_of(
    local_write, local_write, local_delete, local_rename, remote_write, remote_write, remote_same
)
# Rounds of a few edits and one push or pull, after a first push of every synced path.
history = st.lists(
    st.tuples(st.lists(edit_op, min_size=1, max_size=4), sync_op), min_size=1, max_size=3
)


class World:
    """One project and one remote directory, plus the model of both."""

    def __init__(self, root: Path, remote: Path, spec: str, host: str) -> None:
        self.root, self.remote = root, remote
        self.model = Model()
        self.log: list[tuple[str, ...]] = []
        root.mkdir(parents=True)
        write_toml(root, host, spec, results=["runs/"])
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True,
                       capture_output=True, timeout=30)  # fmt: skip
        for path in SYNCED:
            self.apply(("local-write", path))
        self.apply(("remote-write", RESULTS[0]))
        self.apply(("push", ""))

    def apply(self, op: tuple[str, ...]) -> None:
        self.log.append(op)
        kind, model = op[0], self.model
        if kind == "local-write":
            data = _content(f"local {op[1]}")
            _write(self.root / op[1], data)
            model.local[op[1]] = data
        elif kind == "local-delete":
            if op[1] in model.local:
                (self.root / op[1]).unlink()
                del model.local[op[1]]
        elif kind == "local-rename":
            src, dst = op[1], op[2]
            if src in model.local and src != dst:
                (self.root / dst).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.root / src, self.root / dst)
                model.local[dst] = model.local.pop(src)
        elif kind == "remote-write":
            data = _content(f"remote {op[1]}")
            _write(self.remote / op[1], data)
            model.remote[op[1]] = data
        elif kind == "remote-same-as-local":
            if op[1] in model.local:
                _write(self.remote / op[1], model.local[op[1]])
                model.remote[op[1]] = model.local[op[1]]
        else:
            self.sync(kind, op[1] == "--force")

    def sync(self, direction: str, force: bool) -> None:
        """Run `tether push|pull --json [--force]` and check it against the model."""
        model = self.model
        # Remote content tether did not put there (it only ever writes what it records).
        changed = {
            path: data
            for path, data in model.remote.items()
            if path in SYNCED and data != model.base.get(path)
        }
        expected = model.push(force) if direction == "push" else model.pull(force)
        args = [direction, "--json"] + (["--force"] if force else [])
        done = run_cli(self.root, *args)
        context = f"history {self.log}\n{' '.join(args)}\n{describe(done)}"
        assert done.returncode == (3 if expected else 0), context
        (report,) = json.loads(done.stdout)
        assert {c["path"] for c in report["conflicts"]} == expected, context
        assert report["errors"] == [], context
        if expected:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("tether: error: "), context
        self.check(context)
        # No remote version written there was lost: still in place, or (forced) a backup.
        for path, data in changed.items():
            kept = self.remote_files().get(path) == data
            backed_up = data in _backups(self.remote, path)
            assert kept or backed_up, f"{path}: a remote change was lost\n{context}"

    def remote_files(self) -> dict[str, bytes]:
        return _files(self.remote)

    def check(self, context: str) -> None:
        model = self.model
        remote = {p: d for p, d in self.remote_files().items() if BACKUP not in p}
        remote.pop("tether.toml", None)
        assert remote == model.remote, context
        local = {p: d for p, d in _files(self.root).items() if BACKUP not in p}
        local.pop("tether.toml", None)
        assert local == model.local, context
        for path, datas in model.remote_backups.items():
            assert sorted(_backups(self.remote, path)) == sorted(datas), f"{path}\n{context}"
        for path, datas in model.local_backups.items():
            assert sorted(_backups(self.root, path)) == sorted(datas), f"{path}\n{context}"
        assert tmp_files(self.remote) == [] and tmp_files(self.root) == [], context


def _files(root: Path) -> dict[str, bytes]:
    return {p: v[1] for p, v in tree(root).items() if v[0] == "file"}


def _backups(root: Path, path: str) -> list[bytes]:
    directory = (root / path).parent
    name = Path(path).name
    if not directory.is_dir():
        return []
    return [p.read_bytes() for p in directory.iterdir() if p.name.startswith(name + BACKUP)]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=history)
def test_random_histories_keep_every_remote_change_and_converge(
    sandbox: Any, tmp_path: Path, ops: list[tuple[str, ...]]
) -> None:
    started = _clock.setdefault("start", time.monotonic())
    if time.monotonic() - started > BUDGET_S:
        return  # bounded total time; every example before this ran in full
    name = f"prop-{uuid.uuid4().hex[:10]}"
    world = World(tmp_path / name, Path(sandbox.home) / "work" / name, f"~/work/{name}",
                  sandbox.name)  # fmt: skip
    for edits, sync in ops:
        for op in edits:
            world.apply(op)
        world.apply(sync)
    # The end of every history: a push (forced if anything is still in conflict) converges.
    model = world.model
    world.apply(("push", "--force" if copy.deepcopy(model).push(False) else ""))
    files = world.remote_files()
    for path in SYNCED:
        if path in model.local:
            assert files.get(path) == model.local[path], f"{path} did not converge\n{ops}"
        else:
            assert path not in model.base, f"{path} was not deleted\n{ops}"
