"""The second and later `tether send` of a project without parsing its config.

A send needs three things from the project's config: the send helper's socket (named
after the target's host and the kernel), the project root (figures are saved under it),
and the user's trust in the config. Parsing and trusting the config costs ~30 ms of
imports (tomllib, dataclasses, pathlib, hashlib) on every keypress. So once a send has
loaded and trusted the config, its answer is kept per (config file, --on, --name) in the
runtime dir (0700), with the signature (inode, size, mtime, ctime) of every file the
answer came from: the config file, the trust store and the env spec files the trust
check reads (`tether.trust.inputs`). A later send uses it only while every one of them is
unchanged (present or absent as before); anything else goes through `config.load` and
the trust check again. ctime changes on every write (utime cannot set it), and an answer
whose files changed within RACY_NS is not kept: a second change within the file system's
timestamp granularity (2 s on FAT and some network file systems) could look the same.
Standard library only, and not even `json` (with the `re` it imports, ~10 ms of a
keypress): the file is a list of frames (tether/clientwire.py).
"""

from __future__ import annotations

import os
import time

from tether import clientwire
from tether.configfile import find_config_file
from tether.errors import TetherError
from tether.paths import runtime_dir_str, trust_store

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~10 ms here
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

FILE_NAME = "send-cache.v2"
RACY_NS = 3_000_000_000
ENTRIES = 64


def _path() -> str:
    return os.path.join(runtime_dir_str(), FILE_NAME)


def _key(config_file: str, on: str | None, name: str | None) -> str:
    return "\0".join(
        [config_file, "" if on is None else "=" + on, "" if name is None else "=" + name]
    )


def signature(path: str) -> list[int] | None:
    """(inode, size, mtime, ctime) of path, or None when there is nothing there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _load() -> dict[str, Any]:
    """{key: {"socket", "root", "files": {path: signature}}} as kept ({} if unreadable)."""
    try:
        with open(_path(), "rb") as handle:
            buffer = bytearray(handle.read())
    except OSError:
        return {}
    data: dict[str, Any] = {}
    entry: dict[str, Any] = {}
    path = None
    try:
        for kind, text in clientwire.frames(buffer):
            if kind == "k":
                entry = data[text] = {"files": {}}
            elif kind in ("s", "r") and entry:
                entry["socket" if kind == "s" else "root"] = text
            elif kind == "f" and entry:
                path = text
            elif kind == "g" and entry and path is not None:
                entry["files"][path] = [int(n) for n in text.split()] if text else None
                path = None
    except ValueError:  # not ours, or cut short: the slow path writes it anew
        return {}
    return data


def _dump(data: dict[str, Any]) -> bytes:
    parts = []
    for key, entry in data.items():
        parts += [clientwire.frame("k", key), clientwire.frame("s", str(entry["socket"]))]
        parts.append(clientwire.frame("r", str(entry["root"])))
        for path, kept in entry["files"].items():
            parts.append(clientwire.frame("f", path))
            parts.append(clientwire.frame("g", "" if kept is None else " ".join(map(str, kept))))
    return b"".join(parts)


def lookup(cwd: str, on: str | None, name: str | None) -> tuple[str, str] | None:
    """(helper socket, project root) for a send from cwd, if kept and still true; else None."""
    try:
        config_file = find_config_file(cwd)
        store = trust_store()
    except (OSError, TetherError):  # an unreadable pyproject, an unsafe dir: the slow path says
        return None
    if config_file is None:
        return None
    entry = _load().get(_key(config_file, on, name))
    if not isinstance(entry, dict):
        return None
    files = entry.get("files")
    if not isinstance(files, dict) or config_file not in files or store not in files:
        return None
    if any(signature(path) != kept for path, kept in files.items()):
        return None
    socket, root = entry.get("socket"), entry.get("root")
    return (socket, root) if isinstance(socket, str) and isinstance(root, str) else None


def remember(
    config_file: str,
    on: str | None,
    name: str | None,
    socket: str,
    root: str,
    inputs: Iterable[str],
) -> None:
    """Keep a trusted config's answer for the next send (not when an input just changed)."""
    files = {path: signature(path) for path in inputs}
    if config_file not in files:
        return
    recent = time.time_ns() - RACY_NS
    if any(kept is not None and max(kept[2], kept[3]) >= recent for kept in files.values()):
        return
    data = _load()
    key = _key(config_file, on, name)
    data.pop(key, None)
    data[key] = {"socket": socket, "root": root, "files": files}
    while len(data) > ENTRIES:
        del data[next(iter(data))]
    path = _path()
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(_dump(data))
        os.replace(tmp, path)
    except OSError:  # not kept: the next send loads the config again
        if os.path.lexists(tmp):
            os.unlink(tmp)
