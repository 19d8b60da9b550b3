"""The per-kernel helper process (tether.kernel.helper: the send helper and background
link) seen from outside: start it once (under a start lock), ask it how it is, stop it.

Starting is serialised by an flock on a lock file next to the pidfile: `spawn` takes it,
reuses a helper that answers for the same kernel, else starts one that inherits the
locked file and lets go of it only once it serves (pidfile written, socket bound) or
dies, so two first sends at the same moment start one helper.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tether import invocation
from tether.config import Target

LOCK_WAIT_S = 180.0
IDLE_EXIT_S = 30 * 60.0  # the helper leaves after this long unused
READY_WAIT_S = 90.0  # the helper waits up to 60 s for the kernel itself
QUIT_WAIT_S = 0.5  # for the helper's answer to quit (none while it serves a send)


def lock_path(target: Target, name: str) -> Path:
    """The start lock of (host, kernel)'s helper: beside its pidfile."""
    from tether.kernel import names

    _, pid_path = names.helper_paths(target, name)
    return pid_path.with_suffix(".lock")


def spec_for(
    target: Target,
    name: str,
    remote: dict[str, Any],
    lock_fd: int = -1,
    idle_s: float = IDLE_EXIT_S,
) -> str:
    return json.dumps(
        {
            "target": {
                "name": target.name,
                "host": target.host,
                "path": target.path,
                "python": target.python,
            },
            "name": name,
            "remote": remote,
            "lock_fd": lock_fd,
            "idle_s": idle_s,
        }
    )


def ping(sock_path: Path, timeout: float = 2.0) -> dict[str, Any] | None:
    """The helper's answer to a ping on sock_path, or None if none answers."""
    from tether.ipc import ask

    answer = ask(str(sock_path), {"op": "ping"}, timeout)
    return answer if answer is not None and answer.get("pong") else None


@contextlib.contextmanager
def start_lock(target: Target, name: str, timeout: float = LOCK_WAIT_S) -> Iterator[int]:
    """Hold the exclusive flock on (host, kernel)'s start lock; its fd.

    A helper being started holds it until it serves, so this waits for that (bounded).
    """
    from tether.errors import TetherError
    from tether.ipc import lock_within

    path = lock_path(target, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not lock_within(fd, timeout):
            raise TetherError(
                "the send helper did not start",
                f"another one held {path} for {timeout:.0f} s",
                "run `tether kernel stop` and try again",
            )
        yield fd
    finally:
        os.close(fd)


def spawn(target: Target, name: str, remote: dict[str, Any], idle_s: float | None = None) -> int:
    """Start the helper detached unless one serves this kernel already; its pid.

    Under the start lock: a helper answering for the same kernel (key) is kept (and given
    idle_s, when given); one for another kernel (restarted) is stopped first. The new
    helper inherits the locked file and lets go of it once it serves, so a second spawn
    waits for it and keeps it.
    """
    import subprocess

    from tether.kernel import names

    sock_path, pid_path = names.helper_paths(target, name)
    with start_lock(target, name) as fd:
        answer = ping(sock_path)
        if answer is not None and answer.get("key") == remote.get("key"):
            if idle_s is not None:
                from tether.ipc import ask

                ask(str(sock_path), {"op": "idle", "seconds": idle_s})
            with contextlib.suppress(OSError, ValueError):
                return int(pid_path.read_text())
        if answer is not None or pid_path.exists():
            stop(target, name)
        log = names.kernels_dir() / "helpers.log"
        with open(log, "ab") as output:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tether.kernel.helper",
                    spec_for(target, name, remote, fd, IDLE_EXIT_S if idle_s is None else idle_s),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
                pass_fds=(fd,),
                env=invocation.spawn_env(),
            )
    # The helper holds the lock (inherited) until it serves or dies: once it is ours
    # again, the link is up (or the helper's log says why not), so whoever printed the
    # connection file next hands out a usable one.
    with start_lock(target, name, timeout=READY_WAIT_S):
        pass
    return process.pid


def link_state(target: Target, name: str, key: str | None = None) -> dict[str, Any]:
    """Whether (host, kernel)'s background link runs: {"state": "up" | "reconnecting" |
    "busy" (serving a send, no answer now) | "down", "pid", "idle_s", "idle_for"}. A
    helper of another kernel than `key` (about to leave) counts as down."""
    from tether.kernel import names

    sock_path, pid_path = names.helper_paths(target, name)
    answer = ping(sock_path, timeout=0.5)
    if answer is not None:
        if answer.get("stale") or (key is not None and answer.get("key") != key):
            return {"state": "down", "pid": None}
        state = "up" if answer.get("link") == "up" else str(answer.get("link"))
        fields = ("pid", "idle_s", "idle_for")
        return {"state": state, **{field: answer.get(field) for field in fields}}
    try:
        pid = int(pid_path.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return {"state": "down", "pid": None}
    return {"state": "busy", "pid": pid}


def stop(target: Target, name: str) -> None:
    """End the helper of (host, kernel); it is gone when this returns.

    Asked to quit, it leaves by itself; one that does not take the request within
    QUIT_WAIT_S (it takes none while it serves a send's cell) gets SIGTERM; SIGKILL after
    a grace period. Its pid is read first: a leaving helper removes its pidfile before
    its process ends."""
    import signal

    from tether.hosts.processes import terminate
    from tether.kernel import names

    sock_path, pid_path = names.helper_paths(target, name)
    try:
        pid: int | None = int(pid_path.read_text())
    except (OSError, ValueError):
        pid = None
    answer = b""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(QUIT_WAIT_S)
        conn.connect(str(sock_path))
        conn.sendall(b'{"op": "quit"}\n')
        answer = conn.recv(100)
    if pid is not None and _is_helper(pid):
        first = None if b"bye" in answer else signal.SIGTERM
        terminate([pid], first=first, killable=_is_helper)
    with contextlib.suppress(OSError):
        pid_path.unlink()
    with contextlib.suppress(OSError):
        sock_path.unlink()


def _is_helper(pid: int) -> bool:
    """pid is still a send helper (not a process that took its pid since)."""
    try:
        return b"tether.kernel.helper" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
