"""What a command runs on: fresh channels and asyncio.run, or the sync daemon's kept ones.

The CLI hands one `Runtime` to every command through click's context object
(`tether.cli.app._run`); the commands the daemon serves (push, pull, jobs, status:
`tether.cli.app.DAEMON_COMMANDS`) take it from there (`of(ctx.obj)`), the others always
run in their own process. A command run in its own process gets `Runtime()`: each target
gets a fresh agent channel, closed after the command, and coroutines run under
`asyncio.run`. The sync daemon (tether.cli.daemon) passes its own: the channels it keeps
open between commands, and its event loop (so the command can be cancelled when the
client goes away). Features take the channel pool as an argument; nothing is set
through module globals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from tether.config import Target
from tether.sync.targets import ChannelPool, each_target, on_target
from tether.transport.channel import AgentChannel

if TYPE_CHECKING:
    from tether.sync.kept import KeptScans

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """The channel pool (None: a fresh channel per target) and the loop to run on."""

    pool: ChannelPool | None = None
    # Runs a coroutine to completion on a long-lived loop (None: asyncio.run).
    submit: Callable[[Coroutine[Any, Any, Any]], Any] | None = None
    # Local manifests kept current by watchers (the sync daemon's; None: a full scan).
    scans: KeptScans | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a command's coroutine to completion."""
        if self.submit is None:
            return asyncio.run(coro)
        return cast(T, self.submit(coro))

    async def each_target(
        self, targets: list[Target], work: Callable[[Target, AgentChannel], Awaitable[T]]
    ) -> list[T]:
        """work(target, channel) for every target at once, on this runtime's channels."""
        return await each_target(targets, work, self.pool)

    async def on_target(
        self, target: Target, work: Callable[[Target, AgentChannel], Awaitable[T]]
    ) -> T:
        """work(target, channel) on this runtime's channel to the target."""
        return await on_target(target, work, self.pool)


LOCAL = Runtime()


def of(obj: object) -> Runtime:
    """The runtime in click's context object (the command's own process: LOCAL)."""
    return obj if isinstance(obj, Runtime) else LOCAL
