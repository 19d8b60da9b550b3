"""Keep a kernel connection through link drops: watch, re-forward, catch up on iopub.

A `Link` watches the host's ControlMaster (and, when given, the kernel's heartbeat).
When the link drops it says so in one line, holds the iopub `Feed`, re-makes the
master and the five forwards on the SAME local unix sockets (a dead master leaves its
socket files behind: they are removed first; the connection file and every zmq socket
stay valid; zmq reconnects by itself and sends what was queued meanwhile, once), then
asks the agent for the iopub messages recorded on the remote after the last one the
feed handed out, and injects them ahead of the live ones. The feed drops messages it
has already handed out (by msg_id), so nothing is shown twice.

A client waiting for its cell asks `kernel_alive()`: yes through an outage (the kernel
runs on), no once recovery failed or the heartbeat stayed silent while the link was up.
Given `when_gone`, a heartbeat still silent over a re-made link makes the Link ask the
agent (`kernel_state`) and, for a dead, stopped or restarted kernel, say so and stop.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from tether.agent.wire_jobs import KernelCatchup
from tether.config import Target
from tether.errors import TetherError, is_transient

CHECK_EVERY_S = 0.5
HEARTBEAT_GRACE_S = 6.0
DEAD_AFTER_S = 20.0  # the heartbeat silent this long while the link was up: a dead kernel
SEEN_MAX = 20000

Message = dict[str, Any]


def date_text(value: Any) -> str:
    """A header date as the kernel writes it (UTC, ISO 8601, 'Z')."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return str(value.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return str(value or "")


def as_message(entry: Message) -> Message:
    """A recorder entry shaped like jupyter_client's deserialized message."""
    header = entry.get("header") or {}
    return {
        "header": header,
        "parent_header": entry.get("parent_header") or {},
        "metadata": entry.get("metadata") or {},
        "content": entry.get("content") or {},
        "msg_id": header.get("msg_id", entry.get("msg_id", "")),
        "msg_type": header.get("msg_type", entry.get("msg_type", "")),
        "buffers": [],
    }


