"""Many writes in one request (wire.PutBatch), on both sides of a sync, and a push's use of it.

Each item of a batch is written and checked alone, exactly as its own Put: a file changed
since the scan is refused (CHANGED) and kept, an unsafe path or a symlinked directory is
refused, and the other items land whole, with their mode and mtime, leaving no temp file.
The agent (a real one, a local subprocess) and the LocalEndpoint here answer alike. A push
of many small files (sync.lanes) then takes a few requests, not one per file.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_agent import with_agent
from tether.agent.fsops import DigestCache
from tether.agent.wire import PutBatch
from tether.core.manifest import DIR, FILE, Entry
from tether.core.plan import Upload
from tether.sync import lanes
from tether.sync.endpoint import Endpoint, LocalEndpoint, RemoteEndpoint
from tether.sync.local import Scope
from tether.transport.channel import AgentChannel


def _local(root: Path) -> LocalEndpoint:
    return LocalEndpoint(root, Scope.of((), (), ()), lambda: DigestCache(str(root), str(root)))


def _on_both_sides(root: Path, body: Any) -> Any:
    """body(endpoint) on `root` as written here (LocalEndpoint) or by the agent."""
    if root.name == "local":
        return asyncio.run(body(_local(root)))

    async def remote(channel: AgentChannel) -> Any:
        return await body(RemoteEndpoint(channel, str(root)))

    return with_agent(remote)


def _batch(root: Path) -> tuple[list[dict[str, Any]], bytes]:
    """A batch over a tree holding a file edited since its scan and a symlinked directory."""
    outside = root.parent / "outside"
    outside.mkdir()
    (root / "kept").mkdir(parents=True)
    (root / "kept" / "edited").write_bytes(b"edited on this side since the scan")
    os.symlink(outside, root / "link")
    stale = {"k": "file", "s": 3, "m": 1}
    items = [
        {"path": "pkg", "kind": "dir", "mode": 0o750},
        {"path": "pkg/a.py", "mode": 0o755, "mtime_ns": 10**18, "n": 5},
        {"path": "kept/edited", "mode": 0o644, "mtime_ns": 10**18, "expect": stale, "n": 3},
        {"path": "../escape", "mode": 0o644, "n": 1},
        {"path": "link/f", "mode": 0o644, "n": 1},
        {"path": "pkg/to-a", "kind": "link", "target": "a.py", "mode": 0o777},
        {"path": "pkg/sub/b.txt", "mode": 0o600, "mtime_ns": 2 * 10**18, "n": 2},
        {"path": "empty", "mode": 0o644, "mtime_ns": 10**18},
    ]
    return items, b"hello" + b"new" + b"x" + b"y" + b"bb"


@pytest.mark.parametrize("side", ["local", "remote"])
def test_each_item_of_a_batch_is_written_and_checked_alone(tmp_path: Path, side: str) -> None:
    root = tmp_path / side
    items, payload = _batch(root)

    async def body(endpoint: Endpoint) -> dict[str, Any]:
        header, _ = await endpoint.submit(PutBatch(str(root), items, payload))
        return header

    header = _on_both_sides(root, body)
    answers = header["answers"]
    kinds = [answer.get("kind") if not answer["ok"] else "ok" for answer in answers]
    assert kinds == ["ok", "ok", "changed", "unsafe", "unsafe", "ok", "ok", "ok"]
    assert (root / "pkg" / "a.py").read_bytes() == b"hello"
    assert (root / "pkg" / "sub" / "b.txt").read_bytes() == b"bb"
    assert (root / "empty").read_bytes() == b""
    assert os.readlink(root / "pkg" / "to-a") == "a.py"
    assert (root / "kept" / "edited").read_bytes() == b"edited on this side since the scan"
    assert list((tmp_path / "outside").iterdir()) == []
    assert not (tmp_path / "escape").exists()
    a, b = (root / "pkg" / "a.py").stat(), (root / "pkg" / "sub" / "b.txt").stat()
    assert (a.st_mode & 0o777, a.st_mtime_ns) == (0o755, 10**18)
    assert (b.st_mode & 0o777, b.st_mtime_ns) == (0o600, 2 * 10**18)
    assert ((root / "pkg").stat().st_mode & 0o777) == 0o750
    assert answers[1]["entry"]["s"] == 5 and answers[1]["entry"]["m"] == 10**18
    assert not [p for p in root.rglob("*") if ".tether-tmp." in p.name]


@pytest.mark.parametrize("wrong", [10, -3, "3"])
def test_items_past_a_wrong_length_are_refused_not_cut(tmp_path: Path, wrong: Any) -> None:
    root = tmp_path / "remote"
    items = [{"path": "a", "n": 3}, {"path": "b", "n": wrong}, {"path": "c", "n": 3}]

    async def body(channel: AgentChannel) -> dict[str, Any]:
        header, _ = await channel.submit(PutBatch(str(root), items, b"aaabbb"))
        return header

    answers = with_agent(body)["answers"]
    assert [answer["ok"] for answer in answers] == [True, False, False]
    assert {answer["kind"] for answer in answers[1:]} == {"protocol"}
    assert (root / "a").read_bytes() == b"aaa"
    assert sorted(p.name for p in root.iterdir()) == ["a"]


def test_a_push_of_small_files_takes_a_few_requests(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    rng = random.Random(5)
    count = 2000
    uploads = [Upload(f"d{i}", Entry(DIR, 0, 0, 0o755), None) for i in range(40)]
    for index in range(count):
        rel = f"d{index % 40}/f{index:04d}.py"
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(rng.randbytes(rng.randrange(0, 6000)))
        entry = Entry(FILE, (local / rel).stat().st_size, 10**18 + index, 0o644)
        uploads.append(Upload(rel, entry, None))
    answered: dict[str, dict[str, Any]] = {}

    def on_answer(header: dict[str, Any], action: str, path: str, entry: Entry, _: Any) -> None:
        answered[path] = header

    async def body(channel: AgentChannel) -> int:
        source = _local(local)
        await lanes.run(source, RemoteEndpoint(channel, str(remote)), [], uploads, on_answer, None)
        return sum(c._next_id for c in [channel, *channel.helpers()])

    requests = with_agent(body)
    assert set(answered) == {upload.path for upload in uploads}
    assert all(header["ok"] for header in answered.values())
    for upload in uploads[40:]:
        assert (remote / upload.path).read_bytes() == (local / upload.path).read_bytes()
        assert (remote / upload.path).stat().st_mtime_ns == upload.entry.mtime_ns
    # Hellos and scans aside, a request per batch of files (not one per file).
    assert requests <= 10 + (count + 40) // 100, requests
