"""Run one coroutine per target in parallel, each with its own agent channel (or a pool's)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from tether.config import Target
from tether.transport.channel import AgentChannel
from tether.transport.ssh import SshTransport

T = TypeVar("T")


class ChannelPool(Protocol):
    """Agent channels kept open between commands (the sync daemon's)."""

    async def run(
        self, target: Target, work: Callable[[Target, AgentChannel], Awaitable[T]]
    ) -> T: ...

    def ready(self, target: Target) -> bool:
        """Whether a channel to the target is open and alive now (no ssh session to start)."""
        ...


async def open_channel(target: Target, kept: bool = False) -> AgentChannel:
    """An agent channel to the target's host (master started on first use); `kept`: one
    the sync daemon keeps (its agent watches what it scans from the first scan on)."""
    return await AgentChannel.open(SshTransport(target.host), target.python, kept)


async def on_target(
    target: Target,
    work: Callable[[Target, AgentChannel], Awaitable[T]],
    pool: ChannelPool | None = None,
) -> T:
    """work(target, channel) on the pool's kept channel, or on a fresh one closed after."""
    if pool is not None:
        return await pool.run(target, work)
    channel = await open_channel(target)
    try:
        return await work(target, channel)
    finally:
        await channel.close()


async def each_target(
    targets: list[Target],
    work: Callable[[Target, AgentChannel], Awaitable[T]],
    pool: ChannelPool | None = None,
) -> list[T]:
    """work(target, channel) for every target at once, on the pool's kept channels or on
    fresh ones closed afterwards; the first error is raised after all end."""
    results = await asyncio.gather(
        *(on_target(target, work, pool) for target in targets), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if not isinstance(result, BaseException)]
