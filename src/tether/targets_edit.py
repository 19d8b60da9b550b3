"""`tether target add | rm`: edit the project's config as text, keeping every other byte.

tether.toml (or pyproject.toml's [tool.tether]) is the user's file: comments, order and
formatting stay as they are. A new target is appended as its own tables; a removed one
loses exactly its tables (and the comment lines right above its first header). Every edit
is checked by parsing the result: the new document must equal the old one plus (or minus)
that target, or nothing is written and the user is told to edit by hand. The file is
replaced atomically, and what tether wrote is trusted only if the config was trusted
before (the edit itself goes through `tether.config.load`, which asks for trust).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from tether.config import Config, parse, parse_toml
from tether.errors import UsageError

_HEADER = re.compile(r"^\s*\[\[?(?P<key>[^\[\]]+?)\]\]?\s*(?:#.*)?$")
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def key_text(part: str) -> str:
    """One TOML key part: bare when it can be, else quoted."""
    return part if _BARE.fullmatch(part) else json.dumps(part, ensure_ascii=False)


def key_parts(text: str) -> list[str]:
    """A dotted TOML key split into its parts (quotes understood)."""
    parts: list[str] = []
    current = ""
    quote = ""
    index = 0
    while index < len(text):
        ch = text[index]
        if quote:
            if ch == "\\" and quote == '"' and index + 1 < len(text):
                current += text[index : index + 2]
                index += 2
                continue
            current += ch
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            current += ch
        elif ch == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += ch
        index += 1
    parts.append(current.strip())
    return [_unquote(part) for part in parts]


def _unquote(part: str) -> str:
    if len(part) >= 2 and part[0] == part[-1] == '"':
        decoded: str = json.loads(part)
        return decoded
    if len(part) >= 2 and part[0] == part[-1] == "'":
        return part[1:-1]
    return part


def _prefix(config: Config) -> list[str]:
    return ["tool", "tether"] if config.file.name == "pyproject.toml" else []


def _document(text: str, config: Config) -> dict[str, Any]:
    data = parse_toml(text)
    for part in _prefix(config):
        data = data.get(part, {})
    return data


def _owned_ranges(lines: list[str], base: list[str]) -> list[tuple[int, int]]:
    """[start, end) line ranges of the tables under base (their headers and bodies)."""
    headers = []
    for number, line in enumerate(lines):
        match = _HEADER.match(line)
        if match:
            headers.append((number, key_parts(match.group("key"))))
    ranges = []
    for position, (number, parts) in enumerate(headers):
        if parts[: len(base)] != base:
            continue
        end = headers[position + 1][0] if position + 1 < len(headers) else len(lines)
        start = number
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1  # the comment that introduces the table goes with it
        ranges.append((start, end))
    return ranges


def _write(file: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tether-tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if file.exists():
            os.chmod(tmp, file.stat().st_mode & 0o777)
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _checked(config: Config, old: str, new: str, expected: dict[str, Any]) -> Config:
    """The parsed new text, if it says exactly `expected`; UsageError otherwise."""
    try:
        got = _document(new, config)
    except ValueError:
        got = None
    if got != expected:
        raise UsageError(
            f"cannot edit {config.file.name} safely",
            "its targets are not written as [targets.NAME] tables",
            "edit it by hand",
        )
    return parse(got, config.file, ".".join(_prefix(config)) + "." if _prefix(config) else "")


def add(
    config: Config,
    name: str,
    values: dict[str, Any],
    mappings: list[tuple[str, str]],
    primary: bool,
) -> Config:
    """Append target `name` (host, path, python, default) with its mappings."""
    if name in config.targets:
        raise UsageError(f"target {name!r} exists", "", f"run `tether target rm {name}` first")
    old = config.file.read_text(encoding="utf-8")
    expected = copy.deepcopy(_document(old, config))
    lines = old.splitlines(keepends=True)
    if primary:  # one primary: the old one gives it up
        for other, target in config.targets.items():
            if target.primary:
                lines = _drop_key(lines, [*_prefix(config), "targets", other], "primary")
                expected["targets"][other].pop("primary", None)
    base = ".".join(key_text(part) for part in [*_prefix(config), "targets", name])
    block = [f"[{base}]\n"]
    entry: dict[str, Any] = {}
    for key, value in values.items():
        block.append(f"{key} = {json.dumps(value, ensure_ascii=False)}\n")
        entry[key] = value
    if primary:
        block.append("primary = true\n")
        entry["primary"] = True
    for local, remote in mappings:
        block += [f"\n[[{base}.mappings]]\n", f"local = {json.dumps(local)}\n"]
        block.append(f"remote = {json.dumps(remote)}\n")
    if mappings:
        entry["mappings"] = [{"local": local, "remote": remote} for local, remote in mappings]
    expected.setdefault("targets", {})[name] = entry
    text = "".join(lines)
    separator = (
        "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    )
    new = text + separator + "".join(block)
    checked = _checked(config, old, new, expected)
    _write(config.file, new)
    return checked


def _drop_key(lines: list[str], base: list[str], key: str) -> list[str]:
    """lines without `key = ...` in the table at base (only its own table)."""
    for start, end in _owned_ranges(lines, base):
        header = next(i for i in range(start, end) if _HEADER.match(lines[i]))
        match = _HEADER.match(lines[header])
        if match is None or key_parts(match.group("key")) != base:
            continue
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        return [
            line for i, line in enumerate(lines) if not (start <= i < end and pattern.match(line))
        ]
    return lines


def remove(config: Config, name: str) -> Config:
    """Remove target `name`'s tables (and the comment right above them)."""
    if name not in config.targets:
        known = ", ".join(sorted(config.targets))
        raise UsageError(f"unknown target {name!r}", f"{config.file.name} defines: {known}")
    if len(config.targets) == 1:
        raise UsageError(
            f"{name!r} is the only target", "a project needs one", "add another one first"
        )
    old = config.file.read_text(encoding="utf-8")
    expected = copy.deepcopy(_document(old, config))
    expected["targets"].pop(name)
    lines = old.splitlines(keepends=True)
    doomed: set[int] = set()
    for start, end in _owned_ranges(lines, [*_prefix(config), "targets", name]):
        doomed.update(range(start, end))
    new = "".join(line for i, line in enumerate(lines) if i not in doomed)
    while new.endswith("\n\n") and not old.endswith("\n\n"):
        new = new[:-1]  # the blank line `add` put before tables that were last
    checked = _checked(config, old, new, expected)
    _write(config.file, new)
    return checked
