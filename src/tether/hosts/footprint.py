"""What sandboxes added around ~/.ssh, so the last `sandbox down` gives it all back.

`sandbox up` may create ~/.ssh, ~/.ssh/config, the config's backup and lock files. The
first `up` while no sandbox exists records which of those existed (footprint.json in the
sandboxes' state dir); when the last sandbox goes down, whatever did not exist before and
is now empty of the user's content is removed again — in whatever order sandboxes came
and went. A config that holds anything (the user added a host meanwhile) is kept, and so
is everything that existed before.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

FILE = "ssh-footprint.json"


def _names() -> dict[str, Path]:
    from tether.hosts import sshconfig

    config = sshconfig.config_path()
    return {
        "dir": config.parent,
        "config": config,
        "backup": config.parent / sshconfig.BACKUP_NAME,
        "lock": config.parent / sshconfig.LOCK_NAME,
    }


def remember(root: Path) -> None:
    """Before the first sandbox of root is added: note what exists around ~/.ssh."""
    path = root / FILE
    if path.exists():
        return
    existed = {key: item.exists() or item.is_symlink() for key, item in _names().items()}
    path.write_text(json.dumps(existed))


def give_back(root: Path, remaining: int) -> None:
    """After a sandbox went down: with none left, remove what sandboxes added."""
    path = root / FILE
    if remaining:
        return
    try:
        existed = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    items = _names()
    config = items["config"]
    with contextlib.suppress(OSError):
        if (
            not existed.get("config", True)
            and config.is_file()
            and not config.is_symlink()
            and config.stat().st_size == 0
        ):
            config.unlink()
    if not config.exists() and not config.is_symlink():
        for key in ("backup", "lock"):
            if not existed.get(key, True):
                with contextlib.suppress(OSError):
                    items[key].unlink()
        if not existed.get("dir", True):
            with contextlib.suppress(OSError):
                items["dir"].rmdir()  # only if empty
    with contextlib.suppress(OSError):
        path.unlink()
