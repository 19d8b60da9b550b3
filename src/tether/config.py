"""tether.toml (or [tool.tether] in pyproject.toml) -> a typed, strictly checked Config."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from tether import invocation
from tether.configfile import CONFIG_NAME, find_config_file
from tether.errors import ConfigError, UsageError
from tether.safety import host_problem, python_argv, remote_dir_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_VERSION = re.compile(r"3(\.\d{1,2}){0,2}")
TARGET_KEYS = {
    "host", "path", "python", "default", "primary", "autoreload", "mappings", "scheduler", "slurm"
}  # fmt: skip
MAPPING_KEYS = {"local", "remote"}
SYNC_KEYS = {"exclude", "include", "results"}
JOBS_KEYS = {"notify"}
SLURM_KEYS = {"partition", "gres", "time", "cpus", "mem", "account", "qos", "extra"}
# The job backends a target may name (each is a class in tether.jobs.backend.BACKENDS).
SCHEDULERS = ("tmux", "slurm")
DEFAULT_SCHEDULER = SCHEDULERS[0]
ENV_KEYS = {"python", "requirements", "extras", "index_url"}
TOP_KEYS = {"targets", "sync", "jobs", "env"}


@dataclass(frozen=True)
class Mapping:
    """An extra local directory mirrored to a remote directory."""

    local: Path
    remote: str


@dataclass(frozen=True)
class Target:
    """A host plus a remote project directory."""

    name: str
    host: str
    path: str
    python: str = "python3"
    default: bool = False
    primary: bool = False
    autoreload: bool = True  # %autoreload 2 in the console's kernel (~3 ms per execute)
    scheduler: str = DEFAULT_SCHEDULER
    slurm: dict[str, Any] = field(default_factory=dict)
    mappings: tuple[Mapping, ...] = ()

    @property
    def custom_scheduler(self) -> str | None:
        """The scheduler where it is not the default (tmux): worth a word in a summary."""
        return None if self.scheduler == DEFAULT_SCHEDULER else self.scheduler

    @property
    def python_argv(self) -> list[str]:
        """`python` as argv: one executable and plain arguments (checked when parsed)."""
        return python_argv(self.python)


@dataclass(frozen=True)
class SyncRules:
    """The [sync] table: patterns with .gitignore semantics."""

    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    results: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnvConfig:
    """The [env] table: what the remote Python environment is built from (section 13).

    Empty strings and None mean "not set": the spec is then found in the project."""

    python: str = ""
    requirements: tuple[str, ...] | None = None
    extras: tuple[str, ...] = ()
    index_url: str = ""


@dataclass(frozen=True)
class Config:
    """A whole project configuration."""

    root: Path
    file: Path
    targets: dict[str, Target]
    sync: SyncRules = SyncRules()
    notify: str | None = None
    env: EnvConfig | None = None

    def pick(self, names: Sequence[str] = ()) -> list[Target]:
        """The targets named (in order), or every default target when none is named."""
        if names:
            unknown = [name for name in names if name not in self.targets]
            if unknown:
                known = ", ".join(sorted(self.targets))
                raise UsageError(
                    f"unknown target {unknown[0]!r}",
                    f"{self.file.name} defines: {known}",
                    f"add [targets.{unknown[0]}] or pick one of those",
                )
            return [self.targets[name] for name in dict.fromkeys(names)]
        defaults = [target for target in self.targets.values() if target.default]
        if defaults:
            return defaults
        if len(self.targets) == 1:
            return list(self.targets.values())
        raise UsageError(
            "no default target",
            f"{self.file.name} has several targets and none has default = true",
            "pass --to/--on TARGET or set default = true on one",
        )

    def one(self, name: str | None) -> Target:
        """Exactly one target (console, send, logs, pull, shell, ...): the named one, else
        the one marked `primary = true`, else the first default target (file order)."""
        if name:
            return self.pick([name])[0]
        for target in self.targets.values():
            if target.primary:
                return target
        return self.pick([])[0]


def find_config(start: Path | None = None) -> Path | None:
    """The nearest tether.toml, or pyproject.toml with [tool.tether], from start upward."""
    found = find_config_file(str(start or invocation.cwd()))
    return None if found is None else Path(found)


def load(start: Path | None = None, *, trusted: bool = True) -> Config:
    """Find and parse the project's configuration; ConfigError on anything wrong.

    With `trusted` (every command that contacts a host or runs a hook), the user must have
    trusted the config's decisive values (tether.trust), else UntrustedError."""
    file = find_config(start)
    if file is None:
        raise ConfigError(
            CONFIG_NAME,
            "",
            "no tether.toml here or in any parent directory",
            "run `tether init --host ALIAS --path REMOTE_DIR` in the project root",
        )
    config = parse_file(file)
    if trusted:
        from tether.trust import require

        require(config)
    return config


