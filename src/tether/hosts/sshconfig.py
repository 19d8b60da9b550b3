"""Lossless editing of ~/.ssh/config: add, remove and list `Host` stanzas where OpenSSH obeys them.

Lines are kept byte for byte; tether's stanza is `# added by tether`, `Host NAME`, indented
`Key value` lines and one blank line, and `remove_stanza` undoes `add_stanza` exactly.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tether.errors import HostError, UsageError
from tether.paths import ssh_dir

MARKER = "# added by tether"
BACKUP_NAME = "config.tether.bak"
LOCK_NAME = "config.tether.lock"
INDENT = "    "

_BAD_NAME_CHARS = frozenset("*?!\"'#\\,=@")
_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")
_KEYWORD_RE = re.compile(r"[^\s=]+")
_LISTED = ("hostname", "user", "port", "identityfile")
_MAX_DEPTH = 16
_SSH_TIMEOUT_S = 20.0

Options = Sequence[tuple[str, str]]


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


@dataclass(frozen=True)
class _Line:
    """One parsed config line: the lowercased keyword ('' for blank or comment) and its args."""

    keyword: str
    args: tuple[str, ...]


@dataclass
class _Draft:
    alias: str
    file: str
    line: int
    managed: bool
    options: dict[str, str] = field(default_factory=dict)


class _CheckFailed(Exception):
    """`ssh -G` could not be run or failed; the message is a warning line."""


# ---------------------------------------------------------------- pure text functions


def split_lines(text: str) -> list[str]:
    """Split text into lines that keep their '\\n' (only '\\n' ends a line, unlike splitlines)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def split_args(text: str) -> list[str]:
    """Split an option's arguments as OpenSSH's argv_split does (quotes, escapes, # comments)."""
    args: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n or text[i] == "#":
            return args
        buf: list[str] = []
        quote = ""
        while i < n:
            char = text[i]
            if not quote and char in " \t\r\n":
                break
            nxt = text[i + 1] if i + 1 < n else ""
            if char == "\\" and (nxt in ("'", '"', "\\") or (not quote and nxt == " ")) and nxt:
                buf.append(nxt)
                i += 2
                continue
            if not quote and char in "\"'":
                quote = char
            elif quote and char == quote:
                quote = ""
            else:
                buf.append(char)
            i += 1
        args.append("".join(buf))


def parse_line(raw: str) -> _Line:
    """Parse one line into its keyword (lowercased; '' for blank or comment) and arguments."""
    body = raw.rstrip("\r\n").lstrip(" \t")
    if not body or body.startswith("#"):
        return _Line("", ())
    match = _KEYWORD_RE.match(body)
    if match is None:
        return _Line("", ())
    rest = body[match.end() :].lstrip(" \t")
    if rest.startswith("="):
        rest = rest[1:]
    return _Line(match.group().lower(), tuple(split_args(rest)))


