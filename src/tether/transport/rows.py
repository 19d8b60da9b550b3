"""A large frame header decoded with its "rows" left in the text, taken one row at a time.

A whole-tree scan answer is one frame of 100,000 rows: json.loads of it holds every row as
a list of objects at once (~45 MB) before any is turned into an Entry. Here the members
before "rows" are decoded as usual and "rows" becomes an iterator that decodes the next row
only when it is taken, so the reader holds the frame's text (~100 bytes a row) and one row.
The agent writes "rows" as the last member of such a frame (agent/protocol.encode_parts);
a header of any other shape is decoded whole, as before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tether.agent.protocol import ProtocolError

# A header this long (characters) or longer is worth decoding a row at a time.
LAZY_MIN = 64 * 1024

_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_SPACE = re.compile(r"[ \t\n\r]*").match


def decode_rows_later(text: str) -> dict[str, Any] | None:
    """text's header, its "rows" member (when it is the last one and a list) an iterator
    over the rows; None when text is not of that shape (decode it whole)."""
    try:
        header: dict[str, Any] = {}
        at = _skip(text, 0)
        if text[at] != "{":
            return None
        at += 1
        while True:
            key, at = _SCAN(text, _skip(text, at))
            at = _skip(text, at)
            if not isinstance(key, str) or text[at] != ":":
                return None
            at = _skip(text, at + 1)
            if key == "rows" and text[at] == "[":
                header[key] = _rows(text, at + 1)
                return header
            header[key], at = _SCAN(text, at)
            at = _skip(text, at)
            if text[at] == "}":
                return None  # no rows in it: decoded whole (it is small then)
            if text[at] != ",":
                return None
            at += 1
    except (StopIteration, ValueError, IndexError):
        return None  # not JSON as expected: the whole decode says what is wrong


def _rows(text: str, at: int) -> Iterator[Any]:
    """The rows of the list that starts at `at` (after its "["), each decoded when taken;
    ProtocolError when the list or what follows it (only the header's "}") is malformed."""
    try:
        at = _skip(text, at)
        if text[at] == "]":
            at += 1
        else:
            while True:
                row, at = _SCAN(text, at)
                yield row
                at = _skip(text, at)
                mark = text[at]
                at = _skip(text, at + 1)
                if mark == "]":
                    break
                if mark != ",":
                    raise ProtocolError(f"bad frame header: a row is followed by {mark!r}")
        if text[at:].strip() != "}":
            raise ProtocolError("bad frame header: more after its rows")
    except (StopIteration, ValueError, IndexError) as error:
        raise ProtocolError(f"bad frame header: a malformed row ({error})") from None


def _skip(text: str, at: int) -> int:
    """The index of the first non-space character at or after `at`."""
    if at < len(text) and text[at] in " \t\n\r":
        found = _SPACE(text, at)
        assert found is not None  # (it matches the empty string too)
        return found.end()
    return at