def parse_toml(text: str) -> dict[str, Any]:
    """TOML text as a dict (tomllib.TOMLDecodeError when it is not TOML)."""
    data: dict[str, Any] = tomllib.loads(text)
    return data


def parse_file(file: Path) -> Config:
    """Parse one config file (tether.toml or pyproject.toml)."""
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(file), "", f"not valid TOML ({error})") from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), "", "not UTF-8 text") from None
    if file.name == "pyproject.toml":
        tool = data.get("tool", {})
        data = tool.get("tether", {}) if isinstance(tool, dict) else None
        if not isinstance(data, dict):
            raise ConfigError(str(file), "tool.tether", "must be a table", "use [tool.tether]")
        prefix = "tool.tether."
    else:
        prefix = ""
    return parse(data, file, prefix)


def parse(data: dict[str, Any], file: Path, prefix: str = "") -> Config:
    """Check a decoded TOML document strictly and build a Config."""
    check = _Checker(str(file), prefix)
    check.keys(data, TOP_KEYS, "")
    targets_table = check.table(data, "targets", required=True)
    if not targets_table:
        check.fail("targets", "no targets defined", "add a [targets.NAME] with host and path")
    root = file.parent.resolve()
    targets: dict[str, Target] = {}
    for name, raw in targets_table.items():
        key = f"targets.{name}"
        if not isinstance(raw, dict):
            check.fail(key, "must be a table with host and path")
        check.keys(raw, TARGET_KEYS, key)
        scheduler = check.string(raw, "scheduler", key, default=DEFAULT_SCHEDULER)
        if scheduler not in SCHEDULERS:
            expected = " or ".join(repr(name) for name in SCHEDULERS)
            check.fail(f"{key}.scheduler", f"is {scheduler!r}, expected {expected}")
        slurm = check.table(raw, "slurm", key)
        check.keys(slurm, SLURM_KEYS, f"{key}.slurm")
        host = check.string(raw, "host", key, required=True)
        check.value(host_problem(host), f"{key}.host", "name an ssh alias or user@host")
        path = check.string(raw, "path", key, required=True)
        check.value(remote_dir_problem(path), f"{key}.path", "use a project directory")
        python = check.string(raw, "python", key, default="python3")
        try:
            python_argv(python)
        except ValueError as error:
            check.fail(f"{key}.python", str(error), 'e.g. python = "/opt/venv/bin/python"')
        targets[name] = Target(
            name=name,
            host=host,
            path=path,
            python=python,
            default=check.boolean(raw, "default", key),
            primary=check.boolean(raw, "primary", key),
            autoreload=check.boolean(raw, "autoreload", key, default=True),
            scheduler=scheduler,
            slurm=slurm,
            mappings=_mappings(check, raw, key, root),
        )
    primaries = [name for name, target in targets.items() if target.primary]
    if len(primaries) > 1:
        check.fail(
            f"targets.{primaries[1]}.primary",
            f"a second primary target (after {primaries[0]!r})",
            "mark one target primary = true",
        )
    sync = check.table(data, "sync")
    check.keys(sync, SYNC_KEYS, "sync")
    jobs = check.table(data, "jobs")
    check.keys(jobs, JOBS_KEYS, "jobs")
    notify = check.string(jobs, "notify", "jobs", default="") or None
    env = _env(check, data)
    return Config(
        root=root,
        file=file,
        targets=targets,
        sync=SyncRules(
            exclude=check.strings(sync, "exclude", "sync"),
            include=check.strings(sync, "include", "sync"),
            results=check.strings(sync, "results", "sync"),
        ),
        notify=notify,
        env=env,
    )