class Feed:
    """An iopub channel with catch-up messages injected and duplicates dropped.

    Has the two methods consoles and clients use: msg_ready() and get_msg(timeout).
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.pending: collections.deque[Message] = collections.deque()
        self.seen: set[str] = set()
        self.order: collections.deque[str] = collections.deque()
        self.last_id = ""
        self.last_date = date_text(datetime.now(timezone.utc))
        self.holding = threading.Event()
        self.lock = threading.Lock()

    def _new(self, message: Message) -> bool:
        msg_id = str(message.get("header", {}).get("msg_id") or message.get("msg_id") or "")
        if not msg_id:
            return True
        if msg_id in self.seen:
            return False
        self.seen.add(msg_id)
        self.order.append(msg_id)
        if len(self.order) > SEEN_MAX:
            self.seen.discard(self.order.popleft())
        return True

    def _handed(self, message: Message) -> Message:
        header = message.get("header", {})
        self.last_id = str(header.get("msg_id") or self.last_id)
        self.last_date = date_text(header.get("date")) or self.last_date
        return message

    def inject(self, entries: list[Message]) -> int:
        """Queue recorder entries not seen yet (ahead of live messages); how many."""
        with self.lock:
            fresh = [as_message(e) for e in entries]
            fresh = [m for m in fresh if self._new(m)]
            self.pending.extend(fresh)
        return len(fresh)

    def _pull(self) -> None:
        """Move what the channel has ready into pending, dropping duplicates."""
        if self.holding.is_set():
            return
        while self.channel.msg_ready():
            message = self.channel.get_msg(timeout=0)
            with self.lock:
                if self._new(message):
                    self.pending.append(message)

    def msg_ready(self) -> bool:
        self._pull()
        return bool(self.pending)

    def get_msg(self, timeout: float | None = None) -> Message:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._pull()
            with self.lock:
                if self.pending:
                    return self._handed(self.pending.popleft())
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise queue.Empty
            wait = 0.05 if left is None else min(0.05, left)
            if not self.holding.is_set():
                self.channel.socket.poll(int(wait * 1000))
            else:
                time.sleep(wait)


class Link:
    """Watches one kernel's link; on a drop re-makes it and fills the feed's gap."""

    def __init__(
        self,
        target: Target,
        name: str,
        remote: dict[str, Any],
        feed: Feed,
        say: Callable[[str], None],
        beating: Callable[[], bool] | None = None,
        when_gone: str = "",
    ) -> None:
        self.target = target
        self.name = name
        self.remote = remote
        self.feed = feed
        self.say = say
        self.beating = beating
        # What to do once the kernel is found gone after a recovery (the heartbeat still
        # silent over a fresh link); "" leaves that check to the caller (the send helper).
        self.when_gone = when_gone
        self.stopping = threading.Event()
        self.up = threading.Event()
        self.up.set()
        self.drops = 0
        self.gaps = 0  # recoveries whose missed output could not be fetched
        self.silent_up_s = 0.0  # how long the heartbeat has been silent while the link was up
        self.failed: BaseException | None = None  # a permanent error ended recovery
        self.thread: threading.Thread | None = None

    def start(self) -> Link:
        self.thread = threading.Thread(target=self._watch, name="tether-link", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def kernel_alive(self) -> bool:
        """Whether a client should go on waiting for its cell: yes while the link is
        re-made (the kernel runs on), no once recovery failed or the heartbeat stayed
        silent for DEAD_AFTER_S while the link was up."""
        if self.failed is not None or self.stopping.is_set():
            return False
        return self.silent_up_s < DEAD_AFTER_S

    def master_alive(self) -> bool:
        from tether.transport.ssh import master_alive

        return master_alive(self.target.host)

    def _exit_master(self) -> None:
        from tether.transport.ssh import SshTransport

        SshTransport(self.target.host).stop_master()

    def _watch(self) -> None:
        silent_since: float | None = None
        checked = time.monotonic()
        while not self.stopping.wait(CHECK_EVERY_S):
            now = time.monotonic()
            elapsed, checked = now - checked, now
            if self.beating is not None and not self.beating():
                silent_since = silent_since or now
                self.silent_up_s += elapsed
            else:
                silent_since = None
                self.silent_up_s = 0.0
            alive = self.master_alive()
            if alive and silent_since and time.monotonic() - silent_since > HEARTBEAT_GRACE_S:
                self._exit_master()  # a master on a silently dead link: start afresh
                alive = False
            if not alive:
                self.recover()
                silent_since = None
                checked = time.monotonic()  # the outage is not silence while up

    def recover(self) -> None:
        """Hold the feed, re-make master and forwards (same sockets), inject the gap."""
        self.up.clear()
        self.feed.holding.set()
        self.drops += 1
        self.say(f"tether: lost the link to {self.target.host}; reconnecting (the kernel runs on)")
        delay = 0.5
        try:
            while not self.stopping.is_set():
                try:
                    self._remake()
                    break
                except Exception as error:
                    if not is_transient(error):  # a refused key, host key, interpreter: say so
                        line = error.line() if isinstance(error, TetherError) else str(error)
                        self.say(f"tether: error: {line}")
                        self.failed = error
                        self.stopping.set()
                        return
                    self.stopping.wait(delay)
                    delay = min(delay * 2, 5.0)
            if self.stopping.is_set():
                return
            self._wait_beating()
            if self._kernel_gone():
                return
            missed = self._catchup()
            shown = self.feed.inject(missed)
            self.say(f"tether: reconnected to {self.target.host} ({shown} missed messages)")
        finally:
            self.feed.holding.clear()
            self.up.set()

    def _remake(self) -> None:
        from tether.kernel.lifecycle import RemoteKernel

        RemoteKernel(self.target, self.name).connect(self.remote)

    def _wait_beating(self) -> None:
        """Give zmq a moment to reconnect its sockets (the SUB must be back first)."""
        deadline = time.monotonic() + 3.0
        while self.beating is not None and not self.beating() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)

    def kernel_state(self, timeout: float = 20.0) -> str:
        """The agent's word on this kernel: 'running', 'dead', 'stopped' (no such kernel),
        'restarted' (a new key: another kernel now) or 'unknown' (no answer in time)."""
        from tether.agent.wire import ErrorKind
        from tether.kernel.lifecycle import RemoteKernel
        from tether.transport.channel import AgentError

        try:
            answer = RemoteKernel(self.target, self.name).info(timeout)
        except AgentError as error:
            return "stopped" if error.kind is ErrorKind.NOKERNEL else "unknown"
        except Exception:  # the link, a timeout: not known
            return "unknown"
        record = answer.get("record") or {}
        if (answer.get("connection") or {}).get("key") not in (None, self.remote.get("key")):
            return "restarted"
        return "running" if record.get("alive") else "dead"

    def _kernel_gone(self) -> bool:
        """Whether the agent finds the kernel gone (then say so and stop): a heartbeat
        still silent over a fresh link is a dead kernel, not an outage."""
        from tether.kernel.names import shown_name

        if not self.when_gone or self.beating is None or self.beating():
            return False
        state = self.kernel_state()
        if state in ("running", "unknown"):
            return False
        shown = shown_name(self.target, self.name)[0]
        error = TetherError(
            f"the kernel {shown!r} on {self.target.host} is {state}", "", self.when_gone
        )
        self.say(f"tether: error: {error.line()}")
        self.failed = error
        self.stopping.set()
        return True

    def _catchup(self) -> list[Message]:
        from tether.kernel.lifecycle import RemoteKernel

        request = KernelCatchup(self.name, after=self.feed.last_id, since=self.feed.last_date)
        try:
            answer = RemoteKernel(self.target, self.name).call(request)
        except Exception as error:  # the gap stays; go on
            self.gaps += 1
            self.say(f"tether: could not fetch the output missed meanwhile: {error}")
            return []
        messages = answer.get("messages", [])
        return [m for m in messages if isinstance(m, dict)]
