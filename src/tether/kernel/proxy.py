"""The kernel a Jupyter frontend launches from tether's kernelspec: a local proxy.

    python -m tether.kernel.proxy --project ROOT --on TARGET [--name NAME] CONNECTION_FILE

It attaches to (or starts) the persistent remote kernel of (project, target, name), the
one `tether console` and `tether send` use, through tether's private forwarded unix
sockets, and serves the frontend on the addresses and key of the frontend's own
connection file. Messages pass through unchanged except for their signature: each one
from the frontend is checked with the frontend's key (others are dropped) and signed
again with the remote kernel's key, and back. Identities pass through (the remote
kernel's ROUTER sees [proxy, client]), so replies and input requests reach the client
that asked. The heartbeat is answered here: the proxy is the kernel's process as far
as the frontend knows, and a link drop is not a dead kernel.

The link is kept as the console keeps it (tether.kernel.link): a drop is re-made on
the same sockets and the iopub messages recorded on the remote meanwhile are published
before the live ones, each once. On the control channel:
- shutdown_request: answered here and the proxy leaves; the remote kernel keeps running
  (a frontend's "shutdown" detaches, as leaving the console does);
- shutdown_request with restart: leaves a note for the proxy the frontend starts next
  with the same connection file, which restarts the remote kernel (done there: the
  frontend kills a kernel process that takes more than a few seconds to go);
- interrupt_request (and SIGINT to this process): SIGINT to the remote kernel through
  the agent.
An execute_reply the kernel sent while the link was down is lost (its ROUTER drops what
it cannot route); once the request's idle status has come (live or caught up) and no reply
followed within REPLY_GRACE_S, the proxy answers it from what iopub showed (status,
execution count, the error), so a notebook never waits for it forever.
The proxy also leaves when its parent (the frontend) dies, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tether import invocation
from tether.config import Target
from tether.envs.spec import EnvSpec

DELIM = b"<IDS|MSG>"
READY_WAIT_S = 90.0
RESTART_NOTE_S = 120.0
POLL_MS = 50
REPLY_GRACE_S = 1.0

Frames = list[bytes]


def address(info: dict[str, Any], channel: str) -> str:
    """The zmq address of a channel in a connection dict (tcp or ipc)."""
    if info.get("transport", "tcp") == "ipc":
        return f"ipc://{info['ip']}-{info[channel]}"
    return f"tcp://{info.get('ip') or '127.0.0.1'}:{info[channel]}"


class Signer:
    """Jupyter's HMAC over (header, parent, metadata, content) with one key."""

    def __init__(self, key: str, scheme: str = "hmac-sha256") -> None:
        self.key = key.encode()
        self.digest = scheme.split("-", 1)[1] if scheme.startswith("hmac-") else "sha256"

    def sign(self, parts: Frames) -> bytes:
        if not self.key:
            return b""
        mac = hmac.new(self.key, digestmod=getattr(hashlib, self.digest))
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode()


def split(frames: Frames) -> tuple[Frames, Frames] | None:
    """(identities, [signature, header, parent, metadata, content, buffers...])."""
    try:
        at = frames.index(DELIM)
    except ValueError:
        return None
    body = frames[at + 1 :]
    return (frames[:at], body) if len(body) >= 5 else None


def resign(frames: Frames, source: Signer, dest: Signer) -> Frames | None:
    """frames signed with dest's key, if source's key signed them (else None)."""
    parts = split(frames)
    if parts is None:
        return None
    idents, body = parts
    if not hmac.compare_digest(body[0], source.sign(body[1:5])):
        return None
    return [*idents, DELIM, dest.sign(body[1:5]), *body[1:]]


def header_of(frames: Frames) -> dict[str, Any]:
    return part_of(frames, 1)


