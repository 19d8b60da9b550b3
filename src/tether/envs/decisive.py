"""What in a project's env spec decides where code comes from (for `tether trust`).

A requirements file from someone else's repository can point the installer anywhere: an
index (`--index-url`, `--extra-index-url`), a directory or page of files (`--find-links`),
a path or an editable checkout (`-e`, `./lib`, `pkg.whl`), a direct URL (`pkg @ https://`,
`git+https://`), another file (`-r`, `-c`, which may be a URL), or options handed to a
build backend. Those lines are decisive: they are shown to the user and trusted like the
config's own values. An ordinary requirement — a name, extras, version specifiers, a
marker, `--hash` — only picks a version from the index the user already trusts, so adding
or bumping one asks nothing. Anything the rules here do not recognise as ordinary is
decisive (an allowlist, never a denylist). For a uv.lock the decisive parts are the
sources of its packages (registries, git, urls, paths) and pyproject's `[tool.uv]`.
"""

from __future__ import annotations

import json
import re
import sys

from tether.envs.spec import DERIVED, EnvSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_COMMENT = re.compile(r"(^|\s)#.*$")
_HASH = re.compile(r"\s--hash(?:=|\s+)[A-Za-z0-9]+:[0-9A-Fa-f]+")
_ORDINARY = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"  # the name
    r"\s*(?:\[[A-Za-z0-9._,\s-]*\])?"  # extras
    r"\s*\(?(?:\s*(?:===|==|!=|~=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*,?)*\s*\)?"  # versions
    r"\s*(?:;[^@]*)?\Z"  # a marker
)
_ARCHIVE = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz")
PYPI = "https://pypi.org/simple"  # every lock names it; the remote's default index anyway
_OWN = (".", "")  # the project itself in a uv.lock (never installed: --no-emit-project)


def logical_lines(text: str) -> list[str]:
    """The file's lines as pip reads them: continuations joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        joined.append(pending + raw)
        pending = ""
    if pending:
        joined.append(pending)
    lines = []
    for line in joined:
        line = " ".join(_COMMENT.sub("", line).split())
        if line:
            lines.append(line)
    return lines


def ordinary(line: str) -> bool:
    """A requirement that only picks a version of a named package from the index."""
    bare = _HASH.sub("", " " + line).strip()
    if "$" in bare or "@" in bare or bare.lower().endswith(_ARCHIVE):
        return False
    return _ORDINARY.match(bare) is not None


def requirement_lines(text: str) -> list[str]:
    """The decisive lines of a requirements file (or of dependency strings, one a line)."""
    return [line for line in logical_lines(text) if not ordinary(line)]


def lock_lines(lock: str) -> list[str]:
    """Where a uv.lock's packages come from: each registry but PyPI once, every other
    source by package (git, url, path, directory, editable).

    Read line by line where the lock is laid out as uv writes it (every line that mentions
    `source` is a package's one-line `source = { ... }`, no escapes): trust checks run
    before every command and parsing a big lock as TOML costs ~80 ms; anything else is
    parsed as TOML."""
    found = _sources_as_written(lock)
    if found is None:
        try:
            data = tomllib.loads(lock)
        except tomllib.TOMLDecodeError:
            return ["uv.lock is not valid TOML"]
        found = []
        for package in data.get("package") or []:
            source = package.get("source") if isinstance(package, dict) else None
            if isinstance(source, dict):
                found += [(str(package.get("name")), str(k), str(v)) for k, v in source.items()]
    registries: set[str] = set()
    others: set[str] = set()
    for name, kind, where in found:
        if kind == "registry":
            if where.rstrip("/") != PYPI:
                registries.add(f"registry {where}")
        elif not (kind in ("editable", "virtual") and where in _OWN):
            others.add(f"{name} from {kind} {where}")
    return sorted(registries) + sorted(others)


_SOURCE = re.compile(r'source = \{ ([a-z]+) = "([^"\\]*)" \}\Z')
_NAME_LINE = re.compile(r'name = "([^"\\]*)"\Z')


def _sources_as_written(lock: str) -> list[tuple[str, str, str]] | None:
    """(package, kind, where) of a lock in uv's own layout; None if it is laid out otherwise."""
    if "\\" in lock:  # an escape could spell a key that no line shows
        return None
    found = []
    name = ""
    for line in lock.splitlines():
        named = _NAME_LINE.match(line)
        if named:
            name = named.group(1)
        elif "source" in line:
            source = _SOURCE.match(line)
            if source is None:
                return None
            found.append((name, source.group(1), source.group(2)))
    return found


def tool_uv(pyproject: str) -> list[str]:
    """pyproject's [tool.uv] (indexes, sources, find-links...), as one line, if any."""
    try:
        tool = tomllib.loads(pyproject).get("tool") or {}
    except tomllib.TOMLDecodeError:
        return []
    table = tool.get("uv") if isinstance(tool, dict) else None
    return ["[tool.uv] " + json.dumps(table, sort_keys=True)] if table else []


def decisive_files(spec: EnvSpec) -> dict[str, list[str]]:
    """File name -> its decisive lines, for the files of the spec that have any."""
    found: dict[str, list[str]] = {}
    if spec.kind == "uv.lock":
        found["uv.lock"] = lock_lines(spec.files.get("uv.lock", ""))
        found["pyproject.toml"] = tool_uv(spec.files.get("pyproject.toml", ""))
    else:
        for name, text in sorted(spec.files.items()):
            shown = "pyproject.toml" if name == DERIVED else name
            found[shown] = requirement_lines(text)
    return {name: lines for name, lines in found.items() if lines}
