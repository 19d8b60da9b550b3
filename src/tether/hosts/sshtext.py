"""ssh_config as text: OpenSSH's line and argument rules, tether's stanza, Host/Match matching.

Pure functions (no files, no processes); tether.hosts.sshconfig does the reading and writing.
Lines are kept byte for byte; tether's stanza is `# added by tether`, `Host NAME`, indented
`Key value` lines and one blank line, and `remove_stanza` undoes `add_stanza` exactly.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tether import invocation
from tether.errors import HostError, UsageError

MARKER = "# added by tether"
INDENT = "    "

_BAD_NAME_CHARS = frozenset("*?!\"'#\\,=@")
_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")
_KEYWORD_RE = re.compile(r"[^\s=]+")

Options = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Line:
    """One parsed config line: the lowercased keyword ('' for blank or comment) and its args."""

    keyword: str
    args: tuple[str, ...]


# ---------------------------------------------------------------- pure text functions


def split_lines(text: str) -> list[str]:
    """Split text into lines that keep their '\\n' (only '\\n' ends a line, unlike splitlines)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def split_args(text: str) -> list[str]:
    """Split an option's arguments as OpenSSH's argv_split does (quotes, escapes, # comments)."""
    args: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n or text[i] == "#":
            return args
        buf: list[str] = []
        quote = ""
        while i < n:
            char = text[i]
            if not quote and char in " \t\r\n":
                break
            nxt = text[i + 1] if i + 1 < n else ""
            if char == "\\" and (nxt in ("'", '"', "\\") or (not quote and nxt == " ")) and nxt:
                buf.append(nxt)
                i += 2
                continue
            if not quote and char in "\"'":
                quote = char
            elif quote and char == quote:
                quote = ""
            else:
                buf.append(char)
            i += 1
        args.append("".join(buf))


def parse_line(raw: str) -> Line:
    """Parse one line into its keyword (lowercased; '' for blank or comment) and arguments."""
    body = raw.rstrip("\r\n").lstrip(" \t")
    if not body or body.startswith("#"):
        return Line("", ())
    match = _KEYWORD_RE.match(body)
    if match is None:
        return Line("", ())
    rest = body[match.end() :].lstrip(" \t")
    if rest.startswith("="):
        rest = rest[1:]
    return Line(match.group().lower(), tuple(split_args(rest)))


