"""PatternSet against git itself: every verdict is compared with `git check-ignore --no-index`.

Each case writes the patterns to a .gitignore in a fresh repository, creates the paths on
disk (a trailing '/' makes a directory) and asks git which pattern decides each path:
none (None), a negated one (False, re-included) or a plain one (True, ignored).
"""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tether.core.ignore import PatternSet

Verdict = bool | None


@dataclass(frozen=True)
class Case:
    """Patterns (one .gitignore, or one in `base`) and the paths to judge."""

    name: str
    patterns: tuple[str, ...]
    paths: tuple[str, ...]
    base: str = ""


CASES = [
    Case(
        "star-suffix",
        ("*.log",),
        ("a.log", "d/a.log", "d/e/b.log", "a.logx", "log", "x.log/", "x.log/in"),
    ),
    Case("star-middle", ("a*b",), ("ab", "axxb", "x/ab", "a/b", "ba")),
    Case("star-only", ("*",), ("a", "d/", "d/e")),
    Case("question-mark", ("a?c",), ("abc", "ac", "abbc", "x/abc")),
    Case("question-mark-never-a-slash", ("d/a?c",), ("d/abc", "d/a/c")),
    Case(
        "double-star-leading", ("**/foo",), ("foo", "a/foo", "a/b/foo", "c/foo/", "c/foo/x", "xfoo")
    ),
    Case(
        "double-star-leading-deeper",
        ("**/foo/bar",),
        ("foo/bar", "a/foo/bar", "a/foo/x/bar", "bar"),
    ),
    Case(
        "double-star-trailing",
        ("abc/**",),
        ("abc/", "abc/x", "abc/y/", "abc/y/z", "xabc/x", "y/abc/x"),
    ),
    Case("double-star-middle", ("a/**/b",), ("a/b", "a/x/b", "a/x/y/b", "x/a/b", "a/bb", "a/x/bb")),
    Case("double-star-alone", ("**",), ("a", "d/", "d/e")),
    Case("double-star-dirs-only", ("**/",), ("a", "d/", "d/e")),
    Case("double-star-not-at-a-slash", ("a**b",), ("ab", "axb", "ax/yb", "x/ab")),
    Case("double-star-after-a-name", ("a**/b",), ("ab", "a/b", "ax/b", "ax/y/b", "a/x/b")),
    Case("double-star-before-a-name", ("d/**b",), ("d/b", "d/xb", "d/x/yb")),
    Case("double-star-directories-only", ("d/**/",), ("d/", "d/x/", "d/x/f", "d/g")),
    Case("double-star-glued-to-a-name", ("**foo",), ("foo", "xfoo", "x/yfoo", "a/b/foo")),
    Case("anchored-by-leading-slash", ("/top",), ("top/", "top/in", "x/top")),
    Case("anchored-file", ("/f",), ("f", "x/f")),
    Case("anchored-by-middle-slash", ("doc/frotz",), ("doc/frotz", "a/doc/frotz", "doc/frotz2")),
    Case("anchored-directory", ("/build/",), ("build/", "build/o", "x/build/", "x/build/o")),
    Case(
        "directory-only",
        ("build/",),
        ("build/", "build/x", "sub/build", "sub2/build/", "sub2/build/y"),
    ),
    Case("directory-only-with-glob", ("*.d/",), ("x.d/", "x.d/f", "y.d", "z/w.d/", "z/w.d/f")),
    Case(
        "anchored-glob-one-level",
        ("foo/*",),
        ("foo/", "foo/bar", "foo/baz/", "foo/baz/q", "x/foo/bar"),
    ),
    Case("negation", ("*.log", "!keep.log"), ("a.log", "keep.log", "d/keep.log", "d/a.log")),
    Case("negation-order-matters", ("!keep.log", "*.log"), ("keep.log", "a.log")),
    Case(
        "negation-under-an-ignored-directory",
        ("build/", "!build/keep"),
        ("build/", "build/keep", "build/x"),
    ),
    Case(
        "negation-of-contents",
        ("logs/*", "!logs/keep"),
        ("logs/", "logs/keep", "logs/x", "logs/d/", "logs/d/y"),
    ),
    Case(
        "everything-but-python", ("*", "!*/", "!*.py"), ("a.py", "a.txt", "d/", "d/a.py", "d/b.txt")
    ),
    Case("only-top-level-src", ("/*", "!/src/"), ("src/", "src/a", "other", "lib/", "lib/a")),
    Case("negated-directory-only", ("d*", "!dx/"), ("dx/", "dx/f", "dy", "da/", "da/f")),
    Case("character-class", ("[abc].txt",), ("a.txt", "c.txt", "d.txt", "x/b.txt", "ab.txt")),
    Case("character-range", ("[a-c]*.o",), ("a.o", "bz.o", "d.o", "x/c1.o")),
    Case("negated-class-bang", ("[!a]x",), ("ax", "bx", "x/bx", "x/ax")),
    Case("negated-class-caret", ("[^a]x",), ("ax", "bx")),
    Case("negated-class-never-a-slash", ("x[!b]y",), ("xay", "xby", "x/y")),
    Case("anchored-negated-class-never-a-slash", ("d/x[!b]y",), ("d/xay", "d/x/y")),
    Case("class-with-bracket-first", ("[]]x",), ("]x", "ax")),
    Case("negated-class-with-bracket-first", ("[!]]x",), ("]x", "ax")),
    Case("posix-class", ("[[:digit:]]x",), ("1x", "ax", "[x", ":x")),
    Case("unclosed-bracket", ("a[b",), ("a[b", "ab")),
    Case("escaped-hash", ("\\#hash", "#comment"), ("#hash", "#comment", "comment", "hash")),
    Case("escaped-bang", ("\\!bang",), ("!bang", "bang")),
    Case("escaped-star", ("a\\*b",), ("a*b", "axb")),
    Case("escaped-question-mark", ("a\\?",), ("a?", "ab")),
    Case("trailing-spaces-ignored", ("spaces   ",), ("spaces", "spaces   ")),
    Case("escaped-trailing-space", ("trail\\ ",), ("trail ", "trail")),
    Case("blank-lines-and-comments", ("", "   ", "# *.c"), ("a.c", "# *.c")),
    Case("hostile-names", ("$(x)", "-n", "c d", "é*"), ("$(x)", "d/-n", "c d", "éa", "e")),
    Case(
        "nested-gitignore",
        ("*.tmp", "/rooted", "deep/x"),
        (
            "sub/a.tmp",
            "a.tmp",
            "sub/rooted",
            "sub/x/rooted",
            "rooted",
            "sub/deep/x",
            "sub/y/deep/x",
        ),
        base="sub",
    ),
    Case(
        "nested-gitignore-directory-only",
        ("out/",),
        ("sub/out/", "sub/out/f", "out/", "out/f"),
        base="sub",
    ),
]


