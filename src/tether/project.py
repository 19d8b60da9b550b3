"""Creating a project's tether.toml and .gitignore entry."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tether import invocation
from tether.config import parse, parse_toml
from tether.configfile import CONFIG_NAME
from tether.errors import UsageError
from tether.targets_edit import key_text

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def remote_spelling(path: str) -> str:
    """A remote path as the user meant it: `--path ~/proj` typed in a shell arrives as the
    LOCAL home's /home/me/proj; on the remote that is ~/proj (the remote home may differ)."""
    home = invocation.home().rstrip("/")
    if home and (path == home or path.startswith(home + "/")):
        return "~" + path[len(home) :]
    return path


def init_project(
    root: Path, host: str, path: str, target: str | None, python: str, force: bool
) -> Path:
    """Write root/tether.toml with one default target and add .tether/ to .gitignore."""
    name = target or host.split("@")[-1]
    if not NAME_RE.match(name):
        raise UsageError(
            f"bad target name {name!r}", "use letters, digits, '_', '.', '-'", "pass --target NAME"
        )
    if not path.strip():
        raise UsageError("empty --path", "", "name the remote project directory")
    path = remote_spelling(path)
    file = root / CONFIG_NAME
    if file.exists() and not force:
        raise UsageError(f"{file} exists", "", "edit it, or pass --force to overwrite")
    text = (
        f"[targets.{key_text(name)}]\n"
        f"host = {_toml_string(host)}\n"
        f"path = {_toml_string(path)}\n"
        f"python = {_toml_string(python)}\n"
        "default = true\n"
        "\n"
        "[sync]\n"
        "exclude = []\n"
        "include = []\n"
        'results = ["outputs/", "runs/"]\n'
    )
    config = parse(parse_toml(text), file)  # checked before anything is written
    file.write_text(text, encoding="utf-8")
    from tether.trust import record

    record(config, with_files=False)  # what the user wrote through tether is trusted
    gitignore = root / ".gitignore"
    existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    if ".tether/" not in existing.splitlines():
        separator = "" if not existing or existing.endswith("\n") else "\n"
        gitignore.write_text(existing + separator + ".tether/\n", encoding="utf-8")
    return file
