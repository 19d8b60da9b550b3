"""Run a coroutine against a real agent started as a local subprocess (no ssh)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tether.transport.channel import AgentChannel
from tether.transport.local import LocalTransport


def with_agent(body: Callable[[AgentChannel], Awaitable[Any]]) -> Any:
    """body(channel) on a fresh local agent; the agent is closed afterwards."""

    async def main() -> Any:
        channel = await AgentChannel.open(LocalTransport(), "python3")
        try:
            return await body(channel)
        finally:
            await channel.close()

    return asyncio.run(main())
