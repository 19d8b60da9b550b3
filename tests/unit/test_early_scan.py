"""A push whose channel is not open yet scans the local tree meanwhile (sync/runner.py).

Real local agent, real tree; only the time an ssh session and agent start take is
stood in for: the pool hands out its channel only once the local scan is under way (on
its worker thread) or after 10 s. Before the early scan, the scan came after the
channel, so the pool waited the whole 10 s for nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from tests.harness.local_agent import LocalTransport
from tether.config import Config, Target
from tether.errors import TetherError
from tether.sync import runner
from tether.transport.channel import AgentChannel

T = TypeVar("T")


class SlowPool:
    """Opens a channel to a local agent once the local scan is under way (at most 10 s)."""

    def __init__(self, project: Path, ready: bool = False, fail: bool = False) -> None:
        self.project = project
        self.kept = ready
        self.fail = fail
        self.scanned_first: bool | None = None

    def ready(self, target: Target) -> bool:
        return self.kept

    async def run(self, target: Target, work: Callable[[Target, AgentChannel], Awaitable[T]]) -> T:
        deadline = time.monotonic() + (0.5 if self.kept else 10)
        while not scanning() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.scanned_first = scanning()
        if self.fail:
            raise TetherError("cannot reach the host", "", "try again")
        channel = await AgentChannel.open(LocalTransport(), "python3")
        try:
            return await work(target, channel)
        finally:
            await channel.close()


def scanning() -> bool:
    """Whether a push's scan worker runs (sync/runner.py names its thread)."""
    return any(thread.name.startswith("tether-scan") for thread in threading.enumerate())


def project(tmp_path: Path) -> tuple[Config, Path]:
    root, remote = tmp_path / "proj", tmp_path / "remote"
    for index in range(40):
        (root / "pkg" / f"m{index}.py").parent.mkdir(parents=True, exist_ok=True)
        (root / "pkg" / f"m{index}.py").write_text(f"X = {index}\n" * 50)
    (root / "tether.toml").write_text("")
    target = Target("t", "box", str(remote))
    return Config(root, root / "tether.toml", {"t": target}), remote


def test_a_cold_push_scans_while_its_channel_opens(tmp_path: Path) -> None:
    config, remote = project(tmp_path)
    pool = SlowPool(config.root)
    (report,) = asyncio.run(
        runner.sync(config, list(config.targets.values()), "push", None, False, False, pool=pool)
    )
    assert pool.scanned_first, "the local scan waited for the channel"
    assert not report.errors and report.created == 42  # tether.toml, pkg/ and its 40 files
    assert (remote / "pkg" / "m39.py").read_text() == "X = 39\n" * 50
    # Pushed once more over a kept channel: the scan stays behind the channel, and the
    # push still sees what changed.
    (config.root / "pkg" / "m0.py").write_text("changed\n")
    warm = SlowPool(config.root, ready=True)
    (again,) = asyncio.run(
        runner.sync(config, list(config.targets.values()), "push", None, False, False, pool=warm)
    )
    assert warm.scanned_first is False
    assert again.updated == 1 and (remote / "pkg" / "m0.py").read_text() == "changed\n"


def test_an_early_scan_ends_with_the_command_when_the_channel_fails(tmp_path: Path) -> None:
    config, remote = project(tmp_path)
    pool = SlowPool(config.root, fail=True)
    try:
        asyncio.run(
            runner.sync(
                config, list(config.targets.values()), "push", None, False, False, pool=pool
            )
        )
    except TetherError as error:
        assert "cannot reach the host" in str(error)
    else:
        raise AssertionError("the push did not report the failed channel")
    assert pool.scanned_first and not scanning()
    assert not remote.exists()
