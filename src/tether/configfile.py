"""Where a project's config file is: found with `os` alone (the send fast path uses it).

The nearest `tether.toml`, or `pyproject.toml` holding a `[tool.tether` table, from a
directory upward; `tether.config.find_config` is this, as a Path.
"""

from __future__ import annotations

import os

CONFIG_NAME = "tether.toml"


def find_config_file(start: str) -> str | None:
    """The config file governing directory `start` (resolved), or None."""
    directory = os.path.realpath(start)
    while True:
        candidate = os.path.join(directory, CONFIG_NAME)
        if os.path.isfile(candidate):
            return candidate
        pyproject = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(pyproject):
            with open(pyproject, "rb") as handle:
                if b"[tool.tether" in handle.read():
                    return pyproject
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent
