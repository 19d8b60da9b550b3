"""What a client of the sync daemon (cli/fastpath.py) and the daemon say to each other
(and `tether send` and its helper, kernel/helper.py), in a form the client reads and
writes without importing `json` or `socket` (with what they pull in, `re`, `enum` and
more, ~10 ms of a ~40 ms command on a 2-core machine).

The client sends one JSON line (its request: argv, cwd, environment, terminal), written
by `request_line` for the few types a request holds; the daemon reads it with `json`.
The daemon answers with frames: one byte of kind, four bytes of length (big-endian), then
the UTF-8 text (surrogates passed through, so any str arrives as it was sent):

    a  accepted: the command starts here (first; before it, the command has not begun)
    o  text for the client's stdout      e  text for its stderr
    x  the exit code, in digits (last)   b  busy: run the command in your own process
    s  stale (the send helper: its kernel changed, take the direct path)

A connection that ends before `a` (the server was killed with the request still in its
socket's backlog, say) ran nothing: the client runs the command another way. One that
ends after `a` and before `x` may have done part of the work: the client says so.

Only the client's own daemon (same user, same tether: the socket's name carries the
source's fingerprint) ever talks to it. No import at all.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ACCEPTED, OUT, ERR, EXIT, BUSY, STALE = "a", "o", "e", "x", "b", "s"
HEAD = 5

# JSON's escapes for what may not appear raw in a string (control characters, quote,
# backslash); anything else goes as UTF-8, lone surrogates as \\udcXX (see request_line).
_ESCAPES: dict[int, str] = {code: f"\\u{code:04x}" for code in range(32)}
_ESCAPES[ord('"')] = '\\"'
_ESCAPES[ord("\\")] = "\\\\"


def _json(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        return '"' + value.translate(_ESCAPES) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(_json(str(k)) + ":" + _json(v) for k, v in value.items()) + "}"
    raise TypeError(f"not in a request: {type(value).__name__}")


def request_line(request: dict[str, Any]) -> bytes:
    """The request as one line of JSON (what json.loads reads back as the same value):
    a lone surrogate (an undecodable byte of an environment value) becomes the escape
    `\\udcXX`, which JSON reads back as the same surrogate."""
    return _json(request).encode("utf-8", "backslashreplace") + b"\n"


def frame(kind: str, text: str) -> bytes:
    """One frame of the daemon's answer."""
    data = text.encode("utf-8", "surrogatepass")
    return kind.encode("ascii") + len(data).to_bytes(4, "big") + data


def shown(kind: str, text: str, out: Any, err: Any) -> bool:
    """Write an `o` or `e` frame's text to its stream (flushed at once: progress, prompts);
    False for a frame of any other kind."""
    stream = out if kind == OUT else err if kind == ERR else None
    if stream is None:
        return False
    stream.write(text)
    stream.flush()
    return True


def frames(buffer: bytearray) -> list[tuple[str, str]]:
    """The whole frames at the start of buffer, removed from it (a partial one stays)."""
    found = []
    start = 0
    while len(buffer) - start >= HEAD:
        size = int.from_bytes(buffer[start + 1 : start + HEAD], "big")
        end = start + HEAD + size
        if len(buffer) < end:
            break
        kind = chr(buffer[start])
        found.append((kind, bytes(buffer[start + HEAD : end]).decode("utf-8", "surrogatepass")))
        start = end
    del buffer[:start]
    return found
