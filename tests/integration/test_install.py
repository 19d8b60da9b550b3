"""A plain `pip install` of tether (no extras) has the console (issue #22, item 1).

The package is built from this checkout and installed with its declared dependencies into
a fresh virtual environment, which then serves as both the local tether and the remote
interpreter of a sandbox target: `tether send` must print the kernel's answer.
"""

from __future__ import annotations

import contextlib
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
from tests.integration.test_console import kernel_pids, stop_helpers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(harness.REPO)],
        capture_output=True, text=True, timeout=900, check=False, env=_clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return venv


def _clean_env() -> dict[str, str]:
    """The harness environment without the checkout on PYTHONPATH (the installed copy runs)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture
def installed_project(sandbox: Any, project: Path, plain_venv: Path) -> Iterator[Path]:
    home = Path(sandbox.home)
    before = set(kernel_pids(home))
    tether = str(plain_venv / "bin" / "tether")
    python = str(plain_venv / "bin" / "python")
    spec = f"~/plain-{uuid.uuid4().hex[:8]}"
    init = [tether, "init", "--host", sandbox.name, "--path", spec, "--python", python]
    done = subprocess.run(init, cwd=project, env=_clean_env(), capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        yield project
    finally:
        subprocess.run([tether, "kernel", "stop"], cwd=project, env=_clean_env(),
                       capture_output=True, timeout=60, check=False)  # fmt: skip
        for pid in set(kernel_pids(home)) - before:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stop_helpers()


def test_a_plain_install_runs_send_and_says_its_version(
    installed_project: Path, plain_venv: Path
) -> None:
    tether = str(plain_venv / "bin" / "tether")
    version = subprocess.run([tether, "--version"], env=_clean_env(), capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("tether "), version.stderr
    where = subprocess.run(
        [str(plain_venv / "bin" / "python"), "-c", "import tether; print(tether.__file__)"],
        env=_clean_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert where.stdout.startswith(str(plain_venv)), where.stdout  # not this checkout
    done = subprocess.run([tether, "send"], input="print(6 * 7)\n", cwd=installed_project,
                          env=_clean_env(), capture_output=True, text=True, timeout=180,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42", done.stdout


def test_the_oldest_typer_we_allow_runs_the_cli(tmp_path: Path) -> None:
    # pyproject says typer>=0.16: that typer still depends on the click package (newer
    # ones vendor it as typer._click, which the CLI used to import unconditionally).
    venv = tmp_path / "old-typer"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(harness.REPO), "typer==0.16.0"],
        capture_output=True, text=True, timeout=900, check=False, env=_clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    tether = str(venv / "bin" / "tether")
    # In its own process (no sync daemon left behind by this venv): the old typer parses.
    own = {**_clean_env(), "TETHER_NO_DAEMON": "1"}
    usage = subprocess.run([tether, "push", "--no-such-flag"], capture_output=True, text=True,
                           timeout=60, check=False, env=own, cwd=tmp_path)  # fmt: skip
    assert usage.returncode == 2, usage.stderr
    assert "No such option" in usage.stderr and "Traceback" not in usage.stderr
    helped = subprocess.run([tether, "--help"], capture_output=True, text=True, timeout=60,
                            check=False, env=_clean_env())  # fmt: skip
    assert helped.returncode == 0 and "tether" in helped.stdout, helped.stderr
