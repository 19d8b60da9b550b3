"""One remote kernel and its lifecycle: ensure, connect, link, interrupt, restart, stop.

`RemoteKernel(target, name)` is what console, send, the helper, the Jupyter proxy and
`tether kernel ...` act on (the jupyter_client provisioner shape: each step one round
trip to the agent or one local action). The pieces it puts together stay where they
are: `remote` (agent requests, forwards, the local connection file) and `background`
(the per-kernel helper process that keeps the link).

The three places a kernel's state lives, and which step touches which:

    agent (the kernel)          ensure, restart, interrupt, info, stop
    forwards + connection file  connect, detach, stop, restart
    helper process (the link)   link, link_state, detach, stop, restart
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.config import Target
from tether.envs.spec import EnvSpec
from tether.kernel import names


@dataclass(frozen=True)
class RemoteKernel:
    """The kernel `name` on `target` (a remote name: `names.kernel_name` made it)."""

    target: Target
    name: str

    @classmethod
    def of(cls, target: Target, name: str | None) -> RemoteKernel:
        """The project's kernel on target: `name` or the target's default one."""
        return cls(target, names.kernel_name(target, name))

    @property
    def local_file(self) -> Path:
        """The local connection file (there while connected)."""
        return names.local_file(self.target, self.name)

    @property
    def helper_socket(self) -> Path:
        return names.helper_paths(self.target, self.name)[0]

    # -- the agent's side: one round trip each --------------------------------------

    def ensure(self, spec: EnvSpec | None = None) -> dict[str, Any]:
        """Start the kernel unless it runs (in the project's env with spec); the agent's
        answer: record, connection (the remote connection dict), started."""
        return self._start(False, spec)

    def _start(self, restart: bool, spec: EnvSpec | None) -> dict[str, Any]:
        from tether.kernel import remote

        return asyncio.run(remote.ensure(self.target, self.name, restart=restart, spec=spec))

    def interrupt(self) -> dict[str, Any]:
        """SIGINT to the kernel through the agent: its running cell stops."""
        from tether.agent.wire_jobs import KernelInterrupt

        return self.call(KernelInterrupt(self.name))

    def info(self, timeout: float | None = None) -> dict[str, Any]:
        """The agent's record of the kernel (raises AgentError NOKERNEL when none)."""
        from tether.agent.wire_jobs import KernelInfo

        return self.call(KernelInfo(self.name), timeout)

    def call(self, request: Any, timeout: float | None = None) -> dict[str, Any]:
        """One agent request about this kernel (bounded by timeout when given)."""
        from tether.kernel import remote

        async def ask() -> dict[str, Any]:
            return await asyncio.wait_for(remote.ask(self.target, request), timeout)

        return asyncio.run(ask())

    # -- the local side ---------------------------------------------------------------

    def connect(self, connection: dict[str, Any]) -> Path:
        """Forward the kernel's channels (connection: the agent's dict) through the
        host's master; the local connection file."""
        from tether.kernel import remote

        return asyncio.run(remote.connect(self.target, self.name, connection))

    def link(self, connection: dict[str, Any], idle_s: float | None = None) -> int:
        """Start (or keep) the helper that keeps the link and serves sends; its pid."""
        from tether.kernel import background

        return background.spawn(self.target, self.name, connection, idle_s=idle_s)

    def link_state(self, key: str | None = None) -> dict[str, Any]:
        from tether.kernel import background

        return background.link_state(self.target, self.name, key)

    def detach(self) -> None:
        """Let go of everything local: the helper, the forwards, the connection file.
        The kernel itself keeps running."""
        from tether.kernel import background, remote

        background.stop(self.target, self.name)
        remote.disconnect(self.target, self.name)

    # -- both ---------------------------------------------------------------------------

    def restart(self, spec: EnvSpec | None = None) -> dict[str, Any]:
        """A fresh kernel (new key): detach, then the agent restarts it; its answer."""
        self.detach()
        return self._start(True, spec)

    def stop(self) -> None:
        """Detach, then the agent stops the kernel."""
        from tether.agent.wire_jobs import KernelStop

        self.detach()
        self.call(KernelStop(self.name))
