"""`tether console` in a detached tmux session, read as the user sees it (capture-pane).

    console = TmuxConsole(socket, project).start()
    console.wait_for("In [")
    console.type("x = 1")
    console.wait_for("In [2]")
    console.leave()

The screen is tmux's rendering of what the console wrote (escapes applied, a redrawn
prompt shown once), so tests check what a person at the terminal reads.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.harness import env as harness


class TmuxConsole:
    """One console in session "c" of the tmux server on SOCKET, started in CWD."""

    def __init__(self, socket: str, cwd: Path, *, width: int = 160, height: int = 80) -> None:
        self.socket = socket
        self.cwd = cwd
        self.size = (width, height)

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout

    def start(self, *args: str, env: dict[str, str] | None = None) -> TmuxConsole:
        """Start `tether console ARGS` (ENV: extra variables for it)."""
        argv = harness.tether_argv("console", *args)
        if env:
            argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
        width, height = self.size
        subprocess.run(
            ["tmux", "-L", self.socket, "new-session", "-d", "-s", "c", "-x", str(width),
             "-y", str(height), "-c", str(self.cwd), "--", *argv],
            check=True,
            timeout=30,
        )  # fmt: skip
        return self

    def screen(self) -> str:
        """The pane with its scrollback, as rendered text."""
        return self.tmux("capture-pane", "-p", "-S", "-500", "-t", "c")

    def lines(self) -> list[str]:
        """The screen's non-empty lines, trailing blanks stripped."""
        return [line.rstrip() for line in self.screen().splitlines() if line.strip()]

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        """The screen once the regex PATTERN is on it; AssertionError with the screen if not."""
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            shown = self.screen()
            if re.search(pattern, shown):
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} never showed; screen:\n{shown}")

    def settle(self, quiet: float = 1.0, timeout: float = 30) -> str:
        """The screen once it stayed the same for QUIET seconds."""
        deadline = time.monotonic() + timeout
        last, since = self.screen(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.screen()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
        raise AssertionError(f"the screen never settled:\n{last}")

    def type(self, line: str) -> None:
        """Type LINE and Enter, as keys (literally: no tmux key names)."""
        self.tmux("send-keys", "-t", "c", "-l", line)
        self.tmux("send-keys", "-t", "c", "Enter")

    def keys(self, *names: str) -> None:
        """Press tmux-named keys (`C-c`, `Tab`, `Enter`)."""
        self.tmux("send-keys", "-t", "c", *names)

    def running(self) -> bool:
        return "c" in self.tmux("list-sessions", "-F", "#{session_name}").split()

    def leave(self, timeout: float = 30) -> None:
        """`exit` at the prompt, then wait until the console (and its session) ended."""
        self.type("exit")
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise AssertionError(f"the console did not leave:\n{self.screen()}")
            time.sleep(0.2)