def part_of(frames: Frames, index: int) -> dict[str, Any]:
    """One JSON part of a message (1 header, 2 parent, 3 metadata, 4 content), or {}."""
    parts = split(frames)
    try:
        value = json.loads(parts[1][index]) if parts else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Waiting:
    """An execute request relayed to the kernel, and what iopub said of it so far."""

    def __init__(self, idents: Frames, header: dict[str, Any]) -> None:
        self.idents = idents
        self.header = header
        self.count: Any = None
        self.error: dict[str, Any] | None = None
        self.idle_at: float | None = None


def restart_note(connection_file: str) -> Path:
    """Where a proxy asked to restart leaves that for the next one (same frontend file)."""
    from tether.kernel.names import kernels_dir

    digest = hashlib.sha256(
        os.path.normpath(invocation.absolute(connection_file)).encode()
    ).hexdigest()[:16]
    return kernels_dir() / f"restart-{digest}"


def take_restart_note(connection_file: str) -> bool:
    """Whether the proxy before this one was asked to restart the kernel (recently)."""
    note = restart_note(connection_file)
    try:
        fresh = time.time() - note.stat().st_mtime < RESTART_NOTE_S
        note.unlink()
    except OSError:
        return False
    return fresh


class Proxy:
    """One frontend's kernel: the remote kernel behind re-signed zmq channels."""

    def __init__(
        self, target: Target, kernel: str, connection_file: str, spec: EnvSpec | None = None
    ) -> None:
        import zmq
        from jupyter_client.session import Session

        from tether.kernel.lifecycle import RemoteKernel

        self.target = target
        self.kernel = kernel
        self.connection_file = connection_file
        self.front_info = json.loads(Path(connection_file).read_text(encoding="utf-8"))
        scheme = str(self.front_info.get("signature_scheme") or "hmac-sha256")
        self.front = Signer(str(self.front_info.get("key", "")), scheme)
        self.front_session = Session(key=self.front.key, signature_scheme=scheme)
        self.remote_kernel = RemoteKernel(target, kernel)
        if take_restart_note(connection_file):
            answer = self.remote_kernel.restart(spec)
        else:
            answer = self.remote_kernel.ensure(spec)
        self.remote = answer["connection"]  # in the project's env, as console and send
        local = self.remote_kernel.connect(self.remote)
        self.local_info = json.loads(local.read_text(encoding="utf-8"))
        back_scheme = str(self.remote.get("signature_scheme") or "hmac-sha256")
        self.back = Signer(str(self.remote["key"]), back_scheme)
        self.back_session = Session(key=self.back.key, signature_scheme=back_scheme)
        self.context = zmq.Context()
        identity = f"tether-proxy-{uuid.uuid4().hex}".encode()
        self.sockets: list[Any] = []
        self.back_shell = self._socket(zmq.DEALER, identity)
        self.back_control = self._socket(zmq.DEALER, identity)
        self.back_stdin = self._socket(zmq.DEALER, identity)
        self.back_iopub = self._socket(zmq.SUB)
        self.back_iopub.setsockopt(zmq.SUBSCRIBE, b"")
        for sock, channel in (
            (self.back_shell, "shell_port"),
            (self.back_control, "control_port"),
            (self.back_stdin, "stdin_port"),
            (self.back_iopub, "iopub_port"),
        ):
            sock.connect(address(self.local_info, channel))
        self.leaving = False
        self.interrupts = 0
        self.waiting: dict[str, Waiting] = {}  # execute requests without a reply yet
        self.answered: set[str] = set()  # ... and those the proxy answered itself
        self.parent = os.getppid()

    def _socket(self, kind: int, identity: bytes | None = None) -> Any:
        import zmq

        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        self.sockets.append(sock)
        return sock

    def wait_ready(self) -> None:
        """Until the kernel answers and its iopub reaches us (nothing published is lost
        to a subscription still on its way): ask kernel_info, wait for its status."""
        from tether.errors import TetherError

        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            self.back_session.send(self.back_shell, "kernel_info_request", {})
            asked = time.monotonic()
            while time.monotonic() - asked < 1.0:
                if self.back_iopub.poll(100):
                    self.back_iopub.recv_multipart()  # its replies are dropped: no client
                    return
        raise TetherError(
            f"the kernel {self.kernel} on {self.target.host} did not answer",
            f"within {READY_WAIT_S:.0f} s",
            "try `tether kernel restart`",
        )

    def bind_front(self) -> None:
        import zmq

        self.front_shell = self._socket(zmq.ROUTER)
        self.front_control = self._socket(zmq.ROUTER)
        self.front_stdin = self._socket(zmq.ROUTER)
        self.front_iopub = self._socket(zmq.PUB)
        self.front_hb = self._socket(zmq.ROUTER)
        for sock, channel in (
            (self.front_shell, "shell_port"),
            (self.front_control, "control_port"),
            (self.front_stdin, "stdin_port"),
            (self.front_iopub, "iopub_port"),
            (self.front_hb, "hb_port"),
        ):
            sock.bind(address(self.front_info, channel))

    def run(self) -> int:
        """Serve the frontend until it shuts the kernel down or goes away."""
        import zmq

        from tether.kernel.link import Feed, Link

        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.wait_ready()
        self.bind_front()
        feed = Feed(_Channel(self.back_iopub))
        link = Link(self.target, self.kernel, self.remote, feed, _say).start()
        poller = zmq.Poller()
        pairs = {
            self.front_shell: (self.back_shell, "shell"),
            self.front_stdin: (self.back_stdin, "stdin"),
            self.front_control: (self.back_control, "control"),
            self.back_shell: (self.front_shell, "reply"),
            self.back_stdin: (self.front_stdin, "reply"),
            self.back_control: (self.front_control, "reply"),
        }
        for sock in (*pairs, self.front_hb, self.back_iopub):
            poller.register(sock, zmq.POLLIN)
        try:
            while not self.leaving and os.getppid() == self.parent:
                if self.interrupts:
                    self.interrupts = 0
                    self._interrupt()
                ready = dict(poller.poll(POLL_MS))
                for sock in ready:
                    if sock is self.front_hb:
                        self.front_hb.send_multipart(self.front_hb.recv_multipart())
                    elif sock in pairs:
                        dest, kind = pairs[sock]
                        self._relay(sock.recv_multipart(), dest, kind)
                while not self.leaving and feed.msg_ready():
                    self._publish(feed.get_msg(timeout=0))
                if feed.holding.is_set():
                    time.sleep(POLL_MS / 1000)  # the link is being re-made: iopub waits
                elif self.waiting:
                    self._answer_lost_replies()
        finally:
            link.stop()
            for sock in self.sockets:
                sock.close(linger=0)
            self.context.term()
        return 0

    def _relay(self, frames: Frames, dest: Any, kind: str) -> None:
        if kind == "reply":
            signed = resign(frames, self.back, self.front)
            if signed is not None and signed[0] != DELIM:  # no client: our own probe's
                parent_id = str(part_of(frames, 2).get("msg_id"))
                self.waiting.pop(parent_id, None)
                if parent_id not in self.answered:  # else answered here already: once
                    dest.send_multipart(signed)
            return
        signed = resign(frames, self.front, self.back)
        if signed is None:
            return  # not signed with the frontend's key: not from the frontend
        header = header_of(frames)
        if kind == "shell" and header.get("msg_type") == "execute_request":
            idents = (split(frames) or ([], []))[0]
            self.waiting[str(header.get("msg_id"))] = Waiting(idents, header)
        if kind == "control" and self._control(header, frames):
            return
        dest.send_multipart(signed)

    def _control(self, header: dict[str, Any], frames: Frames) -> bool:
        """Answer shutdown and interrupt here; True if answered."""
        kind = header.get("msg_type")
        idents = (split(frames) or ([], []))[0]
        parent = {"header": header}
        if kind == "interrupt_request":
            self._interrupt()
            self.front_session.send(
                self.front_control, "interrupt_reply", {"status": "ok"}, parent, ident=idents
            )
            return True
        if kind == "shutdown_request":
            body = (split(frames) or ([], [b"", b"", b"", b"", b"{}"]))[1]
            try:
                restart = bool(json.loads(body[4]).get("restart"))
            except (ValueError, AttributeError):
                restart = False
            if restart:
                note = restart_note(self.connection_file)
                note.write_text(str(time.time()), encoding="utf-8")
            content = {"status": "ok", "restart": restart}
            self.front_session.send(
                self.front_control, "shutdown_reply", content, parent, ident=idents
            )
            self.leaving = True
            return True
        return False

    def _interrupt(self) -> None:
        try:
            self.remote_kernel.interrupt()
        except Exception as error:  # the frontend asked; say why not, go on
            _say(f"tether: could not interrupt the kernel: {error}")

    def _publish(self, message: dict[str, Any]) -> None:
        frames = message.get("frames")
        if isinstance(frames, list):
            signed = resign(frames, self.back, self.front)
            if signed is not None:
                self.front_iopub.send_multipart(signed)
                parent, content = part_of(frames, 2), part_of(frames, 4)
                self._saw(str(message["header"].get("msg_type")), parent, content)
            return
        self.front_session.send(self.front_iopub, message)  # caught up from the recorder
        kind = str(message.get("header", {}).get("msg_type"))
        self._saw(kind, message.get("parent_header") or {}, message.get("content") or {})

    def _saw(self, kind: str, parent: dict[str, Any], content: dict[str, Any]) -> None:
        """Note what iopub says of a waiting execute request."""
        waiting = self.waiting.get(str(parent.get("msg_id")))
        if waiting is None:
            return
        if kind == "execute_input":
            waiting.count = content.get("execution_count", waiting.count)
        elif kind == "error":
            waiting.error = content
        elif kind == "status" and content.get("execution_state") == "idle":
            waiting.idle_at = time.monotonic()

    def _answer_lost_replies(self) -> None:
        """Reply to execute requests whose reply the link lost (idle came, no reply)."""
        now = time.monotonic()
        for msg_id, waiting in list(self.waiting.items()):
            if waiting.idle_at is None or now - waiting.idle_at < REPLY_GRACE_S:
                continue
            del self.waiting[msg_id]
            self.answered.add(msg_id)
            content: dict[str, Any] = {"status": "ok", "execution_count": waiting.count}
            if waiting.error is not None:
                content.update(waiting.error, status="error")
            else:
                content.update(payload=[], user_expressions={})
            parent = {"header": waiting.header}
            reply = "execute_reply"
            self.front_session.send(self.front_shell, reply, content, parent, ident=waiting.idents)

    def _on_sigint(self, *_: Any) -> None:
        self.interrupts += 1

    def _on_sigterm(self, *_: Any) -> None:
        self.leaving = True


class _Channel:
    """The remote iopub as a Feed reads it: messages keep their raw frames."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket

    def msg_ready(self) -> bool:
        return bool(self.socket.poll(0))

    def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        frames = self.socket.recv_multipart()
        header = header_of(frames)
        return {"header": header, "msg_id": header.get("msg_id", ""), "frames": frames}


def _say(line: str) -> None:
    invocation.stderr().write(line + "\n")
    invocation.stderr().flush()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tether.kernel.proxy")
    parser.add_argument("--project", required=True)
    parser.add_argument("--on")
    parser.add_argument("--name")
    parser.add_argument("connection_file")
    args = parser.parse_args(argv)
    from tether import config as config_module
    from tether.errors import TetherError
    from tether.kernel import names

    try:
        config = config_module.load(Path(args.project))
        target = config.one(args.on)
        kernel = names.kernel_name(target, args.name)
        from tether.envs.spec import find

        return Proxy(target, kernel, args.connection_file, find(config)).run()
    except TetherError as error:
        _say(f"tether: error: {error.line()}")
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
