"""A pipelined request channel to the agent over one ssh process's stdin/stdout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from tether.agent.bundle import BOOTSTRAP, agent_zip
from tether.agent.protocol import decode_header_text, encode, grow_pipe, header_text
from tether.agent.wire import TABLE, ErrorKind, Hello, Op, Request, explain
from tether.errors import ConnectionLost, HostError, RemoteError
from tether.safety import python_argv
from tether.transport.base import Transport
from tether.transport.rows import LAZY_MIN, decode_rows_later

Answer = tuple[dict[str, Any], bytes]
A = TypeVar("A")


class AgentError(RemoteError):
    """The agent answered a request with an error: `kind` (an ErrorKind) says which, `what`
    holds the agent's own words; the line and what to do come from wire.TABLE."""

    def __init__(self, host: str, op: Op | str, kind: ErrorKind | str, message: str) -> None:
        self.kind = ErrorKind.of(kind)
        self.op = str(getattr(op, "value", op))
        self.said, todo = explain(self.kind, message)
        super().__init__(host, f"{self.op} failed", message)
        self.what = message
        self.why = ""
        self.todo = todo
        if TABLE[self.kind].usage:
            self.exit_code = 2
        self.args = (self.line(),)

    def line(self) -> str:
        return ", ".join(p for p in (f"{self.said} (on {self.host})", self.todo) if p)


