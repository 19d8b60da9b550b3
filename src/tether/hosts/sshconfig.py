"""Lossless editing of ~/.ssh/config: add, remove and list `Host` stanzas where OpenSSH obeys them.

The files side (Include walk, lock, atomic write with backup, `ssh -G` check); the text rules
live in tether.hosts.sshtext.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tether import invocation
from tether.errors import HostError
from tether.hosts.sshtext import (
    Line,
    Options,
    add_stanza,
    block_applies,
    is_marker,
    parse_line,
    parse_ssh_g,
    remove_stanza,
    same_value,
    split_lines,
    validate_name,
    validate_options,
)
from tether.paths import ssh_dir

BACKUP_NAME = "config.tether.bak"
LOCK_NAME = "config.tether.lock"

_LISTED = ("hostname", "user", "port", "identityfile")
_MAX_DEPTH = 16
_SSH_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class HostEntry:
    """One `Host` stanza with a single concrete alias, as read from the file."""

    alias: str
    hostname: str | None
    user: str | None
    port: str | None
    identity_file: str | None
    managed: bool  # written by tether
    file: str = ""  # the file holding the `Host` line
    line: int = 0  # its 1-based line number


@dataclass
class _Draft:
    alias: str
    file: str
    line: int
    managed: bool
    options: dict[str, str] = field(default_factory=dict)


class _CheckFailed(Exception):
    """`ssh -G` could not be run or failed; the message is a warning line."""


def conflict_warnings(
    name: str, options: Options, resolved: dict[str, list[str]], config: Path
) -> list[str]:
    """Warning lines for options ssh resolves differently because an earlier line sets them."""
    warnings: list[str] = []
    for key, value in options:
        got = resolved.get(key.lower())
        if got is None or same_value(value, got):
            continue
        setter = _first_setter(config, name, options, key.lower())
        if setter is not None:
            file, lineno, shown = setter
            warnings.append(f"{key} for {name} is set to {shown} by {file}:{lineno}")
    return warnings


# ---------------------------------------------------------------- files


def config_path() -> Path:
    """~/.ssh/config (following OpenSSH: the passwd home, which tests point at a temp dir)."""
    return ssh_dir() / "config"


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        return None


def _include_targets(args: Sequence[str], base: Path) -> list[Path]:
    """Files an `Include` names: ~ expanded, relative to ~/.ssh, globs sorted as OpenSSH does."""
    targets: list[Path] = []
    for arg in args:
        pattern = invocation.expanduser(arg)
        if not os.path.isabs(pattern):
            pattern = str(base / pattern)
        targets.extend(Path(p) for p in sorted(glob.glob(pattern)) if os.path.isfile(p))
    return targets


def _walk(
    path: Path, name: str, options: Options, own: bool, depth: int = 0
) -> Iterator[tuple[Path, int, Line, bool]]:
    """Yield (file, line number, line, in own stanza) for every option line that applies to name."""
    text = _read_text(path) if depth <= _MAX_DEPTH else None
    if text is None:
        return
    applies: bool | None = True
    mine = False
    for number, raw in enumerate(split_lines(text), start=1):
        line = parse_line(raw)
        if line.keyword in ("host", "match"):
            applies = block_applies(line, name, options)
            mine = own and line.keyword == "host" and name in line.args
        elif applies is not False and line.keyword == "include":
            for target in _include_targets(line.args, ssh_dir()):
                yield from _walk(target, name, options, False, depth + 1)
        elif applies is not False and line.keyword:
            yield path, number, line, mine


def _first_setter(
    config: Path, name: str, options: Options, key: str
) -> tuple[str, int, str] | None:
    """The first line that sets key for name, unless that is tether's own stanza."""
    for file, number, line, mine in _walk(config, name, options, own=True):
        if line.keyword == key:
            return None if mine else (str(file), number, " ".join(line.args))
    return None


