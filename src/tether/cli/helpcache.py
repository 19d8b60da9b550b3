"""`tether --help` without importing the CLI framework: its text, kept from the last time.

The top-level help lists every command, so printing it means building the whole command
tree (typer, click, rich: ~60 ms of a ~75 ms start). Its text depends only on tether's
source and the terminal it is printed to, so the first `tether --help` keeps what it
printed in the runtime dir (0700), keyed by the sync daemon's source fingerprint and the
terminal's shape (width, colour, whether a terminal); later ones print that text.
A changed tether or terminal misses and renders afresh. Standard library only.
"""

from __future__ import annotations

import io
import os
import zlib

from tether import invocation

HELP_ARGS = (["--help"], ["-h"])
# What rich reads to decide width and colour (besides isatty and the terminal's size).
_ENV = ("COLUMNS", "LINES", "TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE")


class Capture(io.StringIO):
    """Text written for a stream that is (or is not) a terminal, kept to be cached."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def key() -> str:
    """The cache key: tether's source and the shape of the terminal printed to."""
    from tether.cli.fastpath import fingerprint

    stdout = invocation.stdout()
    tty = stdout.isatty()
    size = ""
    for fd in (0, 1, 2):
        try:
            size = str(os.get_terminal_size(fd))
            break
        except OSError:
            continue
    env = invocation.environ()
    shape = "\0".join([str(tty), size, *(f"{name}={env.get(name, '')}" for name in _ENV)])
    return f"{fingerprint()}-{zlib.crc32(shape.encode()):08x}"


def _path(cache_key: str) -> str | None:
    try:
        from tether.paths import runtime_dir_str

        return os.path.join(runtime_dir_str(), f"help-{cache_key}.txt")
    except Exception:  # an unsafe runtime dir: no cache (the command says why elsewhere)
        return None


def get(cache_key: str) -> str | None:
    """The help text kept for this key, or None."""
    path = _path(cache_key)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def put(cache_key: str, text: str) -> None:
    """Keep text for this key (atomically; old tethers' entries are removed)."""
    path = _path(cache_key)
    if path is None or not text:
        return
    directory = os.path.dirname(path)
    fingerprint = cache_key.split("-", 1)[0]
    try:
        for name in os.listdir(directory):
            if name.startswith("help-") and not name.startswith(f"help-{fingerprint}-"):
                os.unlink(os.path.join(directory, name))
        temp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except OSError:
        pass
