"""A second target (issue #22, item 2): `tether target add/ls/rm` edit tether.toml keeping
every other byte, and with two default targets every single-target command works on the
primary one, the README's vim binding included."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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

COMMENTED = """# my project's targets
[targets.box]   # the first box
host = "{host}"
path = "{path}"
python = "{python}"
default = true

# what to bring back
[sync]
results = ["outputs/"]   # keep
"""


@pytest.fixture
def two_targets(sandbox: Any, sandbox2: Any, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """A project with a hand-written, commented config (box), then `target add two`."""
    root = harness.make_git_project(tmp_path / "proj")
    first, second = (f"~/two-{label}-{uuid.uuid4().hex[:6]}" for label in "ab")
    text = COMMENTED.format(host=sandbox.name, path=first, python=sys.executable)
    harness.write_config(root / "tether.toml", text)
    home = Path(sandbox.home)
    before = set(kernel_pids(home))
    try:
        yield root, first, second
    finally:
        run_cli(root, "kernel", "stop")
        for pid in set(kernel_pids(home)) - before:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stop_helpers()


def test_target_add_ls_rm_keep_every_other_byte(
    two_targets: tuple[Path, str, str], sandbox2: Any
) -> None:
    root, _first, second = two_targets
    config = root / "tether.toml"
    original = config.read_text()
    lib = f"../lib:~/lib-{uuid.uuid4().hex[:6]}"
    added = run_cli(root, "target", "add", "two", "--host", sandbox2.name, "--path", second,
                    "--python", sys.executable, "--map", lib)  # fmt: skip
    assert added.returncode == 0, describe(added)
    text = config.read_text()
    assert text.startswith(original), "the existing lines changed"
    assert "[targets.two]" in text and "[[targets.two.mappings]]" in text
    listed = json.loads(run_cli(root, "target", "ls", "--json").stdout)
    assert [(t["name"], t["default"], t["primary"]) for t in listed] == [
        ("box", True, True),
        ("two", True, False),
    ]
    assert run_cli(root, "push").returncode == 0  # added by tether: trusted, pushed to both
    assert (Path(sandbox2.home) / second[2:] / "train.py").is_file()
    removed = run_cli(root, "target", "rm", "two")
    assert removed.returncode == 0, describe(removed)
    assert config.read_text() == original
    only = run_cli(root, "target", "rm", "box")
    assert only.returncode == 2 and "only target" in only.stderr


def test_two_default_targets_single_target_commands_use_the_primary(
    two_targets: tuple[Path, str, str], sandbox: Any, sandbox2: Any
) -> None:
    root, first, second = two_targets
    added = run_cli(root, "target", "add", "two", "--host", sandbox2.name, "--path", second,
                    "--python", sys.executable)  # fmt: skip
    assert added.returncode == 0, describe(added)
    assert run_cli(root, "push").returncode == 0
    (root / "code.py").write_text("x = 6\nprint(x * 7)\n")
    vim = shutil.which("vim")
    if vim is None:
        pytest.skip("vim is not installed: the README's binding cannot be run")
    # The README's vim binding, run by vim itself on lines 1-2 of code.py.
    binding = "execute '!tether send ' . expand('%') . ':' . line(\"'<\") . '-' . line(\"'>\")"
    env = dict(os.environ)
    shim = root.parent / "bin"
    shim.mkdir()
    (shim / "tether").write_text("#!/bin/sh\nexec " + " ".join(harness.tether_argv()) + ' "$@"\n')
    (shim / "tether").chmod(0o755)
    env["PATH"] = f"{shim}:{env['PATH']}"
    done = subprocess.run(
        [vim, "-es", "-u", "NONE", "-c", "call setpos(\"'<\", [0, 1, 1, 0])",
         "-c", "call setpos(\"'>\", [0, 2, 1, 0])", "-c", binding, "-c", "qa!", "code.py"],
        cwd=root, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert "42" in done.stdout, describe(done)
    pulled = run_cli(root, "pull")
    assert pulled.returncode == 0, describe(pulled)
    other = run_cli(root, "pull", "--on", "two")
    assert other.returncode == 0, describe(other)
    shell = run_cli(root, "shell", "--command", "pwd")
    assert shell.returncode == 0 and shell.stdout.strip().endswith(first[2:]), describe(shell)
    kernels = json.loads(run_cli(root, "kernel", "ls", "--json").stdout)
    assert [k["target"] for k in kernels] == ["box"]
