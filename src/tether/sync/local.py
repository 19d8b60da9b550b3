"""Scan the local tree: which files sync owns (git's own ignore rules + [sync]) and their stat."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tether.agent.fsops import DigestCache
from tether.core.ignore import PatternSet
from tether.core.manifest import DIR, FILE, LINK, Entry, Manifest, parents
from tether.errors import TetherError, UsageError

ALWAYS_SKIP = (".git", ".tether")


@dataclass(frozen=True)
class Scope:
    """What a push of one local root may touch."""

    exclude: PatternSet
    include: PatternSet
    results: PatternSet

    @classmethod
    def of(cls, exclude: Iterable[str], include: Iterable[str], results: Iterable[str]) -> Scope:
        return cls(PatternSet(exclude), PatternSet(include), PatternSet(results))

    def excluded(self, path: str, is_dir: bool = False) -> bool:
        """True for results, [sync] exclude and tether's own paths."""
        if path.split("/", 1)[0] in ALWAYS_SKIP:
            return True
        if self.results.match(path, is_dir):
            return True
        return bool(self.exclude.match(path, is_dir)) and not self.include.match(path, is_dir)


def entry_for(full: str, st: os.stat_result) -> Entry:
    """A manifest Entry from lstat (no digest)."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return Entry(LINK, 0, st.st_mtime_ns, 0o777, None, os.readlink(full))
    if stat.S_ISDIR(mode):
        return Entry(DIR, 0, st.st_mtime_ns, stat.S_IMODE(mode))
    return Entry(FILE, st.st_size, st.st_mtime_ns, stat.S_IMODE(mode))


def git_root(root: Path) -> bool:
    """Whether root lies inside a git work tree."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == "true"


def _git_paths(root: Path, scope: Scope) -> list[str]:
    def listing(*flags: str) -> list[str]:
        done = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", *flags, "--exclude-standard"],
            capture_output=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise TetherError("git ls-files failed", done.stderr.decode(errors="replace").strip())
        return [os.fsdecode(raw) for raw in done.stdout.split(b"\0") if raw]

    paths = listing("-c", "-o")
    if scope.include:
        paths += [path for path in listing("-o", "-i") if scope.include.match(path)]
    return paths


def _walk_paths(root: Path) -> list[str]:
    """Every path under root honouring .gitignore files (root and nested), like git would."""
    found: list[str] = []
    rules: list[PatternSet] = []

    def ignored(rel: str, is_dir: bool) -> bool:
        verdict = None
        for patterns in rules:
            answer = patterns.match(rel, is_dir)
            if answer is not None:
                verdict = answer
        return bool(verdict)

    for directory, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        if ".gitignore" in filenames:
            try:
                lines = (Path(directory) / ".gitignore").read_text(errors="replace").splitlines()
                rules.append(PatternSet(lines, base=rel_dir))
            except OSError:
                pass
        keep = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name in ALWAYS_SKIP and not rel_dir:
                continue
            if os.path.islink(os.path.join(directory, name)):
                if not ignored(rel, False):
                    found.append(rel)
                continue
            if not ignored(rel, True):
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not ignored(rel, False):
                found.append(rel)
    return found


def scan_local(
    root: Path,
    scope: Scope,
    only: list[str] | None = None,
    on_vanished: Callable[[str], None] | None = None,
) -> Manifest:
    """The synced entries under root (stat only, digests from the cache where valid).

    With `only`, exactly those paths (files or whole directories) are taken, ignore rules
    aside (an explicit `tether push PATH` uploads what it names), results still excluded.
    """
    if only is not None:
        candidates: list[str] = []
        for rel in only:
            named = root / rel
            if named.is_dir() and not named.is_symlink():
                candidates += [f"{rel}/{path}" for path in _plain_walk(named)]
            candidates.append(rel)
    elif git_root(root):
        candidates = _git_paths(root, scope)
    else:
        candidates = _walk_paths(root)
    manifest: Manifest = {}
    for rel in candidates:
        if scope.excluded(rel):
            continue
        full = os.path.join(root, rel)
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            if on_vanished is not None:
                on_vanished(rel)
            continue
        _check_name(rel)
        entry = entry_for(full, st)
        if entry.kind == DIR and only is None:
            continue
        manifest[rel] = entry
        for parent in parents(rel):
            if parent not in manifest:
                try:
                    manifest[parent] = entry_for(
                        os.path.join(root, parent), os.lstat(os.path.join(root, parent))
                    )
                except FileNotFoundError:
                    continue
    return manifest


def _plain_walk(directory: Path) -> list[str]:
    found = []
    for current, dirnames, filenames in os.walk(directory):
        rel_dir = os.path.relpath(current, directory).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [name for name in dirnames if name not in ALWAYS_SKIP]
        found += [prefix + name for name in dirnames + filenames]
    return found


def _check_name(rel: str) -> None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(rel)
        raise TetherError(
            f"file name is not UTF-8: {shown!r}",
            "tether syncs only UTF-8 names",
            "rename it, or add it to [sync] exclude",
        ) from None


def fill_local_digests(root: Path, manifest: Manifest, cache: DigestCache) -> Manifest:
    """Return manifest with a digest on every file (cached by inode, size and mtime)."""
    filled: Manifest = {}
    for rel, entry in manifest.items():
        if entry.kind == FILE and entry.digest is None:
            full = os.path.join(root, rel)
            try:
                digest = cache.get(full, os.lstat(full), True)
            except FileNotFoundError:
                continue
            entry = entry.with_digest(digest)
        filled[rel] = entry
    cache.save()
    return filled


def check_inside(root: Path, paths: Iterable[str], cwd: Path | None = None) -> list[str]:
    """Turn user-given paths into root-relative POSIX paths; refuse any outside the tree."""
    result = []
    base = (cwd or Path.cwd()).resolve()
    for raw in paths:
        full = Path(os.path.normpath(base / raw))
        try:
            rel = full.relative_to(root)
        except ValueError:
            raise UsageError(
                f"{raw!r} is outside the project",
                f"the project root is {root}",
                "name paths inside it",
            ) from None
        text = rel.as_posix()
        if text in ("", "."):
            raise UsageError(f"{raw!r} is the project root", "", "run without PATH to push it all")
        result.append(text)
    return result
