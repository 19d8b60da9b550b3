"""The local file events of `tether watch`: inotify on the event loop where it can, else
watchfiles.

On Linux every directory of each root is watched through tether's own inotify watcher
(agent/inotify.py, the one the kept scans use): its descriptor is read on the asyncio
loop as soon as the kernel queues an event, and a burst is handed on after QUIET_S
without a new event (DEBOUNCE_S at most), so a save reaches the push in about a
millisecond instead of watchfiles' thread and step (~5-10 ms). A root the watcher
cannot promise (not Linux, a network file system, a mount inside, the watch budget) is
watched by watchfiles (Rust notify) instead, as before. When a watcher loses events
(the kernel's queue overflowed, the root moved), the sender is told to push everything
(`dispatch(paths, True)`) and watchfiles takes over: nothing changed is left unsent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from tether.agent.inotify import Unwatchable, Watcher

QUIET_S = 0.002  # a burst ends after this much quiet ...
DEBOUNCE_S = 1.0  # ... or after this long at most
STEP_MS = 5  # the same for watchfiles
DEBOUNCE_MS = 1000

Dispatch = Callable[[list[str], bool], None]


class _Collected:
    """What one watcher's drain found: absolute paths, or why it is unsure (agent/inotify's
    events sink, as agent/watched.WatchedTree is for the kept scans)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.paths: list[str] = []
        self.lost: str | None = None

    def changed(self, path: str) -> None:
        self.paths.append(os.path.join(self.root, path))

    def touched(self, path: str) -> None:
        self.paths.append(os.path.join(self.root, path) if path else self.root)

    def unsure(self, why: str) -> None:
        self.lost = self.lost or why

    def heartbeat(self, now: float) -> None:
        return None


def _started(roots: list[Path]) -> list[Watcher] | None:
    """A started watcher per root, or None (and nothing left open) if any cannot be."""
    watchers: list[Watcher] = []
    try:
        for root in roots:
            watcher = Watcher(str(root), set())
            watcher.start()
            watchers.append(watcher)
    except (Unwatchable, OSError):
        for watcher in watchers:
            watcher.close()
        return None
    return watchers


async def watch_paths(roots: list[Path], dispatch: Dispatch, stop: asyncio.Event) -> None:
    """Call dispatch(changed absolute paths, False) for each burst until stop is set."""
    watchers = await asyncio.to_thread(_started, roots)
    if watchers is not None:
        try:
            if await _inotify(watchers, dispatch, stop):
                return
        finally:
            for watcher in watchers:
                watcher.close()
        dispatch([], True)  # events were lost: everything is pushed again
    await _watchfiles(roots, dispatch, stop)


async def _inotify(watchers: list[Watcher], dispatch: Dispatch, stop: asyncio.Event) -> bool:
    """Read the watchers on the loop until stop (True) or until one lost events (False)."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    for watcher in watchers:
        loop.add_reader(watcher.fd, ready.set)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            waiting = asyncio.ensure_future(ready.wait())
            await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if stop.is_set():
                return True
            first = time.monotonic()
            found: list[str] = []
            while True:
                ready.clear()
                for watcher in watchers:
                    collected = _Collected(watcher.root)
                    watcher.drain(collected, time.monotonic())
                    if collected.lost is not None:
                        return False
                    found += collected.paths
                left = DEBOUNCE_S - (time.monotonic() - first)
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(ready.wait(), min(QUIET_S, left))
                except asyncio.TimeoutError:
                    break
            if found:
                dispatch(found, False)
        return True
    finally:
        stopping.cancel()
        for watcher in watchers:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(watcher.fd)


async def _watchfiles(roots: list[Path], dispatch: Dispatch, stop: asyncio.Event) -> None:
    import watchfiles

    async for changes in watchfiles.awatch(
        *roots,
        watch_filter=None,
        debounce=DEBOUNCE_MS,
        step=STEP_MS,
        stop_event=stop,
    ):
        dispatch([path for _, path in changes], False)
