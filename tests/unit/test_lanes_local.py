"""tether.sync.lanes against real agents started as local subprocesses (no ssh).

A big plan spreads over helper channels; a host that refuses helpers gets the push over
the main channel alone; a file under a directory that replaces a file waits for it; the
helpers end with their main channel.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from tests.harness.local_agent import with_agent
from tether.agent.fsops import DigestCache
from tether.core.manifest import DIR, FILE, Entry
from tether.core.plan import Upload
from tether.sync import lanes
from tether.sync.endpoint import LocalEndpoint, RemoteEndpoint
from tether.sync.local import Scope
from tether.transport.channel import AgentChannel


def _files(root: Path, count: int, rng: random.Random) -> list[Upload]:
    uploads = [Upload("big", Entry(DIR, 0, 0, 0o755), None)]
    for index in range(count):
        rel = f"big/d{index % 7}/f{index:04d}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rng.randbytes(rng.randrange(0, 3000)))
        uploads.append(Upload(rel, Entry(FILE, (root / rel).stat().st_size, 10**18, 0o640), None))
    (root / "blob").write_bytes(rng.randbytes(3 * lanes.CHUNK + 5))
    uploads.append(Upload("blob", Entry(FILE, 3 * lanes.CHUNK + 5, 10**18, 0o600), None))
    return uploads


def _ends(local: Path, channel: AgentChannel, remote: Path) -> tuple[LocalEndpoint, RemoteEndpoint]:
    """A push's two sides: the local tree, and the remote directory through the agent."""
    source = LocalEndpoint(
        local, Scope.of((), (), ()), lambda: DigestCache(str(local / ".cache"), str(local))
    )
    return source, RemoteEndpoint(channel, str(remote))


def test_big_plan_spreads_over_helpers_and_lands_exactly(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    uploads = _files(local, 4 * lanes.BIG_FILES, random.Random(1))
    answers: list[tuple[str, str, dict[str, Any]]] = []
    seen: dict[str, Any] = {"answered by": set()}
    # Over local pipes the main lane could write everything before a helper agent has
    # started (~0.1 s); over ssh it never does. Its answers are taken slowly until a helper
    # has answered (10 s at most), as a real link's round trips would.
    until = time.monotonic() + 10

    def on_answer(header: dict[str, Any], action: str, path: str, entry: Entry, by: Any) -> None:
        answers.append((action, path, header))
        seen["answered by"].add(by.channel.process.pid)
        if len(seen["answered by"]) < 2 and time.monotonic() < until:
            time.sleep(0.005)

    async def body(channel: AgentChannel) -> None:
        await lanes.run(*_ends(local, channel, remote), [], uploads, on_answer, None)
        seen["helpers"] = [h.process.pid for h in channel.helpers()]

    with_agent(body)
    assert len(seen["answered by"]) >= 2, "no helper channel took part"
    done = {path for action, path, header in answers if action != "chunk" and header["ok"]}
    assert done == {upload.path for upload in uploads}
    for upload in uploads:
        if upload.entry.kind == FILE:
            assert (remote / upload.path).read_bytes() == (local / upload.path).read_bytes()
            st = (remote / upload.path).stat()
            assert (st.st_mode & 0o777, st.st_mtime_ns) == (upload.entry.mode, 10**18)
    assert not [p for p in remote.rglob("*") if ".tether-tmp." in p.name]
    # The main channel's close ended (and reaped) its helpers.
    for pid in seen["helpers"]:
        assert not os.path.exists(f"/proc/{pid}")


def test_a_host_refusing_helpers_gets_the_push_over_one_channel(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    uploads = _files(local, lanes.BIG_FILES + 10, random.Random(2))
    answers: list[str] = []

    async def body(channel: AgentChannel) -> int:
        channel.python = "/nonexistent/python3"  # every helper fails to start
        await lanes.run(
            *_ends(local, channel, remote), [], uploads,
            lambda header, action, path, entry, _: answers.append(path), None,
        )  # fmt: skip
        return len(channel._helpers)

    assert with_agent(body) == 0
    assert {upload.path for upload in uploads} <= set(answers)
    assert (remote / "blob").read_bytes() == (local / "blob").read_bytes()


def test_files_under_a_directory_replacing_a_file_wait_for_it(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    (remote).mkdir()
    (remote / "big").write_bytes(b"a file where a directory goes")
    old = (remote / "big").stat()
    uploads = _files(local, lanes.BIG_FILES + 10, random.Random(3))
    expect = Entry(FILE, old.st_size, old.st_mtime_ns, 0o644)
    uploads[0] = Upload("big", Entry(DIR, 0, 0, 0o755), expect)
    errors: list[Any] = []

    def on_answer(header: dict[str, Any], action: str, path: str, entry: Entry, _: Any) -> None:
        if not header.get("ok", True):
            errors.append((path, header))

    async def body(channel: AgentChannel) -> None:
        await lanes.run(*_ends(local, channel, remote), [], uploads, on_answer, None)

    with_agent(body)
    assert errors == []
    assert (remote / "big").is_dir()
    assert len(list((remote / "big").rglob("f*"))) == lanes.BIG_FILES + 10


def test_a_small_plan_stays_on_the_main_channel(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    uploads = _files(local, 20, random.Random(4))[:-1]

    async def body(channel: AgentChannel) -> int:
        await lanes.run(*_ends(local, channel, remote), [], uploads, lambda *a: None, None)
        return len(channel._helpers)

    assert with_agent(body) == 0
