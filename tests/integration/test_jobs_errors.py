"""Permanent errors end commands that keep going; transient ones are retried (issue #21).

`wait` on a host that refuses for good (its interpreter is too old, cannot start, or the
host key is wrong) ends within seconds with one line instead of retrying forever; the
interpreter's own stderr is shown when it exists but cannot start; `logs -f` reconnects
after a cut through the proxy and prints every line exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.env import tether_argv, write_config
from tests.integration.test_jobs import remote_project, wait_job

pytestmark = pytest.mark.integration

Cli = Callable[..., subprocess.CompletedProcess[str]]
__all__ = ["remote_project"]  # a fixture, used by name


def fake_python(directory: Path, body: str) -> Path:
    """An 'interpreter' that answers the agent's bootstrap the way a broken one would."""
    path = directory / "fakepy"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("echo TETHER-PYOLD 3.7.3\n", "Python 3.7.3"),
        (
            "echo 'fakepy: error while loading shared libraries: libpython3.11.so.1.0: "
            "cannot open shared object file: No such file or directory' >&2; exit 127\n",
            "error while loading shared libraries: libpython3.11.so.1.0",
        ),
    ],
)
def test_wait_ends_at_once_on_a_permanent_refusal(
    remote_project: Path, project: Path, tether_cli: Cli, tmp_path: Path, body: str, words: str
) -> None:
    config = project / "tether.toml"
    python = fake_python(tmp_path, body)
    write_config(config, config.read_text().replace('"python3"', f'"{python}"', 1))
    assert str(python) in config.read_text()
    started = time.monotonic()
    done = tether_cli("wait", timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tether: error: "), done.stderr
    assert words in lines[0], lines[0]
    assert "retrying" not in done.stderr
    assert took < 10, f"wait took {took:.1f} s"


def test_wait_ends_at_once_on_a_wrong_host_key(
    sandbox: Any, remote_project: Path, project: Path, tether_cli: Cli
) -> None:
    from tests.faults.test_bad_inputs import _wrong_key

    alias = _wrong_key(sandbox)
    config = project / "tether.toml"
    write_config(config, config.read_text().replace(f'"{sandbox.name}"', f'"{alias}"', 1))
    started = time.monotonic()
    done = tether_cli("wait", timeout=60)
    assert done.returncode == 1, done.stderr
    assert "host key verification failed" in done.stderr, done.stderr
    assert time.monotonic() - started < 10


LINES = "import time\nfor i in range(40):\n    print('line', i, flush=True)\n    time.sleep(0.1)\n"


def test_logs_follow_survives_a_cut_and_prints_each_line_once(
    proxy: Any, proxy_alias: str, project: Path, tether_cli: Cli,
    tmux_socket: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(project)
    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    (project / "lines.py").write_text(LINES)
    assert tether_cli("init", "--host", proxy_alias, "--path", "~/logs-drop").returncode == 0
    done = tether_cli("run", "--name", "lf", "--", sys.executable, "lines.py")
    assert done.returncode == 0, done.stderr
    follower = subprocess.Popen(tether_argv("logs", "lf", "-f"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(1.2)
        proxy.refuse(True)
        proxy.cut()
        time.sleep(1.0)
        proxy.refuse(False)
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert out.splitlines() == [f"line {i}" for i in range(40)], (out, err)
    assert "reconnecting" in err, err
    assert wait_job(tether_cli, "lf")["exit_code"] == 0
