"""incremental.local_paths / changed_paths: a changed set only when every part is known."""

from __future__ import annotations

from tether.sync.incremental import Mark, changed_paths, local_paths

TREE = object()
STAMP = (1, 2, 3, 4)
MARK = Mark(STAMP, TREE, 7, "t1", frozenset({"left"}))


def test_a_known_history_gives_every_part_of_the_changed_set() -> None:
    here = local_paths(MARK, STAMP, (TREE, 8, {"edited"}), ["pending"])
    assert here == {"edited", "left", "pending"}
    assert changed_paths(MARK, here, ("t1", {"remote"})) == {"edited", "left", "pending", "remote"}


def test_any_doubt_plans_the_whole_tree() -> None:
    assert local_paths(None, STAMP, (TREE, 8, set()), []) is None  # no push before
    assert local_paths(MARK, (1, 2, 3, 5), (TREE, 8, set()), []) is None  # base written since
    assert local_paths(MARK, None, (TREE, 8, set()), []) is None  # no base file
    assert local_paths(MARK, STAMP, (object(), 8, set()), []) is None  # another kept tree
    assert local_paths(MARK, STAMP, (TREE, 9, set()), []) is None  # a pull scanned between
    assert local_paths(MARK, STAMP, (TREE, 8, None), []) is None  # a full local scan
    assert local_paths(MARK, STAMP, None, []) is None  # no kept scan
    here = local_paths(MARK, STAMP, (TREE, 8, set()), [])
    assert changed_paths(MARK, here, (None, None)) is None  # a whole remote answer
    assert changed_paths(MARK, here, ("t0", {"x"})) is None  # a delta against another scan
    assert changed_paths(MARK, None, ("t1", {"x"})) is None
