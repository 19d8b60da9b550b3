"""Trust: a project's config must be accepted by this user before tether acts on it.

A tether.toml (or [tool.tether]) arrives with every clone, so it is input from someone
else. The values that decide what runs or where files go (`decisive`) are shown to the
user once (`tether trust`) and recorded with a digest, per user and per config file, in
the user's state dir (`$XDG_STATE_HOME/tether/trust`, 0600) — never in the project. Any
later change of one of them makes every command that would contact a host refuse again,
naming what changed (like direnv's `allow`, VS Code's Workspace Trust, git's
safe.directory).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tether import invocation
from tether.errors import TetherError
from tether.paths import trust_store

if TYPE_CHECKING:
    from tether.config import Config

FILE_NAME = "trust"  # in the state dir: tether.paths.trust_store


class UntrustedError(TetherError):
    """The project's config is not trusted (or changed since); exit code 1."""


FILE_KEY = "env.file"  # env.file[requirements.txt]: that file's decisive lines


def env_files(config: Config) -> dict[str, list[str]]:
    """The env spec's files that say where code comes from -> those lines (an unreadable
    spec has none here: the command that needs it reports it)."""
    from tether.envs.decisive import decisive_files
    from tether.envs.spec import find
    from tether.errors import ConfigError

    try:
        spec = find(config)
    except (ConfigError, OSError, UnicodeDecodeError):
        return {}
    return decisive_files(spec) if spec is not None else {}


def decisive(config: Config, with_files: bool = True) -> dict[str, str]:
    """Every value that decides what tether runs or where files go, as shown to the user.

    Keys are the config's own key names, and env.file[NAME] for the env spec's lines that
    say where packages come from (with_files); values are plain text (lists joined)."""
    values: dict[str, str] = {}
    if with_files:
        for name, lines in env_files(config).items():
            values[f"{FILE_KEY}[{name}]"] = "\n".join(lines)
    for name, target in sorted(config.targets.items()):
        key = f"targets.{name}"
        values[f"{key}.host"] = target.host
        values[f"{key}.path"] = target.path
        values[f"{key}.python"] = target.python
        values[f"{key}.scheduler"] = target.scheduler
        for slurm_key, value in sorted(target.slurm.items()):
            values[f"{key}.slurm.{slurm_key}"] = json.dumps(value, sort_keys=True)
        for index, mapping in enumerate(target.mappings):
            values[f"{key}.mappings[{index}]"] = f"{mapping.local} -> {mapping.remote}"
    if config.sync.include:
        values["sync.include"] = ", ".join(config.sync.include)
    if config.notify:
        values["jobs.notify"] = config.notify
    if config.env is not None:  # what the remote env is built from, and from where
        env = config.env
        if env.python:
            values["env.python"] = env.python
        if env.requirements is not None:
            values["env.requirements"] = ", ".join(env.requirements)
        if env.extras:
            values["env.extras"] = ", ".join(env.extras)
        if env.index_url:
            values["env.index_url"] = env.index_url
    return values


