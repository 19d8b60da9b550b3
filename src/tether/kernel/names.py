"""Names and local paths of kernels: light (the `send` fast path imports this)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tether.config import Target
from tether.errors import UsageError
from tether.paths import runtime_dir

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


def project_tag(target: Target) -> str:
    """This project's mark on a host: a hash of the target's host and remote directory."""
    return hashlib.sha256(f"{target.host}\0{target.path}".encode()).hexdigest()[:8]


def kernel_name(target: Target, name: str | None) -> str:
    """The kernel's name on the remote: the one given (else the target's name) and this
    project's tag, so a kernel belongs to (project, target, name): two projects on one
    host never share one."""
    chosen = name or re.sub(r"[^A-Za-z0-9_-]", "-", target.name)[:40]
    if not NAME_RE.match(chosen):
        raise UsageError(f"bad kernel name {chosen!r}", "use up to 40 letters, digits, '_' and '-'")
    return f"{chosen}-{project_tag(target)}"


def shown_name(target: Target, remote_name: str) -> tuple[str, bool]:
    """(the name a user knows, whether the kernel is this project's) of a remote kernel."""
    tag = f"-{project_tag(target)}"
    if remote_name.endswith(tag):
        return remote_name[: -len(tag)], True
    return remote_name, False


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


PROTOCOL = "frames-2"  # what `tether send` and the helper say (kernel/helper.py)


def helper_paths(target: Target, name: str) -> tuple[Path, Path]:
    """(unix socket, pidfile) of the send helper of (host, kernel): short, hashed names."""
    # PROTOCOL in the name: a send never talks to a helper of an older tether that speaks
    # another protocol (that one leaves after its idle time).
    digest = hashlib.sha256(f"{target.host}\0{name}\0{PROTOCOL}".encode()).hexdigest()[:16]
    directory = kernels_dir()
    return directory / f"h-{digest}.sock", directory / f"h-{digest}.pid"
