"""The narrow transport interface: run argv on a host, open a byte channel, forward ports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Result:
    """A finished remote command: exit code and captured output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (replacing what is not)."""
        return self.stdout.decode("utf-8", "replace")


class Transport(Protocol):
    """How tether reaches one host; `ssh.SshTransport` is the real one."""

    host: str

    async def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Result:
        """Run argv on the host (each element quoted for the remote shell) and wait."""
        ...

    async def spawn(self, argv: list[str]) -> asyncio.subprocess.Process:
        """Start argv on the host with stdin/stdout/stderr as pipes."""
        ...

    def describe_failure(self, stderr: bytes, returncode: int) -> str | None:
        """A one-line reason when a failure came from the link rather than the command."""
        ...
