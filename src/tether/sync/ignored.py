"""Which of a batch's paths git ignores, without a `git` process when none can be.

`git check-ignore` costs a process per batch (3 to 10 ms of a save's way to the remote
under `tether watch`, bench/profiles/watch.md). git ignores a path only when a pattern of
one of its sources matches it or one of its parent directories: the .gitignore files of
the path's directories (from the top of the work tree), `$GIT_COMMON_DIR/info/exclude`
and `core.excludesFile`. Those sources are read here on every call, and a path that no
pattern of any of them can reach (negations included) is not ignored, as git would say;
every other path is still asked of git, which alone knows what is tracked. A source
that cannot be read as git reads it (not UTF-8, a carriage return, a byte order mark,
unreadable, no plain file, a symlinked .gitignore, over 4 MB) makes every path it could
hold patterns for git's to judge; `core.ignoreCase`, or a failure to learn where the
sources are, sends every batch to git. Where the sources are is learnt from git once,
and again when one of git's usual config files changes (a file only reached through
`[include]`, or a worktree's own config, is not followed: restart the watch after
changing it).
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tether import invocation
from tether.core.ignore import PatternSet

# Characters str.splitlines splits on that git's line reader does not (or that it strips).
_ODD = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\ufeff")

GitAsk = Callable[[Path, list[str]], set[str]]
MAX_BYTES = 4 << 20  # a bigger ignore file is git's to read


@dataclass(frozen=True)
class _Sources:
    """Where git's ignore patterns for a work tree come from."""

    prefix: str  # the root's path inside the work tree, "" or ending in "/"
    top: Path  # the top of the work tree
    common: str  # git's common directory (info/exclude, config)
    excludes: str  # core.excludesFile (or git's default; it may be missing)
    config: tuple[tuple[int, int, int] | None, ...]  # the config files' stats when learnt


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=invocation.spawn_env(),
    )


def _xdg_config() -> str:
    return invocation.getenv("XDG_CONFIG_HOME") or os.path.join(invocation.home(), ".config")


def _config_stats(common: str) -> tuple[tuple[int, int, int] | None, ...]:
    """The stats of git's usual config files (system, XDG, global, the repository's)."""
    files = [
        "/etc/gitconfig",
        os.path.join(_xdg_config(), "git", "config"),
        invocation.getenv("GIT_CONFIG_GLOBAL") or os.path.join(invocation.home(), ".gitconfig"),
        os.path.join(common, "config"),
    ]
    stats: list[tuple[int, int, int] | None] = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            stats.append(None)
        else:
            stats.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stats)


def _learn(root: Path) -> _Sources | None:
    """The sources of root's work tree as git reports them; None: ask git every time."""
    done = _git(root, "rev-parse", "--show-toplevel", "--show-prefix", "--git-common-dir")
    lines = done.stdout.split("\n")
    if done.returncode != 0 or len(lines) != 4:  # a newline in a name: git decides
        return None
    top, prefix, common = lines[0], lines[1], os.path.join(root, lines[2])
    case = _git(root, "config", "--bool", "--get", "core.ignoreCase")
    if case.returncode != 1 and case.stdout.strip() != "false":  # set (and not false)
        return None
    config = _config_stats(common)
    excludes = _git(root, "config", "--path", "--get", "core.excludesFile")
    value = excludes.stdout[:-1] if excludes.stdout.endswith("\n") else excludes.stdout
    if excludes.returncode == 0 and os.path.isabs(value) and "\n" not in value:
        excludes_file = value
    elif excludes.returncode == 1:  # unset: git's default
        excludes_file = os.path.join(_xdg_config(), "git", "ignore")
    else:
        return None
    return _Sources(prefix, Path(top), common, excludes_file, config)


def _read(path: str, follow: bool) -> bytes | None:
    """A plain file's bytes (b"" if missing); None for anything else (a FIFO is never
    waited on; a symlink in the work tree is git's to judge: it does not follow them)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        return b""
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _patterns(path: str, base: str, follow: bool = True) -> PatternSet | None:
    """The patterns of one ignore file (none if it is missing); None: not read as git would."""
    data = _read(path, follow)
    if data is None or len(data) > MAX_BYTES:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _ODD.intersection(text):
        return None
    return PatternSet(text.split("\n"), base=base)


class _Reach:
    """One call's sources, each file read once: whether any pattern can reach a path."""

    def __init__(self, sources: _Sources) -> None:
        self.top = sources.top
        self.shared = [
            _patterns(os.path.join(sources.common, "info", "exclude"), ""),
            _patterns(sources.excludes, ""),
        ]
        self.dirs: dict[str, PatternSet | None] = {}

    def _dir(self, rel_dir: str) -> PatternSet | None:
        if rel_dir not in self.dirs:
            gitignore = str(self.top / rel_dir / ".gitignore")
            self.dirs[rel_dir] = _patterns(gitignore, rel_dir, follow=False)
        return self.dirs[rel_dir]

    def reaches(self, path: str, is_dir: bool) -> bool:
        """True when a pattern may apply to path (from the top) or a parent, or unsure."""
        parts = path.split("/")
        sets = [*self.shared, *(self._dir("/".join(parts[:depth])) for depth in range(len(parts)))]
        return any(found is None or found.match(path, is_dir) is not None for found in sets)


class GitIgnored:
    """git's ignore verdicts for paths under root (inside a git work tree)."""

    def __init__(self, root: Path, ask: GitAsk) -> None:
        self.root = root
        self.ask = ask  # git check-ignore of some paths (sync/events.git_ignored)
        self.sources: _Sources | None = None
        self.learnt = False

    def learn(self) -> None:
        """Learn where the sources are now (a watch's first save then runs no git)."""
        self._current()

    def _current(self) -> _Sources | None:
        if self.sources is not None and _config_stats(self.sources.common) != self.sources.config:
            self.learnt = False
        if not self.learnt:
            self.sources = _learn(self.root)
            self.learnt = True
        return self.sources

    def ignored(self, rels: list[str], is_dir: bool = False) -> set[str]:
        """Which of rels (relative to root) git ignores; git asked only where unsure."""
        sources = self._current()
        if sources is None:
            return self.ask(self.root, rels)
        reach = _Reach(sources)
        unsure = [rel for rel in rels if reach.reaches(sources.prefix + rel, is_dir)]
        return self.ask(self.root, unsure) if unsure else set()
