"""The sync daemon: a long-lived local process that runs `tether push`, `pull`, `jobs`
and `status`.

    python -m tether.cli.daemon SOCKET LOCK_FD      (started by tether.cli.fastpath)

Most of a push's time used to go on things that do not depend on the push: importing the
CLI framework, opening an ssh session and starting the remote agent. The daemon pays for
them once: it keeps every module imported and one agent channel per (host, python) open
between commands, so a push is the local scan, one request and one answer.

One daemon per user, tether version and runtime dir; it serves up to MAX_COMMANDS at once,
one push or pull among them (they share the kept scans; a client that finds it busy runs
its command in its own process, as without a daemon), each
with the client's working directory, environment, umask and terminal (isatty, size) in
place of its own (a tether.invocation.Invocation: the daemon's own process state is
never changed), and its stdout/stderr sent back in frames (tether/clientwire.py: its text,
then the exit code; "busy" alone when busy). A client that goes away (Ctrl-C,
killed) cancels its command: the push stops as if its link had been cut (atomic writes,
pending uploads recorded), and the channels it used are closed. A channel is reused only
while alive and while ~/.ssh/config is unchanged (so a changed HostName or key never
reaches the old connection). The daemon leaves after IDLE_EXIT_S without a command, when
its socket is removed or replaced, when tether's source changes (a new one, with the new
fingerprint, serves new clients), or on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

from tether import clientwire
from tether.cli.fastpath import PREFIX, fingerprint

if TYPE_CHECKING:
    from tether.agent.memtrace import Tracer
    from tether.config import Target
    from tether.sync.kept import KeptScans
    from tether.transport.channel import AgentChannel

T = TypeVar("T")
IDLE_EXIT_S = 600.0
MAX_COMMANDS = 4  # served at once (a push or pull, and jobs/status beside it)
WATCH_S = 2.0
DRAIN_S = 0.02  # events that wake the idle daemon are read this much later, coalesced
MODULE = "tether.cli.daemon"
LOG_LIMIT = 1 << 20


class ClientStream(io.TextIOBase):
    """The stdout / stderr of a command under way (its Invocation's): text goes to its
    client."""

    def __init__(self, loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter,
                 key: str, tty: bool) -> None:  # fmt: skip
        self.loop = loop
        self.writer = writer
        self.key = key
        self.tty = tty

    encoding = "utf-8"

    def write(self, text: str | bytes) -> int:
        if isinstance(text, bytes):  # click writes bytes to streams it thinks binary
            text = text.decode("utf-8", "replace")
        if text:
            data = clientwire.frame(self.key, text)
            with contextlib.suppress(RuntimeError):  # the loop closed: the daemon is leaving
                self.loop.call_soon_threadsafe(self._send, data)
        return len(text)

    def _send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def isatty(self) -> bool:
        return self.tty

    def flush(self) -> None:
        pass


class Pool:
    """Open agent channels by (host, python, ~/.ssh/config signature), reused while alive."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, str, str], list[AgentChannel]] = {}

    @staticmethod
    def key(target: Target) -> tuple[str, str, str]:
        from tether.paths import ssh_dir

        try:
            st = os.stat(ssh_dir() / "config")
            signature = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            signature = "-"
        return (target.host, target.python, signature)

    async def run(self, target: Target, work: Callable[[Target, AgentChannel], Awaitable[T]]) -> T:
        """work(target, channel) on a kept channel; once more on a fresh one if the kept
        channel turns out dead before answering anything (the link dropped since the last
        command: nothing of this one reached the remote)."""
        from tether.errors import ConnectionLost

        channel, kept = await self._get(target)
        answered = channel.received
        try:
            result = await work(target, channel)
        except ConnectionLost:
            await channel.close()
            if not kept or channel.received != answered:
                raise  # the link dropped during this command: report it, as without us
            channel, kept = await self._get(target, fresh=True)
            try:
                result = await work(target, channel)
            except BaseException:
                await channel.close()
                raise
        except BaseException:
            await channel.close()
            raise
        if channel.alive and channel.idle:
            self.idle.setdefault(self.key(target), []).append(channel)
        else:
            await channel.close()
        return result

    def ready(self, target: Target) -> bool:
        """Whether a kept channel to the target is alive (ChannelPool.ready)."""
        return any(channel.alive for channel in self.idle.get(self.key(target), ()))

    async def _get(self, target: Target, fresh: bool = False) -> tuple[AgentChannel, bool]:
        """A kept channel that is alive (and whether it was kept), else a new one."""
        from tether.sync.targets import open_channel

        key = self.key(target)
        await self.reap(keep=key)
        channels = [] if fresh else self.idle.get(key, [])
        while channels:
            channel = channels.pop()
            if channel.alive:
                return channel, True
            await channel.close()
        return await open_channel(target, kept=True), False

    async def reap(self, keep: tuple[str, str, str] | None = None) -> None:
        """Close dead channels, and those of a host whose ssh config has changed."""
        for key, channels in list(self.idle.items()):
            stale = keep is not None and key[:2] == keep[:2] and key != keep
            for channel in list(channels):
                if stale or not channel.alive:
                    # Targets are served concurrently: another reap may have taken it.
                    with contextlib.suppress(ValueError):
                        channels.remove(channel)
                    await channel.close()
            if not channels and self.idle.get(key) is channels:
                del self.idle[key]

    async def close_all(self) -> None:
        channels = [channel for group in self.idle.values() for channel in group]
        self.idle.clear()
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"host": key[0], "python": key[1], "agent_pid": channel.info.get("pid")}
            for key, channels in self.idle.items()
            for channel in channels
        ]