def _git_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        LC_ALL="C.UTF-8",
    )
    return env


def _materialise(root: Path, paths: tuple[str, ...]) -> None:
    for raw in paths:
        full = root / raw.rstrip("/")
        if raw.endswith("/"):
            full.mkdir(parents=True, exist_ok=True)
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_bytes(b"")


def git_verdicts(root: Path, case: Case) -> dict[str, Verdict]:
    """What git says for each path of the case."""
    env = _git_env(root.parent)
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=env)
    _materialise(root, case.paths)
    gitignore = root / case.base / ".gitignore"
    gitignore.parent.mkdir(parents=True, exist_ok=True)
    gitignore.write_text("".join(pattern + "\n" for pattern in case.patterns), encoding="utf-8")
    names = [path.rstrip("/") for path in case.paths]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-v", "-n", "-z", "--stdin"],
        input=b"".join(name.encode() + b"\0" for name in names),
        cwd=root,
        env=env,
        capture_output=True,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr.decode()
    fields = done.stdout.decode().split("\0")
    verdicts: dict[str, Verdict] = {}
    for index in range(0, len(fields) - 1, 4):
        source, _line, pattern, path = fields[index : index + 4]
        verdicts[path] = None if not source else not pattern.startswith("!")
    assert sorted(verdicts) == sorted(names)
    return verdicts


def ours(case: Case) -> dict[str, Verdict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patterns = PatternSet(case.patterns, base=case.base)
    return {
        path.rstrip("/"): patterns.match(path.rstrip("/"), is_dir=path.endswith("/"))
        for path in case.paths
    }


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_pattern_set_agrees_with_git_check_ignore(case: Case, tmp_path: Path) -> None:
    expected = git_verdicts(tmp_path / "repo", case)
    got = ours(case)
    disagreements = {
        path: f"git {expected[path]}, PatternSet {got[path]}"
        for path in expected
        if expected[path] != got[path]
    }
    assert disagreements == {}, f"patterns {case.patterns!r}"


def test_pattern_set_without_rules_is_falsy_and_matches_nothing() -> None:
    empty = PatternSet(["", "# only a comment", "   "])
    assert not empty
    assert empty.match("anything") is None
    assert PatternSet(["x"])


def test_pattern_set_with_base_ignores_paths_outside_it() -> None:
    patterns = PatternSet(["*"], base="/sub/")
    assert patterns.match("sub/a") is True
    assert patterns.match("subway/a") is None
    assert patterns.match("a") is None


def test_a_parent_directory_match_decides_for_everything_inside() -> None:
    patterns = PatternSet(["cache/", "!cache/keep"])
    assert patterns.match("cache", is_dir=True) is True
    assert patterns.match("cache/keep") is True
    assert patterns.match("cache") is None
