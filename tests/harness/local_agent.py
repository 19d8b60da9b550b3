"""Run a coroutine against a real agent started as a local subprocess (no ssh)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from tether.agent.wire import Frame, Request
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


@dataclasses.dataclass
class Raw(Request[Frame]):
    """A frame the catalogue has no request for: an op named by string and header fields
    as given (what the agent does with an unknown op or a malformed header)."""

    op: str
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    payload: bytes = b""

    def to_frame(self) -> Frame:
        return {"op": self.op, **self.fields}, self.payload
