"""The sync daemon's client wire (tether/clientwire.py): the hand-written JSON of a request
reads back with json as the same value, whatever the text (control characters, quotes,
backslashes, non-ASCII, lone surrogates from undecodable environment bytes), and frames
split anywhere come out whole, in order, once."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tether import clientwire

text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF))  # surrogates too
scalars = st.none() | st.booleans() | st.integers(-(1 << 40), 1 << 40) | text
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(text, values, max_size=6))
def test_a_request_reads_back_as_sent(request: dict[str, object]) -> None:
    line = clientwire.request_line(request)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert json.loads(line) == request


@given(
    st.lists(st.tuples(st.sampled_from("oexb"), text), max_size=8),
    st.lists(st.integers(1, 64), max_size=20),
)
def test_frames_come_out_whole_wherever_the_bytes_are_cut(
    sent: list[tuple[str, str]], cuts: list[int]
) -> None:
    data = b"".join(clientwire.frame(kind, body) for kind, body in sent)
    buffer = bytearray()
    got: list[tuple[str, str]] = []
    at = 0
    for size in [*cuts, len(data)]:
        buffer += data[at : at + size]
        at += size
        got += clientwire.frames(buffer)
    assert got == sent and not buffer
