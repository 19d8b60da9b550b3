"""Local unix-socket and lock-file helpers of tether's long-lived local processes (the sync
daemon, the send helpers). Standard library only, cheap to import: the fast paths use them.
"""

from __future__ import annotations

import fcntl
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~10 ms here
if TYPE_CHECKING:
    import socket
    from typing import Any

POLL_S = 0.01


def ask(path: str, request: dict[str, Any], timeout: float = 2.0) -> dict[str, Any] | None:
    """Send one JSON line to the unix socket at path and read one back; None if nothing
    answers there (no socket, refused, timeout, not JSON, not an object)."""
    import json  # here, not at the top: the fast paths import this module for lock_within
    import socket

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


def peer_is_me(conn: socket.socket) -> bool:
    """Whether the process at the other end of a unix socket runs as this user (the kernel
    vouches for it: SO_PEERCRED). Local servers answer nobody else, whatever the socket's
    file mode or directory allow (OpenSSH's mux master does the same)."""
    import os
    import socket
    import struct

    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


# What a command served by a daemon sees of its client's environment: what tether and ssh
# read (terminal, locale, ssh agent, XDG dirs, tether's own settings, the test harness's
# nss_wrapper), nothing else.
_ENV = """HOME USER LOGNAME PATH SHELL TERM COLUMNS LINES LANG LANGUAGE TZ TMPDIR NO_COLOR
FORCE_COLOR CLICOLOR CLICOLOR_FORCE SSH_AUTH_SOCK SSH_AGENT_PID DISPLAY LD_PRELOAD PYTHONPATH"""
ENV_NAMES = frozenset(_ENV.split())
ENV_PREFIXES = ("LC_", "XDG_", "TETHER_", "NSS_WRAPPER_", "GIT_")


def allowed_env(env: dict[str, str]) -> dict[str, str]:
    """The part of a client's environment a daemon passes on to the command it serves."""
    return {
        key: value for key, value in env.items() if key in ENV_NAMES or key.startswith(ENV_PREFIXES)
    }
