"""An agent's start: what a sync-only agent (a push's helper lanes, `watch`) never needs is
not imported, and a hello is answered without the ~20 ms `platform.platform()` costs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tether.agent.server import EXTENSIONS

SRC = Path(__file__).resolve().parents[2] / "src"

# An agent answers a hello and a scan, then (with "more") a job op.
SCRIPT = """
import io, os, sys
from tether.agent.server import Agent
agent = Agent(io.BytesIO())
agent.dispatch({"op": "hello", "id": 1}, b"")
os.makedirs("tree/sub")
agent.dispatch({"op": "scan", "id": 2, "root": os.path.abspath("tree"), "rows": True}, b"")
if sys.argv[1] == "more":
    assert agent.handler("job_list") is not None
print(sorted(sys.modules))
"""


def modules_after(tmp_path: Path, more: bool) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-S", "-c", SCRIPT, "more" if more else "sync"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(SRC), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(ast.literal_eval(done.stdout.splitlines()[-1]))


def test_a_sync_only_agent_imports_no_extension_and_no_platform(tmp_path: Path) -> None:
    loaded = modules_after(tmp_path, more=False)
    extensions = {f"tether.agent.{name}" for name in EXTENSIONS}
    assert not loaded & extensions, sorted(loaded & extensions)
    assert "platform" not in loaded
    assert "urllib.request" not in loaded


@pytest.mark.parametrize("name", EXTENSIONS)
def test_the_first_op_of_an_extension_adds_every_extension(tmp_path: Path, name: str) -> None:
    assert f"tether.agent.{name}" in modules_after(tmp_path, more=True)
