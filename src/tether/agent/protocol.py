"""Length-prefixed frames: 4-byte big-endian header length, JSON header, optional payload.

A header's "n" is the payload's length in bytes (absent when there is none). Shared by the
agent and the client; standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import struct
import sys
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple

PROTOCOL = 1
MAX_HEADER = 64 * 1024 * 1024
_LENGTH = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that is not a frame."""


# One encoder for every frame (json.dumps with separators builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


ROWS_CHUNK = 1024  # a header's "rows" list is encoded this many rows at a time


def encode(header: Dict[str, Any], payload: bytes = b"") -> bytes:
    """One frame as bytes."""
    return b"".join(encode_parts(header, payload))


def encode_parts(header: Dict[str, Any], payload: bytes = b"") -> List[bytes]:
    """One frame as pieces to write in turn (no copy of the whole): a long "rows" list (a
    whole tree's scan) is encoded a chunk at a time, so a frame of 100,000 rows never
    exists as one JSON string beside its bytes. "rows" may also be an iterator (the
    agent's packed rows, agent/packed.py): its rows exist a chunk at a time."""
    if payload:
        header = dict(header, n=len(payload))
    rows = header.get("rows")
    many = isinstance(rows, Iterator) or (isinstance(rows, list) and len(rows) > ROWS_CHUNK)
    if not many:
        raw = _ENCODER.encode(header).encode("ascii")
        return [_LENGTH.pack(len(raw)), raw, payload]
    rest = dict(header)
    del rest["rows"]
    head = _ENCODER.encode(rest)[:-1]  # without its closing brace
    parts = [(head + ("," if rest else "") + '"rows":[').encode("ascii")]
    each = iter(rows or ())  # a list or an iterator (above)
    comma = ""
    while True:
        chunk = list(itertools.islice(each, ROWS_CHUNK))
        if not chunk:
            break
        parts.append((comma + _ENCODER.encode(chunk)[1:-1]).encode("ascii"))
        comma = ","
    parts.append(b"]}")
    return [_LENGTH.pack(sum(len(part) for part in parts)), *parts, payload]


def decode_header(raw: bytes) -> Dict[str, Any]:
    """Parse a header's JSON; ProtocolError if it is not an object."""
    return decode_header_text(header_text(raw))


def header_text(raw: bytes) -> str:
    """A header's bytes as text (ASCII); ProtocolError if they are not. A reader of large
    frames lets the bytes go before decoding the text (decode_header_text)."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as error:
        raise ProtocolError("bad frame header: %s" % error) from None


def decode_header_text(text: str) -> Dict[str, Any]:
    """decode_header of the header's text."""
    try:
        header = json.loads(text)
    except ValueError as error:
        raise ProtocolError("bad frame header: %s" % error) from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not an object")
    return header


def read_frame(stream: BinaryIO) -> Optional[Tuple[Dict[str, Any], bytes]]:
    """Read one frame from a blocking binary stream; None at a clean end of stream."""
    prefix = _read_exact(stream, 4, allow_eof=True)
    if prefix is None:
        return None
    (length,) = _LENGTH.unpack(prefix)
    if length > MAX_HEADER:
        raise ProtocolError("frame header too large (%d bytes)" % length)
    header = decode_header(_read_exact(stream, length) or b"")
    size = int(header.get("n", 0))
    payload = _read_exact(stream, size) or b"" if size else b""
    return header, payload


def _read_exact(stream: BinaryIO, size: int, allow_eof: bool = False) -> Optional[bytes]:
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if allow_eof and remaining == size:
                return None
            raise ProtocolError("stream ended inside a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class FrameReader:
    """Frames from a file descriptor, calling `before_wait` whenever it must block for input.

    The agent flushes its answers there: a burst of pipelined requests gets its answers
    in a few large writes instead of one write per answer.
    """

    def __init__(self, fd: int, before_wait: Callable[[], None]) -> None:
        self.fd = fd
        self.before_wait = before_wait
        self.buffer = bytearray()
        self.eof = False
        self._poll: Optional[Any] = None
        with contextlib.suppress(AttributeError, OSError):
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)

    def _wait(self) -> None:
        """before_wait, unless input is already there (a read would not block)."""
        if self._poll is None or not self._poll.poll(0):
            self.before_wait()

    def _fill(self, size: int) -> bool:
        while len(self.buffer) < size and not self.eof:
            self._wait()
            chunk = os.read(self.fd, max(1 << 16, size - len(self.buffer)))
            if not chunk:
                self.eof = True
            self.buffer += chunk
        return len(self.buffer) >= size

    def _take(self, size: int) -> bytes:
        if not self._fill(size):
            raise ProtocolError("stream ended inside a frame")
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_frame(self) -> Optional[Tuple[Dict[str, Any], bytes]]:
        """The next frame; None at a clean end of input."""
        if not self._fill(4):
            if self.buffer:
                raise ProtocolError("stream ended inside a frame")
            return None
        (length,) = _LENGTH.unpack(self._take(4))
        if length > MAX_HEADER:
            raise ProtocolError("frame header too large (%d bytes)" % length)
        header = decode_header(self._take(length))
        size = int(header.get("n", 0))
        return header, self._payload(size) if size else b""

    def _payload(self, size: int) -> bytes:
        """size bytes; a large payload is read straight into its own buffer (no copies)."""
        if len(self.buffer) >= size:
            return self._take(size)
        out = bytearray(size)
        view = memoryview(out)
        got = len(self.buffer)
        view[:got] = self.buffer
        del self.buffer[:]
        while got < size:
            self._wait()
            count = os.readv(self.fd, [view[got:]])
            if not count:
                self.eof = True
                raise ProtocolError("stream ended inside a frame")
            got += count
        return out  # type: ignore[return-value]  # bytes-like; handlers only read it


def grow_pipe(fd: int) -> None:
    """Ask for a 1 MB buffer on a pipe (Linux; elsewhere nothing): bulk frames then move in
    fewer, larger reads and writes. Used on the agent's input and the client's pipe to ssh."""
    if not sys.platform.startswith("linux"):
        return
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
