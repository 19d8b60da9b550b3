"""The agent's watched trees: a repeated full scan of a root answers from inotify's events
(agent/inotify.py, agent/watched.py) instead of a stat walk, with the same wire answer
(a delta against the previous one, agent/scan.ScanMemo).

A root is watched from its first full scan on when the channel is kept (the sync
daemon's, wire.Hello.watch), else from its second (an agent that scans once, for a
command run without the daemon, never pays for the watches: ~80 ms a first scan of
100,000 files in 6,700 directories), the watches added in the scan's own walk (each
directory's right before it is listed), a few roots at most (the least recently
scanned one is dropped). A root found missing (a first push) is watched from the first
write this agent makes under it (`wrote`: a walk of what is there then, while it is
nearly empty), and each later write reads the events, so directories the push makes
get their watches as they come; the next answer is then the difference from the last
one the client holds, as after a full scan. A full scan is due at least every TETHER_VERIFY_S
(agent/watched.py), with the watches kept. Anything the watcher cannot promise (not
Linux, NFS, overflow, the watch budget) makes that scan a full one, as without it.
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
from .packed import PackedRows, PackedTree
from .scan import ScanMemo, every_row, scan_rows, scan_tree, stale_tmp
from .wire import ErrorKind

KEEP = 4  # watched roots at most
BOUND_S = 5.0  # a drain comes right before every answer: an older heartbeat is a failure


class _Kept:
    def __init__(self, key: str, root: str, skip: List[str]) -> None:
        self.key = key
        self.watcher = Watcher(root, set(skip))
        self.tree = PackedTree(BOUND_S)
        # The root was missing at the last scan: (skip, cache, digests) of that scan, for
        # the walk that starts the watches at the first write under the root.
        self.missing: Optional[Tuple[List[str], DigestCache, bool]] = None
        self.fresh = False  # the tree was reset after the last answer: answer by difference


class Watching:
    """The watched trees of this agent, by scan key, and the full scans that feed them."""

    def __init__(self, memo: ScanMemo) -> None:
        self.memo = memo
        self.kept: OrderedDict[str, Optional[_Kept]] = OrderedDict()
        self.eager = False  # watch from the first scan (a kept channel: wire.Hello.watch)
        self.seen: Set[str] = set()  # keys scanned once (not eager: watched from the next)

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
        if kept is not None and kept.watcher.fd >= 0:
            answer = self._watched(kept, root, skip, cache, digests, since)
            if answer is not None:
                return answer, True
        watch = None
        if kept is not None:
            kept.missing, kept.fresh = None, False  # this scan's answer is the full one
        if kept is not None and kept.watcher.fd < 0:
            try:
                kept.watcher.begin()  # its watches come with the walk, each before a listing
                watch = kept.watcher.add_dir
            except Unwatchable:
                self.kept[key] = kept = None  # never here: full scans from now on
            except OSError:  # the root is missing: watched from the first write there
                kept.missing = (list(skip), cache, digests)
                kept = None
        try:
            rows, exists = scan_rows(root, skip, cache, digests, watch=watch)
        except BaseException:
            if kept is not None:
                kept.watcher.close()
            raise
        if kept is not None:
            if kept.watcher.broken:  # the watch budget, another file system mounted
                kept.watcher.close()
                self.kept[key] = None
            elif exists:
                kept.tree.reset(rows, time.monotonic())
        return self.memo.answer(key, since, rows), exists

    def wrote(self, root: str) -> None:
        """This agent just wrote under root: a kept tree of root found missing at its scan
        is watched from now on (a walk of what is there), and the watched trees of root read
        their events (a directory the write made gets its watch now, not at the next scan)."""
        for kept in self.kept.values():
            if kept is None or kept.watcher.root != root:
                continue
            if kept.missing is not None:
                self._begin(kept, *kept.missing)
            elif kept.watcher.fd >= 0 and kept.tree.why is None:
                kept.watcher.drain(kept.tree, time.monotonic())

    def _begin(self, kept: _Kept, skip: List[str], cache: DigestCache, digests: bool) -> None:
        """Start watching a root found missing at its last scan, if it is there now."""
        kept.missing = None
        root = kept.watcher.root
        try:
            kept.watcher.begin()
        except Unwatchable:
            self.kept[kept.key] = None
            return
        except OSError:
            kept.missing = (skip, cache, digests)  # still missing
            return
        try:
            rows, exists = scan_rows(root, skip, cache, digests, watch=kept.watcher.add_dir)
        except (OSError, OpError):
            rows, exists = PackedRows(), False
        if kept.watcher.broken:
            kept.watcher.close()
            self.kept[kept.key] = None
        elif not exists:
            kept.watcher.close()
            kept.missing = (skip, cache, digests)
        else:
            kept.tree.reset(rows, time.monotonic())
            kept.fresh = True

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
        if not self.eager and key not in self.seen:
            self.seen.add(key)
            return None
        kept: Optional[_Kept] = _Kept(key, root, skip)
        self.kept[key] = kept
        while len(self.kept) > KEEP:
            _, dropped = self.kept.popitem(last=False)
            if dropped is not None:
                dropped.watcher.close()
        return kept

    def _watched(
        self,
        kept: _Kept,
        root: str,
        skip: List[str],
        cache: DigestCache,
        digests: bool,
        since: Optional[str],
    ) -> Optional[Dict[str, Any]]:
        """The answer from the watched tree; None: scan in full (with the watcher closed
        when it cannot be trusted, so that the scan starts it again)."""
        tree, watcher = kept.tree, kept.watcher
        watcher.drain(tree, time.monotonic())
        skipped = set(skip)

        def restat(path: str, deep: bool) -> Dict[str, Any]:
            return _restat(root, skipped, cache, digests, path, deep)

        delta = tree.refresh(time.monotonic(), restat)
        if delta is None:
            if not tree.aged or watcher.broken:  # a verification scan keeps a sound watcher
                watcher.close()
            return None
        if kept.fresh:  # reset since the last answer (`wrote`): the difference from it
            kept.fresh = False
            return self.memo.answer(kept.key, since, tree.entries.copy())
        token, previous = self.memo.remember(kept.key, tree.entries)
        if since is None or previous is None or previous[0] != since:
            return {"token": token, "rows": every_row(tree.entries)}
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
