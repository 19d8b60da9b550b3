"""Local unix-socket and lock-file helpers of tether's long-lived local processes (the sync
daemon, the send helpers). Standard library only, cheap to import: the fast paths use them.
"""

from __future__ import annotations

import fcntl
import json
import socket
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~10 ms here
if TYPE_CHECKING:
    from typing import Any

POLL_S = 0.01


def ask(path: str, request: dict[str, Any], timeout: float = 2.0) -> dict[str, Any] | None:
    """Send one JSON line to the unix socket at path and read one back; None if nothing
    answers there (no socket, refused, timeout, not JSON, not an object)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(json.dumps(request).encode() + b"\n")
            answer = json.loads(conn.makefile("rb").readline())
    except (OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def lock_within(fd: int, timeout: float) -> bool:
    """Take an exclusive flock on fd, waiting at most timeout seconds; False if not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
