"""`tether --help` and `tether COMMAND --help` without importing the CLI framework: the
text, kept from the last time.

Printing a help means importing the CLI framework (typer, click, rich: ~60-75 ms of a
~90 ms start) and, for the top-level one, building the whole command tree. Its text
depends only on tether's source, the command words and the terminal it is printed to, so
the first `tether [COMMAND [SUBCOMMAND]] --help` keeps what it printed in the runtime dir
(0700), keyed by the sync daemon's source fingerprint, the words and the terminal's shape
(width, colour, whether a terminal); later ones print that text. A changed tether or
terminal misses and renders afresh. Only plain command words are kept (at most two,
lowercase names): any other argument before --help renders as the framework says.
Standard library only.
"""

from __future__ import annotations

import io
import os
import zlib

from tether import invocation

HELP_FLAGS = ("--help", "-h")
_NAME = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def words(args: list[str]) -> list[str] | None:
    """The command words of a help request whose text may be kept (`[*words, --help]`,
    at most two lowercase command names), else None."""
    if not args or args[-1] not in HELP_FLAGS or len(args) > 3:
        return None
    names = args[:-1]
    if all(name[:1].isalpha() and set(name) <= _NAME for name in names):
        return names
    return None


# What rich reads to decide width and colour (besides isatty and the terminal's size).
_ENV = ("COLUMNS", "LINES", "TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE")


class Capture(io.StringIO):
    """Text written for a stream that is (or is not) a terminal, kept to be cached."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def key(names: list[str] | None = None) -> str:
    """The cache key: tether's source, the command words and the shape of the terminal."""
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
    shape = "\0".join(
        [" ".join(names or []), str(tty), size, *(f"{name}={env.get(name, '')}" for name in _ENV)]
    )
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
