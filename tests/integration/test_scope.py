"""Kernels and job names belong to a project (issue #21 part 2): two projects on one
target never share a kernel, and each sees its own in `kernel ls`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import env as harness
from tests.integration.conftest import describe, run_cli
from tests.integration.test_console import kernel_pids, stop_helpers

pytestmark = pytest.mark.integration


@pytest.fixture
def two_projects(sandbox: Any, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two projects on the same target (sandbox), each with its own remote directory."""
    home = Path(sandbox.home)
    before = set(kernel_pids(home))
    roots = []
    for label in ("a", "b"):
        root = harness.make_git_project(tmp_path / f"proj-{label}")
        spec = f"~/scope-{label}-{uuid.uuid4().hex[:8]}"
        done = run_cli(root, "init", "--host", sandbox.name, "--path", spec, "--target", "box",
                       "--python", sys.executable)  # fmt: skip
        assert done.returncode == 0, describe(done)
        roots.append(root)
    try:
        yield roots[0], roots[1]
    finally:
        for root in roots:
            run_cli(root, "kernel", "stop")
        for pid in set(kernel_pids(home)) - before:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stop_helpers()


def send(root: Path, code: str) -> subprocess.CompletedProcess[str]:
    done = run_cli(root, "send", input=code, timeout=180)
    assert done.returncode == 0, describe(done)
    return done


def test_two_projects_on_one_target_have_their_own_kernels(
    two_projects: tuple[Path, Path],
) -> None:
    first, second = two_projects
    send(first, "shared_name = 'from the first project'\n")
    assert send(second, "print('shared_name' in dir())\n").stdout.strip() == "False"
    assert send(first, "print(shared_name)\n").stdout.strip() == "from the first project"
    assert (
        send(second, "import os; print(os.getcwd())\n")
        .stdout.strip()
        .split("/")[-1]
        .startswith("scope-b-")
    )
    mine = json.loads(run_cli(first, "kernel", "ls", "--json").stdout)
    assert [(k["name"], k["this_project"]) for k in mine] == [("box", True)]
    everyone = json.loads(run_cli(first, "kernel", "ls", "--all", "--json").stdout)
    roots = sorted(k["root"].split("/")[-1][:8] for k in everyone if k["state"] == "running")
    assert roots == ["scope-a-", "scope-b-"], everyone


def test_two_projects_may_both_run_a_job_named_train(
    two_projects: tuple[Path, Path], tmux_socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    first, second = two_projects
    for root, word in ((first, "first"), (second, "second")):
        done = run_cli(root, "run", "--name", "train", "--", "python", "-c", f"print('{word}')")
        assert done.returncode == 0, describe(done)
    for root, word in ((first, "first"), (second, "second")):
        waited = run_cli(root, "wait", "train", timeout=120)
        assert waited.returncode == 0, describe(waited)
        listed = json.loads(run_cli(root, "jobs", "--json").stdout)
        assert [job["name"] for job in listed] == ["train"], listed
        assert run_cli(root, "logs", "train").stdout == f"{word}\n"
    removed = run_cli(first, "rm", "train")
    assert removed.returncode == 0, describe(removed)
    assert run_cli(second, "logs", "train").stdout == "second\n"  # the other one stays
