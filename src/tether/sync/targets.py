"""Run one coroutine per target in parallel, each with its own agent channel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar, cast

from tether.config import Target
from tether.transport.channel import AgentChannel
from tether.transport.ssh import SshTransport

T = TypeVar("T")


class ChannelPool(Protocol):
    """Agent channels kept open between commands (the sync daemon's)."""

    async def run(
        self, target: Target, work: Callable[[Target, AgentChannel], Awaitable[T]]
    ) -> T: ...


# Set by the sync daemon (tether.cli.daemon): its channel pool, and how a command's
# coroutine runs on the daemon's event loop. None: a fresh channel, asyncio.run.
POOL: ChannelPool | None = None
RUN: Callable[[Coroutine[Any, Any, Any]], Any] | None = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion (asyncio.run, or on the daemon's loop)."""
    if RUN is None:
        return asyncio.run(coro)
    return cast(T, RUN(coro))


async def open_channel(target: Target) -> AgentChannel:
    """An agent channel to the target's host (master started on first use)."""
    return await AgentChannel.open(SshTransport(target.host), target.python)


async def each_target(
    targets: list[Target], work: Callable[[Target, AgentChannel], Awaitable[T]]
) -> list[T]:
    """work(target, channel) for every target at once; the first error is raised after all end."""

    async def one(target: Target) -> T:
        if POOL is not None:
            return await POOL.run(target, work)
        channel = await open_channel(target)
        try:
            return await work(target, channel)
        finally:
            await channel.close()

    results = await asyncio.gather(*(one(target) for target in targets), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if not isinstance(result, BaseException)]