def _env(check: _Checker, data: dict[str, Any]) -> EnvConfig | None:
    """The [env] table, strictly checked; None when the config has none."""
    if "env" not in data:
        return None
    table = check.table(data, "env")
    check.keys(table, ENV_KEYS, "env")
    python = check.string(table, "python", "env")
    if python and ("/" in python or python.startswith("python")):
        try:
            python_argv(python)
        except ValueError as error:
            check.fail("env.python", str(error), 'e.g. python = "3.11" or "/usr/bin/python3.11"')
    elif python and not _VERSION.fullmatch(python):
        check.fail("env.python", f"{python!r} is neither a version nor an interpreter",
                   'e.g. python = "3.11" or "/usr/bin/python3.11"')  # fmt: skip
    requirements = check.strings(table, "requirements", "env") if "requirements" in table else None
    for name in requirements or ():
        check.value(_relative_problem(name), "env.requirements", "name files in the project")
    index_url = check.string(table, "index_url", "env")
    if index_url and not index_url.startswith(("https://", "http://", "file://")):
        check.fail("env.index_url", f"{index_url!r} is not an http(s) or file URL",
                   'e.g. index_url = "https://pypi.org/simple"')  # fmt: skip
    return EnvConfig(
        python=python,
        requirements=requirements,
        extras=check.strings(table, "extras", "env"),
        index_url=index_url,
    )


def _relative_problem(name: str) -> str | None:
    """Why a requirements file name cannot be read from the project, or None."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts:
        return f"{name!r} is not a path inside the project"
    return None


def _mappings(check: _Checker, raw: dict[str, Any], key: str, root: Path) -> tuple[Mapping, ...]:
    items = raw.get("mappings", [])
    if not isinstance(items, list):
        check.fail(f"{key}.mappings", "must be an array of tables ([[...mappings]])")
    result: list[Mapping] = []
    for index, item in enumerate(items):
        item_key = f"{key}.mappings[{index}]"
        if not isinstance(item, dict):
            check.fail(item_key, "must be a table with local and remote")
        check.keys(item, MAPPING_KEYS, item_key)
        local = check.string(item, "local", item_key, required=True)
        remote = check.string(item, "remote", item_key, required=True)
        check.value(remote_dir_problem(remote), f"{item_key}.remote", "map to a project directory")
        result.append(Mapping(local=(root / local).resolve(), remote=remote))
    target_path = _norm_remote(str(raw.get("path", "")))
    remotes = [(_norm_remote(mapping.remote), mapping.remote) for mapping in result]
    for index, (norm, shown) in enumerate(remotes):
        if _nested(norm, target_path):
            check.fail(
                f"{key}.mappings[{index}].remote",
                f"{shown!r} overlaps the target's path {raw.get('path')!r}",
                "map it to a directory outside the project's remote path",
            )
        for other_norm, other in remotes[:index]:
            if _nested(norm, other_norm):
                check.fail(
                    f"{key}.mappings[{index}].remote",
                    f"{shown!r} overlaps another mapping's remote {other!r}",
                    "give each mapping its own remote directory",
                )
    return tuple(result)


def _norm_remote(path: str) -> PurePosixPath:
    return PurePosixPath(path.rstrip("/") or "/")


def _nested(a: PurePosixPath, b: PurePosixPath) -> bool:
    return a == b or b in a.parents or a in b.parents


class _Checker:
    """Strict type checks that raise ConfigError naming file and key."""

    def __init__(self, file: str, prefix: str) -> None:
        self.file = file
        self.prefix = prefix

    def fail(self, key: str, problem: str, todo: str = "") -> NoReturn:
        raise ConfigError(self.file, self.prefix + key, problem, todo)

    def value(self, problem: str | None, key: str, todo: str) -> None:
        if problem is not None:
            self.fail(key, problem, todo)

    def keys(self, table: dict[str, Any], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                full = f"{where}.{key}" if where else key
                expected = ", ".join(sorted(allowed))
                self.fail(full, "unknown key", f"expected one of: {expected}")

    def table(
        self, data: dict[str, Any], key: str, where: str = "", required: bool = False
    ) -> dict[str, Any]:
        full = f"{where}.{key}" if where else key
        if key not in data:
            if required:
                self.fail(full, "is missing", f"add a [{full}.NAME] table")
            return {}
        value = data[key]
        if not isinstance(value, dict):
            self.fail(full, f"must be a table, not {_kind(value)}")
        return value

    def string(
        self,
        data: dict[str, Any],
        key: str,
        where: str,
        *,
        required: bool = False,
        default: str = "",
    ) -> str:
        full = f"{where}.{key}"
        if key not in data:
            if required:
                self.fail(full, "is missing", f'add {key} = "..."')
            return default
        value = data[key]
        if not isinstance(value, str):
            self.fail(full, f"must be a string, not {_kind(value)}")
        if required and not value.strip():
            self.fail(full, "must not be empty")
        return value

    def boolean(self, data: dict[str, Any], key: str, where: str, default: bool = False) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{where}.{key}", f"must be true or false, not {_kind(value)} {value!r}")
        return value

    def strings(self, data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(f"{where}.{key}", "must be a list of strings")
        return tuple(value)


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)