def digest(values: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def summary(config: Config) -> list[str]:
    """What the config makes tether do, one line per fact (for `tether trust`)."""
    lines: list[str] = []
    for name, target in config.targets.items():
        lines.append(
            f"target {name}: connect to {target.host!r} over ssh, write the project to "
            f"{target.path!r}, run `{target.python}` there"
            + (f" (scheduler {target.custom_scheduler})" if target.custom_scheduler else "")
        )
        for slurm_key, value in target.slurm.items():
            lines.append(f"target {name}: slurm {slurm_key} = {json.dumps(value)}")
        for mapping in target.mappings:
            outside = "" if _inside(mapping.local, config.root) else " (OUTSIDE the project)"
            lines.append(
                f"target {name}: send local {mapping.local}{outside} to {mapping.remote!r}"
            )
    return lines + [line for line, _ in _project_facts(config)]


def _project_facts(config: Config) -> list[tuple[str, str]]:
    """What the project as a whole makes tether do: (the line `tether trust` shows, the
    clause the error line squeezes it into)."""
    facts: list[tuple[str, str]] = []
    include = config.sync.include
    if include:
        shown = ", ".join(repr(p) for p in include)
        facts.append(
            (f"push files .gitignore hides: {shown}", "push ignored files " + ", ".join(include))
        )
    if config.notify:
        facts.append(
            (
                f"run on the remote's shell when a job ends: {config.notify}",
                f"run `{config.notify}` when a job ends",
            )
        )
    if config.env is not None:
        clause = _env_clause(config)
        facts.append(("build a Python env on each target: " + clause, "build an env " + clause))
    for name, found in env_files(config).items():
        says = f"install packages as {name} says: "
        facts.append((says + "; ".join(found), says + ", ".join(found)))
    return facts


def _env_clause(config: Config) -> str:
    env = config.env
    assert env is not None
    parts = []
    if env.requirements is not None:
        parts.append("from " + (", ".join(env.requirements) or "no requirements files"))
    if env.extras:
        parts.append("with extras " + ", ".join(env.extras))
    if env.python:
        parts.append(f"for python {env.python}")
    parts.append(f"from the index {env.index_url}" if env.index_url else "from the remote's index")
    return " ".join(parts)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _store_path() -> Path:
    return Path(trust_store())


def _load_store() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_store_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _key(config: Config) -> str:
    return str(config.file.resolve())


def recorded(config: Config) -> dict[str, str] | None:
    """The values this user trusted for this config file, or None."""
    entry = _load_store().get(_key(config))
    if not isinstance(entry, dict):
        return None
    values = entry.get("values")
    if not isinstance(values, dict) or entry.get("digest") != digest(
        {str(k): str(v) for k, v in values.items()}
    ):
        return None
    return {str(k): str(v) for k, v in values.items()}


def changes(config: Config) -> list[str] | None:
    """None when trusted as it is; else one text per difference ([] = never trusted)."""
    before = recorded(config)
    now = decisive(config)
    if before is None:
        return []
    if before == now:
        return None
    found: list[str] = []
    for key in sorted(set(before) | set(now)):
        if key.startswith(FILE_KEY + "["):
            found += _file_changes(key[len(FILE_KEY) + 1 : -1], before.get(key), now.get(key))
        elif key not in now:
            found.append(f"{key} was removed (was {before[key]!r})")
        elif key not in before:
            found.append(f"{key} = {now[key]!r} is new")
        elif before[key] != now[key]:
            found.append(f"{key} is now {now[key]!r} (was {before[key]!r})")
    return found


def _file_changes(name: str, before: str | None, now: str | None) -> list[str]:
    """'requirements.txt now says `--index-url ...`' per decisive line added or dropped."""
    old = (before or "").splitlines()
    new = (now or "").splitlines()
    said = [f"{name} now says `{line}`" for line in new if line not in old]
    return said + [f"{name} no longer says `{line}`" for line in old if line not in new]


def record(config: Config, with_files: bool = True) -> None:
    """Trust the config's current values for this user (atomically, 0600). Without
    with_files the env files' decisive lines stay as trusted before (`init` writes the
    config, not the requirements someone else's repository brought)."""
    values = decisive(config, with_files)
    if not with_files:
        before = recorded(config) or {}
        values.update({k: v for k, v in before.items() if k.startswith(FILE_KEY + "[")})
    store = _load_store()
    store[_key(config)] = {"digest": digest(values), "values": values, "when": int(time.time())}
    path = _store_path()
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(store, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def inputs(config: Config) -> list[Path] | None:
    """Every file whose bytes decide whether `require(config)` passes (the config file, the
    trust store, the env spec's files and those `envs.spec.find` looks for), present or
    not; None when the env spec cannot be read (the files it names are not known)."""
    from tether.envs.spec import DERIVED, find
    from tether.errors import ConfigError

    try:
        spec = find(config)
    except (ConfigError, OSError, UnicodeDecodeError):
        return None
    names = {"uv.lock", "pyproject.toml", "requirements.txt"}
    if config.env is not None and config.env.requirements:
        names.update(config.env.requirements)
    if spec is not None:
        names.update(name for name in spec.files if name != DERIVED)
    return [config.file, _store_path(), *(config.root / name for name in sorted(names))]


def require(config: Config) -> None:
    """Raise UntrustedError unless the user trusted exactly these values.

    In an interactive terminal (stdin and stderr both ttys) the summary is shown and the
    user may accept it with y."""
    found = changes(config)
    if found is None:
        return
    name = config.file.name
    if found:
        said = [text for text in found if re.match(r"\S+ (?:now|no longer) says `", text)]
        own = [text for text in found if text not in said]
        parts = [f"{name} changed since you trusted it: " + "; ".join(own)] if own else []
        if said:
            files = list(dict.fromkeys(text.split(" ", 1)[0] for text in said))
            verb = "says" if len(files) == 1 else "say"
            parts.append(
                f"{', '.join(files)} {verb} where packages come from in a way you have not "
                "trusted: " + "; ".join(said)
            )
        problem = "; ".join(parts)
    else:
        problem = f"this project's {name} is not trusted yet, it would " + _brief(config)
    if _ask(config, problem):
        record(config)
        return
    raise UntrustedError(problem, "", "review it, then run `tether trust`")


def _brief(config: Config) -> str:
    """The summary squeezed into one clause for the error line."""
    parts: list[str] = []
    for name, target in config.targets.items():
        parts.append(f"run `{target.python}` on {target.host} ({name}) in {target.path}")
        for mapping in target.mappings:
            parts.append(f"send {mapping.local} to {mapping.remote}")
    parts += [clause for _, clause in _project_facts(config)]
    return "; ".join(parts)


def _ask(config: Config, problem: str) -> bool:
    if invocation.getenv("TETHER_NO_PROMPT") or not (
        invocation.stdin().isatty() and invocation.stderr().isatty()
    ):
        return False
    invocation.stderr().write(f"tether: {problem}\n")
    for line in summary(config):
        invocation.stderr().write(f"  {line}\n")
    invocation.stderr().write("Trust this config? [y/N] ")
    invocation.stderr().flush()
    try:
        answer = invocation.stdin().readline()
    except (OSError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")