def quote_value(value: str) -> str:
    """Quote a value for ssh_config when it holds spaces, quotes, backslashes or '#'."""
    if value and not any(c.isspace() or c in "\"'\\#" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def validate_name(name: str) -> None:
    """Refuse an alias that is empty, has whitespace or wildcards, or starts with '-'."""
    bad = (
        not name
        or name.startswith("-")
        or any(c.isspace() or not c.isprintable() or c in _BAD_NAME_CHARS for c in name)
    )
    if bad:
        raise UsageError(
            f"bad host name {name!r}",
            "an alias may not be empty, start with '-', or contain whitespace, "
            "wildcards (* ? !), quotes, '#', ',', '=' or '@'",
            "pick a plain alias such as gpu1",
        )


def validate_options(options: Options) -> None:
    """Refuse option names that are not plain keywords and values that are empty or multi-line."""
    for key, value in options:
        if not _KEY_RE.match(key) or key.lower() in ("host", "match", "include"):
            raise UsageError(f"bad ssh option name {key!r}", "expected a keyword such as HostName")
        if not value or any(not c.isprintable() for c in value):
            raise UsageError(
                f"bad value {value!r} for {key}", "it must be one non-empty line of printable text"
            )


def format_stanza(name: str, options: Options, newline: str = "\n") -> str:
    """The marker, `Host name` and indented `Key value` lines (no blank line after them)."""
    body = "".join(f"{INDENT}{key} {quote_value(value)}{newline}" for key, value in options)
    return f"{MARKER}{newline}Host {name}{newline}{body}"


def add_stanza(
    text: str, name: str, options: Options, *, force: bool = False, source: str = "~/.ssh/config"
) -> str:
    """Return text with a tether stanza for name placed where OpenSSH lets its options win."""
    validate_name(name)
    validate_options(options)
    nl = _newline(text)
    lines = split_lines(text)
    parsed = [parse_line(line) for line in lines]
    stanza = format_stanza(name, options, nl)
    named = _named(parsed, name)
    if named:
        h = named[0]
        where = f"{source}:{h + 1} ({lines[h].strip()})"
        if not force:
            raise HostError(
                name,
                f"already in {where}",
                "pass --force to replace it, or run `tether host rm` first",
            )
        if len(parsed[h].args) != 1:
            raise HostError(name, f"{where} names other hosts too", "edit that line by hand")
        start, end = _span(lines, parsed, h)
        return "".join(lines[:start]) + stanza + "".join(lines[end:])
    point = _insert_point(lines, parsed, name, options)
    if point is not None:
        return "".join(lines[:point]) + stanza + nl + "".join(lines[point:])
    if not text:
        return stanza
    if text.endswith("\n") and _is_sep(lines[-1]):
        return text + stanza + nl
    return text + nl + stanza


def remove_stanza(text: str, name: str, *, source: str = "~/.ssh/config") -> str | None:
    """Return text without the stanza for name (exactly undoing add_stanza), None if absent."""
    lines = split_lines(text)
    parsed = [parse_line(line) for line in lines]
    named = _named(parsed, name)
    if not named:
        return None
    h = next((i for i in named if is_marker(lines, i - 1)), named[0])
    if len(parsed[h].args) != 1:
        raise HostError(
            name,
            f"{source}:{h + 1} ({lines[h].strip()}) names other hosts too",
            "edit that line by hand",
        )
    start, end = _span(lines, parsed, h)
    if start < h:  # written by tether: undo exactly what add_stanza inserted
        if end < len(lines) and _is_sep(lines[end]):
            return "".join(lines[:start] + lines[end + 1 :])
        if end == len(lines):
            if start == 0:
                return ""
            if _is_sep(lines[start - 1]):
                return "".join(lines[: start - 1])
            before = lines[start - 1]
            cut = 2 if before.endswith("\r\n") and _newline(text) == "\r\n" else 1
            return "".join(lines[: start - 1]) + before[:-cut]
        return "".join(lines[:start] + lines[end:])
    rest = lines[end:]
    if rest and not rest[0].strip() and (h == 0 or not lines[h - 1].strip()):
        rest = rest[1:]
    return "".join(lines[:h] + rest)


def parse_ssh_g(output: str) -> dict[str, list[str]]:
    """Map each keyword printed by `ssh -G` (lowercase) to the values printed for it."""
    resolved: dict[str, list[str]] = {}
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        if key:
            resolved.setdefault(key.lower(), []).append(value.strip())
    return resolved


# ---------------------------------------------------------------- matching and layout


def _newline(text: str) -> str:
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def _is_sep(line: str) -> bool:
    return line in ("\n", "\r\n")


def is_marker(lines: list[str], index: int) -> bool:
    return index >= 0 and lines[index].strip() == MARKER


def _is_comment(line: str) -> bool:
    return line.strip().startswith("#")


def _named(parsed: list[Line], name: str) -> list[int]:
    return [i for i, p in enumerate(parsed) if p.keyword == "host" and name in p.args]


def _span(lines: list[str], parsed: list[Line], h: int) -> tuple[int, int]:
    """The stanza at Host line h: from its marker (if any) to after its last option line."""
    start = h - 1 if is_marker(lines, h - 1) else h
    end = h + 1
    for j in range(h + 1, len(parsed)):
        if parsed[j].keyword in ("host", "match"):
            break
        if parsed[j].keyword:
            end = j + 1
    return start, end


def _insert_point(lines: list[str], parsed: list[Line], name: str, options: Options) -> int | None:
    """Line index before the first block that may match name (and its comments), else None."""
    for i, line in enumerate(parsed):
        if line.keyword in ("host", "match") and block_applies(line, name, options) is not False:
            while i > 0 and _is_comment(lines[i - 1]):
                i -= 1
            return i
    return None


def _pattern(text: str, pattern: str, fold: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = (re.IGNORECASE | re.DOTALL) if fold else re.DOTALL
    return re.fullmatch(regex, text, flags) is not None


def _host_applies(patterns: Sequence[str], name: str) -> bool:
    """Whether a `Host` line may match name (positives case-blind, negations exact: cautious)."""
    positive = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _pattern(name, pattern[1:], fold=False):
                return False
        elif _pattern(name, pattern, fold=True):
            positive = True
    return positive


def _pattern_list(spec: str, value: str) -> bool:
    return _host_applies(spec.split(","), value)


def _local_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return invocation.getenv("USER") or ""


def _match_applies(args: Sequence[str], name: str, options: Options) -> bool | None:
    """Evaluate a `Match` line for name: True, False, or None when it cannot be known here."""
    given = {key.lower(): value for key, value in options}
    results: list[bool | None] = []
    i = 0
    while i < len(args):
        criterion = args[i].lstrip("!").lower()
        negate = args[i].startswith("!")
        i += 1
        result: bool | None = None
        if criterion == "all":
            result = True
        elif criterion in ("canonical", "final"):
            result = None
        elif criterion in ("host", "originalhost", "user", "localuser", "exec", "localnetwork"):
            if i >= len(args):
                return None
            spec = args[i]
            i += 1
            if criterion == "host":
                found = {_pattern_list(spec, v) for v in (name, given.get("hostname", name))}
                result = found.pop() if len(found) == 1 else None
            elif criterion == "originalhost":
                result = _pattern_list(spec, name)
            elif criterion == "user" and "user" in given:
                result = _pattern_list(spec, given["user"])
            elif criterion == "localuser":
                result = _pattern_list(spec, _local_user())
        else:
            return False if False in results else None
        results.append(None if result is None else result != negate)
    if False in results:
        return False
    if not results or None in results:
        return None
    return True


def block_applies(line: Line, name: str, options: Options) -> bool | None:
    if line.keyword == "host":
        return _host_applies(line.args, name)
    return _match_applies(line.args, name, options)


def _norm(value: str) -> str:
    value = invocation.expanduser(value.strip()).lower()
    return {"yes": "true", "no": "false"}.get(value, value)


def same_value(value: str, got: list[str]) -> bool:
    seen = {_norm(g) for g in got} | {_norm(t) for g in got for t in g.split()}
    return _norm(value) in seen
