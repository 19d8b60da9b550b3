"""Smart unindent for `tether send`: a table of selections and what must run."""

from __future__ import annotations

import ast

import pytest

from tether.core.dedent import RangeError, parse_spec, select_lines, smart_dedent

CASES = [
    ("already flush", "x = 1\ny = 2\n", "x = 1\ny = 2\n"),
    ("common spaces", "    x = 1\n    y = 2\n", "x = 1\ny = 2\n"),
    ("one line", "        print(1)", "print(1)\n"),
    ("nested block", "    if a:\n        b = 1\n    c = 2\n", "if a:\n    b = 1\nc = 2\n"),
    ("tabs", "\tif a:\n\t\tb = 1\n", "if a:\n\tb = 1\n"),
    ("mixed tab prefix", "\t    x = 1\n\t    y = 2\n", "x = 1\ny = 2\n"),
    (
        "blank lines kept inside a block",
        "    for i in r:\n        a = i\n\n        b = i\n",
        "for i in r:\n    a = i\n\n    b = i\n",
    ),
    ("whitespace-only line emptied", "    x = 1\n  \n    y = 2\n", "x = 1\n\ny = 2\n"),
    ("blank ends dropped", "\n\n    x = 1\n\n\n", "x = 1\n"),
    ("mid-line start, siblings", "x = 1\n    y = 2\n    z = 3\n", "x = 1\ny = 2\nz = 3\n"),
    (
        "mid-line start, block header alone",
        "for i in r:\n            a = i\n            b = i\n",
        "for i in r:\n            a = i\n            b = i\n",
    ),
    (
        "mid-line start, block header with sibling after",
        "for i in r:\n            a = i\n        done = 1\n",
        "for i in r:\n    a = i\ndone = 1\n",
    ),
    (
        "mid-line start, bracket continuation",
        "x = f(\n        1,\n        2)\n",
        "x = f(\n1,\n2)\n",
    ),
    (
        "header with trailing comment",
        "if a:  # why\n        b = 1\n    c = 2\n",
        "if a:  # why\n    b = 1\nc = 2\n",
    ),
    (
        "comment at column 0 does not stop the dedent",
        "    x = 1\n# note\n    y = 2\n",
        "x = 1\n# note\ny = 2\n",
    ),
    (
        "comment indented deeper kept relative",
        "    x = 1\n        # deeper\n    y = 2\n",
        "x = 1\n    # deeper\ny = 2\n",
    ),
    ("crlf", "    x = 1\r\n    y = 2\r\n", "x = 1\ny = 2\n"),
    ("trailing spaces stripped", "    x = 1   \n", "x = 1\n"),
    ("empty", "", ""),
    ("only blanks", "\n   \n\t\n", ""),
    ("only a comment", "    # hi\n", "# hi\n"),
    (
        "trailing block closed by newline",
        "    def f():\n        return 1",
        "def f():\n    return 1\n",
    ),
    (
        "try/except dedent inside",
        "        try:\n            x = 1\n        except E:\n            x = 2\n",
        "try:\n    x = 1\nexcept E:\n    x = 2\n",
    ),
]


@pytest.mark.parametrize(("name", "given", "want"), CASES, ids=[c[0] for c in CASES])
def test_smart_dedent_table(name: str, given: str, want: str) -> None:
    got = smart_dedent(given)
    assert got == want
    if got.strip():
        ast.parse(got)  # every result is valid Python on its own


def test_dedent_is_idempotent() -> None:
    for _, given, _ in CASES:
        once = smart_dedent(given)
        assert smart_dedent(once) == once


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("train.py", ("train.py", None, None)),
        ("train.py:41", ("train.py", 41, 41)),
        ("train.py:40-58", ("train.py", 40, 58)),
        ("dir/a:b.py", ("dir/a:b.py", None, None)),
        ("dir/a:b.py:3-4", ("dir/a:b.py", 3, 4)),
        (":5", (":5", None, None)),
    ],
)
def test_parse_spec(spec: str, want: tuple[str, int | None, int | None]) -> None:
    assert parse_spec(spec) == want


@pytest.mark.parametrize("spec", ["f.py:0", "f.py:5-3", "f.py:3-", "f.py:-3", "f.py:1-2-3"])
def test_parse_spec_rejects_bad_ranges(spec: str) -> None:
    with pytest.raises(RangeError, match="bad line range"):
        parse_spec(spec)


def test_select_lines() -> None:
    text = "a\nb\nc\nd\n"
    assert select_lines(text, None, None) == text
    assert select_lines(text, 2, 3) == "b\nc\n"
    assert select_lines(text, 4, 4) == "d\n"
    assert select_lines(text, 3, 99) == "c\nd\n"
    with pytest.raises(RangeError, match="has 4 lines"):
        select_lines(text, 5, 5, "f.py")
