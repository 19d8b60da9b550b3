"""Ending processes by PID or Popen, safely: zombie-aware liveness, a first signal (TERM,
INT, or a request of the caller's own) then KILL, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tether import invocation


def alive(pid: int) -> bool:
    """True if PID exists and is not a zombie (without /proc: exists)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return False
        try:  # no /proc (macOS): signal 0 says whether it exists
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except OSError:
        return False
    state = stat.rsplit(b")", 1)[-1].split()[:1]
    return state not in ([b"Z"], [b"X"])


def run_text(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ARGV (no stdin, the caller's env), its output captured as text; bounded:
    subprocess.TimeoutExpired after timeout."""
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=invocation.spawn_env(),
    )


async def spawn_piped(argv: list[str]) -> asyncio.subprocess.Process:
    """Start ARGV with pipes on all three streams (the caller's env), for a frame channel."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        limit=1 << 20,
        env=invocation.spawn_env(),
    )


def run_quiet(argv: list[str], timeout: float = 5.0) -> None:
    """Run ARGV, ignoring its output and any failure (bounded)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError, UnicodeDecodeError):
        run_text(argv, timeout)


def marked_processes(directory: Path) -> Iterator[int]:
    """Processes whose environment says they run inside this sandbox (sshd children, jobs)."""
    mark = f"TETHER_SANDBOX_DIR={directory}".encode() + b"\0"
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if environ.startswith(mark) or b"\0" + mark in environ:
            yield int(entry)


def terminate(
    pids: list[int],
    grace_s: float = 3.0,
    reap: Callable[[], None] = lambda: None,
    first: int | None = signal.SIGTERM,
    killable: Callable[[int], bool] = lambda pid: True,
) -> None:
    """Send `first` to each pid (None: already asked to leave, by a request of its own),
    wait at most grace_s for them to exit, SIGKILL what is left and `killable` says is
    still the process meant (its cmdline, against a pid reused since)."""
    live = [pid for pid in set(pids) if pid != os.getpid() and alive(pid)]
    if first is not None:
        for pid in live:
            with contextlib.suppress(OSError):
                os.kill(pid, first)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        reap()
        live = [pid for pid in live if alive(pid)]
        if live:
            time.sleep(0.02)
    for pid in live:
        if killable(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    reap()


def end_process(
    process: subprocess.Popen[Any], first: int = signal.SIGTERM, grace_s: float = 3.0
) -> int:
    """A child of ours: `first`, at most grace_s to exit, else SIGKILL; always reaped (no
    signal once it is reaped: its pid may be another process's by then). Its exit status."""
    if process.poll() is None:
        process.send_signal(first)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
