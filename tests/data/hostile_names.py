"""The one place for hostile file names (DESIGN.md section 5, invariant 5).

Every item is plain data a test can lay out under any root with `lay_out(root)`; nothing
here runs a shell. Names that would do harm if a path ever went through a shell unquoted
leave a trace a test can look for: `$(touch /tmp/pwned)` (creates PWNED) and the
relative `$(touch pwned-dollar)` / backtick ones (create files in the shell's cwd, which on
the remote is the sandbox home).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Created by a shell that ran one of the names below unquoted.
PWNED = "/tmp/pwned"
# Relative traces (written into whatever directory such a shell ran in).
RELATIVE_TRACES = ("pwned-dollar", "pwned-backtick", "pwned-semicolon")

E_NFC = unicodedata.normalize("NFC", "é")  # one code point, U+00E9
E_NFD = unicodedata.normalize("NFD", "é")  # "e" + U+0301 COMBINING ACUTE ACCENT
assert E_NFC != E_NFD and len(E_NFC) == 1 and len(E_NFD) == 2

DEEP_DIR = "/".join(f"level{i:02d}" for i in range(30))


@dataclass(frozen=True)
class Item:
    """A file, an (empty) directory or a symlink at a root-relative POSIX path."""

    path: str
    kind: str = "file"  # "file" | "dir" | "link"
    content: bytes = b""
    mode: int = 0o644
    target: str | None = None  # symlinks only, written exactly as given
    why: str = ""


def _file(path: str, why: str, content: bytes | None = None, mode: int = 0o644) -> Item:
    body = content if content is not None else f"content of {path!r}\n".encode()
    return Item(path, "file", body, mode, None, why)


ITEMS: tuple[Item, ...] = (
    _file("with space.txt", "space"),
    _file("  leading and trailing spaces  ", "spaces at both ends"),
    _file("new\nline.txt", "newline inside the name"),
    _file("tab\there.txt", "tab inside the name"),
    _file("it's.txt", "single quote"),
    _file('say "hi".txt', "double quotes"),
    _file("mixed '\" quotes.txt", "both quotes together"),
    _file("back\\slash.txt", "backslash"),
    _file("trailing backslash\\", "backslash at the end"),
    # A path: directory "$(touch ", directory "tmp", file "pwned)".
    _file("$(touch /tmp/pwned)", "command substitution (absolute trace, nested path)"),
    _file("$(touch pwned-dollar)", "command substitution (relative trace)"),
    _file("`touch pwned-backtick`", "backticks"),
    _file("x; touch pwned-semicolon", "command separator"),
    _file("$HOME and ${PATH}.txt", "variables"),
    _file("glob*?[ab].txt", "glob characters"),
    _file("-rf", "leading dash"),
    _file("--help", "looks like an option"),
    _file("-", "a lone dash"),
    _file("sub dir/--version", "option-like name in a directory with a space"),
    _file("~tilde", "leading tilde"),
    _file("caf" + E_NFC + ".txt", "NFC é", b"NFC form\n"),
    _file("caf" + E_NFD + ".txt", "NFD é (a different file)", b"NFD form\n"),
    _file("🚀 launch 🧪.py", "emoji", "print('🚀')\n".encode()),
    _file("日本語/ファイル.txt", "CJK directory and file"),
    _file(DEEP_DIR + "/deep.txt", "30 directories deep"),
    _file("empty.txt", "an empty file", b""),
    _file("bin/run.sh", "an executable", b"#!/bin/sh\necho run\n", 0o755),
    _file("binary.bin", "every byte value", bytes(range(256)) * 4),
    Item("links/inside", "link", target="../with space.txt", why="relative symlink in the tree"),
    Item("links/dir-link", "link", target="../bin", why="relative symlink to a directory"),
    Item("links/outside", "link", target="../../etc", why="symlink pointing out of the tree"),
    Item("links/absolute", "link", target="/etc/passwd", why="absolute symlink target"),
    Item("links/dangling", "link", target="no such file", why="dangling symlink"),
)


def items() -> tuple[Item, ...]:
    """Every hostile item (files, links)."""
    return ITEMS


def paths() -> list[str]:
    """Every item's path."""
    return [item.path for item in ITEMS]


def parent_dirs() -> set[str]:
    """Every directory implied by the items' paths."""
    found: set[str] = set()
    for item in ITEMS:
        parts = item.path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            found.add("/".join(parts[:depth]))
    return found


def lay_out(root: Path) -> None:
    """Create every item under root (directories as needed); modes set exactly."""
    for item in ITEMS:
        full = root / item.path
        full.parent.mkdir(parents=True, exist_ok=True)
        if item.kind == "link":
            assert item.target is not None
            os.symlink(item.target, full)
        elif item.kind == "dir":
            full.mkdir(exist_ok=True)
            full.chmod(item.mode)
        else:
            full.write_bytes(item.content)
            full.chmod(item.mode)


def walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative POSIX path, lstat) for everything under root, never following symlinks."""
    for directory, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(directory, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            yield rel, os.lstat(full)
