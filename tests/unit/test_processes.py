"""tether.hosts.processes: one way to stop a process (first signal, grace, SIGKILL)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tether.hosts.processes import alive, end_process, terminate

# Prints "ready" once its handlers are set, so no signal lands before them (an uncaught
# KeyboardInterrupt would end it as killed by SIGINT, -2).
CHILD = """
import signal, sys, time
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
try:
    print("ready", flush=True)  # inside the try: a SIGINT right after it is still caught
    time.sleep(60)
except KeyboardInterrupt:
    sys.exit(7)
"""


def child(mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


def test_end_process_sends_the_first_signal_and_returns_the_exit_status() -> None:
    process = child("handle")
    assert end_process(process, signal.SIGINT, grace_s=30) == 7  # its KeyboardInterrupt
    process = child("handle")
    assert end_process(process) == -signal.SIGTERM


def test_end_process_kills_what_outlives_the_grace_period() -> None:
    process = child("ignore")
    started = time.monotonic()
    assert end_process(process, signal.SIGINT, grace_s=0.3) == -signal.SIGKILL
    assert time.monotonic() - started < 10
    assert end_process(process) == -signal.SIGKILL  # reaped already: no signal, same status


def test_terminate_without_a_first_signal_waits_then_kills_only_what_is_killable() -> None:
    process = child("ignore")
    try:
        terminate([process.pid], grace_s=0.2, first=None, killable=lambda pid: False)
        assert process.poll() is None and alive(process.pid)  # not ours to kill: left
        terminate([process.pid], grace_s=0.2, first=None, reap=lambda: None)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
