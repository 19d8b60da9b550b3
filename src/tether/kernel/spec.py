"""`tether kernel spec install`: a Jupyter kernelspec for the project's remote kernel.

The spec's argv starts `python -m tether.kernel.proxy` with the frontend's connection
file (tether.kernel.proxy): every frontend that launches kernels from kernelspecs
(JupyterLab, VS Code, PyCharm, nbconvert, nbclient, papermill) gets the persistent remote
kernel of (project, target, name), the one `tether console` and `tether send` use.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.config import Target


@dataclass(frozen=True)
class Installed:
    """A kernelspec written: its name, display name and directory."""

    name: str
    display_name: str
    path: Path


def spec_name(target: Target, name: str | None = None) -> str:
    """`tether-<target>` (and `-<name>` for a named kernel), as Jupyter spells names."""
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


def install(root: Path, target: Target, name: str | None = None) -> Installed:
    """Write (or replace) the kernelspec; what was written."""
    spec = kernel_json(root, target, name)
    directory = kernels_dir() / spec_name(target, name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kernel.json"
    temp = directory / f".kernel.json.{os.getpid()}.tmp"
    temp.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    os.replace(temp, path)
    return Installed(directory.name, str(spec["display_name"]), directory)
