"""What a burst of file events means for a push: routing, filtering by push's own rules.

Pure parts of `tether watch` (no channel, no UI): changed absolute paths are routed to the
pairs whose local root holds them, then narrowed to what a push would own (git's ignore
rules or the .gitignore files, `[sync] exclude/include`, results); new directories are
walked, vanished paths kept so the push can delete them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from tether import invocation
from tether.errors import TetherError
from tether.sync.ignored import GitIgnored
from tether.sync.local import ALWAYS_SKIP, GitignoreRules, Scope, git_root
from tether.sync.session import Pair


def relative(root: Path, path: str) -> str | None:
    """path (absolute) relative to root as a POSIX path; None if outside or the root itself."""
    base = str(root)
    if not path.startswith(base + os.sep):
        return None
    rel = path[len(base) + 1 :].replace(os.sep, "/")
    return rel or None


def route(paths: Iterable[str], pairs: list[Pair]) -> dict[int, set[str]]:
    """Changed absolute paths -> {pair index: relative paths}, push's exclusions dropped."""
    routed: dict[int, set[str]] = {}
    for path in paths:
        for index, pair in enumerate(pairs):
            rel = relative(pair.local_root, path)
            if rel is None or pair.scope.excluded(rel):
                continue
            routed.setdefault(index, set()).add(rel)
    return routed


def minimal(paths: Iterable[str]) -> list[str]:
    """Sorted paths with those beneath another one in the set dropped."""
    kept: list[str] = []
    for path in sorted(set(paths)):
        if kept and (path == kept[-1] or path.startswith(kept[-1] + "/")):
            continue
        kept.append(path)
    return kept


def split(root: Path, rels: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """(existing files and links, existing real directories, vanished paths)."""
    present: list[str] = []
    dirs: list[str] = []
    gone: list[str] = []
    for rel in sorted(set(rels)):
        full = os.path.join(root, rel)
        if os.path.isdir(full) and not os.path.islink(full):
            dirs.append(rel)
        elif os.path.lexists(full):
            present.append(rel)
        else:
            gone.append(rel)
    return present, dirs, gone


def walk(root: Path, rel_dir: str, scope: Scope) -> list[str]:
    """Files and links under root/rel_dir (no symlink followed), push's exclusions pruned."""
    found: list[str] = []
    for directory, dirnames, filenames in os.walk(os.path.join(root, rel_dir)):
        here = os.path.relpath(directory, root).replace(os.sep, "/")
        keep = []
        for name in dirnames:
            rel = f"{here}/{name}"
            if scope.excluded(rel, True) or name in ALWAYS_SKIP:
                continue
            if os.path.islink(os.path.join(directory, name)):
                found.append(rel)
            else:
                keep.append(name)
        dirnames[:] = keep
        found += [f"{here}/{name}" for name in filenames if not scope.excluded(f"{here}/{name}")]
    return found


def git_ignored(root: Path, rels: list[str]) -> set[str]:
    """Which of rels `git check-ignore` ignores (tracked files never are)."""
    if not rels:
        return set()
    done = subprocess.run(
        ["git", "-C", str(root), "check-ignore", "--stdin", "-z"],
        input=b"".join(os.fsencode(rel) + b"\0" for rel in rels),
        capture_output=True,
        timeout=60,
        check=False,
        env=invocation.spawn_env(),
    )
    if done.returncode not in (0, 1):
        raise TetherError("git check-ignore failed", done.stderr.decode(errors="replace").strip())
    return {os.fsdecode(raw) for raw in done.stdout.split(b"\0") if raw}


class EventFilter:
    """Turns the paths events named under one pair's root into push_pair's `only` list."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.git = git_root(pair.local_root)
        self.ignores = GitIgnored(pair.local_root, git_ignored)
        if self.git:
            self.ignores.learn()

    def _unignored(self, rels: list[str], dirs: bool = False) -> list[str]:
        scope = self.pair.scope
        if self.git:
            hidden = self.ignores.ignored(rels, dirs)
            return [
                r for r in rels if r not in hidden or (scope.include and scope.include.match(r))
            ]
        rules = GitignoreRules(self.pair.local_root)
        return [rel for rel in rels if not rules.ignored(rel, dirs)]

    def select(self, rels: Iterable[str]) -> list[str]:
        """Existing files not ignored (new directories walked) plus every vanished path."""
        root, scope = self.pair.local_root, self.pair.scope
        present, dirs, gone = split(root, (r for r in rels if not scope.excluded(r)))
        # With [sync] include, an ignored directory may still hold files to push.
        walked = (
            minimal(dirs) if self.git and scope.include else self._unignored(minimal(dirs), True)
        )
        for rel_dir in walked:
            present += walk(root, rel_dir, scope)
        return sorted(set(self._unignored(sorted(set(present)))) | set(gone))
