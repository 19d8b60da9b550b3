"""The agent's scan: a tree's entries without following symlinks, and what changed since
the last scan of the same tree (ScanMemo). Removes stale temporary files of dead writers
on the way. Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple

from .dirfd import lstat_at, parent_of
from .fsops import (
    TMP_MARK,
    DigestCache,
    OpError,
    Row,
    check_rel,
    pid_alive,
    row_of,
    unlink_quietly,
)
from .modes import safe_mode
from .packed import PackedRows
from .wire import ErrorKind, scans_to_forget

Rows = Mapping[str, Row]  # an answer's rows by path: a dict, or PackedRows
Listing = Tuple[str, List[Row]]  # a directory's rows (or, at "", the rows of `only`)


def scan_tree(
    root: str,
    skip: List[str],
    cache: Optional[DigestCache],
    with_digests: bool,
    only: Optional[List[str]] = None,
    watch: Optional[Callable[[str, str, os.stat_result], None]] = None,
) -> Tuple[Dict[str, Row], bool]:
    """Walk root (or only the given subpaths) without following symlinks.

    Returns ({path: row}, root_exists) and removes stale temp files of dead writers. With
    `watch` (a whole-tree walk), watch(rel, full path, lstat) is called on each directory
    before it is listed (agent/inotify.Watcher.add_dir).
    """
    rows: Dict[str, Row] = {}
    listings = _walk(root, skip, cache, with_digests, only, watch)
    if listings is None:
        return rows, False
    for _, listed in listings:
        for row in listed:
            rows[row[0]] = row
    return rows, True


def scan_rows(
    root: str,
    skip: List[str],
    cache: Optional[DigestCache],
    with_digests: bool,
    watch: Optional[Callable[[str, str, os.stat_result], None]] = None,
) -> Tuple[PackedRows, bool]:
    """scan_tree of the whole tree, its rows packed a directory at a time (a full scan's
    answer, kept for the next scan: agent/packed.py)."""
    rows = PackedRows()
    listings = _walk(root, skip, cache, with_digests, None, watch)
    if listings is None:
        return rows, False
    for directory, listed in listings:
        if listed:
            rows.add(directory, listed)
    return rows, True


def _walk(
    root: str,
    skip: List[str],
    cache: Optional[DigestCache],
    with_digests: bool,
    only: Optional[List[str]],
    watch: Optional[Callable[[str, str, os.stat_result], None]],
) -> Optional[Iterator[Listing]]:
    """The listings of scan_tree's walk; None when root is missing."""
    try:
        top = os.lstat(root)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(top.st_mode):
        raise OpError(ErrorKind.NOTDIR, "%s is not a directory" % root)
    if watch is not None and only is None:
        watch("", root, top)
    else:
        watch = None
    return _listings(root, set(skip), cache, with_digests, only, watch)


def _listings(
    root: str,
    skipped: Set[str],
    cache: Optional[DigestCache],
    with_digests: bool,
    only: Optional[List[str]],
    watch: Optional[Callable[[str, str, os.stat_result], None]],
) -> Iterator[Listing]:
    stack = [""]
    if only is not None:
        stack = []
        found: List[Row] = []
        for rel in only:
            rel = check_rel(rel.strip("/"))
            full = os.path.join(root, rel)
            try:
                with parent_of(root, rel, create=False) as (parent, name):
                    st = lstat_at(parent, name)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if st is None:
                continue
            row = row_of(rel, st, full)
            found.append(row)
            if row[1] == "dir":
                stack.append(rel)
            elif row[1] == "file" and cache is not None:
                row[5] = cache.get(full, st, with_digests)
        yield "", found
    is_file = stat.S_ISREG
    is_dir = stat.S_ISDIR
    while stack:
        rel_dir = stack.pop()
        full_dir = os.path.join(root, rel_dir) if rel_dir else root
        head = rel_dir + "/" if rel_dir else ""
        try:
            with os.scandir(full_dir) as listing:
                items = list(listing)
        except FileNotFoundError:
            continue
        except PermissionError:
            raise OpError(
                ErrorKind.PERMISSION, "cannot read %s (permission denied)" % full_dir
            ) from None
        listed: List[Row] = []
        for item in items:
            name = item.name
            if TMP_MARK in name:
                if stale_tmp(name):
                    unlink_quietly(item.path)
                continue
            rel = head + name
            if rel in skipped:
                continue
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            mode = st.st_mode
            if is_file(mode):
                digest = None if cache is None else cache.get(item.path, st, with_digests)
                size, mtime = st.st_size, st.st_mtime_ns
                listed.append([rel, "file", size, mtime, safe_mode(mode), digest, None])
            elif is_dir(mode):
                listed.append([rel, "dir", 0, st.st_mtime_ns, safe_mode(mode), None, None])
                if watch is not None:
                    watch(rel, item.path, st)
                stack.append(rel)
            else:
                row = row_of(rel, st, item.path)
                if row[1] == "file" and cache is not None:
                    row[5] = cache.get(item.path, st, with_digests)
                listed.append(row)
        del items
        yield rel_dir, listed


class ScanMemo:
    """The last answer of each scan (per wire.scan_key) of this agent, so that a repeated
    scan answers only what changed since (a delta against a token). It forgets as the
    client does (wire.scans_to_forget)."""

    def __init__(self) -> None:
        self.scans: Dict[str, Tuple[str, Rows]] = {}

    def remember(self, key: str, rows: Rows) -> Tuple[str, Optional[Tuple[str, Rows]]]:
        """Keep rows as the answer to key under a new token: (token, the previous answer)."""
        token = os.urandom(12).hex()
        previous = self.scans.pop(key, None)
        self.scans[key] = (token, rows)
        for _ in range(scans_to_forget([len(held[1]) for held in self.scans.values()])):
            del self.scans[next(iter(self.scans))]
        return token, previous

    def answer(self, key: str, since: Optional[str], rows: Rows) -> Dict[str, Any]:
        """{token, rows} (everything), or {token, since, rows, gone} when the caller holds
        the answer `since`: the rows that differ from it and the paths gone since. Rows
        held packed are answered by an iterator (protocol.encode_parts takes one)."""
        token, previous = self.remember(key, rows)
        if since is None or previous is None or previous[0] != since:
            return {"token": token, "rows": every_row(rows)}
        old = previous[1]
        if isinstance(rows, PackedRows) and isinstance(old, PackedRows):
            changed: Iterable[Row] = rows.changed_rows(old)
            gone = rows.gone(old)
        else:
            get = old.get
            changed = [row for path, row in rows.items() if get(path) != row]
            gone = [path for path in old if path not in rows]
        return {"token": token, "since": since, "rows": changed, "gone": gone}


def every_row(rows: Rows) -> Iterable[Row]:
    """All of rows for an answer: an iterator of packed ones, else a list."""
    return rows.rows() if isinstance(rows, PackedRows) else list(rows.values())


def stale_tmp(name: str) -> bool:
    """A temp file of ours whose writer is gone."""
    try:
        pid = int(name.split(TMP_MARK, 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        return False
    return pid != os.getpid() and (not pid_alive(pid) or _orphaned(pid))


def _orphaned(pid: int) -> bool:
    """A writer whose sshd session is gone (re-parented to init): its client cannot finish."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return False
    return len(fields) > 1 and fields[1] == b"1"
