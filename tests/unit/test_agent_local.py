"""The agent over a local subprocess transport: protocol, atomic writes, checked deletes."""

from __future__ import annotations

import asyncio
import io
import os
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_agent import with_agent
from tether.agent.bundle import agent_zip
from tether.agent.wire import Delete, Hello, Put, Scan
from tether.transport.channel import AgentChannel, AgentError

Body = Callable[[AgentChannel], Awaitable[Any]]


def test_agent_is_installed_by_content_hash_and_reports_its_version() -> None:
    data, digest = agent_zip()
    info = with_agent(lambda channel: channel.ready())
    assert info["version"] == digest
    installed = Path.home() / ".cache" / "tether" / f"agent-{digest}.pyz"
    assert installed.read_bytes() == data


def test_the_agent_runs_from_an_unpacked_copy_that_keeps_its_bytecode() -> None:
    """A zipapp's modules are compiled again at every start (zipimport keeps no bytecode:
    ~35 ms of each agent start); the agent runs from its unpacked copy, whose __pycache__
    serves the next start."""
    data, digest = agent_zip()
    first = with_agent(lambda channel: channel.ready())
    unpacked = Path.home() / ".cache" / "tether" / f"agent-{digest}" / "tether_agent"
    assert sorted(p.name for p in unpacked.glob("*.py")) == sorted(
        name.rsplit("/", 1)[-1]
        for name in zipfile.ZipFile(io.BytesIO(data)).namelist()
        if name.startswith("tether_agent/")
    )
    compiled = {p.name.split(".")[0] for p in (unpacked / "__pycache__").glob("*.pyc")}
    assert {"server", "wire", "fsops", "scan"} <= compiled, compiled
    again = with_agent(lambda channel: channel.ready())
    assert again["version"] == first["version"] == digest


def test_a_corrupt_installed_agent_is_replaced_not_run() -> None:
    data, digest = agent_zip()
    with_agent(lambda channel: asyncio.sleep(0))
    installed = Path.home() / ".cache" / "tether" / f"agent-{digest}.pyz"
    installed.write_bytes(b"garbage")
    info = with_agent(lambda channel: channel.ready())
    assert info["version"] == digest
    assert installed.read_bytes() == data


def test_pipelined_writes_land_atomically_with_mode_and_mtime(tmp_path: Path) -> None:
    root = str(tmp_path / "remote")

    async def body(channel: AgentChannel) -> list[Any]:
        futures = [
            channel.submit(
                Put(
                    root=root,
                    path=f"a/b/f{i}",
                    mode=0o755 if i % 2 else 0o644,
                    mtime_ns=1_000_000_000 * (i + 1),
                    expect=None,
                    payload=f"content {i}".encode(),
                )
            )
            for i in range(200)
        ]
        await channel.flush()
        return list(await asyncio.gather(*futures))

    answers = with_agent(body)
    assert all(header["ok"] for header, _ in answers)
    for i in range(200):
        path = tmp_path / "remote" / "a" / "b" / f"f{i}"
        assert path.read_bytes() == f"content {i}".encode()
        assert (path.stat().st_mode & 0o777) == (0o755 if i % 2 else 0o644)
        assert path.stat().st_mtime_ns == 1_000_000_000 * (i + 1)
    assert not [p for p in (tmp_path / "remote").rglob("*") if ".tether-tmp." in p.name]


def test_chunked_write_is_invisible_until_the_last_chunk(tmp_path: Path) -> None:
    root = str(tmp_path)
    target = tmp_path / "big.bin"
    target.write_bytes(b"old")

    async def body(channel: AgentChannel) -> None:
        old = {"k": "file", "s": 3, "m": target.stat().st_mtime_ns}
        common = {"root": root, "path": "big.bin", "mode": 0o644, "expect": old}
        await channel.request(Put(offset=0, last=False, **common, payload=b"A" * 10))
        assert target.read_bytes() == b"old"
        await channel.request(Put(offset=10, last=True, **common, payload=b"B" * 10))

    with_agent(body)
    assert target.read_bytes() == b"A" * 10 + b"B" * 10


def test_write_refuses_when_the_file_changed_since_the_scan(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("remote edit")

    async def body(channel: AgentChannel) -> None:
        await channel.request(
            Put(root=str(tmp_path), path="f", mode=0o644, expect=None, payload=b"new")
        )

    with pytest.raises(AgentError) as caught:
        with_agent(body)
    assert caught.value.kind == "changed"
    assert (tmp_path / "f").read_text() == "remote edit"


def test_delete_only_if_unchanged_and_never_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "remote-only").write_text("keep")
    (tmp_path / "f").write_text("x")
    stale = {"k": "file", "s": 1, "m": 1}

    async def body(channel: AgentChannel) -> dict[str, Any]:
        root = str(tmp_path)
        with pytest.raises(AgentError):
            await channel.request(Delete(root=root, path="f", expect=stale))
        kept, _ = await channel.request(Delete(root=root, path="d", expect={"k": "dir"}))
        return kept

    kept = with_agent(body)
    assert (tmp_path / "f").exists()
    assert kept.get("kept") == "not empty"
    assert (tmp_path / "d" / "remote-only").read_text() == "keep"


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", "a//b", ""])
def test_paths_escaping_the_root_are_refused(tmp_path: Path, path: str) -> None:
    async def body(channel: AgentChannel) -> None:
        await channel.request(Put(root=str(tmp_path / "r"), path=path, expect=None, payload=b"x"))

    with pytest.raises(AgentError) as caught:
        with_agent(body)
    assert caught.value.kind == "unsafe"


def test_writes_never_go_through_a_symlinked_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")

    async def body(channel: AgentChannel) -> None:
        await channel.request(Put(root=str(root), path="link/f", expect=None, payload=b"x"))

    with pytest.raises(AgentError) as caught:
        with_agent(body)
    assert caught.value.kind == "unsafe"
    assert list(outside.iterdir()) == []


def test_scan_keeps_symlinks_as_links_and_removes_stale_temp_files(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("data")
    os.symlink("../../etc", tmp_path / "out")
    stale = tmp_path / ".f.tether-tmp.999999999.abcd"
    stale.write_text("half")

    async def body(channel: AgentChannel) -> dict[str, Any]:
        header, _ = await channel.request(Scan(root=str(tmp_path), digests=True, rows=False))
        return dict(header["entries"])

    entries = with_agent(body)
    assert entries["out"] == {
        "k": "link",
        "s": 0,
        "m": entries["out"]["m"],
        "p": 0o777,
        "t": "../../etc",
    }
    assert entries["f"]["d"] == "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"
    assert not stale.exists()
    assert not any(".tether-tmp." in name for name in entries)


def test_a_dropped_channel_fails_pending_requests_with_connection_lost() -> None:
    from tether.errors import ConnectionLost

    async def body(channel: AgentChannel) -> None:
        channel.process.kill()
        await channel.process.wait()
        await asyncio.sleep(0.05)
        await channel.request(Hello())

    with pytest.raises(ConnectionLost):
        with_agent(body)
