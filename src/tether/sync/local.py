"""Scan the local tree: which files sync owns (git's own ignore rules + [sync]) and their stat."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tether import invocation
from tether.agent.fsops import DigestCache
from tether.agent.modes import safe_mode
from tether.core.ignore import PatternSet
from tether.core.manifest import DIR, FILE, LINK, Entry, Manifest, parents
from tether.errors import TetherError, UsageError

ALWAYS_SKIP = (".git", ".tether")
# Editors' temporary and backup files, never pushed even outside .gitignore (a save dance
# must not land half-written siblings on the remote); `[sync] include` can still force one.
EDITOR_TEMP = (
    "*.swp", "*.swo", "*.swx", ".*.sw?", "*~", "4913",  # vim
    "\\#*#", ".#*",  # emacs (a leading # would be a comment)
    "*___jb_tmp___", "*___jb_old___", "*___jb_bak___",  # JetBrains safe write
    "*.tmp.*[0-9]", ".*.kate-swp",  # VS Code / others' atomic-save temps
)  # fmt: skip


@dataclass(frozen=True)
class Scope:
    """What a push of one local root may touch."""

    exclude: PatternSet
    include: PatternSet
    results: PatternSet
    # Whether tether's own paths, a results or an exclude rule can decide for a path (or a
    # parent): most paths of a tree are decided by this one regex call (not excluded).
    _quick: tuple[re.Pattern[str], re.Pattern[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        skip = "|".join(re.escape(name) for name in ALWAYS_SKIP)
        quick = tuple(
            re.compile(
                "|".join(
                    [
                        f"(?:{skip})(?:/.*)?",
                        *self.results.sources(is_dir),
                        *self.exclude.sources(is_dir),
                    ]
                ),
                re.DOTALL,
            )
            for is_dir in (False, True)
        )
        object.__setattr__(self, "_quick", quick)

    @classmethod
    def of(cls, exclude: Iterable[str], include: Iterable[str], results: Iterable[str]) -> Scope:
        """The scope of [sync]: editors' temporary files are excluded before its rules."""
        return cls(PatternSet([*EDITOR_TEMP, *exclude]), PatternSet(include), PatternSet(results))

    def excluded(self, path: str, is_dir: bool = False) -> bool:
        """True for results, [sync] exclude and tether's own paths."""
        if self._quick[1 if is_dir else 0].fullmatch(path) is None:
            return False
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
        return Entry(DIR, 0, st.st_mtime_ns, safe_mode(mode))
    return Entry(FILE, st.st_size, st.st_mtime_ns, safe_mode(mode))


def git_root(root: Path) -> bool:
    """Whether root lies inside a git work tree."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            text=True,
            timeout=30,
            env=invocation.spawn_env(),
        )
    except OSError:
        return False
    return done.returncode == 0 and done.stdout.strip() == "true"


def git_paths(root: Path, scope: Scope, under: list[str] | None = None) -> list[str] | None:
    """git's list of the files sync may own (at or under the paths `under` only, if given);
    None when root is not in a git work tree."""
    specs = [] if under is None else ["--", *(":(literal)" + path for path in under)]

    def listing(*flags: str) -> list[str] | None:
        argv = ["git", "-C", str(root), "ls-files", "-z", *flags, "--exclude-standard", *specs]
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=120, env=invocation.spawn_env()
            )
        except OSError:
            return None
        if done.returncode != 0:
            # Asked only now: in the common case ls-files alone answers (one process less).
            if not git_root(root):
                return None
            raise TetherError("git ls-files failed", done.stderr.decode(errors="replace").strip())
        # Interned: the same path's string is then one object in every manifest of it.
        return [sys.intern(path) for path in os.fsdecode(done.stdout).split("\0") if path]

    paths = listing("-c", "-o")
    if paths is not None and scope.include:
        paths += [path for path in listing("-o", "-i") or () if scope.include.match(path)]
    return paths


class GitignoreRules:
    """git's verdict for paths of a tree that is not a git repository (.gitignore files)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._sets: dict[str, PatternSet | None] = {}

    def _set(self, rel_dir: str) -> PatternSet | None:
        if rel_dir not in self._sets:
            file = self.root / rel_dir / ".gitignore"
            try:
                lines = file.read_text(errors="replace").splitlines()
                self._sets[rel_dir] = PatternSet(lines, base=rel_dir)
            except OSError:
                self._sets[rel_dir] = None
        return self._sets[rel_dir]

    def verdict(self, rel: str, is_dir: bool) -> bool:
        """Whether the .gitignore files of rel's directories ignore rel itself."""
        parts = rel.split("/")
        verdict: bool | None = None
        for depth in range(len(parts)):
            patterns = self._set("/".join(parts[:depth]))
            if patterns is None:
                continue
            answer = patterns.match(rel, is_dir)
            if answer is not None:
                verdict = answer
        return bool(verdict)

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """As the walker of scan_local decides: an ignored parent directory hides it all."""
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            if self.verdict("/".join(parts[:depth]), True):
                return True
        return self.verdict(rel, is_dir)


def _walk_paths(root: Path) -> list[str]:
    """Every path under root honouring .gitignore files (root and nested), like git would."""
    found: list[str] = []
    rules = GitignoreRules(root)
    for directory, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        keep = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name in ALWAYS_SKIP and not rel_dir:
                continue
            if os.path.islink(os.path.join(directory, name)):
                if not rules.verdict(rel, False):
                    found.append(rel)
                continue
            if not rules.verdict(rel, True):
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not rules.verdict(rel, False):
                found.append(rel)
    return found