def quote_value(value: str) -> str:
    """Quote a value for ssh_config when it holds spaces, quotes, backslashes or '#'."""
    if value and not any(c.isspace() or c in "\"'\\#" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def validate_name(name: str) -> None:
    """Refuse an alias that is empty, has whitespace or wildcards, or starts with '-'."""
    bad = (
        not name
        or name.startswith("-")
        or any(c.isspace() or not c.isprintable() or c in _BAD_NAME_CHARS for c in name)
    )
    if bad:
        raise UsageError(
            f"bad host name {name!r}",
            "an alias may not be empty, start with '-', or contain whitespace, "
            "wildcards (* ? !), quotes, '#', ',', '=' or '@'",
            "pick a plain alias such as gpu1",
        )


def validate_options(options: Options) -> None:
    """Refuse option names that are not plain keywords and values that are empty or multi-line."""
    for key, value in options:
        if not _KEY_RE.match(key) or key.lower() in ("host", "match", "include"):
            raise UsageError(f"bad ssh option name {key!r}", "expected a keyword such as HostName")
        if not value or any(not c.isprintable() for c in value):
            raise UsageError(
                f"bad value {value!r} for {key}", "it must be one non-empty line of printable text"
            )


def format_stanza(name: str, options: Options, newline: str = "\n") -> str:
    """The marker, `Host name` and indented `Key value` lines (no blank line after them)."""
    body = "".join(f"{INDENT}{key} {quote_value(value)}{newline}" for key, value in options)
    return f"{MARKER}{newline}Host {name}{newline}{body}"


def add_stanza(
    text: str, name: str, options: Options, *, force: bool = False, source: str = "~/.ssh/config"
) -> str:
    """Return text with a tether stanza for name placed where OpenSSH lets its options win."""
    validate_name(name)
    validate_options(options)
    nl = _newline(text)
    lines = split_lines(text)
    parsed = [parse_line(line) for line in lines]
    stanza = format_stanza(name, options, nl)
    named = _named(parsed, name)
    if named:
        h = named[0]
        where = f"{source}:{h + 1} ({lines[h].strip()})"
        if not force:
            raise HostError(
                name,
                f"already in {where}",
                "pass --force to replace it, or run `tether host rm` first",
            )
        if len(parsed[h].args) != 1:
            raise HostError(name, f"{where} names other hosts too", "edit that line by hand")
        start, end = _span(lines, parsed, h)
        return "".join(lines[:start]) + stanza + "".join(lines[end:])
    point = _insert_point(lines, parsed, name, options)
    if point is not None:
        return "".join(lines[:point]) + stanza + nl + "".join(lines[point:])
    if not text:
        return stanza
    if text.endswith("\n") and _is_sep(lines[-1]):
        return text + stanza + nl
    return text + nl + stanza


def remove_stanza(text: str, name: str, *, source: str = "~/.ssh/config") -> str | None:
    """Return text without the stanza for name (exactly undoing add_stanza), None if absent."""
    lines = split_lines(text)
    parsed = [parse_line(line) for line in lines]
    named = _named(parsed, name)
    if not named:
        return None
    h = next((i for i in named if _is_marker(lines, i - 1)), named[0])
    if len(parsed[h].args) != 1:
        raise HostError(
            name,
            f"{source}:{h + 1} ({lines[h].strip()}) names other hosts too",
            "edit that line by hand",
        )
    start, end = _span(lines, parsed, h)
    if start < h:  # written by tether: undo exactly what add_stanza inserted
        if end < len(lines) and _is_sep(lines[end]):
            return "".join(lines[:start] + lines[end + 1 :])
        if end == len(lines):
            if start == 0:
                return ""
            if _is_sep(lines[start - 1]):
                return "".join(lines[: start - 1])
            before = lines[start - 1]
            cut = 2 if before.endswith("\r\n") and _newline(text) == "\r\n" else 1
            return "".join(lines[: start - 1]) + before[:-cut]
        return "".join(lines[:start] + lines[end:])
    rest = lines[end:]
    if rest and not rest[0].strip() and (h == 0 or not lines[h - 1].strip()):
        rest = rest[1:]
    return "".join(lines[:h] + rest)


def parse_ssh_g(output: str) -> dict[str, list[str]]:
    """Map each keyword printed by `ssh -G` (lowercase) to the values printed for it."""
    resolved: dict[str, list[str]] = {}
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        if key:
            resolved.setdefault(key.lower(), []).append(value.strip())
    return resolved


def conflict_warnings(
    name: str, options: Options, resolved: dict[str, list[str]], config: Path
) -> list[str]:
    """Warning lines for options ssh resolves differently because an earlier line sets them."""
    warnings: list[str] = []
    for key, value in options:
        got = resolved.get(key.lower())
        if got is None or _same(value, got):
            continue
        setter = _first_setter(config, name, options, key.lower())
        if setter is not None:
            file, lineno, shown = setter
            warnings.append(f"{key} for {name} is set to {shown} by {file}:{lineno}")
    return warnings


# ---------------------------------------------------------------- matching and layout


def _newline(text: str) -> str:
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def _is_sep(line: str) -> bool:
    return line in ("\n", "\r\n")


def _is_marker(lines: list[str], index: int) -> bool:
    return index >= 0 and lines[index].strip() == MARKER


def _is_comment(line: str) -> bool:
    return line.strip().startswith("#")


def _named(parsed: list[_Line], name: str) -> list[int]:
    return [i for i, p in enumerate(parsed) if p.keyword == "host" and name in p.args]


def _span(lines: list[str], parsed: list[_Line], h: int) -> tuple[int, int]:
    """The stanza at Host line h: from its marker (if any) to after its last option line."""
    start = h - 1 if _is_marker(lines, h - 1) else h
    end = h + 1
    for j in range(h + 1, len(parsed)):
        if parsed[j].keyword in ("host", "match"):
            break
        if parsed[j].keyword:
            end = j + 1
    return start, end


def _insert_point(lines: list[str], parsed: list[_Line], name: str, options: Options) -> int | None:
    """Line index before the first block that may match name (and its comments), else None."""
    for i, line in enumerate(parsed):
        if line.keyword in ("host", "match") and _block_applies(line, name, options) is not False:
            while i > 0 and _is_comment(lines[i - 1]):
                i -= 1
            return i
    return None


def _pattern(text: str, pattern: str, fold: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = (re.IGNORECASE | re.DOTALL) if fold else re.DOTALL
    return re.fullmatch(regex, text, flags) is not None


def _host_applies(patterns: Sequence[str], name: str) -> bool:
    """Whether a `Host` line may match name (positives case-blind, negations exact: cautious)."""
    positive = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _pattern(name, pattern[1:], fold=False):
                return False
        elif _pattern(name, pattern, fold=True):
            positive = True
    return positive


def _pattern_list(spec: str, value: str) -> bool:
    return _host_applies(spec.split(","), value)


def _local_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER", "")


def _match_applies(args: Sequence[str], name: str, options: Options) -> bool | None:
    """Evaluate a `Match` line for name: True, False, or None when it cannot be known here."""
    given = {key.lower(): value for key, value in options}
    results: list[bool | None] = []
    i = 0
    while i < len(args):
        criterion = args[i].lstrip("!").lower()
        negate = args[i].startswith("!")
        i += 1
        result: bool | None = None
        if criterion == "all":
            result = True
        elif criterion in ("canonical", "final"):
            result = None
        elif criterion in ("host", "originalhost", "user", "localuser", "exec", "localnetwork"):
            if i >= len(args):
                return None
            spec = args[i]
            i += 1
            if criterion == "host":
                found = {_pattern_list(spec, v) for v in (name, given.get("hostname", name))}
                result = found.pop() if len(found) == 1 else None
            elif criterion == "originalhost":
                result = _pattern_list(spec, name)
            elif criterion == "user" and "user" in given:
                result = _pattern_list(spec, given["user"])
            elif criterion == "localuser":
                result = _pattern_list(spec, _local_user())
        else:
            return False if False in results else None
        results.append(None if result is None else result != negate)
    if False in results:
        return False
    if not results or None in results:
        return None
    return True


def _block_applies(line: _Line, name: str, options: Options) -> bool | None:
    if line.keyword == "host":
        return _host_applies(line.args, name)
    return _match_applies(line.args, name, options)


def _norm(value: str) -> str:
    value = os.path.expanduser(value.strip()).lower()
    return {"yes": "true", "no": "false"}.get(value, value)


def _same(value: str, got: list[str]) -> bool:
    seen = {_norm(g) for g in got} | {_norm(t) for g in got for t in g.split()}
    return _norm(value) in seen


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
        pattern = os.path.expanduser(arg)
        if not os.path.isabs(pattern):
            pattern = str(base / pattern)
        targets.extend(Path(p) for p in sorted(glob.glob(pattern)) if os.path.isfile(p))
    return targets


def _walk(
    path: Path, name: str, options: Options, own: bool, depth: int = 0
) -> Iterator[tuple[Path, int, _Line, bool]]:
    """Yield (file, line number, line, in own stanza) for every option line that applies to name."""
    text = _read_text(path) if depth <= _MAX_DEPTH else None
    if text is None:
        return
    applies: bool | None = True
    mine = False
    for number, raw in enumerate(split_lines(text), start=1):
        line = parse_line(raw)
        if line.keyword in ("host", "match"):
            applies = _block_applies(line, name, options)
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
            managed = _is_marker(lines, index - 1)
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
    return os.path.realpath(home) == os.path.realpath(Path.home())


def _run_ssh_g(name: str, config: Path) -> str | None:
    """`ssh -G name` output, None without ssh; reads config with -F only if ssh would not."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    argv = [ssh] if _home_is_passwd_home() else [ssh, "-F", str(config)]
    argv += ["-G", "--", name]
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_SSH_TIMEOUT_S,
            check=False,
        )
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
