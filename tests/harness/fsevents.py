"""File events for tests of tether's inotify watchers."""

from __future__ import annotations

import os
from pathlib import Path


def overflow_event_queue(one: Path, two: Path) -> None:
    """Overflow the kernel's inotify queue of every watcher of one and two (made if
    missing): writes to the two files in turn give one event each (the kernel merges only
    repeats), more than max_queued_events in all, with few paths changed. Nothing reads
    the queue meanwhile when the caller's event loop is not let run (no await)."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    first = os.open(one, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    second = os.open(two, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for _ in range(limit // 2 + 100):
            os.write(first, b"#")
            os.write(second, b"#")
    finally:
        os.close(first)
        os.close(second)
