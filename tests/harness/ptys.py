"""A process on a pseudo-terminal, driven like a user at a terminal: send keys, wait for text.

`spawn(argv)` starts argv on a new 24x80 pty as its controlling terminal, optionally as
another user (the pty is then theirs, as a login's terminal would be).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time
from collections.abc import Sequence
from pathlib import Path


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    user: tuple[int, int] | None = None,
) -> PtyProcess:
    """argv on a new pty; USER=(uid, gid): as that user (setgroups/setgid/setuid)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child
        try:
            if user is not None:
                uid, gid = user
                os.fchown(0, uid, gid)
                os.setgroups([gid])
                os.setgid(gid)
                os.setuid(uid)
            if cwd is not None:
                os.chdir(cwd)
            os.execvpe(argv[0], list(argv), os.environ if env is None else env)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    return PtyProcess(pid, fd)


class PtyProcess:
    """A process on a pty: send keys, wait for text, collect everything it wrote."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self.seen = b""
        self.status: int | None = None

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, pattern: bytes, timeout: float = 30) -> bytes:
        """Read until PATTERN (a regex) appears in what it wrote; AssertionError if not."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.seen):
            if time.monotonic() >= deadline or not self._read(deadline - time.monotonic()):
                raise AssertionError(f"no {pattern!r} on the pty; it wrote: {self.text()!r}")
        return self.seen

    def wait(self, timeout: float = 30) -> int:
        """Read until it closes the pty, then its exit code (ends it if it runs on)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass
        return self.close()

    def close(self) -> int:
        """Reap it (SIGTERM, then SIGKILL if it does not end), close the pty; exit code."""
        if self.status is None:
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    with contextlib.suppress(OSError):
                        os.kill(self.pid, sig)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    done, status = os.waitpid(self.pid, os.WNOHANG)
                    if done:
                        self.status = status
                        break
                    self._read(0.05)
                if self.status is not None:
                    break
            with contextlib.suppress(OSError):
                os.close(self.fd)
        assert self.status is not None
        return os.waitstatus_to_exitcode(self.status)

    def text(self) -> str:
        return self.seen.decode(errors="replace")

    def _read(self, timeout: float) -> bool:
        """One read of what is there within TIMEOUT; False once the pty is closed."""
        try:
            ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
            if not ready:
                return True
            chunk = os.read(self.fd, 65536)
        except (OSError, ValueError):
            return False
        self.seen += chunk
        return bool(chunk)


def tmux_detach(attached: PtyProcess, tries: int = 10) -> None:
    """Ctrl-b d until tmux says it detached (keys that come while the tmux client still
    waits for the terminal's answers to its queries go to the pane instead)."""
    for _ in range(tries):
        attached.send(b"\x02")
        time.sleep(0.2)
        attached.send(b"d")
        with contextlib.suppress(AssertionError):
            attached.expect(rb"\[detached", timeout=2)
            return
    raise AssertionError(f"tmux did not detach: {attached.text()!r}")
