"""The per-target send helper and background link: a detached local process that holds
the kernel connection and keeps its forwards.

    python -m tether.kernel.helper SPEC_JSON

`tether send` (stdlib only) connects to its 0600 unix socket, writes one JSON line
{"code", "root", "colour"} and reads frames back (tether/clientwire.py, so send imports
neither json nor socket): the execution's outputs rendered here (kernel/output.py) as
stdout and stderr text, notices on stderr, then the exit code (1 if it raised); a
"stale" frame means the kernel changed (restart) and the helper is leaving, so send
takes the direct path. {"op": "quit"} ends it (`tether kernel stop` / `restart`); {"op":
"ping"} answers {"pong": true, "key", "stale", "pid", "link", "idle_s", "idle_for"};
{"op": "idle", "seconds"} sets its idle time.

It is also the kernel's background link for outside Jupyter clients (the local
connection file `kernel ls` shows): first sends and `tether kernel link` start it, and
while it runs its `Link` re-makes the master and the forwards after a cut. It leaves
after its idle time (IDLE_EXIT_S unless told) without activity, activity being a request
on its socket or any message on the kernel's iopub (every request of every client makes
the kernel publish its busy and idle status), when the local connection file stops
naming its kernel (restarted, stopped), or on `tether kernel stop`.

It is started, asked and stopped through tether.kernel.background (one start at a time,
under a lock it inherits and lets go of once it serves). A request while the kernel is
dead (its heartbeat silent and the agent saying so) fails within about
DEAD_CHECK_S with one line instead of waiting for an idle that never comes.

A `Link` keeps the connection through drops: an
execution under way when the link drops goes on and its output, caught up, still
reaches the send that asked for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import sys
import time
from typing import Any

from tether import clientwire, invocation
from tether.config import Target
from tether.ipc import peer_is_me
from tether.kernel.background import IDLE_EXIT_S

IDLE_CHECK_S = 1.0  # how often an idle helper looks at iopub and the connection file
REPLY_WAIT_S = 2.0
DEAD_CHECK_S = 2.0  # heartbeat silent this long: ask the agent whether the kernel runs
AGENT_TIMEOUT_S = 20.0


def send_line(conn: socket.socket, data: dict[str, Any]) -> bool:
    """Write one JSON line; False if the send process has gone."""
    try:
        conn.sendall(json.dumps(data).encode() + b"\n")
    except OSError:
        return False
    return True


def send_frame(conn: socket.socket, kind: str, text: str) -> bool:
    """Write one frame to a send; False if it has gone."""
    try:
        conn.sendall(clientwire.frame(kind, text))
    except OSError:
        return False
    return True


def read_request(conn: socket.socket) -> dict[str, Any] | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1 << 16)
        if not chunk:
            return None
        data += chunk
    request = json.loads(data)
    return request if isinstance(request, dict) else None


class Helper:
    def __init__(
        self, target: Target, name: str, remote: dict[str, Any], idle_s: float = IDLE_EXIT_S
    ) -> None:

        from jupyter_client.blocking.client import BlockingKernelClient

        from tether.kernel import link, names
        from tether.kernel.lifecycle import RemoteKernel

        self.target = target
        self.name = name
        self.remote = remote
        self.path = RemoteKernel(target, name).connect(remote)
        self.key = remote["key"]
        self.sock_path, self.pid_path = names.helper_paths(target, name)
        self.client = BlockingKernelClient(
            connection_file=str(self.path), hb_channel_class=_heartbeat_class()
        )
        self.client.load_connection_file()
        self.client.start_channels()
        self.feed = link.Feed(self.client.iopub_channel)
        self.link = link.Link(
            target, name, remote, self.feed, self.say, beating=self.client.hb_channel.is_beating
        )
        self.conn: socket.socket | None = None
        self.dead_checked = 0.0
        self.idle_s = idle_s
        self.active_at = time.monotonic()

    def say(self, line: str) -> None:
        """Notices go to the send under way (its stderr), and to the helper's log."""
        invocation.stderr().write(line + "\n")
        invocation.stderr().flush()
        if self.conn is not None:
            send_frame(self.conn, clientwire.ERR, line + "\n")

    def stale(self) -> bool:
        """The local connection file no longer names this kernel (restarted or stopped)."""
        try:
            return bool(json.loads(self.path.read_text())["key"] != self.key)
        except (OSError, ValueError, KeyError):
            return True

    def serve(self, ready: Any = None) -> None:
        """Answer requests until told to leave; ready() once the socket is bound."""
        self.client.wait_for_ready(timeout=60)
        self.link.start()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()
        old = os.umask(0o177)
        try:
            server.bind(str(self.sock_path))
        finally:
            os.umask(old)
        os.chmod(self.sock_path, 0o600)
        server.listen(16)
        if ready is not None:
            ready()
        server.settimeout(IDLE_CHECK_S)
        try:
            while True:
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    if self.done():
                        return
                    continue
                with conn:
                    if not peer_is_me(conn):  # another user: not a word (SO_PEERCRED)
                        continue
                    if not self.handle(conn):
                        return
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.sock_path.unlink()
            self.link.stop()
            self.client.stop_channels()

    def done(self) -> bool:
        """Whether an idle helper should leave: its idle time passed without activity
        (what iopub carried meanwhile counts: another client used the kernel), or the
        connection file names another kernel now."""
        while self.feed.msg_ready():
            self.feed.get_msg(timeout=0)
            self.active_at = time.monotonic()
        if self.link.failed is not None or self.stale():
            return True
        return time.monotonic() - self.active_at >= self.idle_s

    def status(self) -> dict[str, Any]:
        """The answer to a ping: which kernel, whether the link is up, how idle."""
        link = "failed" if self.link.failed else "up" if self.link.up.is_set() else "reconnecting"
        return {
            "pong": True,
            "key": self.key,
            "stale": self.stale(),
            "pid": os.getpid(),
            "link": link,
            "idle_s": self.idle_s,
            "idle_for": round(time.monotonic() - self.active_at, 1),
        }

    def handle(self, conn: socket.socket) -> bool:
        """Serve one request; False when the helper should leave."""
        conn.settimeout(30)
        try:
            request = read_request(conn)
        except (OSError, ValueError):
            return True
        conn.settimeout(None)
        if request is None:
            return True
        if request.get("op") == "quit":
            send_line(conn, {"bye": True})
            return False
        if request.get("op") == "ping":  # (not activity: `kernel ls` must not keep it)
            send_line(conn, self.status())
            return True
        if request.get("op") == "idle":
            with contextlib.suppress(TypeError, ValueError):
                self.idle_s = max(1.0, float(request.get("seconds") or 0))
            send_line(conn, self.status())
            return True
        self.active_at = time.monotonic()
        if self.stale():
            send_frame(conn, clientwire.STALE, "")
            return False
        send_frame(conn, clientwire.ACCEPTED, "")  # from here on the cell may run
        self.conn = conn
        try:
            status = self.execute(conn, str(request.get("code", "")), request)
        finally:
            self.conn = None
            self.active_at = time.monotonic()
        send_frame(conn, clientwire.EXIT, "1" if status == "error" else "0")
        return True

    def execute(self, conn: socket.socket, code: str, request: dict[str, Any]) -> str:
        """Run code; stream its outputs to conn, rendered for the send's terminal (its
        project root for figures, colour or not); 'ok' or 'error'."""
        from tether.kernel.output import render

        root = str(request.get("root") or ".")
        colour = request.get("colour") is True

        def out(text: str) -> None:
            send_frame(conn, clientwire.OUT, text)

        def err(text: str) -> None:
            send_frame(conn, clientwire.ERR, text)

        while self.client.shell_channel.msg_ready():  # stale replies of lost executions
            self.client.shell_channel.get_msg(timeout=0)
        if self.kernel_dead():
            return "error"
        msg_id = self.client.execute(code, allow_stdin=False)
        failed = False
        while True:
            try:
                message = self.feed.get_msg(timeout=0.5)
            except queue.Empty:
                if self.kernel_dead():
                    return "error"
                continue
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message.get("msg_type") or message.get("header", {}).get("msg_type")
            content = message.get("content", {})
            if kind == "status":
                if content.get("execution_state") == "idle":
                    break
                continue
            failed = (
                render({"msg_type": kind, "content": content}, root, out, err, colour) or failed
            )
        deadline = time.monotonic() + REPLY_WAIT_S
        while time.monotonic() < deadline:
            try:
                reply = self.client.shell_channel.get_msg(timeout=0.1)
            except queue.Empty:
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                failed = failed or reply.get("content", {}).get("status") == "error"
                break
        return "error" if failed else "ok"

    def kernel_dead(self) -> bool:
        """True (and says so, once) when the kernel is gone: its heartbeat has been silent
        DEAD_CHECK_S with the link up and the agent reports it dead or absent."""
        beating = self.client.hb_channel.is_beating
        started = time.monotonic()
        while not beating():
            if not self.link.up.is_set():
                return False  # the link is down: it comes back, the request waits
            if time.monotonic() - started >= DEAD_CHECK_S:
                break
            time.sleep(0.05)
        else:
            return False
        if time.monotonic() - self.dead_checked < DEAD_CHECK_S:
            return False
        self.dead_checked = time.monotonic()
        state = self.agent_state()
        if state in ("running", "unknown"):
            return False
        self.say(
            f"tether: error: the kernel {self.name} on {self.target.host} is {state}; "
            "run `tether kernel restart`"
        )
        return True

    def agent_state(self) -> str:
        """'running', 'dead', 'stopped', 'restarted' or 'unknown' (Link.kernel_state)."""
        return self.link.kernel_state(AGENT_TIMEOUT_S)


