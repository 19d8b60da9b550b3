"""A transport that runs the "remote" side as local subprocesses: fast engine tests."""

from __future__ import annotations

import asyncio
import subprocess

from tether import invocation
from tether.transport.base import Result


class LocalTransport:
    """Runs argv directly on this machine (no ssh); the host is named 'local'."""

    def __init__(self, host: str = "local") -> None:
        self.host = host

    async def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Result:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=invocation.spawn_env(),
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(input), timeout)
        return Result(tuple(argv), process.returncode or 0, stdout, stderr)

    async def spawn(self, argv: list[str]) -> asyncio.subprocess.Process:
        from tether.hosts.processes import spawn_piped

        return await spawn_piped(argv)

    def describe_failure(self, stderr: bytes, returncode: int) -> str | None:
        return None
