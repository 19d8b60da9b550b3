"""The env spec: what the project already has that says which packages it needs.

Found in this order: the files `[env] requirements` names; `uv.lock` with its
pyproject.toml; pyproject.toml's `[project] dependencies` (and `[env] extras` from its
optional-dependencies); a plain `requirements.txt`. None of them and no `[env]` table: no
spec, and the target's python is used as before. The spec's digest covers the files' bytes
and the options; the agent adds the python and the platform to make the env's digest.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple

from tether.errors import ConfigError

if TYPE_CHECKING:
    from tether.config import Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMAT = 1
DERIVED = "pyproject-dependencies.txt"
_INCLUDE = re.compile(r"^\s*(?:-r|--requirement|-c|--constraint)(?:\s+|=)(\S+)")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:$|[\[<>=!~;@ ])")
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;#,]+)")


class Options(NamedTuple):
    """[env] python and index_url ('' when not set)."""

    python: str
    index_url: str


@dataclass(frozen=True)
class EnvSpec:
    """What an env is built from: files (name -> text), which of them to install, options."""

    kind: str  # "requirements" | "pyproject" | "uv.lock" | "none"
    source: str  # how the user names it: "requirements.txt", "uv.lock", ...
    files: dict[str, str] = field(default_factory=dict)
    main: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    python: str = ""
    index_url: str = ""

    @cached_property
    def pins(self) -> dict[str, str]:
        """name -> version of every pinned package (a uv.lock's, parsed only when asked)."""
        if self.kind == "uv.lock":
            return _lock_pins(self.files.get("uv.lock", ""))
        return pins_of(self._lines())

    @cached_property
    def named(self) -> frozenset[str]:
        """The distributions the spec asks for by name."""
        if self.kind == "uv.lock":
            return frozenset(self.pins)
        return names_of(self._lines())

    def _lines(self) -> list[str]:
        return [line for text in self.files.values() for line in text.splitlines()]

    @property
    def digest(self) -> str:
        """sha256 over the files' bytes and every option that changes what gets built."""
        text = json.dumps(
            {
                "format": FORMAT,
                "kind": self.kind,
                "files": {name: _sha(text) for name, text in sorted(self.files.items())},
                "main": list(self.main),
                "extras": list(self.extras),
                "python": self.python,
                "index_url": self.index_url,
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def wire(self, with_files: bool) -> dict[str, Any]:
        """The spec as the agent takes it (files only when a build may follow)."""
        data: dict[str, Any] = {
            "digest": self.digest,
            "kind": self.kind,
            "source": self.source,
            "main": list(self.main),
            "extras": list(self.extras),
            "python": self.python,
            "index_url": self.index_url,
        }
        if with_files:
            data["files"] = dict(self.files)
        return data


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def names_of(lines: list[str]) -> frozenset[str]:
    """The distribution names requirement lines ask for (options and paths left out)."""
    found = set()
    for line in lines:
        match = _NAME.match(line.split("#", 1)[0])
        if match:
            found.add(normalize(match.group(1)))
    return frozenset(found)


def pins_of(lines: list[str]) -> dict[str, str]:
    """name -> version of every `name==version` requirement line."""
    pins: dict[str, str] = {}
    for line in lines:
        match = _PIN.match(line.split("#", 1)[0])
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def find(config: Config) -> EnvSpec | None:
    """The project's env spec, or None (then jobs use the target's python as before)."""
    root = config.root
    env = config.env
    extras = env.extras if env else ()
    options = Options(env.python if env else "", env.index_url if env else "")
    if env is not None and env.requirements is not None:
        return _requirements(config, list(env.requirements), options)
    pyproject = root / "pyproject.toml"
    if (root / "uv.lock").is_file() and pyproject.is_file():
        lock = (root / "uv.lock").read_text(encoding="utf-8")
        files = {"pyproject.toml": pyproject.read_text(encoding="utf-8"), "uv.lock": lock}
        return EnvSpec("uv.lock", "uv.lock", files, (), extras, **options._asdict())
    if pyproject.is_file():
        lines = _project_dependencies(config, pyproject, extras)
        if lines:
            text = "".join(line + "\n" for line in lines)
            files = {DERIVED: text}
            return EnvSpec(
                "pyproject", "pyproject.toml", files, (DERIVED,), extras, **options._asdict()
            )
    if (root / "requirements.txt").is_file():
        return _requirements(config, ["requirements.txt"], options)
    if env is not None:
        return EnvSpec(
            "none", "[env] (ipykernel only)", python=options.python, index_url=options.index_url
        )
    return None


def _requirements(config: Config, names: list[str], options: Options) -> EnvSpec:
    """The named requirement files and every file they include (-r, -c), read as text."""
    files: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop(0)
        if name in files:
            continue
        path = config.root / name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            why = (
                "is missing"
                if isinstance(error, FileNotFoundError)
                else f"cannot be read ({error})"
            )
            raise ConfigError(
                str(config.file),
                "env.requirements",
                f"{name} {why}",
                "name requirement files that exist in the project",
            ) from None
        files[name] = text
        for line in text.splitlines():
            match = _INCLUDE.match(line)
            if match:
                included = PurePosixPath(name).parent / match.group(1)
                if included.is_absolute() or ".." in included.parts:
                    continue  # outside the project: the installer reports it
                todo.append(included.as_posix())
    return EnvSpec("requirements", ", ".join(names), files, tuple(names), **options._asdict())


def _project_dependencies(config: Config, pyproject: Path, extras: tuple[str, ...]) -> list[str]:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(str(pyproject), "", f"not valid TOML ({error})") from None
    project = data.get("project")
    if not isinstance(project, dict):
        return []
    lines = [str(item) for item in project.get("dependencies") or []]
    optional = project.get("optional-dependencies") or {}
    for extra in extras:
        if extra not in optional:
            raise ConfigError(
                str(config.file),
                "env.extras",
                f"pyproject.toml has no optional-dependencies {extra!r}",
                "name an extra from [project.optional-dependencies]",
            )
        lines += [str(item) for item in optional[extra]]
    return lines


def _lock_pins(text: str) -> dict[str, str]:
    """name -> version of every package in a uv.lock (the project itself left out)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}
    pins: dict[str, str] = {}
    for package in data.get("package") or []:
        source = package.get("source") or {}
        if "editable" in source or "virtual" in source:
            continue
        if isinstance(package.get("name"), str) and isinstance(package.get("version"), str):
            pins[normalize(package["name"])] = package["version"]
    return pins


def differences(pins: dict[str, str], packages: list[str] | None) -> list[str]:
    """'name: have -> wanted' for every pinned package the env holds at another version
    (or lacks): what a build of the spec would change."""
    have: dict[str, str] = {}
    for entry in packages or []:
        name, _, version = entry.partition("==")
        have[normalize(name)] = version
    found = []
    for name, wanted in sorted(pins.items()):
        if have.get(name) != wanted:
            found.append(f"{name}: {have.get(name) or 'missing'} -> {wanted}")
    return found
