"""`tether watch`: every save pushed to every target over one long-lived agent channel each.

Events (inotify read on the event loop, else watchfiles: sync/filewatch.py) are coalesced (a
burst such as a `git checkout` ends as one batch), filtered by push's own rules (git's
ignore rules or the .gitignore files, `[sync] exclude/include`, results) and pushed with
`push_pair(..., only=batch)`: deleted paths included, so a file deleted here is deleted
there if tether pushed it and it is unchanged there. A full push runs at start and after
every reconnect; conflicts are reported, never overwritten (no force, ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from tether import invocation
from tether.agent.wire import Hello
from tether.config import Config, Target
from tether.errors import ConnectionLost, HostError, TetherError, is_transient
from tether.sync.events import EventFilter, route
from tether.sync.filewatch import watch_paths
from tether.sync.pull import pull_pair
from tether.sync.session import Report, pairs_for, push_pair
from tether.sync.targets import open_channel
from tether.transport.channel import AgentChannel

STEP_MS = 5  # a burst ends after this much quiet
DEBOUNCE_MS = 1000  # ... or after this long at most
BACKOFF_START_S = 0.25
BACKOFF_CAP_S = 3.0
PULL_EVERY_S = 2.0
PING_EVERY_S = 10.0
STOP_GRACE_S = 10.0


# ---------------------------------------------------------------------- status


@dataclass
class TargetState:
    """What the status line of one target shows."""

    name: str
    state: str = "connecting"
    last_sync: float | None = None
    latency_s: float | None = None
    queue: int = 0
    pushed: int = 0
    pulled: int = 0
    conflicts: dict[str, str] = field(default_factory=dict)
    error: str = ""

    def line(self) -> str:
        parts = [f"{self.name}: {self.state}"]
        if self.last_sync is not None:
            stamp = time.strftime("%H:%M:%S", time.localtime(self.last_sync))
            latency = f" ({self.latency_s * 1000:.0f} ms)" if self.latency_s is not None else ""
            parts.append(f"last sync {stamp}{latency}")
        parts.append(f"queue {self.queue}")
        parts.append(f"{self.pushed} pushed" + (f", {self.pulled} pulled" if self.pulled else ""))
        if self.conflicts:
            shown = ", ".join(sorted(self.conflicts)[:3])
            parts.append(f"{len(self.conflicts)} conflict(s): {shown}")
        if self.error:
            parts.append(f"error: {self.error}")
        return " | ".join(parts)


class Status:
    """One live line per target on a terminal; otherwise one plain line per event."""

    def __init__(self, names: list[str], stream: TextIO | None = None) -> None:
        self.stream = stream or invocation.stderr()
        self.targets = {name: TargetState(name) for name in names}
        self.live: Any = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(
                self._render(),
                console=Console(file=self.stream, _environ=invocation.environ()),
                refresh_per_second=8,
                transient=False,
            )
            self.live.start()

    def _render(self) -> Any:
        from rich.text import Text

        return Text("\n".join(state.line() for state in self.targets.values()))

    def update(self, name: str, event: str | None = None, **changes: Any) -> None:
        """Change a target's state; `event` is also logged as a line of its own."""
        state = self.targets[name]
        for key, value in changes.items():
            setattr(state, key, value)
        if self.live is not None:
            if event:
                self.live.console.print(f"{name}: {event}", markup=False, highlight=False)
            self.live.update(self._render())
        elif event:
            self.stream.write(f"tether watch: {name}: {event}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


# ---------------------------------------------------------------------- engine


@dataclass
class Pending:
    """Paths waiting for the next batch of one target, per pair index."""

    paths: dict[int, set[str]] = field(default_factory=dict)
    since: float | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    everything: bool = False  # events were lost: the next batch is a full push

    def add(self, routed: dict[int, set[str]], at: float, everything: bool = False) -> None:
        if not routed and not everything:
            return
        for index, rels in routed.items():
            self.paths.setdefault(index, set()).update(rels)
        self.everything = self.everything or everything
        if self.since is None:
            self.since = at
        self.wake.set()

    def take(self) -> tuple[dict[int, set[str]], float | None]:
        taken, since = self.paths, self.since
        self.paths, self.since, self.everything = {}, None, False
        self.wake.clear()
        return taken, since

    def waiting(self) -> bool:
        return bool(self.paths) or self.everything

    def __len__(self) -> int:
        return sum(len(rels) for rels in self.paths.values())


RETRY = (ConnectionLost, HostError, OSError)


class TargetWatcher:
    """One target: connect, full push, then push each batch; reconnect with backoff."""

    def __init__(
        self, config: Config, target: Target, status: Status, pull: bool, stop: asyncio.Event
    ) -> None:
        self.config = config
        self.target = target
        self.pairs = pairs_for(config, target)
        self.filters = [EventFilter(pair) for pair in self.pairs]
        self.status = status
        self.pull = pull
        self.stop = stop
        self.pending = Pending()
        self.connected_once = False

    def _key(self, remote_root: str, rel: str) -> str:
        """How a path shows in the status line (mapped paths with their remote root)."""
        return rel if remote_root == self.target.path else f"{remote_root}:{rel}"

    def say(self, event: str | None = None, **changes: Any) -> None:
        self.status.update(self.target.name, event, queue=len(self.pending), **changes)

    async def run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            try:
                channel = await open_channel(self.target)
            except RETRY as error:
                if not is_transient(error) or (
                    not self.connected_once and not isinstance(error, ConnectionLost)
                ):
                    raise
                attempt += 1
                await self._backoff(attempt, error)
                continue
            try:
                if attempt:
                    self.say("reconnected", error="")
                attempt = 0
                self.connected_once = True
                await self._serve(channel)
            except RETRY as error:
                if not is_transient(error):
                    raise
                attempt += 1
                self.say(f"connection lost: {_why(error)}")
                await self._backoff(attempt, error)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(channel.close())

    async def _backoff(self, attempt: int, error: BaseException) -> None:
        delay = min(BACKOFF_CAP_S, BACKOFF_START_S * 2 ** (attempt - 1))
        self.say(
            f"reconnecting (attempt {attempt}) in {delay:.2f} s: {_why(error)}",
            state=f"reconnecting (attempt {attempt})",
            error=_why(error),
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), delay)

    async def _serve(self, channel: AgentChannel) -> None:
        self.pending.take()  # the full push below covers everything up to now
        await self._full_push(channel)
        last_pull = 0.0
        last_io = time.monotonic()
        while not self.stop.is_set():
            if self.pending.everything:
                self.pending.take()  # the full push covers every path named until now
                await self._full_push(channel)
                last_io = time.monotonic()
            elif self.pending.paths:
                await self._push_batch(channel)
                last_io = time.monotonic()
            if self.pull and time.monotonic() - last_pull >= PULL_EVERY_S:
                await self._pull(channel)
                last_pull = last_io = time.monotonic()
            if self.pending.waiting() or self.stop.is_set():
                continue
            if not channel.alive:
                raise channel.lost()
            if time.monotonic() - last_io > PING_EVERY_S:
                await _ping(channel)
                last_io = time.monotonic()
            wait = PULL_EVERY_S if self.pull else 1.0
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._woken(), wait)

    async def _woken(self) -> None:
        waits = [
            asyncio.ensure_future(self.pending.wake.wait()),
            asyncio.ensure_future(self.stop.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _full_push(self, channel: AgentChannel) -> None:
        self.say(state="syncing (full)")
        started = time.monotonic()
        reports = [await push_pair(channel, pair, self.config.root) for pair in self.pairs]
        self._account(reports, None, started, full=True)
        self.say("watching", state="watching")

    async def _push_batch(self, channel: AgentChannel) -> None:
        taken, since = self.pending.take()
        self.say(state="syncing")
        started = time.monotonic()
        reports: list[Report] = []
        touched: set[str] = set()
        try:
            for index, rels in sorted(taken.items()):
                pair = self.pairs[index]
                only = await asyncio.to_thread(self.filters[index].select, rels)
                if not only:
                    continue
                touched.update(self._key(pair.remote_root, rel) for rel in only)
                reports.append(
                    await push_pair(channel, pair, self.config.root, only=only, trust_base=True)
                )
        except BaseException:
            for index, rels in taken.items():  # not lost: the next full push or batch has them
                self.pending.add({index: rels}, since or started)
            raise
        self._account(reports, since, started, touched=touched)

    async def _pull(self, channel: AgentChannel) -> None:
        reports = [
            await pull_pair(channel, pair, self.config.root) for pair in self.pairs if pair.results
        ]
        done = sum(report.created + report.updated for report in reports)
        state = self.status.targets[self.target.name]
        conflicts = dict(state.conflicts)
        for report in reports:
            for conflict in report.conflicts:
                key = f"{conflict.path} (pull)"
                if key not in conflicts:
                    self.say(f"conflict: {conflict.path}: {conflict.reason}")
                conflicts[key] = conflict.reason
        errors = [error for report in reports for error in report.errors]
        if done:
            self.say(f"pulled {done} file(s)", pulled=state.pulled + done)
        self.say(conflicts=conflicts, **({"error": errors[0]} if errors else {}))

    def _account(
        self,
        reports: list[Report],
        since: float | None,
        started: float,
        full: bool = False,
        touched: set[str] | None = None,
    ) -> None:
        state = self.status.targets[self.target.name]
        conflicts = {} if full else dict(state.conflicts)
        for key in touched or set():
            conflicts.pop(key, None)
        new = 0
        for report in reports:
            for conflict in report.conflicts:
                key = self._key(report.remote_root, conflict.path)
                if key not in state.conflicts:
                    self.say(f"conflict: {key}: {conflict.reason} (left as it is on the remote)")
                conflicts[key] = conflict.reason
            new += report.created + report.updated + report.deleted
        errors = [error for report in reports for error in report.errors]
        for error in errors[:5]:
            self.say(f"error: {error}")
        now = time.monotonic()
        latency = now - (since if since is not None else started)
        changes = sum(r.created + r.updated + r.deleted for r in reports)
        if full or changes:
            what = "full sync" if full else "pushed"
            counts = ", ".join(
                f"{sum(getattr(r, k) for r in reports)} {word}"
                for k, word in (("created", "new"), ("updated", "updated"), ("deleted", "deleted"))
            )
            event: str | None = f"{what}: {counts} in {latency * 1000:.0f} ms"
        else:
            event = None
        self.say(
            event,
            state="watching",
            last_sync=time.time(),
            latency_s=latency,
            pushed=state.pushed + new,
            conflicts=conflicts,
            error=errors[0] if errors else "",
        )


def _why(error: BaseException) -> str:
    if isinstance(error, TetherError):
        return error.why or error.what
    return str(error) or type(error).__name__


async def _ping(channel: AgentChannel) -> None:
    try:
        await asyncio.wait_for(channel.call(Hello()), PING_EVERY_S)
    except asyncio.TimeoutError:
        raise ConnectionLost(channel.host, "no answer for 10 s") from None


async def watch(config: Config, targets: list[Target], pull: bool = False) -> int:
    """Watch until SIGINT/SIGTERM; 0 after a clean stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    status = Status([target.name for target in targets])
    watchers = [TargetWatcher(config, target, status, pull, stop) for target in targets]
    roots = sorted(
        {pair.local_root for w in watchers for pair in w.pairs if pair.local_root.is_dir()}
    )
    main = asyncio.current_task()
    presses = 0

    def interrupt() -> None:
        nonlocal presses
        presses += 1
        stop.set()
        if presses > 1 and main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)

    def dispatch(paths: list[str], everything: bool) -> None:
        now = time.monotonic()
        for watcher in watchers:
            watcher.pending.add(route(paths, watcher.pairs), now, everything)
            watcher.say()

    files = asyncio.create_task(watch_paths(roots, dispatch, stop))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    try:
        done, _ = await asyncio.wait([files, *tasks], return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(
                asyncio.gather(files, *tasks, return_exceptions=True), STOP_GRACE_S
            )
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        status.close()
    return 0
