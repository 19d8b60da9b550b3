"""The agent writes, deletes and reads through directory handles, never through a symlink
(DESIGN.md 5, invariant 5; issue #20 part 6).

Two ways a directory of the tree is swapped for a symlink pointing outside it:
- between requests (a scan or a write, the swap, then the next request): the agent over
  a local subprocess answers the next request with the one clean kind "unsafe";
- inside a request, after the agent found the directory and before it touches the file:
  the agent in this process, with every os call that names the file made to swap the
  directory first (a deterministic hook instead of a race). Nothing may land outside.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_agent import with_agent
from tether.agent import protocol
from tether.agent.server import Agent
from tether.agent.wire import Delete, Put, Read, Scan
from tether.transport.channel import AgentChannel, AgentError

OUTSIDE = b"OUTSIDE"  # the same size as INSIDE: a check by size and mtime cannot tell them
INSIDE = b"inside!"
MTIME = 1_600_000_000_000_000_000


def _entry(path: Path) -> dict[str, Any]:
    st = os.lstat(path)
    return {"k": "file", "s": st.st_size, "m": st.st_mtime_ns, "p": stat.S_IMODE(st.st_mode)}


def _layout(tmp_path: Path) -> tuple[Path, Path]:
    """root/d/victim and outside/victim, same size and mtime, different bytes."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    for path, data in ((root / "d" / "victim", INSIDE), (outside / "victim", OUTSIDE)):
        path.write_bytes(data)
        os.utime(path, ns=(MTIME, MTIME))
    return root, outside


def _swap(root: Path, outside: Path) -> None:
    """root/d becomes a symlink to outside (the real directory moved aside, in the tree)."""
    os.rename(root / "d", root / "d.moved")
    os.symlink(outside, root / "d")


def _listing(directory: Path) -> dict[str, bytes | str]:
    found: dict[str, bytes | str] = {}
    for item in sorted(directory.iterdir()):
        if item.is_symlink():
            found[item.name] = "link to " + os.readlink(item)
        else:
            found[item.name] = "dir" if item.is_dir() else item.read_bytes()
    return found


# ------------------------------------------------ swapped between requests (subprocess agent)


def test_a_directory_swapped_for_a_symlink_between_requests_is_refused_as_unsafe(
    tmp_path: Path,
) -> None:
    root, outside = _layout(tmp_path)
    inside = _entry(root / "d" / "victim")
    kinds: dict[str, str] = {}

    async def body(channel: AgentChannel) -> None:
        common = {"root": str(root)}
        await channel.request(Scan(rows=True, **common))
        # A write into d: the agent has been through d in this run.
        await channel.request(Put(path="d/a", mode=0o644, expect=None, **common, payload=b"a"))
        _swap(root, outside)
        where = str(root)
        requests: dict[str, Put | Delete | Read] = {
            "put": Put(where, "d/b", mode=0o644, payload=b"new"),
            "put over": Put(where, "d/victim", mode=0o644, expect=inside, payload=b"new"),
            "put --force": Put(
                where, "d/victim", mode=0o644, expect=inside, backup=True, payload=b"new"
            ),
            "mkdir": Put(where, "d/new", kind="dir", mode=0o755),
            "link": Put(where, "d/l", kind="link", target="x"),
            "delete": Delete(where, "d/victim", expect=inside),
            "delete --force": Delete(where, "d/victim", expect=inside, backup=True),
            "read": Read(where, "d/victim"),
        }
        for name, request in requests.items():
            try:
                await channel.request(request)
            except AgentError as error:
                kinds[name] = error.kind
            else:
                kinds[name] = "ok"

    with_agent(body)
    assert _listing(outside) == {"victim": OUTSIDE}, "something was written outside the tree"
    assert kinds == dict.fromkeys(kinds, "unsafe"), kinds
    assert _listing(root / "d.moved") == {"a": b"a", "victim": INSIDE}


# ------------------------------------------------ swapped inside a request (agent in-process)

_OS_CALLS = (
    "open",
    "stat",
    "lstat",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "replace",
    "symlink",
    "link",
    "readlink",
    "utime",
    "chmod",
)


def _swap_on_first_touch(
    monkeypatch: pytest.MonkeyPatch, name: str, swap: Callable[[], None]
) -> list[str]:
    """Make every os call whose path's last component contains `name` run swap() first
    (once). Returns the list the first such call's name is put in."""
    fired: list[str] = []

    def wrap(call: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(*args: Any, **kwargs: Any) -> Any:
            if not fired:
                for arg in args:
                    if isinstance(arg, (str, bytes)) and name in os.path.basename(os.fsdecode(arg)):
                        fired.append(call.__name__)
                        swap()
                        break
            return call(*args, **kwargs)

        return hooked

    for call in _OS_CALLS:
        monkeypatch.setattr(os, call, wrap(getattr(os, call)))
    return fired


def _dispatch(header: dict[str, Any], payload: bytes = b"") -> tuple[dict[str, Any], bytes]:
    out = io.BytesIO()
    agent = Agent(out)
    try:
        agent.dispatch(dict(header, id=1), payload)
    finally:
        agent.writer.close()
    frame = protocol.read_frame(io.BytesIO(out.getvalue()))
    assert frame is not None
    return frame


CASES: dict[str, tuple[str, dict[str, Any], bytes]] = {
    "put over": ("put", {"path": "d/victim", "mode": 0o644, "expect": "inside"}, b"new"),
    "put --force": (
        "put",
        {"path": "d/victim", "mode": 0o644, "expect": "inside", "backup": True},
        b"new",
    ),
    "put new": ("put", {"path": "d/victim-new", "mode": 0o644, "expect": None}, b"new"),
    "mkdir": ("put", {"path": "d/victim-dir", "kind": "dir", "mode": 0o755, "expect": None}, b""),
    "link": ("put", {"path": "d/victim-l", "kind": "link", "target": "x", "expect": None}, b""),
    "delete": ("delete", {"path": "d/victim", "expect": "inside"}, b""),
    "delete --force": ("delete", {"path": "d/victim", "expect": "inside", "backup": True}, b""),
    "read": ("read", {"path": "d/victim"}, b""),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_directory_swapped_inside_a_request_never_redirects_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    root, outside = _layout(tmp_path)
    op, fields, payload = CASES[case]
    if fields.get("expect") == "inside":
        fields = dict(fields, expect=_entry(root / "d" / "victim"))
    fired = _swap_on_first_touch(monkeypatch, "victim", lambda: _swap(root, outside))
    header, data = _dispatch({"op": op, "root": str(root), **fields}, payload)
    monkeypatch.undo()
    assert fired, "the hook never ran: the request did not touch the file"
    assert _listing(outside) == {"victim": OUTSIDE}, (case, header)
    assert header.get("kind") != "internal", header
    if op == "read":
        assert data == INSIDE, "read a file outside the tree"
    shutil.rmtree(root / "d.moved", ignore_errors=True)
