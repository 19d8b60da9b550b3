"""The agent's packed rows (agent/packed.py) hold what a {path: row} dict holds.

Random trees of rows (files with and without digests, directories, links with targets,
names with spaces, non-UTF-8 bytes and unicode, mtimes beyond 64 bits) are packed as a
scan packs them, then changed, deleted and added to row by row as the watched tree does,
with reads and packs in between; at every step the packed rows equal the dict model, the
paths under any prefix are the model's, and the answer by difference against an earlier
copy (changed_rows, gone) is the one ScanMemo gives for two dicts.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.agent.packed import PackedRows
from tether.agent.scan import ScanMemo
from tether.agent.watched import under

NAMES = st.sampled_from(["a", "b", "c d", "é", "\udcff", "x.py", "ab", "a-b", "a0"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
ROWS = st.one_of(
    st.tuples(st.just("file"), st.integers(0, 2**40), st.one_of(st.none(), st.just("ab" * 32))),
    st.tuples(st.just("dir"), st.just(0), st.none()),
    st.tuples(st.just("link"), st.just(0), st.sampled_from(["t", "../a b", "\udcfe/x"])),
)
# Any mtime_ns a file system gives, one beyond 64 bits too (a hostile timestamp).
MTIMES = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(2**63, 2**70))
STEPS = st.lists(
    st.tuples(st.sampled_from(["set", "del", "pack", "read", "copy"]), PATHS, ROWS, MTIMES,
              st.sampled_from([0o644, 0o755, 0o777, 0])),
    max_size=40,
)  # fmt: skip


def row(path: str, value: tuple[Any, ...], mtime: int, mode: int) -> list[Any]:
    kind, size, extra = value
    digest = extra if kind == "file" else None
    target = extra if kind == "link" else None
    return [path, kind, size, mtime, mode, digest, target]


def packed_as_a_scan(model: dict[str, list[Any]]) -> PackedRows:
    rows = PackedRows()
    listings: dict[str, list[list[Any]]] = {}
    for path, found in model.items():
        listings.setdefault(path.rpartition("/")[0], []).append(found)
    for directory, listed in listings.items():
        rows.add(directory, listed)
    return rows


def delta(new: Any, old: Any, since: str) -> tuple[list[list[Any]], list[str]]:
    memo = ScanMemo()
    token = memo.answer("k", None, old)["token"]
    answer = memo.answer("k", token, new)
    assert answer["since"] == token
    return sorted(answer["rows"]), sorted(answer["gone"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(PATHS, ROWS, MTIMES), max_size=20), STEPS)
def test_packed_rows_hold_what_a_dict_holds(
    first: list[tuple[str, tuple[Any, ...], int]], steps: list[tuple[Any, ...]]
) -> None:
    model = {path: row(path, value, mtime, 0o644) for path, value, mtime in first}
    rows = packed_as_a_scan(model)
    earlier = (dict(model), rows.copy())
    for op, path, value, mtime, mode in steps:
        if op == "set":
            model[path] = rows[path] = row(path, value, mtime, mode)
        elif op == "del":
            assert (path in model) == (path in rows)
            if path in model:
                del model[path]
                del rows[path]
        elif op == "pack":
            rows.pack()
        elif op == "read":
            assert rows.get(path) == model.get(path)
        else:
            earlier = (dict(model), rows.copy())
        assert len(rows) == len(model)
        assert dict(rows.items()) == model
        prefix = path.rpartition("/")[0] if op == "read" else path
        assert sorted(rows.under(prefix)) == sorted(p for p in model if under(p, prefix))
        assert rows.has_under(prefix) == any(under(p, prefix) and p != prefix for p in model)
    assert sorted(rows.rows()) == sorted(model.values())
    assert delta(rows, earlier[1], "t") == delta(model, earlier[0], "t")
