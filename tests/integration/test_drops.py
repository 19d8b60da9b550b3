"""Twenty link drops with watch, the send helper's link and the sync daemon all using one
host (issue #22, item 3): afterwards there is one ssh master for it, not one per process
per drop (each used to start its own, and the losers lived on as stray connections)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import env as harness
from tests.integration.conftest import ssh_masters
from tests.integration.test_console_link import pproject
from tether.hosts.processes import end_process

pytestmark = pytest.mark.integration
__all__ = ["pproject"]  # a fixture, used by name

DROPS = 20


def until_ok(action: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        done = action()
        if done.returncode == 0:
            return
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.3)


def test_twenty_drops_leave_one_master(
    pproject: Path, proxy: Any, proxy_alias: str, tether_cli: Any
) -> None:
    assert tether_cli("push").returncode == 0
    assert tether_cli("send", input="n = 0").returncode == 0
    watch = subprocess.Popen(
        harness.tether_argv("watch"), cwd=pproject, stdout=subprocess.DEVNULL, text=True
    )
    try:
        time.sleep(1.0)
        for drop in range(DROPS):
            proxy.cut()
            (pproject / "drop.txt").write_text(f"{drop}\n")
            until_ok(lambda: tether_cli("push"))
            until_ok(lambda: tether_cli("send", input="n += 1"))
        counted = tether_cli("send", input="print(n)")
        assert counted.stdout.strip() == str(DROPS), counted.stdout + counted.stderr
        assert len(ssh_masters(proxy_alias)) <= 1, ssh_masters(proxy_alias)
    finally:
        end_process(watch, signal.SIGINT, grace_s=30)
