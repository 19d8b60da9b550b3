"""Where tether keeps machine-wide state and runtime sockets.

Standard library `os` only at import time: the push/pull fast path (cli/fastpath.py) finds
the sync daemon's socket through `runtime_dir_str`, and the send fast path
(kernel/sendcache.py) its cache and the trust store, before anything heavier is imported.
"""

from __future__ import annotations

import os

from tether import invocation

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~10 ms
if TYPE_CHECKING:
    from pathlib import Path


def state_dir() -> Path:
    """`$XDG_STATE_HOME/tether` (default ~/.local/state/tether), created 0700."""
    from pathlib import Path

    return Path(state_dir_str())


def state_dir_str() -> str:
    """state_dir() as a string (no pathlib: the send fast path)."""
    base = invocation.getenv("XDG_STATE_HOME") or os.path.join(invocation.home(), ".local", "state")
    return _private_dir(os.path.join(base, "tether"))


def trust_store() -> str:
    """The file of this user's trust records (tether.trust)."""
    return os.path.join(state_dir_str(), "trust")


def runtime_dir_str() -> str:
    """A short 0700 directory for control sockets (Unix sockets are limited to ~104 bytes)."""
    base = invocation.getenv("TETHER_RUNTIME_DIR")
    if base:
        return _private_dir(base)
    xdg = invocation.getenv("XDG_RUNTIME_DIR")
    if xdg and len(xdg) < 40 and os.path.isdir(xdg):
        return _private_dir(os.path.join(xdg, "tether"))
    return _private_dir(f"/tmp/tether-{os.getuid()}")


def runtime_dir() -> Path:
    """runtime_dir_str() as a Path."""
    from pathlib import Path

    return Path(runtime_dir_str())


def ssh_dir() -> Path:
    """The caller's ~/.ssh ($HOME's, as Path.home() reads it)."""
    from pathlib import Path

    return Path(invocation.home()) / ".ssh"


def _private_dir(path: str) -> str:
    """path as a directory only this user can enter: created 0700, or an existing one that
    is a real directory (not a symlink), owned by this user and writable by nobody else
    (tmux and OpenSSH refuse such directories too). Anything else: UnsafeDirError."""
    import stat

    if not os.path.lexists(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    problem = ""
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.getuid():
        problem = f"belongs to another user (uid {st.st_uid})"
    elif st.st_mode & 0o022:
        problem = "is writable by other users"
    if problem:
        from tether.errors import TetherError

        raise TetherError(
            f"unsafe directory {path}",
            f"it {problem}, so another user could read or redirect tether's sockets",
            "remove it (it is not tether's) or set TETHER_RUNTIME_DIR to a private directory",
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path
