"""Length-prefixed frames: 4-byte big-endian header length, JSON header, optional payload.

A header's "n" is the payload's length in bytes (absent when there is none). Shared by the
agent and the client; standard library only, Python >= 3.8.
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO, Dict, Optional, Tuple

PROTOCOL = 1
MAX_HEADER = 64 * 1024 * 1024
_LENGTH = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that is not a frame."""


def encode(header: Dict[str, Any], payload: bytes = b"") -> bytes:
    """One frame as bytes."""
    if payload:
        header = dict(header, n=len(payload))
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return _LENGTH.pack(len(raw)) + raw + payload


def decode_header(raw: bytes) -> Dict[str, Any]:
    """Parse a header's JSON; ProtocolError if it is not an object."""
    try:
        header = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as error:
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
