"""Where tether keeps machine-wide state and runtime sockets."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """`$XDG_STATE_HOME/tether` (default ~/.local/state/tether), created 0700."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return _private_dir(Path(base) / "tether")


def runtime_dir() -> Path:
    """A short 0700 directory for control sockets (Unix sockets are limited to ~104 bytes)."""
    base = os.environ.get("TETHER_RUNTIME_DIR")
    if base:
        return _private_dir(Path(base))
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and len(xdg) < 40 and os.path.isdir(xdg):
        return _private_dir(Path(xdg) / "tether")
    return _private_dir(Path(f"/tmp/tether-{os.getuid()}"))


def ssh_dir() -> Path:
    """The user's ~/.ssh (as OpenSSH sees it, through the passwd entry's home)."""
    return Path.home() / ".ssh"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path
