"""Lossless editing of ~/.ssh/config (STUB: interface only, being implemented)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostEntry:
    """One `Host` stanza with a single concrete alias, as read from the file."""

    alias: str
    hostname: str | None
    user: str | None
    port: str | None
    identity_file: str | None
    managed: bool  # written by tether


def config_path() -> Path:
    """~/.ssh/config (following OpenSSH: the passwd home, which tests point at a temp dir)."""
    raise NotImplementedError


def add_host(name: str, options: list[tuple[str, str]], *, force: bool = False) -> list[str]:
    """Add `Host name` with options where OpenSSH honours it; return warning lines."""
    raise NotImplementedError


def remove_host(name: str) -> bool:
    """Remove the stanza for name, restoring the exact bytes from before add; False if absent."""
    raise NotImplementedError


def list_hosts() -> list[HostEntry]:
    """Every concrete alias in ~/.ssh/config (and files it Includes)."""
    raise NotImplementedError
