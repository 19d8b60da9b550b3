"""A big push spread over several agent channels ("lanes", tether.sync.lanes).

The same guarantees as a push over one channel: the remote mirrors the project exactly
(modes, links, nested directories), nothing is left half-written, a failure on any channel
is one clear error and the next push converges, and every helper ssh session and agent
ends with its main channel, also when the push is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import SyncProject, tmp_files, tree

pytestmark = pytest.mark.integration

MakeSynced = Callable[..., SyncProject]


def _big_tree(root: Path, rng: random.Random, files: int = 450) -> None:
    """Enough small files (and one multi-chunk file) for a push to use helper channels."""
    for index in range(files):
        path = root / "src" / f"p{index % 5}" / f"m{index // 15}" / f"f{index:04d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(0, 4000)))
    (root / "ckpt").mkdir(exist_ok=True)
    (root / "ckpt" / "weights.bin").write_bytes(rng.randbytes(3 * (1 << 20) + 17))
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    link = root / "latest"
    if not link.is_symlink():
        link.symlink_to("ckpt/weights.bin")


def _expected(synced: SyncProject) -> dict[str, tuple[Any, ...]]:
    return {path: value for path, value in synced.local_tree().items()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _push(synced: SyncProject, work: Callable[..., Any] | None = None) -> tuple[Any, ...]:
    """push_pair over one channel (in this process); (report, helper agent pids, ssh pids)."""
    from tether.config import load
    from tether.sync.session import pairs_for, push_pair
    from tether.transport.channel import AgentChannel
    from tether.transport.ssh import SshTransport

    config = load(synced.root)
    pair = pairs_for(config, config.one(None))[0]
    channel = await AgentChannel.open(SshTransport(synced.host))
    try:
        pushing = asyncio.create_task(push_pair(channel, pair, synced.root))
        if work is not None:
            await work(channel, pushing)
        report = await pushing
        helpers = channel.helpers()
        agents = [(await helper.ready())["pid"] for helper in helpers]
        ssh = [helper.process.pid for helper in helpers]
        return report, agents, ssh
    finally:
        await channel.close()


@pytest.fixture
def seed_rng() -> random.Random:
    return random.Random(os.environ.get("TETHER_TEST_SEED", "lanes"))


def test_big_push_uses_helper_channels_and_mirrors_exactly(
    synced: SyncProject, seed_rng: random.Random
) -> None:
    from tether.sync import lanes

    # Big enough that helpers (started on demand) join before the main lane is done.
    _big_tree(synced.root, seed_rng, files=1600)
    report, agents, ssh = asyncio.run(_push(synced))
    assert report.errors == [] and report.conflicts == []
    # Helpers still starting when the work is done are not waited for: at least one ran.
    assert 1 <= len(agents) <= lanes.LANES - 1, "a big push opens helper channels"
    assert synced.remote_tree() == _expected(synced)
    assert tmp_files(synced.remote) == []
    # Closing the main channel ends every helper: its ssh and its agent.
    assert not [pid for pid in agents + ssh if _alive(pid)]

    # A second big push with deletes, type changes and updates, over fresh helpers.
    for path in sorted((synced.root / "src" / "p1").rglob("*.py"))[:40]:
        path.unlink()
    (synced.root / "latest").unlink()
    (synced.root / "latest").mkdir()
    (synced.root / "latest" / "x.txt").write_text("now a directory\n")
    (synced.root / "ckpt" / "weights.bin").unlink()
    (synced.root / "ckpt" / "weights.bin").mkdir()
    (synced.root / "ckpt" / "weights.bin" / "part0").write_bytes(seed_rng.randbytes(2 << 20))
    for path in sorted((synced.root / "src" / "p2").rglob("*.py"))[:420]:
        path.write_bytes(seed_rng.randbytes(100))
    for index in range(420):
        (synced.root / "more" / f"g{index:04d}.txt").parent.mkdir(exist_ok=True)
        (synced.root / "more" / f"g{index:04d}.txt").write_text(f"{index}\n")
    report, agents, _ = asyncio.run(_push(synced))
    assert report.errors == [] and report.conflicts == [], report
    assert agents, "the second push used helper channels too"
    assert synced.remote_tree() == _expected(synced)
    assert tmp_files(synced.remote) == []


def test_helper_agent_killed_mid_push_is_one_error_and_next_push_converges(
    synced: SyncProject, seed_rng: random.Random
) -> None:
    from tether.errors import TetherError

    _big_tree(synced.root, seed_rng, files=4000)  # long enough for a helper to join
    old = tree(synced.remote)
    killed: list[int] = []

    async def kill_a_helper(channel: Any, pushing: asyncio.Task[Any]) -> None:
        while not pushing.done():
            helpers = [h for h in channel._helpers if h.info]
            if helpers:
                pid = int(helpers[0].info["pid"])
                os.kill(pid, signal.SIGKILL)  # the remote agent (the sandbox is this machine)
                killed.append(pid)
                return
            await asyncio.sleep(0.002)

    with pytest.raises(TetherError) as raised:
        asyncio.run(_push(synced, kill_a_helper))
    assert killed, "the push failed before a helper was up"
    message = str(raised.value)
    assert "\n" not in message and synced.host in message, message
    # Old or new, never a mix: every file on the remote is complete.
    local = synced.local_tree()
    for path, value in tree(synced.remote).items():
        if ".tether-tmp." not in path:
            assert value in (old.get(path), local.get(path)), path
    report, _, _ = asyncio.run(_push(synced))
    assert report.errors == [] and report.conflicts == [], report
    assert synced.remote_tree() == _expected(synced)
    assert tmp_files(synced.remote) == []


def test_cancelled_big_push_closes_every_helper(
    synced: SyncProject, seed_rng: random.Random
) -> None:
    _big_tree(synced.root, seed_rng, files=4000)  # long enough for a helper to join
    seen: dict[str, list[int]] = {"agents": [], "ssh": []}

    async def cancel_when_helpers_work(channel: Any, pushing: asyncio.Task[Any]) -> None:
        while not pushing.done():
            helpers = [h for h in channel._helpers if h.info]
            if len(helpers) >= 1:
                await asyncio.sleep(0.05)
                seen["agents"] = [int(h.info["pid"]) for h in channel._helpers if h.info]
                seen["ssh"] = [h.process.pid for h in channel._helpers]
                pushing.cancel()
                return
            await asyncio.sleep(0.002)

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(_push(synced, cancel_when_helpers_work))
    assert seen["agents"], "the push ended before a helper was up (4,000 files always use lanes)"
    assert not [pid for pid in seen["agents"] + seen["ssh"] if _alive(pid)]
    report, _, _ = asyncio.run(_push(synced))
    assert report.errors == [] and report.conflicts == [], report
    assert synced.remote_tree() == _expected(synced)
    assert tmp_files(synced.remote) == []
