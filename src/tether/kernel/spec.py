"""`tether kernel spec install | ls | rm`: Jupyter kernelspecs for the project's remote kernel.

The spec's argv starts `python -m tether.kernel.proxy` with the frontend's connection
file (tether.kernel.proxy): every frontend that launches kernels from kernelspecs
(JupyterLab, VS Code, PyCharm, nbconvert, nbclient, papermill) gets the persistent remote
kernel of (project, target, name), the one `tether console` and `tether send` use.

A spec is named `tether-<target>[-<kernel>]-<project tag>` (the tag of names.project_tag:
the target's host and remote dir), so two projects whose targets share a name never
overwrite each other's spec. An earlier tether named it `tether-<target>[-<kernel>]`;
install removes such a spec of the same (project, target, kernel).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.config import Target
from tether.errors import TetherError
from tether.kernel.names import project_tag


@dataclass(frozen=True)
class Installed:
    """A kernelspec written: its name, display name and directory."""

    name: str
    display_name: str
    path: Path


@dataclass(frozen=True)
class Listed:
    """A tether kernelspec found in the user's Jupyter data dir."""

    name: str
    display_name: str
    project: str
    target: str
    kernel: str
    path: Path

    @property
    def stale(self) -> bool:
        """Its project is gone (no such directory any more)."""
        return not Path(self.project).is_dir()


def spec_name(target: Target, name: str | None = None) -> str:
    """`tether-<target>[-<name>]-<project tag>`, as Jupyter spells names."""
    raw = f"tether-{target.name}" + (f"-{name}" if name else "") + f"-{project_tag(target)}"
    return re.sub(r"[^a-z0-9._-]", "-", raw.lower())


def old_spec_name(target: Target, name: str | None = None) -> str:
    """The name tether gave the spec before names had the project's tag."""
    raw = f"tether-{target.name}" + (f"-{name}" if name else "")
    return re.sub(r"[^a-z0-9._-]", "-", raw.lower())


def kernel_json(root: Path, target: Target, name: str | None = None) -> dict[str, Any]:
    """The kernel.json of (project, target, name): argv runs tether's proxy."""
    argv = [sys.executable, "-m", "tether.kernel.proxy", "--project", str(root)]
    argv += ["--on", target.name]
    if name:
        argv += ["--name", name]
    shown = f"tether: {target.name}" + (f"/{name}" if name else "") + f" ({root.name})"
    return {
        "argv": [*argv, "{connection_file}"],
        "display_name": shown,
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {
            "tether": {"project": str(root), "target": target.name, "kernel": name or ""},
            "debugger": False,
        },
    }


def kernels_dir() -> Path:
    """The user's Jupyter kernelspec dir (JUPYTER_DATA_DIR honoured)."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "kernels"


def install(root: Path, target: Target, name: str | None = None) -> tuple[Installed, list[str]]:
    """Write (or replace) the kernelspec; what was written, and the names of this
    (project, target, kernel)'s old-style specs it removed."""
    spec = kernel_json(root, target, name)
    directory = kernels_dir() / spec_name(target, name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kernel.json"
    temp = directory / f".kernel.json.{os.getpid()}.tmp"
    temp.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    os.replace(temp, path)
    old = [
        s for s in listed() if s.name == old_spec_name(target, name) and mine(s, root, target, name)
    ]
    for found in old:
        shutil.rmtree(found.path)
    return Installed(directory.name, str(spec["display_name"]), directory), [s.name for s in old]


def mine(spec: Listed, root: Path, target: Target, name: str | None) -> bool:
    """Whether spec is the one of (project root, target, kernel)."""
    return (spec.project, spec.target, spec.kernel) == (str(root), target.name, name or "")


def listed() -> list[Listed]:
    """Every tether kernelspec in the user's Jupyter data dir (by its metadata), by name."""
    found = []
    directory = kernels_dir()
    for entry in sorted(directory.iterdir()) if directory.is_dir() else []:
        try:
            data = json.loads((entry / "kernel.json").read_text(encoding="utf-8"))
            meta = data["metadata"]["tether"]
            found.append(
                Listed(
                    entry.name,
                    str(data.get("display_name", "")),
                    str(meta["project"]),
                    str(meta["target"]),
                    str(meta.get("kernel") or ""),
                    entry,
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a kernelspec, or not tether's
    return found


def remove_named(names: list[str]) -> list[str]:
    """Remove the tether kernelspecs named; a name that is not one is refused before
    anything is removed."""
    by_name = {spec.name: spec for spec in listed()}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise TetherError(
            f"no tether kernelspec named {unknown[0]!r}",
            f"in {kernels_dir()}",
            "see `tether kernel spec ls`",
        )
    for name in names:
        shutil.rmtree(by_name[name].path)
    return names


def remove_mine(root: Path, target: Target, name: str | None) -> list[str]:
    """Remove this project's spec(s) for (target, kernel), an old-style one included."""
    chosen = [spec.name for spec in listed() if mine(spec, root, target, name)]
    if not chosen:
        raise TetherError(
            f"this project has no kernelspec for {target.name}",
            f"none in {kernels_dir()}",
            "see `tether kernel spec ls`",
        )
    return remove_named(chosen)
