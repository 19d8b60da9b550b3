"""The client side of the sync daemon: `tether push` / `pull` without the CLI framework.

Standard library only, imported before anything heavy: it hands the command line, the
working directory, the environment and the terminal's shape to the user's sync daemon
(tether.cli.daemon, started here on first use) over a 0600 unix socket in tether's 0700
runtime dir, then relays what comes back — stdout, stderr (progress bars included) and
the exit code — as JSON lines. Ctrl-C (or this process dying) closes the socket, which
cancels the command in the daemon like a cut link would.

The socket's name carries a fingerprint of tether's own source and interpreter, so a
changed or reinstalled tether never talks to a daemon running older code.
"""

from __future__ import annotations

import _socket  # the C module: `socket` imports enum, selectors, ... (~5 ms)
import os
import sys
import zlib

from tether import clientwire

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~10 ms here
if TYPE_CHECKING:
    from typing import Any

PREFIX = "sync-"
START_WAIT_S = 60.0


def fingerprint(package: str = "") -> str:
    """A short hash of tether's source files (path, size, mtime) and this environment."""
    package = package or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = [sys.prefix, sys.version, str(os.getuid())]
    stack = [package]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as found:
            for entry in found:
                if entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    stack.append(entry.path)
                elif entry.name.endswith(".py"):
                    st = entry.stat()
                    parts.append(f"{entry.path}:{st.st_size}:{st.st_mtime_ns}")
    text = "\n".join(sorted(parts)).encode()
    return f"{zlib.crc32(text):08x}{zlib.adler32(text):08x}"


def socket_path(key: str | None = None) -> str:
    """Where the daemon for this tether (and this user's runtime dir) listens."""
    from tether.paths import runtime_dir_str

    return os.path.join(runtime_dir_str(), f"{PREFIX}{key or fingerprint()}.sock")


def connect(path: str) -> _socket.socket | None:
    """A connection to the daemon at path, or None if none listens there."""
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    return conn


def via_daemon(args: list[str], debug: bool) -> int | None:
    """Run a push/pull command line in the daemon; its exit code, or None to run it here."""
    try:
        path = socket_path()
        conn = connect(path) or start(path)
    except Exception:  # an unsafe runtime dir, ...: the command reports it in-process
        return None
    if conn is None:
        return None
    try:
        try:
            conn.sendall(clientwire.request_line(_request(args, debug)))
        except OSError:
            return None
        return relay(conn, path)
    finally:
        conn.close()


def _request(args: list[str], debug: bool) -> dict[str, Any]:
    tty = [stream.isatty() for stream in (sys.stdout, sys.stderr)]
    env = dict(os.environ)
    if any(tty) and "COLUMNS" not in env:
        try:
            size = os.get_terminal_size(sys.stdout.fileno() if tty[0] else sys.stderr.fileno())
            env["COLUMNS"], env["LINES"] = str(size.columns), str(size.lines)
        except OSError:
            pass
    umask = os.umask(0o077)
    os.umask(umask)
    return {
        "op": "run",
        "args": args,
        "debug": debug,
        "cwd": os.getcwd(),
        "env": env,
        "tty": tty,
        "umask": umask,
    }


def relay(conn: _socket.socket, path: str) -> int | None:
    """Copy the daemon's output here until it sends the exit code (None: it is busy, or
    it went away before it took the command, which then never began there)."""
    buffer = bytearray()
    accepted = False
    try:
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            buffer += chunk
            for kind, text in clientwire.frames(buffer):
                if clientwire.shown(kind, text, sys.stdout, sys.stderr):
                    continue
                if kind == clientwire.ACCEPTED:
                    accepted = True
                elif kind == clientwire.BUSY:
                    return None
                elif kind == clientwire.EXIT:
                    return int(text)
    except KeyboardInterrupt:
        sys.stderr.write("tether: interrupted\n")
        return 130
    except (OSError, ValueError):
        pass
    if not accepted:
        return None
    log = os.path.join(os.path.dirname(path), "sync-daemon.log")
    sys.stderr.write(
        "tether: error: the sync daemon stopped in the middle of the command, "
        f"see {log}, run the command again\n"
    )
    return 1


def start(path: str) -> _socket.socket | None:
    """Start the daemon for path (one at a time, under an flock) and connect to it.

    The new daemon inherits the locked file description and lets go of it once it listens
    (or dies), so racing first pushes start one daemon and all connect to it.
    """
    import subprocess

    from tether.ipc import lock_within  # (fcntl: only a start takes the lock)

    lock_path = path[: -len(".sock")] + ".lock"
    lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not lock_within(lock, START_WAIT_S):
            return None
        conn = connect(path)
        if conn is not None:
            return conn
        log = os.path.join(os.path.dirname(path), "sync-daemon.log")
        with open(log, "ab") as output:
            subprocess.Popen(
                [sys.executable, "-m", "tether.cli.daemon", path, str(lock)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
                pass_fds=(lock,),
                cwd="/",
            )
    finally:
        os.close(lock)  # the daemon's copy keeps the lock until it listens
    wait = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        return connect(path) if lock_within(wait, START_WAIT_S) else None
    finally:
        os.close(wait)