class Daemon:
    """Serve commands on a unix socket until idle, replaced or told to stop."""

    def __init__(self, path: str, key: str) -> None:
        self.path = path
        self.key = key
        self.pid_path = path[: -len(".sock")] + ".pid"
        self.pool = Pool()
        self.scans: KeptScans | None = None  # made with the first command (a lazy import)
        self.executor = ThreadPoolExecutor(MAX_COMMANDS, thread_name_prefix="tether-cmd")
        self.last = time.monotonic()
        self.busy = 0
        self.syncing = 0  # push/pull under way (one at a time: they share the kept scans)
        self.serving: list[str] = []  # the command names under way (ping says them)
        self.stop = asyncio.Event()
        self.inode = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.armed: list[int] = []  # kept scans' watcher fds the loop waits on while idle
        self.draining: asyncio.TimerHandle | None = None
        self.tracer: Tracer | None = None  # TETHER_TRACEMALLOC (dev: agent/memtrace.py)

    async def serve(self, lock_fd: int) -> None:
        self.loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self.handle, path=self.path)
        finally:
            os.umask(old)
        self.inode = os.stat(self.path).st_ino
        Path(self.pid_path).write_text(str(os.getpid()))
        os.close(lock_fd)  # clients waiting for the start may connect now
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            self.loop.add_signal_handler(signum, self.stop.set)
        watchdog = asyncio.create_task(self.watch())
        try:
            await self.stop.wait()
        finally:
            watchdog.cancel()
            server.close()
            await self.pool.close_all()
            self.executor.shutdown(wait=False, cancel_futures=True)
            self._remove_files()

    def _remove_files(self) -> None:
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            if Path(self.pid_path).read_text() == str(os.getpid()):
                os.unlink(self.pid_path)

    async def watch(self) -> None:
        """Leave when idle too long, replaced, or running outdated source."""
        while True:
            await asyncio.sleep(WATCH_S)
            if self.busy:
                continue
            try:
                replaced = os.stat(self.path).st_ino != self.inode
            except OSError:
                replaced = True
            idle = time.monotonic() - self.last > IDLE_EXIT_S
            if replaced or idle or fingerprint() != self.key:
                self.stop.set()
                return
            await self.pool.reap()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from tether.ipc import peer_is_me

        sock = writer.get_extra_info("socket")
        if sock is None or not peer_is_me(sock):  # another user: not a word, not a command
            writer.close()
            return
        try:
            request = json.loads(await reader.readline() or b"{}")
        except ValueError:
            request = {}
        op = request.get("op") if isinstance(request, dict) else None
        try:
            if op == "run" and not self.takes(request):
                # The client runs it in its own process.
                writer.write(clientwire.frame(clientwire.BUSY, ""))
            elif op == "run":
                writer.write(clientwire.frame(clientwire.ACCEPTED, ""))
                code = await self.run_request(request, reader, writer)
                writer.write(clientwire.frame(clientwire.EXIT, str(code)))
            elif op == "ping":
                answer = {
                    "pid": os.getpid(),
                    "key": self.key,
                    "busy": bool(self.busy),
                    "serving": sorted(self.serving),
                    "channels": self.pool.describe(),
                }
                writer.write((json.dumps(answer) + "\n").encode())
            elif op == "quit":
                writer.write(b'{"bye": true}\n')
                self.stop.set()
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def takes(self, request: dict[str, Any]) -> bool:
        """Whether a command can start now: a free worker, and no other push or pull for a
        push or pull (jobs and status run beside anything)."""
        return self.busy < MAX_COMMANDS and not (self.syncing and _syncs(request))

    async def run_request(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> int:
        """Run one command in a worker thread; cancel it if the client goes away."""
        assert self.loop is not None
        syncs = _syncs(request)
        args = request.get("args")
        name = str(args[0]) if isinstance(args, list) and args else ""
        self.busy += 1
        self.syncing += syncs
        self.serving.append(name)
        command = Command(self.loop)
        self.disarm()  # the kept scans are drained only while no command runs
        try:
            work = self.loop.run_in_executor(
                self.executor, self.run_command, request, writer, command
            )
            gone = asyncio.ensure_future(reader.read())
            waiting: set[asyncio.Future[Any]] = {work, gone}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if gone.done() and not gone.cancelled():
                gone.exception()  # a broken pipe says gone too (retrieved: nothing to log)
            if not work.done():
                command.abandoned = True
                if command.task is not None:
                    command.task.cancel()
            else:
                gone.cancel()
            return await work
        finally:
            self.busy -= 1
            self.syncing -= syncs
            if syncs and self.scans is not None:
                self.scans.release()  # its manifests are no longer held (sync/kept.py)
            self.serving.remove(name)
            self.last = time.monotonic()
            if not self.busy:
                self.arm()

    def arm(self) -> None:
        """While no command runs, read the kept scans' events as they come (coalesced by
        DRAIN_S): a burst between pushes never overflows the kernel's queue."""
        assert self.loop is not None
        self.disarm()
        if self.scans is None or self.busy:
            return
        for fd in self.scans.fds():
            self.loop.add_reader(fd, self._readable)
            self.armed.append(fd)

    def disarm(self) -> None:
        """Before a command (it may close and reopen watchers): stop waiting on their fds."""
        assert self.loop is not None
        for fd in self.armed:
            self.loop.remove_reader(fd)
        self.armed.clear()
        if self.draining is not None:
            self.draining.cancel()
            self.draining = None

    def _readable(self) -> None:
        assert self.loop is not None
        for fd in self.armed:  # (level-triggered: no more wake-ups until the drain)
            self.loop.remove_reader(fd)
        self.armed.clear()
        if self.draining is None:
            self.draining = self.loop.call_later(DRAIN_S, self._drain)

    def _drain(self) -> None:
        self.draining = None
        if self.scans is not None and not self.busy:
            self.scans.drain()
            self.arm()  # the set of sound watchers may have changed

    def run_command(
        self, request: dict[str, Any], writer: asyncio.StreamWriter, command: Command
    ) -> int:
        """In the worker thread: the command, under an Invocation of the client's working
        directory, environment (an allowlist: tether.ipc.allowed_env), umask and terminal.
        Nothing of the daemon's own process state (os.environ, cwd, umask, sys.stdout) is
        changed, so its loop, its watchdog and anything else it runs keep their own.

        Only the commands the daemon is for (push, pull, jobs, status)."""
        import contextvars

        return contextvars.copy_context().run(self._run_command, request, writer, command)

    def _run_command(
        self, request: dict[str, Any], writer: asyncio.StreamWriter, command: Command
    ) -> int:
        from tether import invocation
        from tether.cli.app import DAEMON_COMMANDS, asks_help, run_mapped, say_error
        from tether.ipc import allowed_env
        from tether.runtime import Runtime

        assert self.loop is not None
        tty = request.get("tty") or [False, False]
        env = {str(k): str(v) for k, v in dict(request.get("env", {})).items()}
        umask = request.get("umask")
        caller = invocation.Invocation(
            env=allowed_env(env),
            cwd=str(request.get("cwd")),
            umask=int(umask) & 0o777 if isinstance(umask, int) else 0o077,
            stdout=cast("TextIO", ClientStream(self.loop, writer, clientwire.OUT, bool(tty[0]))),
            stderr=cast("TextIO", ClientStream(self.loop, writer, clientwire.ERR, bool(tty[1]))),
        )
        invocation.enter(caller)
        try:
            if not os.path.isabs(caller.cwd) or not os.path.isdir(caller.cwd):
                say_error(f"cannot enter the working directory {caller.cwd!r}")
                return 1
            args = [str(arg) for arg in request.get("args", [])]
            if (args[:1] and args[0] not in DAEMON_COMMANDS) or asks_help(args):
                say_error(f"the sync daemon does not run `{args[0]}`, run it as a command")
                return 2
            debug = bool(request.get("debug"))
            if self.scans is None:
                from tether.sync.kept import KeptScans

                self.scans = KeptScans()
            runtime = Runtime(pool=self.pool, submit=command.run_coroutine, scans=self.scans)
            if self.tracer is not None:
                self.tracer.next_phase()
            profile = invocation.getenv("TETHER_PROFILE")  # a file for cProfile's stats (dev)
            if not profile:
                return run_mapped(args, debug, runtime)
            import cProfile

            profiler = cProfile.Profile()
            try:
                return profiler.runcall(run_mapped, args, debug, runtime)
            finally:
                profiler.dump_stats(profile)
        except BaseException as error:  # cancelled, or a bug: one line here, trace logged
            if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
                return 130
            traceback.print_exc(file=sys.stderr)
            say_error(f"internal error in the sync daemon: {error!r}, see sync-daemon.log")
            return 1


def _syncs(request: dict[str, Any]) -> bool:
    """Whether the request runs a command that uses the kept scans (push, pull)."""
    from tether.cli.app import KEPT_STATE_COMMANDS

    args = request.get("args")
    return isinstance(args, list) and bool(args) and args[0] in KEPT_STATE_COMMANDS


class Command:
    """One command the daemon serves: its task on the loop, and whether its client left."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task[Any] | None = None
        self.abandoned = False

    def run_coroutine(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Runtime.submit: run a command's coroutine on the daemon's loop, cancellable, under
        the command's invocation (the task's own context: the loop's other tasks keep the
        daemon's).

        A client gone before the coroutine starts, or while it runs, ends it as Ctrl-C
        would in the command's own process: KeyboardInterrupt (run_mapped: exit 130)."""
        from tether import invocation

        assert self.loop is not None
        caller = invocation.current()
        profile = invocation.getenv("TETHER_PROFILE")

        async def tracked() -> Any:
            invocation.enter(caller)
            # On the loop, as run_request's check of the client is: the client left either
            # before this line (abandoned) or after it (self.task is cancelled).
            if self.abandoned:
                coro.close()
                raise asyncio.CancelledError
            self.task = asyncio.current_task()
            profiler = None
            if profile:  # the loop thread's share of a profiled command (dev)
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            try:
                return await coro
            finally:
                self.task = None
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(f"{profile}.loop")

        try:
            return asyncio.run_coroutine_threadsafe(tracked(), self.loop).result()
        except CancelledError:
            if self.abandoned:  # cancelled by run_request, not by the command itself
                raise KeyboardInterrupt from None
            raise


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def lean_malloc() -> None:
    """Set glibc's malloc for a process that lives long, holds ~100 MB at 100,000 files and
    frees tens of MB in each push: one arena for all threads (a command's thread and the
    loop free what the other allocated), blocks of 128 KiB or more mapped on their own and
    unmapped when freed (else the threshold rises to the largest block freed, a 100,000
    entry dict's table, and such blocks stay in the heap), the heap's free top returned
    past 128 KiB. Elsewhere (no glibc) nothing is changed."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    for parameter, value in (
        (_M_ARENA_MAX, 1),
        (_M_MMAP_THRESHOLD, 128 << 10),
        (_M_TRIM_THRESHOLD, 128 << 10),
    ):
        mallopt(parameter, value)


def _preload() -> None:
    """Import what every command needs, before the first client waits for it: the parts of
    the command tree of the commands served here (the whole tree, ~20 command modules
    and each command's parameters converted, is for help and typos, never served)."""
    from tether.cli.app import DAEMON_COMMANDS, _command
    from tether.jobs import status  # noqa: F401
    from tether.sync import runner, session  # noqa: F401

    for name in DAEMON_COMMANDS:
        _command(name)


def ping(path: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The daemon's answer at path ({"pid", "key", "busy", "serving", "channels"}), or None."""
    from tether.ipc import ask

    return ask(path, {"op": "ping"}, timeout)


def running(directory: Path | None = None) -> dict[int, Path]:
    """pid -> pidfile of every sync daemon of this runtime dir that is alive."""
    from tether.hosts.processes import alive
    from tether.paths import runtime_dir

    found: dict[int, Path] = {}
    for pid_file in (directory or runtime_dir()).glob(f"{PREFIX}*.pid"):
        try:
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if alive(pid) and MODULE.encode() in cmdline:
            found[pid] = pid_file
    return found


def stop_all(directory: Path | None = None, keep: set[int] | frozenset[int] = frozenset()) -> None:
    """End every sync daemon of this runtime dir (but `keep`), TERM then KILL, by pid."""
    from tether.hosts.processes import terminate

    pids = [pid for pid in running(directory) if pid not in keep]
    terminate(pids)


def main(argv: list[str]) -> int:
    path, lock_fd = argv[1], int(argv[2])
    key = os.path.basename(path)[len(PREFIX) : -len(".sock")]
    log = os.path.join(os.path.dirname(path), "sync-daemon.log")
    with contextlib.suppress(OSError):
        if os.path.getsize(log) > LOG_LIMIT:
            os.truncate(log, 0)
    lean_malloc()  # before any thread starts
    try:
        _preload()
    except BaseException:
        os.close(lock_fd)
        raise
    sys.stderr.write(f"tether sync daemon {os.getpid()} serving {path}\n")
    sys.stderr.flush()
    from tether import invocation

    daemon = Daemon(path, key)
    where = invocation.getenv("TETHER_TRACEMALLOC")  # the first client's, as started
    if where:
        from tether.agent import memtrace

        daemon.tracer = memtrace.start("daemon", where)
    asyncio.run(daemon.serve(lock_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