class AgentChannel:
    """One agent process; many requests in flight, answers matched by id."""

    def __init__(
        self, transport: Transport, process: asyncio.subprocess.Process, python: str = "python3"
    ) -> None:
        self.transport = transport
        self.host = transport.host
        self.process = process
        self.info: dict[str, Any] = {}
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Answer]] = {}
        self._streams: dict[int, asyncio.Queue[Any]] = {}
        self._lazy: set[int] = set()  # requests whose large answer's rows come one at a time
        self._reader: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._hello: asyncio.Future[Answer] | None = None
        self._digest = ""
        self._stderr_tail: list[bytes] = []
        self._closed_reason: str | None = None
        self.received = 0  # frames answered so far (a kept channel that answered is live)
        # The last scan answers of this agent (see sync.endpoint.RemoteEndpoint.scan): a later scan
        # of the same tree is answered with what changed since.
        self.scan_memo: dict[str, Any] = {}
        # More agents on the same host for bulk transfers (see `helpers`), closed with this.
        self.python = python
        self._helpers: list[AgentChannel] = []

    @classmethod
    async def open(
        cls, transport: Transport, python: str = "python3", kept: bool = False
    ) -> AgentChannel:
        """Start (installing first if needed) the agent on the host and say hello (`kept`:
        a channel kept between commands, see wire.Hello)."""
        data, digest = agent_zip()
        argv = [*python_argv(python), "-c", BOOTSTRAP, digest]
        process = await transport.spawn(argv)
        if process.stdin is not None:
            with contextlib.suppress(AttributeError, ValueError):
                grow_pipe(process.stdin.transport.get_extra_info("pipe").fileno())
        channel = cls(transport, process, python)
        try:
            await channel._bootstrap(data, python)
            channel._reader = asyncio.create_task(channel._read_loop())
            channel._stderr_task = asyncio.create_task(channel._drain_stderr())
            # The hello is not awaited here: its answer comes before any other, and
            # `request` checks it, so the first real request shares its round trip.
            channel._hello = channel.submit(Hello(watch=True) if kept else Hello())
            channel._digest = digest
            await channel.flush()
        except BaseException:
            await channel.close()
            raise
        return channel

    async def ready(self) -> dict[str, Any]:
        """The agent's hello, checked against the version we installed (once)."""
        if not self.info:
            assert self._hello is not None
            hello, _ = check(self.host, Op.HELLO, await self._hello)
            if hello.get("version") != self._digest:
                raise RemoteError(self.host, "agent handshake", "agent version mismatch")
            self.info = hello
        return self.info

    async def _bootstrap(self, data: bytes, python: str) -> None:
        assert self.process.stdout is not None and self.process.stdin is not None
        seen = b""
        while True:
            line = await self.process.stdout.readline()
            if not line:
                await self._fail_start(python, seen)
            if line.startswith(b"TETHER-NEED"):
                self.process.stdin.write(b"%d\n" % len(data) + data)
                await self.process.stdin.drain()
            elif line.startswith(b"TETHER-OK"):
                return
            elif line.startswith(b"TETHER-PYOLD"):
                version = line.split()[-1].decode()
                raise HostError(
                    self.host,
                    f"remote {python} is Python {version}; tether's agent needs 3.8 or newer",
                    "set `python = ...` in the target to a newer interpreter",
                )
            elif line.startswith(b"TETHER-BAD"):
                raise RemoteError(self.host, "agent upload", "the uploaded agent is corrupt")
            else:
                seen += line
                if len(seen) > 65536:
                    raise RemoteError(self.host, "agent start", "unexpected output from the shell")

    async def _fail_start(self, python: str, seen: bytes) -> None:
        assert self.process.stderr is not None
        stderr = await self.process.stderr.read()
        returncode = await self.process.wait()
        if hasattr(self.transport, "raise_for_link"):
            self.transport.raise_for_link(stderr, returncode)
        text = (stderr + seen).decode("utf-8", "replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        exe = python_argv(python)[0]
        missing = any(
            exe in line
            and ("not found" in line or "No such file or directory" in line)
            and "shared librar" not in line
            for line in lines
        )
        if missing or (returncode == 127 and not lines):
            raise HostError(
                self.host,
                f"no {python} on the remote",
                "install python3 there, or set `python = ...` in the target",
            )
        last = lines[-1] if lines else f"exit {returncode}"
        raise HostError(  # it exists but cannot start: the remote's own words
            self.host,
            f"{python} cannot start there: {last}",
            "fix that interpreter, or set `python = ...` in the target to another",
        )

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        while True:
            line = await self.process.stderr.readline()
            if not line:
                return
            self._stderr_tail = [*self._stderr_tail[-20:], line]

    async def _read_loop(self) -> None:
        assert self.process.stdout is not None
        stream = self.process.stdout
        try:
            while True:
                (length,) = struct.unpack(">I", await stream.readexactly(4))
                # The frame's bytes go before its JSON is decoded (a whole-tree scan
                # answer is megabytes).
                text = header_text(await stream.readexactly(length))
                header = self._decode(text)
                del text
                size = int(header.get("n", 0))
                payload = await stream.readexactly(size) if size else b""
                self._deliver(header, payload)
                # Not held while the next frame is awaited: a whole-tree scan answer's
                # decoded rows would stay alive until then (between pushes).
                del header, payload
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as error:
            self._closed_reason = str(error) or "the agent's stream ended"
        finally:
            self._fail_all()

    def _decode(self, text: str) -> dict[str, Any]:
        """A frame's header; a large answer to a request_rows() with its rows left to decode
        as they are taken (transport/rows.py)."""
        if self._lazy and len(text) >= LAZY_MIN:
            header = decode_rows_later(text)
            # (The agent moves "rows" after the id in a large answer: one with "rows" first
            # is not of that kind.)
            if header is not None and header.get("id") in self._lazy:
                return header
        return decode_header_text(text)

    def _deliver(self, header: dict[str, Any], payload: bytes) -> None:
        self.received += 1
        request_id = header.get("id")
        if not isinstance(request_id, int):
            return
        queue = self._streams.get(request_id)
        if queue is not None:
            queue.put_nowait((header, payload))
            if not header.get("more"):
                self._streams.pop(request_id, None)
            return
        self._lazy.discard(request_id)
        future = self._pending.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result((header, payload))

    def _fail_all(self) -> None:
        error = self.lost()
        for future in self._pending.values():
            _fail(future, error)
        self._pending.clear()
        self._lazy.clear()
        for queue in self._streams.values():
            queue.put_nowait(error)
        self._streams.clear()

    def lost(self) -> ConnectionLost:
        """The error for a dropped channel, with ssh's own reason where it gave one."""
        stderr = b"".join(self._stderr_tail)
        reason = self.transport.describe_failure(stderr, 255) if stderr else None
        return ConnectionLost(self.host, reason or "the ssh connection dropped")

    @property
    def alive(self) -> bool:
        """False once the agent's stream has ended."""
        return self._reader is not None and not self._reader.done()

    @property
    def idle(self) -> bool:
        """True when no answer is outstanding (the channel can serve another command)."""
        return not self._pending and not self._streams

    def _frame(self, request: Request[Any]) -> tuple[int, bytes]:
        """(request id, frame bytes) of a request."""
        header, payload = request.to_frame()
        self._next_id += 1
        return self._next_id, encode({"id": self._next_id, **header}, payload)

    async def _write(self, data: bytes) -> None:
        if not self.alive:
            raise self.lost()
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
            await self.process.stdin.drain()
        except (ConnectionError, RuntimeError) as error:
            raise self.lost() from error

    def submit(self, request: Request[Any]) -> asyncio.Future[Answer]:
        """Queue a request without waiting (pipelining); await the future for its raw answer,
        error answers included (`refusal` reads them).

        Call `flush()` (or any awaited request) to push queued bytes to the agent.
        """
        request_id, data = self._frame(request)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        if not self.alive:
            self._pending.pop(request_id)
            _fail(future, self.lost())
            return future
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        return future

    async def flush(self) -> None:
        """Wait until queued requests are handed to ssh (back-pressure for big transfers)."""
        await self._write(b"")

    async def call(self, request: Request[A]) -> A:
        """Send one request and wait for its answer; AgentError if the agent refused it."""
        header, payload = await self.request(request)
        return request.answer(header, payload)

    async def request(self, request: Request[Any]) -> Answer:
        """`call`, the answer left raw: (header, payload)."""
        future = self.submit(request)
        await self.flush()
        await self.ready()
        return check(self.host, op_name(request), await future)

    async def request_rows(self, request: Request[Any]) -> Answer:
        """`request`, its answer's "rows" (when the answer is large) an iterator that decodes
        each row as it is taken (a list otherwise); the answer's text is held until the
        iterator is let go."""
        future = self.submit(request)
        self._lazy.add(self._next_id)
        await self.flush()
        await self.ready()
        return check(self.host, op_name(request), await future)

    async def stream(self, request: Request[Any]) -> AsyncIterator[Answer]:
        """Send a request whose answer comes as several frames ("more": true until the last)."""
        name = op_name(request)
        request_id, data = self._frame(request)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[request_id] = queue
        await self._write(data)
        await self.ready()
        while True:
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            header, payload = item
            check(self.host, name, item)
            yield header, payload
            if not header.get("more"):
                return

    def helpers(self) -> list[AgentChannel]:
        """This channel's helper channels that are open and have nothing outstanding."""
        return [helper for helper in self._helpers if helper.alive and helper.idle]

    async def open_helper(self) -> AgentChannel | None:
        """One more agent on the same host (another ssh session over the same master),
        kept with this channel (closed by its `close`); None if the host refuses one.

        Bulk transfers spread over several: each ssh session has its own flow-control
        window (OpenSSH's is 2 MB, so one session carries at most 2 MB per round trip) and
        each agent its own process on the remote.
        """
        for helper in [h for h in self._helpers if not h.alive]:
            self._helpers.remove(helper)
            await helper.close()
        try:
            helper = await AgentChannel.open(self.transport, self.python)
        except Exception:  # optional: e.g. sshd's MaxSessions reached
            return None  # the transfer goes over fewer sessions
        self._helpers.append(helper)
        return helper

    async def drop_helpers(self, every: bool = False) -> None:
        """Close the helpers that are dead or still have answers outstanding (or all)."""
        dropped = [h for h in self._helpers if every or not (h.alive and h.idle)]
        self._helpers = [h for h in self._helpers if h not in dropped]
        await asyncio.gather(*(helper.close() for helper in dropped), return_exceptions=True)

    async def close(self) -> None:
        """Close stdin (the agent exits at end of input) and reap the ssh process.

        With no answer outstanding the local ssh is ended at once instead of waiting a round
        trip for the remote exit: the agent then sees its input end either way.
        Helper channels are closed with it.
        """
        helpers, self._helpers = self._helpers, []
        closing = asyncio.gather(*(helper.close() for helper in helpers), return_exceptions=True)
        try:
            await self._close_own()
        finally:
            await closing

    async def _close_own(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        if not self._pending and not self._streams and self.process.returncode is None:
            # os.kill, not Process.terminate(): terminate() polls (waitpid) first and can reap
            # the child under asyncio's watcher ("Unknown child process"); a zombie keeps
            # its pid, so the signal cannot reach another process.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout=10)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def _fail(future: asyncio.Future[Answer], error: Exception) -> None:
    """Fail a pending answer; marked as seen, since callers that gave up never await it."""
    if not future.done():
        future.set_exception(error)
        future.exception()


def op_name(request: Request[Any]) -> str:
    """The request's op as named on the wire."""
    op = getattr(request, "OP", None)  # a test's raw request may name an op by string
    return op.value if isinstance(op, Op) else str(request.to_frame()[0]["op"])


def refusal(host: str, op: Op | str, header: dict[str, Any]) -> AgentError | None:
    """The AgentError of an error answer (None for a success): the one place where the
    agent's error kinds become tether's errors."""
    if header.get("ok", True):
        return None
    kind = ErrorKind.of(header.get("kind", "error"))
    message = str(header.get("error", "failed"))
    if kind is ErrorKind.INTERNAL:
        message = f"{header.get('error')} {json.dumps(header.get('trace', ''))[:2000]}"
    return AgentError(host, op, kind, message)


def check(host: str, op: Op | str, answer: Answer) -> Answer:
    """The answer, or AgentError when the agent reported a failure."""
    error = refusal(host, op, answer[0])
    if error is not None:
        raise error
    return answer
