"""Patterns with .gitignore semantics, compiled to regular expressions (stdlib only)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


class PatternSet:
    """An ordered list of gitignore-style patterns; the last matching one wins."""

    def __init__(self, patterns: Iterable[str], base: str = "") -> None:
        self.base = base.strip("/")
        self.rules = [rule for rule in map(_compile, patterns) if rule is not None]
        # Parent directories repeat across a tree's paths: remember their verdicts.
        self._verdicts: dict[tuple[str, bool], bool | None] = {}
        self._prefix = self.base + "/" if self.base else ""
        # One regex per is_dir saying whether any rule matches the path or a parent of it:
        # most paths match none, and then one regex call decides (None) for all rules.
        self._quick = (_quick(self.rules, False), _quick(self.rules, True)) if self.rules else None

    def __bool__(self) -> bool:
        return bool(self.rules)

    def match(self, path: str, is_dir: bool = False) -> bool | None:
        """True if matched (ignored), False if re-included by '!', None if no rule applies.

        A path also matches when one of its parent directories does.
        """
        quick = self._quick
        if quick is None:
            return None
        if self._prefix:
            if not path.startswith(self._prefix):
                return None
            path = path[len(self._prefix) :]
        if quick[1 if is_dir else 0].fullmatch(path) is None:
            return None
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            verdict = self._match_one(prefix, is_dir or depth < len(parts))
            if verdict:
                return True
            if depth == len(parts):
                return verdict
        return None

    def sources(self, is_dir: bool) -> list[str]:
        """Regex sources (of full paths, base included), one per rule: the rule matches
        the path or one of its parent directories. A superset of what `match` decides."""
        head = re.escape(self._prefix)
        return [head + _reach(rule, is_dir) for rule in self.rules]

    def _match_one(self, path: str, is_dir: bool) -> bool | None:
        key = (path, is_dir)
        if key not in self._verdicts:
            self._verdicts[key] = self._evaluate(path, is_dir)
        return self._verdicts[key]

    def _evaluate(self, path: str, is_dir: bool) -> bool | None:
        verdict: bool | None = None
        for rule in self.rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.fullmatch(path):
                verdict = not rule.negate
        return verdict


def _reach(rule: _Rule, is_dir: bool) -> str:
    """Source of a regex matching a path when the rule matches it or one of its parents."""
    if rule.dir_only and not is_dir:
        return f"(?:{rule.regex.pattern})/.*"
    return f"(?:{rule.regex.pattern})(?:/.*)?"


def _quick(rules: list[_Rule], is_dir: bool) -> re.Pattern[str]:
    return re.compile("|".join(_reach(rule, is_dir) for rule in rules), re.DOTALL)


def _compile(pattern: str) -> _Rule | None:
    line = pattern.rstrip("\n")
    if not line.strip() or line.startswith("#"):
        return None
    if not line.endswith("\\ "):
        line = line.rstrip(" ")
    negate = line.startswith("!")
    if negate or line.startswith("\\!") or line.startswith("\\#"):
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/")
    anchored = "/" in line
    line = line.lstrip("/")
    body = _translate(line)
    regex = body if anchored else f"(?:.*/)?{body}"
    return _Rule(re.compile(regex, re.DOTALL), negate, dir_only)


def _translate(pattern: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
            continue
        if pattern.startswith("/**", index) and index + 3 == len(pattern):
            out.append("/.*")
            index += 3
            continue
        if pattern.startswith("**", index):
            at_start = index == 0 or pattern[index - 1] == "/"
            at_end = index + 2 == len(pattern) or pattern[index + 2] == "/"
            out.append(".*" if at_start and at_end else "[^/]*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = _class_end(pattern, index)
            if end == -1:
                return "(?!)"  # git's wildmatch never matches an unclosed '['
            body = pattern[index + 1 : end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            for name, chars in _POSIX_CLASSES.items():
                body = body.replace(f"[:{name}:]", chars)
            body = body.replace("[", "\\[").replace("]", "\\]")
            out.append(f"(?!/)[{'^/' if negate else ''}{body}]")
            index = end
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "lower": "a-z",
    "upper": "A-Z",
    "space": " \\t\\n\\r\\f\\v",
    "xdigit": "0-9a-fA-F",
}


def _class_end(pattern: str, start: int) -> int:
    """Index of the ']' closing the class opened at start, or -1."""
    index = start + 1
    if index < len(pattern) and pattern[index] in "!^":
        index += 1
    if index < len(pattern) and pattern[index] == "]":
        index += 1
    while index < len(pattern):
        if pattern.startswith("[:", index):
            close = pattern.find(":]", index + 2)
            if close != -1:
                index = close + 2
                continue
        if pattern[index] == "]":
            return index
        index += 1
    return -1
