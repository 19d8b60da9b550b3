"""Where memory goes (dev): tracemalloc snapshots of a process at its peaks.

With TETHER_TRACEMALLOC=DIR in the environment of the sync daemon (given to the command
that starts it) or of the agent (set by the remote host, as bench/memory.py's sandbox
does), the process traces its allocations (25 frames) and a thread leaves, per phase (a
command the daemon served, a whole-tree scan the agent answered, and what follows it),
DIR/TAG-PID-N-peak.snap: the allocations when the traced memory was at its highest in
that phase (read them with tracemalloc.Snapshot.load). Off, nothing of this is imported.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from typing import Optional

FRAMES = 25
EVERY_S = 0.5
GROWTH = 1.15  # a new snapshot when the traced memory is this much above the last one's


class Tracer:
    """tracemalloc on, and a thread that snapshots each phase at its highest."""

    def __init__(self, where: str, tag: str) -> None:
        self.where = where
        self.tag = tag
        self.phase = 0
        self.best = 0
        self.lock = threading.Lock()
        tracemalloc.start(FRAMES)
        thread = threading.Thread(target=self._watch, name="tether-memtrace", daemon=True)
        thread.start()

    def next_phase(self) -> None:
        """What follows is a new phase: its own peak snapshot."""
        with self.lock:
            self._sample()
            self.phase += 1
            self.best = 0

    def _watch(self) -> None:
        while True:
            time.sleep(EVERY_S)
            with self.lock:
                self._sample()

    def _sample(self) -> None:
        current = tracemalloc.get_traced_memory()[0]
        if current <= self.best * GROWTH:
            return
        snapshot = tracemalloc.take_snapshot()
        name = "%s-%d-%d-peak.snap" % (self.tag, os.getpid(), self.phase)
        snapshot.dump(os.path.join(self.where, name))
        del snapshot
        self.best = current


def start(tag: str, where: Optional[str]) -> Optional[Tracer]:
    """A Tracer writing into `where` (TETHER_TRACEMALLOC's value), or None when unset."""
    if not where:
        return None
    os.makedirs(where, exist_ok=True)
    return Tracer(where, tag)
