"""The sync daemon's kept local scans: a push after no change costs no local scan.

The daemon keeps, per project root it pushed (a few, least recently used dropped), the
last local manifest (scan_local + digests) and an inotify watcher on the tree
(agent/inotify.py feeding agent/watched.py). The kept manifest is answered only when the
watcher read its queue to the end with no event at all (and no overflow), and none of the
files that steer git's listing without living in the tree (the index, info/exclude, git
config and global excludes, .gitignore files above the root) changed; anything else is a
full scan, exactly as without the daemon. A command run in its own process never has
these (Runtime.scans is None).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from tether.agent.inotify import Unwatchable, Watcher
from tether.agent.watched import WatchedTree
from tether.core.manifest import Manifest
from tether.sync.local import ALWAYS_SKIP, Scope

KEEP = 4  # project roots (and mappings) kept at most
BOUND_S = 5.0  # a drain comes right before every answer
Key = tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]
StatKey = tuple[int, int, int, int] | None


class _Kept:
    def __init__(self, root: Path) -> None:
        self.watcher = Watcher(str(root), set(ALWAYS_SKIP))
        self.tree = WatchedTree(BOUND_S)
        self.manifest: Manifest | None = None
        self.outside: list[Path] = []  # files outside the tree that steer git's listing
        self.seen: list[StatKey] = []  # their stat at the last scan
        self.watching = False


class KeptScans:
    """Local manifests kept current by watchers, by root and [sync] rules."""

    def __init__(self) -> None:
        self.kept: OrderedDict[Key, _Kept] = OrderedDict()

    def manifest(self, root: Path, scope: Scope, scan: Callable[[], Manifest]) -> Manifest:
        """The local manifest of root under scope: kept, or scan() when anything changed."""
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
                self.kept.popitem(last=False)[1].watcher.close()
        self.kept.move_to_end(key)
        if kept.watching and kept.manifest is not None:
            kept.watcher.drain(kept.tree, time.monotonic())
            if (
                kept.tree.pending() == 0
                and kept.tree.refresh(time.monotonic(), _nothing) is not None
                and [_stat_key(path) for path in kept.outside] == kept.seen
            ):
                return dict(kept.manifest)
        if not kept.watching or kept.tree.why is not None:
            kept.watcher.close()
            try:
                kept.watcher.start()  # before the scan: what changes during it is seen
                kept.watching = True
            except (Unwatchable, OSError):
                kept.watching = False
        kept.manifest = None
        outside = _outside_files(root)
        seen = [_stat_key(path) for path in outside]
        manifest = scan()
        kept.tree.reset({}, time.monotonic())
        if kept.watching:
            kept.manifest, kept.outside, kept.seen = manifest, outside, seen
        return dict(manifest)

    def close(self) -> None:
        for kept in self.kept.values():
            kept.watcher.close()
        self.kept.clear()


def _nothing(path: str, deep: bool) -> dict[str, object]:
    raise AssertionError("nothing is re-stat'ed: any event means a full scan")


def _outside_files(root: Path) -> list[Path]:
    """The files outside the tree that steer git's listing of it."""
    paths = [Path("/etc/gitconfig"), Path.home() / ".gitconfig"]
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "git"
    paths += [config / "config", config / "ignore"]
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--absolute-git-dir", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        excludes = subprocess.run(
            ["git", "-C", str(root), "config", "--path", "--get", "core.excludesFile"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return paths
    lines = done.stdout.splitlines()
    if done.returncode == 0 and len(lines) == 2:
        git_dir, top = Path(lines[0]), Path(lines[1])
        paths += [git_dir / "index", git_dir / "config", git_dir / "info" / "exclude"]
        above = root
        while above != top and above != above.parent:
            above = above.parent
            paths.append(above / ".gitignore")
    if excludes.stdout.strip():
        paths.append(Path(excludes.stdout.strip()))
    return paths


def _stat_key(path: Path) -> StatKey:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
