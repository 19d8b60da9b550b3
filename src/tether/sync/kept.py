"""The sync daemon's kept local scans: a push after no change costs no local scan.

The daemon keeps, per project root it pushed (a few, least recently used dropped), the
last local manifest (scan_local + digests) and an inotify watcher on the tree
(agent/inotify.py feeding agent/watched.py). What the watcher's events name is re-scanned
(git's listing limited to those paths, then scan_local's own rules on them; a changed
.gitignore re-scans its whole directory); a full scan, exactly as without the daemon,
whenever the watcher is unsure (overflow, restart, watch budget) or a file that steers
git's listing without living in the tree changed (the index, info/exclude, git config
and global excludes, .gitignore files above the root), and at least every TETHER_VERIFY_S
(agent/watched.py: for what inotify cannot see), with a sound watcher kept. The daemon's
loop drains the watchers while it is idle (drain(), on each watcher's fd), so a burst of
events between pushes (a `git checkout`) leaves the next push a re-stat of what changed,
not an overflowed queue. A command run in its own process never has these (Runtime.scans
is None).
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tether import invocation
from tether.agent.fsops import DigestCache
from tether.agent.inotify import Unwatchable, Watcher
from tether.agent.watched import WatchedTree, ancestors, outermost, under
from tether.core.manifest import DIR, Entry, Manifest
from tether.sync.incremental import Mark
from tether.sync.local import (
    ALWAYS_SKIP,
    Scope,
    entry_for,
    fill_local_digests,
    git_paths,
    scan_local,
)

KEEP = 4  # project roots (and mappings) kept at most
BOUND_S = 5.0  # a drain comes right before every answer
MAX_SPECS = 256  # more changed paths than this: a full scan
Key = tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]
StatKey = tuple[int, int, int, int] | None


class _Kept:
    def __init__(self, root: Path) -> None:
        self.watcher = Watcher(str(root), set(ALWAYS_SKIP))
        self.tree = WatchedTree(BOUND_S)  # its entries: the kept manifest
        self.outside: list[Path] = []  # files outside the tree that steer git's listing
        self.seen: list[StatKey] = []  # their stat at the last full scan
        self.git = False  # the tree is in a git work tree (its listing comes from git)
        self.handed: Manifest | None = None  # the manifest handed out last (see _hand)
        self.watching = False
        self.valid = False
        self.serial = 0  # manifests handed out


class KeptScans:
    """Local manifests kept current by watchers, by root and [sync] rules."""

    def __init__(self) -> None:
        self.kept: OrderedDict[Key, _Kept] = OrderedDict()
        # The last manifest's tree, its serial there, and the paths changed since the
        # serial before (None after a full scan): sync/incremental.py's local changes.
        self.last: tuple[object, int, set[str] | None] | None = None
        # A manifest was handed out since release(): the command under way may hold it.
        self.lent = False
        self.marks: dict[str, Mark] = {}  # by base file: what the last push left in sync

    def manifest(
        self,
        root: Path,
        scope: Scope,
        scan: Callable[[], Manifest],
        cache: Callable[[], DigestCache],
    ) -> Manifest:
        """The local manifest of root under scope (scan(): a full one, digests filled):
        kept, with what changed since re-scanned, or scan() when unsure."""
        key = (
            str(root),
            tuple(scope.exclude.sources(False)),
            tuple(scope.include.sources(False)),
            tuple(scope.results.sources(False)),
        )
        kept = self.kept.get(key)
        if kept is None:
            kept = self.kept[key] = _Kept(root)
            while len(self.kept) > KEEP:
                gone = self.kept.popitem(last=False)[1]
                gone.watcher.close()
                self.marks = {f: m for f, m in self.marks.items() if m.local is not gone}
        self.kept.move_to_end(key)
        kept.serial += 1
        self.last = None
        tree = kept.tree
        if kept.watching and kept.valid:
            kept.watcher.drain(tree, time.monotonic())
            if [_stat_key(path) for path in kept.outside] != kept.seen:
                tree.unsure("git's ignore rules or index changed")
            kept.valid = False  # until the refresh is through
            changed = _refresh(tree, root, scope, cache, kept.git)
            if changed is not None:
                kept.valid = True
                self.last = (kept, kept.serial, changed)
                return self._hand(kept, changed)
        if not kept.watching or (tree.why is not None and not tree.aged):
            kept.watcher.close()
            try:
                kept.watcher.start()  # before the scan: what changes during it is seen
                kept.watching = True
            except (Unwatchable, OSError):
                kept.watching = False
        outside, git = _outside_files(root)
        seen = [_stat_key(path) for path in outside]
        manifest = scan()
        tree.reset(manifest if kept.watching else {}, time.monotonic())
        kept.outside, kept.seen, kept.valid, kept.git = outside, seen, kept.watching, git
        self.last = (kept, kept.serial, None)
        kept.handed = None
        return self._hand(kept, None)

    def _hand(self, kept: _Kept, changed: set[str] | None) -> Manifest:
        """The kept entries for a caller, as a dictionary of its own: the one handed out
        last patched where it changed (a push after one edit copies no 100,000 entries),
        unless a caller may still hold that one (lent) or what changed is not listed."""
        entries = kept.tree.entries
        handed = kept.handed
        if handed is None or changed is None or self.lent:
            handed = dict(entries)
        else:
            for path in changed:
                entry = entries.get(path)
                if entry is None:
                    handed.pop(path, None)
                else:
                    handed[path] = entry
        kept.handed = handed
        self.lent = True
        return handed

    def release(self) -> None:
        """The command that took manifests is over: none is held any more (the daemon's
        call after each push or pull; callers never change a manifest handed out)."""
        self.lent = False

    def fds(self) -> list[int]:
        """The watchers' event fds worth draining (each readable when events wait)."""
        return [
            k.watcher.fd
            for k in self.kept.values()
            if k.valid and k.watcher.fd >= 0 and k.tree.why is None
        ]

    def drain(self) -> None:
        """Read the events queued for every kept tree (between commands only): each tree's
        dirty paths grow (bounded: past watched.MAX_DIRTY it is unsure), the kernel's queue
        empties, and new directories get their watches."""
        now = time.monotonic()
        for kept in self.kept.values():
            if kept.valid and kept.watcher.fd >= 0:
                kept.watcher.drain(kept.tree, now)

    def close(self) -> None:
        for kept in self.kept.values():
            kept.watcher.close()
        self.kept.clear()
        self.marks.clear()


