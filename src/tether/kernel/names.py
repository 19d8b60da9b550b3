"""Names and local paths of kernels: light (the `send` fast path imports this)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tether.config import Target
from tether.errors import UsageError
from tether.paths import runtime_dir

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def kernel_name(target: Target, name: str | None) -> str:
    """The kernel's name: the one given, else one per target (the target's name)."""
    chosen = name or re.sub(r"[^A-Za-z0-9_-]", "-", target.name)[:64]
    if not NAME_RE.match(chosen):
        raise UsageError(f"bad kernel name {chosen!r}", "use letters, digits, '_' and '-'")
    return chosen


def kernels_dir() -> Path:
    directory = runtime_dir() / "kernels"
    directory.mkdir(mode=0o700, exist_ok=True)
    directory.chmod(0o700)
    return directory


def local_file(target: Target, name: str) -> Path:
    """Where the local connection file for (host, kernel) lives (0700 dir)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", target.host)
    return kernels_dir() / f"{host}--{name}.json"


def socket_prefix(target: Target, name: str, key: str) -> Path:
    """The local socket prefix of (host, kernel, key): Jupyter's ipc `ip`; the sockets are
    `{prefix}-{port}`. Short and hashed (a unix socket path is at most ~104 bytes); the key
    is part of it, so a restarted kernel gets new sockets and a reconnect the same ones."""
    digest = hashlib.sha256(f"{target.host}\0{name}\0{key}".encode()).hexdigest()[:12]
    return kernels_dir() / f"k-{digest}"


def helper_paths(target: Target, name: str) -> tuple[Path, Path]:
    """(unix socket, pidfile) of the send helper of (host, kernel): short, hashed names."""
    digest = hashlib.sha256(f"{target.host}\0{name}".encode()).hexdigest()[:16]
    directory = kernels_dir()
    return directory / f"h-{digest}.sock", directory / f"h-{digest}.pid"