def _collect(path: Path, out: list[_Draft], depth: int = 0) -> None:
    text = _read_text(path) if depth <= _MAX_DEPTH else None
    if text is None:
        return
    lines = split_lines(text)
    current: list[_Draft] = []
    for index, raw in enumerate(lines):
        line = parse_line(raw)
        if line.keyword == "host":
            managed = is_marker(lines, index - 1)
            current = [
                _Draft(alias, str(path), index + 1, managed)
                for alias in line.args
                if alias and not any(c in "*?!" for c in alias)
            ]
            out.extend(current)
        elif line.keyword == "match":
            current = []
        elif line.keyword == "include":
            for target in _include_targets(line.args, ssh_dir()):
                _collect(target, out, depth + 1)
        elif line.keyword in _LISTED and line.args:
            for draft in current:
                draft.options.setdefault(line.keyword, line.args[0])


def list_hosts() -> list[HostEntry]:
    """Every concrete alias in ~/.ssh/config (and files it Includes)."""
    drafts: list[_Draft] = []
    _collect(config_path(), drafts)
    entries: dict[str, HostEntry] = {}
    for d in drafts:
        entries.setdefault(
            d.alias,
            HostEntry(
                alias=d.alias,
                hostname=d.options.get("hostname"),
                user=d.options.get("user"),
                port=d.options.get("port"),
                identity_file=d.options.get("identityfile"),
                managed=d.managed,
                file=d.file,
                line=d.line,
            ),
        )
    return list(entries.values())


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Hold an exclusive flock on ~/.ssh/config.tether.lock (created 0700 ~/.ssh if needed)."""
    directory = config_path().parent
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        directory.chmod(0o700)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _target(path: Path) -> Path:
    """The file to write: the one a symlinked config points to, so the link is kept."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _atomic_write(dest: Path, data: bytes) -> None:
    """Write data to dest through a 0600 temp file in the same directory, fsync and rename."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tether-tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _save(path: Path, target: Path, new: str, old: str | None) -> None:
    if old is not None:
        _atomic_write(path.parent / BACKUP_NAME, old.encode("utf-8", "surrogateescape"))
    _atomic_write(target, new.encode("utf-8", "surrogateescape"))


def _home_is_passwd_home() -> bool:
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return False
    return os.path.realpath(home) == os.path.realpath(invocation.home())


def _run_ssh_g(name: str, config: Path) -> str | None:
    """`ssh -G name` output, None without ssh; reads config with -F only if ssh would not."""
    ssh = shutil.which("ssh", path=invocation.exec_path())
    if ssh is None:
        return None
    argv = [ssh] if _home_is_passwd_home() else [ssh, "-F", str(config)]
    argv += ["-G", "--", name]
    from tether.hosts.processes import run_text

    try:
        proc = run_text(argv, timeout=_SSH_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise _CheckFailed(f"could not check {name} with `ssh -G`: {error}") from error
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        raise _CheckFailed(f"`ssh -G {name}` failed: {lines[-1]}")
    return proc.stdout


def add_host(name: str, options: list[tuple[str, str]], *, force: bool = False) -> list[str]:
    """Add `Host name` with options where OpenSSH honours it; return warning lines."""
    validate_name(name)
    validate_options(options)
    path = config_path()
    with _locked():
        target = _target(path)
        old = _read_text(target)
        if not force:
            for draft in _included_drafts(path):
                if draft.alias == name:
                    raise HostError(
                        name,
                        f"already in {draft.file}:{draft.line}",
                        "pass --force to add it to ~/.ssh/config anyway",
                    )
        new = add_stanza(old or "", name, options, force=force, source=str(path))
        _save(path, target, new, old)
    try:
        output = _run_ssh_g(name, path)
    except _CheckFailed as error:
        return [str(error)]
    return [] if output is None else conflict_warnings(name, options, parse_ssh_g(output), path)


def _included_drafts(path: Path) -> list[_Draft]:
    drafts: list[_Draft] = []
    _collect(path, drafts)
    return [d for d in drafts if d.file != str(path)]


def remove_host(name: str) -> bool:
    """Remove the stanza for name, restoring the exact bytes from before add; False if absent."""
    validate_name(name)
    path = config_path()
    if not path.exists():
        return False
    with _locked():
        target = _target(path)
        old = _read_text(target)
        new = None if old is None else remove_stanza(old, name, source=str(path))
        if old is None or new is None:
            return False
        _save(path, target, new, old)
    return True