def _refresh(
    tree: WatchedTree, root: Path, scope: Scope, cache: Callable[[], DigestCache], git: bool
) -> set[str] | None:
    """Re-scan what the events name (git's listing limited to those paths): the paths
    whose entries may have changed; None: unsure.

    A file the kept manifest holds is taken as listed without asking git (`git`: the tree
    is a git work tree): git listed it under the same index and excludes (any change to
    those: a full scan, checked before) and the same .gitignore files above it (a changed
    one makes its directory re-listed whole, covering the file); the rest is git's to say.
    """
    for path in list(tree.deep):
        parent, _, name = path.rpartition("/")
        if name == ".gitignore":  # git's verdict changes beside and under it
            tree.changed(parent)
    if tree.why is not None:
        return None
    deep = outermost(tree.deep)
    if "" in deep or len(deep) > MAX_SPECS:
        return None
    affected: set[str] = set()  # each changed path's parent is among the shallow ones
    for path in tree.shallow:
        affected |= ancestors(path)
    part: Manifest = {}
    prefix = os.path.join(root, "")
    if deep:
        known = [p for p in deep if git and _still_listed(tree.entries.get(p), prefix + p)]
        unasked = set(known)
        asked = [path for path in deep if path not in unasked]
        listed: list[str] | None = known
        if asked:
            listed = git_paths(root, scope, asked)
            if listed is None:
                return None  # not a git work tree: full scans
            listed += known
        found = scan_local(root, scope, listed=listed)
        part = fill_local_digests(root, found, cache(), whole=False)

    def restat(path: str, deep: bool) -> dict[str, Any]:
        if not deep:
            return {}  # a directory's own entry: set below, with its presence
        return {p: entry for p, entry in part.items() if under(p, path)}

    delta = tree.refresh(time.monotonic(), restat)
    if delta is None:
        return None
    changed = set(delta[0]) | set(delta[1]) | (affected - {""})
    for path in sorted(affected - {""}, key=lambda p: -p.count("/")):
        # A directory is in a manifest as the parent of what it holds, with its own stat.
        if tree.has_under(path):
            try:
                tree.put(path, entry_for(prefix + path, os.lstat(prefix + path)))
                continue
            except OSError:
                pass
        tree.drop(path)
    return changed


def _still_listed(entry: Entry | None, full: str) -> bool:
    """Whether a path git listed (its entry in the kept manifest: a file or link) is
    listed still, ignore rules unchanged: unless it is a directory now (or an error)."""
    if entry is None or entry.kind == DIR:
        return False
    try:
        return not stat.S_ISDIR(os.lstat(full).st_mode)
    except FileNotFoundError:
        return True  # gone: the re-scan drops it, as after git's listing
    except OSError:
        return False


def _outside_files(root: Path) -> tuple[list[Path], bool]:
    """The files outside the tree that steer git's listing of it, and whether root is in
    a git work tree."""
    home = Path(invocation.home())
    paths = [Path("/etc/gitconfig"), home / ".gitconfig"]
    config = Path(invocation.getenv("XDG_CONFIG_HOME") or home / ".config") / "git"
    paths += [config / "config", config / "ignore"]
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--absolute-git-dir", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=30,
            env=invocation.spawn_env(),
        )
        excludes = subprocess.run(
            ["git", "-C", str(root), "config", "--path", "--get", "core.excludesFile"],
            capture_output=True,
            text=True,
            timeout=30,
            env=invocation.spawn_env(),
        )
    except (OSError, subprocess.SubprocessError):
        return paths, False
    lines = done.stdout.splitlines()
    git = done.returncode == 0 and len(lines) == 2
    if git:
        git_dir, top = Path(lines[0]), Path(lines[1])
        paths += [git_dir / "index", git_dir / "config", git_dir / "info" / "exclude"]
        above = root
        while above != top and above != above.parent:
            above = above.parent
            paths.append(above / ".gitignore")
    if excludes.stdout.strip():
        paths.append(Path(excludes.stdout.strip()))
    return paths, git


def _stat_key(path: Path) -> StatKey:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
