"""The caller a command runs for: its environment, working directory, umask and output.

A command run as `tether ...` in its own process is its own caller: these are the
process's. The sync daemon (tether.cli.daemon) runs push, pull, jobs and status for
clients in its own long-lived process: it makes an `Invocation` of the client's request
and runs the command under it, as a context variable. The daemon's own environment,
working directory, umask and sys.stdout are never changed, so its other threads and tasks
(the channel reaper, the watchdog, a second command) keep seeing the daemon's own, and
nothing has to be put back when a command is cancelled.

One rule: tether's client code reads the caller's environment, working directory, home,
umask and output streams through this module, never `os.environ`, `os.getcwd`,
`Path.home`, `sys.stdout` directly (tests/unit/test_architecture.py holds it to that).
Subprocesses get `spawn_env()` so ssh sees the client's SSH_AUTH_SOCK, not the daemon's.

Standard library only at import time: the send and push fast paths import it.
"""

from __future__ import annotations

import contextvars
import os
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~10 ms
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import TextIO


class Invocation:
    """One client's environment, working directory (absolute), umask and streams."""

    __slots__ = ("cwd", "env", "stderr", "stdout", "umask")

    def __init__(
        self, env: Mapping[str, str], cwd: str, umask: int, stdout: TextIO, stderr: TextIO
    ) -> None:
        self.env = dict(env)
        self.cwd = cwd
        self.umask = umask
        self.stdout = stdout
        self.stderr = stderr


_CURRENT: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "tether_invocation", default=None
)


def current() -> Invocation | None:
    """The invocation a daemon runs this command under (None: this process is the caller)."""
    return _CURRENT.get()


def enter(invocation: Invocation | None) -> None:
    """Set the invocation for the rest of the current task (an asyncio task's own context:
    the daemon's coroutine wrapper, which runs in the loop thread, calls this first)."""
    _CURRENT.set(invocation)


def environ() -> Mapping[str, str]:
    """The caller's environment."""
    invocation = _CURRENT.get()
    return os.environ if invocation is None else invocation.env


def getenv(key: str, default: str | None = None) -> str | None:
    """One variable of the caller's environment."""
    return environ().get(key, default)


def spawn_env() -> dict[str, str] | None:
    """`env=` for a subprocess: the caller's environment (None: inherit this process's)."""
    invocation = _CURRENT.get()
    return None if invocation is None else dict(invocation.env)


def exec_path() -> str | None:
    """The caller's PATH, for shutil.which (None: this process's)."""
    invocation = _CURRENT.get()
    return None if invocation is None else invocation.env.get("PATH", os.defpath)


def cwd() -> str:
    """The caller's working directory (absolute)."""
    invocation = _CURRENT.get()
    return os.getcwd() if invocation is None else invocation.cwd


def absolute(path: str) -> str:
    """path made absolute against the caller's working directory (not normalised)."""
    return os.path.join(cwd(), os.fspath(path))


def home() -> str:
    """The caller's home: $HOME, else the passwd entry's (as os.path.expanduser does)."""
    value = environ().get("HOME")
    if value:
        return value
    import pwd

    return pwd.getpwuid(os.getuid()).pw_dir


def expanduser(path: str) -> str:
    """path with a leading `~` or `~/` made the caller's home; `~user` as the passwd says."""
    if path == "~":
        return home()
    if path.startswith("~/"):
        return home().rstrip("/") + path[1:]
    return os.path.expanduser(path) if path.startswith("~") else path


def umask() -> int:
    """The caller's umask."""
    invocation = _CURRENT.get()
    if invocation is not None:
        return invocation.umask
    from tether.agent.modes import current_umask

    return current_umask()


def stdin() -> TextIO:
    """The caller's standard input (a daemon-served command has none: an empty one)."""
    if _CURRENT.get() is None:
        return sys.stdin
    import io

    return io.StringIO("")


def stdout() -> TextIO:
    """The caller's standard output."""
    invocation = _CURRENT.get()
    return sys.stdout if invocation is None else invocation.stdout


def stderr() -> TextIO:
    """The caller's standard error."""
    invocation = _CURRENT.get()
    return sys.stderr if invocation is None else invocation.stderr