def _heartbeat_class() -> type[Any]:
    """jupyter_client's heartbeat channel, but the socket it replaces after each missed
    beat is dropped at once. Its unanswered ping lingered for the socket's 1 s linger, and
    zmq's context waited for that on the helper's way out: a helper whose kernel had gone
    took 0.5-1.7 s to exit after `kernel stop` asked it to."""
    from jupyter_client.channels import HBChannel

    class HeartBeat(HBChannel):
        def _create_socket(self) -> None:
            super()._create_socket()
            if self.socket is not None:
                self.socket.linger = 0

    return HeartBeat


def release(lock_fd: int) -> None:
    """Let go of the start lock inherited from spawn (no-op without one)."""
    if lock_fd >= 0:
        with contextlib.suppress(OSError):
            os.close(lock_fd)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    target = Target(**spec["target"])
    lock_fd = int(spec.get("lock_fd", -1))
    try:
        helper = Helper(target, spec["name"], spec["remote"], float(spec["idle_s"]))
    except BaseException:
        release(lock_fd)
        raise

    def ready() -> None:
        helper.pid_path.write_text(str(os.getpid()))
        release(lock_fd)

    try:
        helper.serve(ready)
    finally:
        release(lock_fd)
        with contextlib.suppress(OSError):
            if helper.pid_path.read_text() == str(os.getpid()):
                helper.pid_path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
