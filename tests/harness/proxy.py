"""A userspace TCP proxy for tests: latency, link cuts and refusals between ssh and sshd.

    with Proxy("127.0.0.1", sandbox.port, delay_ms=25) as proxy:
        alias = proxied_alias(sandbox, proxy)      # `ssh alias` goes through the proxy
        ...
        proxy.cut()                                # every open connection dies at once
        proxy.refuse(True)                         # new connections are closed at once
        drop_alias(alias)

The proxy runs its own asyncio event loop in a background thread. Latency is one-way
and per direction (RTT = 2 * delay): every chunk is stamped on arrival and delivered at
arrival + delay, in order, without serialising throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Every Proxy started and not yet stopped (the harness checks this at the end).
RUNNING: set[Proxy] = set()
_RUNNING_LOCK = threading.Lock()


@dataclass
class Stats:
    """Counters since the proxy started."""

    connections: int = 0  # accepted and forwarded
    active: int = 0  # open right now
    refused: int = 0  # closed at once because refuse(True) was on
    failed: int = 0  # the target could not be reached
    cuts: int = 0  # connections closed by cut()
    bytes_up: int = 0  # client -> target
    bytes_down: int = 0  # target -> client


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Proxy:
    """Forward 127.0.0.1:port to (target_host, target_port) with delay, cuts and refusals."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay_ms: float = 0.0,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = listen_port
        self.delay_ms = float(delay_ms)
        self.stats = Stats()
        self._refusing = False
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Proxy:
        """Start listening (in a background thread); returns self."""
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"tether-test-proxy-{self.target[1]}", daemon=True
        )
        self._thread.start()
        self._server = self._call(self._listen())
        with _RUNNING_LOCK:
            RUNNING.add(self)
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket, end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
        self._loop = None
        self._thread = None
        with _RUNNING_LOCK:
            RUNNING.discard(self)

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ controls

    def set_delay(self, delay_ms: float) -> None:
        """One-way delay in ms for chunks that arrive from now on (RTT = 2 * delay)."""
        self.delay_ms = float(delay_ms)

    def cut(self) -> int:
        """Close every open connection at once (both sides); new ones are still accepted."""
        return int(self._call(self._cut()))

    def refuse(self, on: bool = True) -> None:
        """While on, every new connection is closed as soon as it is accepted (link down)."""
        self._refusing = on

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect."""
        return (self.listen_host, self.port)

    # ------------------------------------------------------------------ internals

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> asyncio.base_events.Server:
        server = await asyncio.start_server(self._handle, self.listen_host, self.port)
        self.port = int(server.sockets[0].getsockname()[1])
        return server

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.stats.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.failed += 1
            writer.transport.abort()
            return
        self.stats.connections += 1
        self.stats.active += 1
        link = _Link(client=writer, upstream=up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pipe(reader, up_writer, "bytes_up", link)),
            asyncio.create_task(self._pipe(up_reader, writer, "bytes_down", link)),
        ]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            self.stats.active -= 1
            for side in (writer, up_writer):
                side.transport.abort()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counter: str,
        link: _Link,
    ) -> None:
        """Read chunks as they come; deliver each one at its arrival time + delay, in order.

        A clean EOF is passed on as a half-close after the same delay; any error on
        either side ends the whole link at once.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if chunk is None:
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                due = loop.time() + self.delay_ms / 1000.0
                if not chunk:
                    queue.put_nowait((due, None))
                    break
                setattr(self.stats, counter, getattr(self.stats, counter) + len(chunk))
                queue.put_nowait((due, chunk))
                if sender.done():
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError, RuntimeError):
            _abort(link)
        finally:
            if not sender.done():
                sender.cancel()
                _abort(link)
            with contextlib.suppress(BaseException):
                await sender

    async def _cut(self) -> int:
        links = list(self._links)
        for link in links:
            _abort(link)
            for task in link.tasks:
                task.cancel()
        self.stats.cuts += len(links)
        await asyncio.sleep(0)
        return len(links)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _abort(link: _Link) -> None:
    """Close both sockets of a link at once (no flushing)."""
    link.client.transport.abort()
    link.upstream.transport.abort()


# ---------------------------------------------------------------------- ssh aliases


def proxied_alias(sandbox: Any, proxy: Proxy, alias: str | None = None) -> str:
    """Add `Host ALIAS` to ~/.ssh/config reaching SANDBOX through PROXY; return ALIAS.

    Same options as the sandbox's own stanza, but Port = the proxy's port, and
    `HostKeyAlias [127.0.0.1]:SANDBOXPORT` so the sandbox's known_hosts line still matches.
    Remove it with drop_alias(alias).
    """
    from tether.hosts import sshconfig

    alias = alias or f"{sandbox.name}-px{uuid.uuid4().hex[:6]}"
    options = [
        ("Port", str(proxy.port)) if key == "Port" else (key, value)
        for key, value in sandbox.ssh_options()
    ]
    options.append(("HostKeyAlias", f"[127.0.0.1]:{sandbox.port}"))
    sshconfig.add_host(alias, options)
    return alias


def drop_alias(alias: str) -> None:
    """Close any ControlMaster of ALIAS and remove its stanza."""
    import subprocess

    from tether.hosts import sshconfig
    from tether.transport.ssh import control_path

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["ssh", "-O", "exit", "-o", f"ControlPath={control_path()}", alias],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=5,
            check=False,
        )
    sshconfig.remove_host(alias)


@contextlib.contextmanager
def proxied(sandbox: Any, *, delay_ms: float = 0.0) -> Iterator[tuple[Proxy, str]]:
    """A started proxy to SANDBOX and an ssh alias through it; both gone afterwards."""
    with Proxy("127.0.0.1", sandbox.port, delay_ms=delay_ms) as proxy:
        alias = proxied_alias(sandbox, proxy)
        try:
            yield proxy, alias
        finally:
            drop_alias(alias)