class _Stat:
    """The part of a file's lstat fill_local_digests reads (an os.stat_result holds ~600
    bytes of objects: a full scan of 100,000 files held 60 MB of them until its digests
    were filled); size and mtime are the Entry's own objects."""

    __slots__ = ("st_ctime_ns", "st_ino", "st_mode", "st_mtime_ns", "st_size")

    def __init__(self, st: os.stat_result) -> None:
        self.st_ino = st.st_ino
        self.st_size = st.st_size
        self.st_mtime_ns = st.st_mtime_ns
        self.st_ctime_ns = st.st_ctime_ns
        self.st_mode = st.st_mode


class _Scanned(dict[str, Entry]):
    """A manifest that remembers the lstat of its files (fill_local_digests reuses them)."""

    stats: dict[str, _Stat]


StatKey = tuple[int, int, int, int, int]
# The files of each root whose digest this process found in the digest cache, with the
# lstat it was found for (inode, size, mtime, ctime, mode): a scan that sees the very same
# stat takes that Entry as is (the cache would give the same digest).
_DIGESTED: dict[str, dict[str, tuple[StatKey, Entry]]] = {}


def _stat_key(st: os.stat_result | _Stat) -> StatKey:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def scan_local(
    root: Path,
    scope: Scope,
    only: list[str] | None = None,
    on_vanished: Callable[[str], None] | None = None,
    listed: list[str] | None = None,
) -> Manifest:
    """The synced entries under root (stat only, digests from the cache where valid).

    With `only`, exactly those paths (files or whole directories) are taken, ignore rules
    aside (an explicit `tether push PATH` uploads what it names), results still excluded.
    With `listed`, git's listing is taken from there (git_paths of a part of the tree).
    """
    if only is not None:
        listed = []
        for rel in only:
            named = root / rel
            if named.is_dir() and not named.is_symlink():
                listed += [f"{rel}/{path}" for path in _plain_walk(named)]
            listed.append(rel)
    elif listed is None:
        listed = git_paths(root, scope)
    candidates = _walk_paths(root) if listed is None else listed
    manifest = _Scanned()
    stats: dict[str, _Stat] = {}
    manifest.stats = stats
    prefix = os.path.join(root, "")
    digested = _DIGESTED.get(prefix, {})
    excluded = scope.excluded
    lstat = os.lstat
    is_file = stat.S_ISREG
    for rel in candidates:
        if excluded(rel):
            continue
        full = prefix + rel
        try:
            st = lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            if on_vanished is not None:
                on_vanished(rel)
            continue
        if not rel.isascii():
            _check_name(rel)
        if is_file(st.st_mode):
            held = digested.get(rel)
            if held is not None and held[0] == _stat_key(st):
                manifest[rel] = held[1]
            else:
                manifest[rel] = Entry(FILE, st.st_size, st.st_mtime_ns, safe_mode(st.st_mode))
                stats[rel] = _Stat(st)
        else:
            entry = entry_for(full, st)
            if entry.kind == DIR and only is None:
                continue
            manifest[rel] = entry
        parent = rel.rpartition("/")[0]
        if parent and parent not in manifest:
            # Each entry's parents are added with it: a parent present has its own too.
            for parent in parents(rel):
                if parent not in manifest:
                    try:
                        manifest[parent] = entry_for(prefix + parent, lstat(prefix + parent))
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


def fill_local_digests(
    root: Path, manifest: Manifest, cache: DigestCache, whole: bool = True
) -> Manifest:
    """Fill in a digest on every file of manifest, in place, and return it (cached by
    inode, size, mtime and ctime); a file gone before it was hashed drops out.

    A manifest from scan_local brings its lstat results: the digest then describes exactly
    the stat the entry holds, and costs no second lstat; each is let go once used, as is
    the Entry without digest (a full scan holds one Entry per file, not two). `whole`:
    manifest is the whole tree (not a part re-scanned), so digests kept for files not in it
    may be forgotten.
    """
    stats: dict[str, _Stat] = getattr(manifest, "stats", {})
    pop_stat = stats.pop
    prefix = os.path.join(root, "")
    digested = _DIGESTED.setdefault(prefix, {})
    known = cache.known
    gone: list[str] = []
    for rel, entry in manifest.items():
        if entry.digest is None and entry.kind == FILE:
            st = pop_stat(rel, None)
            digest = None if st is None else known(st)
            if digest is not None and st is not None:
                entry = entry.with_digest(digest)
                digested[rel] = (_stat_key(st), entry)
            else:
                full = prefix + rel
                try:
                    digest = cache.get(full, st or os.lstat(full), True)
                except (FileNotFoundError, NotADirectoryError):
                    gone.append(rel)
                    continue
                entry = entry.with_digest(digest)
            manifest[rel] = entry  # (a value replaced: the iteration goes on)
    for rel in gone:
        del manifest[rel]
    stats.clear()
    if whole and len(digested) > 2 * len(manifest) + 1000:  # forget files long gone
        for rel in [rel for rel in digested if rel not in manifest]:
            del digested[rel]
    cache.save()
    return manifest


def check_inside(root: Path, paths: Iterable[str], cwd: Path | None = None) -> list[str]:
    """Turn user-given paths into root-relative POSIX paths; refuse any outside the tree."""
    result = []
    base = (cwd or Path(invocation.cwd())).resolve()
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
