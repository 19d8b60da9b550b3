"""The one-regex fast path of PatternSet and Scope decides exactly as rule-by-rule matching.

PatternSet.match and Scope.excluded first ask one combined regex whether any rule can
apply to a path or one of its parents; the reference below asks every rule at every depth
(the semantics tests/unit/test_ignore.py checks against git itself).
"""

from __future__ import annotations

import warnings

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.core.ignore import PatternSet
from tether.sync.local import ALWAYS_SKIP, Scope

NAMES = ["a", "b", "ab", "x.log", "ba", ".git", ".tether", "out"]
PIECES = ["a", "b", "*", "?", "**", "a*", "*.log", "[ab]", "[!a]b", "x.log", "out", "\\*"]

segment = st.sampled_from(PIECES)
pattern = st.builds(
    lambda negate, lead, parts, trail: (
        ("!" if negate else "") + ("/" if lead else "") + "/".join(parts) + ("/" if trail else "")
    ),
    st.booleans(),
    st.booleans(),
    st.lists(segment, min_size=1, max_size=3),
    st.booleans(),
)
patterns = st.lists(pattern, max_size=5)
path = st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map("/".join)
base = st.sampled_from(["", "a", "a/b", "out"])


def reference(patterns: PatternSet, path: str, is_dir: bool) -> bool | None:
    """Every rule at every depth, the last match winning; a matched parent decides."""
    if not patterns.rules:
        return None
    if patterns.base:
        if not path.startswith(patterns.base + "/"):
            return None
        path = path[len(patterns.base) + 1 :]
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        as_dir = is_dir or depth < len(parts)
        verdict: bool | None = None
        for rule in patterns.rules:
            if rule.dir_only and not as_dir:
                continue
            if rule.regex.fullmatch(prefix):
                verdict = not rule.negate
        if verdict:
            return True
        if depth == len(parts):
            return verdict
    return None


def make(lines: list[str], base: str = "") -> PatternSet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return PatternSet(lines, base=base)


@settings(max_examples=400, deadline=None)
@given(patterns, base, st.lists(st.tuples(path, st.booleans()), min_size=1, max_size=8))
def test_pattern_set_match_agrees_with_rule_by_rule_matching(
    lines: list[str], base: str, paths: list[tuple[str, bool]]
) -> None:
    patterns = make(lines, base)
    for rel, is_dir in paths:
        assert patterns.match(rel, is_dir) == reference(patterns, rel, is_dir), (lines, rel)


@settings(max_examples=300, deadline=None)
@given(patterns, patterns, patterns, st.lists(st.tuples(path, st.booleans()), max_size=8))
def test_scope_excluded_agrees_with_its_definition(
    exclude: list[str], include: list[str], results: list[str], paths: list[tuple[str, bool]]
) -> None:
    scope = Scope(make(exclude), make(include), make(results))
    for rel, is_dir in paths:
        expected = (
            rel.split("/", 1)[0] in ALWAYS_SKIP
            or bool(reference(scope.results, rel, is_dir))
            or (
                bool(reference(scope.exclude, rel, is_dir))
                and not reference(scope.include, rel, is_dir)
            )
        )
        assert scope.excluded(rel, is_dir) == expected, (exclude, include, results, rel)
