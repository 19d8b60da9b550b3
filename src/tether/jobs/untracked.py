"""Untracked files a push sends, for a job's provenance: in the diff, or by their sha256.

Small ones go into the diff as `git diff` shows an intent-to-add file; the user's index is
never touched (the intent-to-add lives in a temporary copy of it, GIT_INDEX_FILE). Files
over PER_FILE, and those past TOTAL bytes in all, are recorded by size and sha256 only
(from the push's digest cache where it knows the file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tether import invocation
from tether.agent.fsops import DigestCache
from tether.config import SyncRules
from tether.sync.local import Scope

PER_FILE = 64 * 1024
TOTAL = 1 << 20
CHUNK = 200


def _git(root: Path, args: list[str], env: dict[str, str] | None = None) -> str | None:
    env = env if env is not None else invocation.spawn_env()
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, timeout=60, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return os.fsdecode(done.stdout) if done.returncode == 0 else None


def pushed_untracked(root: Path, rules: SyncRules) -> list[str]:
    """Untracked files under root that a push sends (git's ignores, then [sync]'s)."""
    scope = Scope.of(rules.exclude, rules.include, rules.results)
    listed = _git(root, ["ls-files", "-z", "-o", "--exclude-standard"])
    if listed is None:
        return []
    paths = [path for path in listed.split("\0") if path]
    if scope.include:
        ignored = _git(root, ["ls-files", "-z", "-o", "-i", "--exclude-standard"]) or ""
        paths += [p for p in ignored.split("\0") if p and scope.include.match(p)]
    return sorted({path for path in paths if not scope.excluded(path)})


def describe(root: Path, paths: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """(one entry per file: path, size, sha256, in_diff; the paths to show in the diff)."""
    cache = DigestCache(str(root / ".tether"), str(root))
    entries: list[dict[str, Any]] = []
    small: list[str] = []
    budget = TOTAL
    for rel in paths:
        full = root / rel
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            entries.append({"path": rel, "link": os.readlink(full), "in_diff": False})
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        try:
            digest = cache.get(str(full), st, True)
        except OSError:
            digest = None
        in_diff = st.st_size <= PER_FILE and st.st_size <= budget
        if in_diff:
            budget -= st.st_size
            small.append(rel)
        entries.append({"path": rel, "size": st.st_size, "sha256": digest, "in_diff": in_diff})
    with contextlib.suppress(OSError):
        cache.save()  # the next run (and push) find them there
    return entries, small


def diff_with(root: Path, small: list[str]) -> str | None:
    """`git diff HEAD` as if `small` were added with --intent-to-add (a temporary index)."""
    if not small:
        return _git(root, ["diff", "--no-ext-diff", "HEAD"])
    index = _git(root, ["rev-parse", "--git-path", "index"])
    if index is None:
        return None
    source = root / index.strip()
    with tempfile.TemporaryDirectory(prefix="tether-index-") as directory:
        temp = os.path.join(directory, "index")
        if source.is_file():
            shutil.copy2(source, temp)  # its mtime too: git's racy-clean check needs it
        env = dict(invocation.environ(), GIT_INDEX_FILE=temp, GIT_LITERAL_PATHSPECS="1")
        for start in range(0, len(small), CHUNK):
            added = _git(root, ["add", "-f", "-N", "--", *small[start : start + CHUNK]], env)
            if added is None:
                return _git(root, ["diff", "--no-ext-diff", "HEAD"])
        return _git(root, ["diff", "--no-ext-diff", "HEAD"], env)
