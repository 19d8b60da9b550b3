"""The agent's watched trees: a repeated full scan of a root answers from inotify's events
(agent/inotify.py, agent/watched.py) instead of a stat walk, with the same wire answer
(a delta against the previous one, agent/scan.ScanMemo).

A root is watched from its second full scan on (an agent that scans once, for a command
run without the sync daemon, never pays for the watches), a few roots at most (the least
recently scanned one is dropped). Anything the watcher cannot promise (not Linux, NFS,
overflow, the watch budget) makes that scan a full one, as without it.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Set, Tuple

from .dirfd import lstat_at, parent_of
from .fsops import TMP_MARK, DigestCache, OpError, Row, check_rel, row_of, unlink_quietly
from .inotify import Unwatchable, Watcher
from .scan import ScanMemo, scan_tree, stale_tmp
from .watched import WatchedTree
from .wire import ErrorKind

KEEP = 4  # watched roots at most
BOUND_S = 5.0  # a drain comes right before every answer: an older heartbeat is a failure


class _Kept:
    def __init__(self, root: str, skip: List[str]) -> None:
        self.watcher = Watcher(root, set(skip))
        self.tree = WatchedTree(BOUND_S)


class Watching:
    """The watched trees of this agent, by scan key, and the full scans that feed them."""

    def __init__(self, memo: ScanMemo) -> None:
        self.memo = memo
        self.kept: OrderedDict[str, Optional[_Kept]] = OrderedDict()
        self.seen: Set[str] = set()  # keys scanned once (watched from the next scan)

    def scan(
        self,
        key: str,
        root: str,
        skip: List[str],
        cache: DigestCache,
        digests: bool,
        since: Optional[str],
    ) -> Tuple[Dict[str, Any], bool]:
        """The answer to a full scan of root ({token, rows} or a delta), and whether root
        exists."""
        kept = self._kept(key, root, skip)
        if kept is not None:
            answer = self._watched(key, kept, root, skip, cache, digests, since)
            if answer is not None:
                return answer, True
        rows, exists = scan_tree(root, skip, cache, digests)
        if kept is not None and exists:
            kept.tree.reset(rows, time.monotonic())
        return self.memo.answer(key, since, rows), exists

    def touched(self, root: str, paths: List[str]) -> None:
        """Paths whose digest the agent just computed: the next answer re-reads them (a full
        scan would now show the cached digest)."""
        for kept in self.kept.values():
            if kept is not None and kept.watcher.root == root:
                for path in paths:
                    kept.tree.touched(path)

    def _kept(self, key: str, root: str, skip: List[str]) -> Optional[_Kept]:
        if key in self.kept:
            self.kept.move_to_end(key)
            return self.kept[key]
        if key not in self.seen:
            self.seen.add(key)
            return None
        kept: Optional[_Kept] = _Kept(root, skip)
        self.kept[key] = kept
        while len(self.kept) > KEEP:
            _, dropped = self.kept.popitem(last=False)
            if dropped is not None:
                dropped.watcher.close()
        return kept

    def _watched(
        self,
        key: str,
        kept: _Kept,
        root: str,
        skip: List[str],
        cache: DigestCache,
        digests: bool,
        since: Optional[str],
    ) -> Optional[Dict[str, Any]]:
        """The answer from the watched tree; None: scan in full (the watcher restarted)."""
        tree, watcher = kept.tree, kept.watcher
        watcher.drain(tree, time.monotonic())
        skipped = set(skip)

        def restat(path: str, deep: bool) -> Dict[str, Any]:
            return _restat(root, skipped, cache, digests, path, deep)

        delta = tree.refresh(time.monotonic(), restat) if watcher.fd >= 0 else None
        if delta is None:
            watcher.close()
            try:
                watcher.start()  # before the full scan: what changes during it is seen
            except Unwatchable:
                self.kept[key] = None  # never here: full scans from now on
            except OSError:
                del self.kept[key]  # the root is missing: try again next time
            return None
        token, previous = self.memo.remember(key, tree.entries)
        if since is None or previous is None or previous[0] != since:
            return {"token": token, "rows": list(tree.entries.values())}
        changed, gone = delta
        return {"token": token, "since": since, "rows": list(changed.values()), "gone": gone}


def _restat(
    root: str, skipped: Set[str], cache: DigestCache, digests: bool, path: str, deep: bool
) -> Dict[str, Row]:
    """What scan_tree(root, skip) would give at path (and, with deep, under it)."""
    if not path:
        return scan_tree(root, list(skipped), cache, digests)[0] if deep else {}
    parts = path.split("/")
    if any("/".join(parts[: i + 1]) in skipped for i in range(len(parts))):
        return {}
    if TMP_MARK in parts[-1]:
        if stale_tmp(parts[-1]):
            unlink_quietly(os.path.join(root, path))
        return {}
    if any(TMP_MARK in part for part in parts[:-1]):
        return {}
    try:
        if deep:
            return scan_tree(root, list(skipped), cache, digests, [check_rel(path)])[0]
        with parent_of(root, check_rel(path), create=False) as (parent, name):
            st = lstat_at(parent, name)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OpError as error:
        if error.kind is ErrorKind.UNSAFE:  # a directory on the way became a symlink
            return {}
        raise
    if st is None:
        return {}
    row = row_of(path, st, os.path.join(root, path))
    if row[1] == "file":
        row[5] = cache.get(os.path.join(root, path), st, digests)
    return {path: row}
