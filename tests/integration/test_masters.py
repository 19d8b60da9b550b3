"""One ssh master per host across every tether process (issue #22, item 3).

The test uses a runtime dir of its own, so the masters it counts are its own: six racing
first commands start one master (before: six, five of them strays that never exit).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import env as harness
from tests.integration.conftest import SyncProject, masters_in

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))
    try:
        yield path
    finally:
        for pid in masters_in(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid_file in path.glob("sync-*.pid"):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
        shutil.rmtree(path, ignore_errors=True)


def pushes(synced: SyncProject, runtime: Path, count: int) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "TETHER_RUNTIME_DIR": str(runtime), "TETHER_NO_DAEMON": "1"}
    return [
        subprocess.Popen(
            harness.tether_argv("push", "--dry-run"),
            cwd=synced.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def test_racing_first_commands_start_one_master(synced: SyncProject, runtime: Path) -> None:
    started = pushes(synced, runtime, 6)
    for process in started:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert len(masters_in(runtime)) == 1, masters_in(runtime)
