"""Only permission bits cross: the agent never writes setuid, setgid or sticky, for files
or directories, and never reports them (DESIGN.md 5, invariant 10; issue #20 part 3)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

from tests.harness.local_agent import with_agent
from tether.agent.wire import Put, Scan
from tether.transport.channel import AgentChannel


def test_only_permission_bits_are_written_never_setuid_setgid_or_sticky(tmp_path: Path) -> None:
    root = tmp_path / "remote"

    async def body(channel: AgentChannel) -> list[dict[str, Any]]:
        common: dict[str, Any] = {"root": str(root), "expect": None}
        futures = [
            channel.submit(Put(path="tool", mode=0o6755, **common, payload=b"#!/bin/sh\n")),
            channel.submit(
                Put(path="big", mode=0o4755, offset=0, last=False, **common, payload=b"#!/bin/sh\n")
            ),
            channel.submit(
                Put(path="big", mode=0o4755, offset=10, last=True, **common, payload=b"more\n")
            ),
            channel.submit(Put(path="shared", kind="dir", mode=0o3775, **common, payload=b"")),
            channel.submit(Put(path="shared/sub", kind="dir", mode=0o1777, **common, payload=b"")),
        ]
        await channel.flush()
        return [header for header, _ in await asyncio.gather(*futures)]

    answers = with_agent(body)
    assert all(header["ok"] for header in answers), answers
    names = ("tool", "big", "shared", "shared/sub")
    modes = {name: stat.S_IMODE(os.lstat(root / name).st_mode) for name in names}
    assert modes == {"tool": 0o755, "big": 0o755, "shared": 0o775, "shared/sub": 0o777}
    # What the agent answers (recorded as the remote's state) carries no such bit either.
    assert [header["entry"]["p"] for header in answers if "entry" in header] == [
        0o755,
        0o755,
        0o775,
        0o777,
    ]


def test_a_scan_reports_only_permission_bits(tmp_path: Path) -> None:
    """A results file made setuid on the remote is scanned (and so pulled) without it."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared").chmod(0o3775)
    (tmp_path / "shared" / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "shared" / "run.sh").chmod(0o6755)

    async def body(channel: AgentChannel) -> dict[str, Any]:
        whole, _ = await channel.request(Scan(root=str(tmp_path), rows=False))
        only, _ = await channel.request(Scan(root=str(tmp_path), rows=True, only=["shared"]))
        return {"whole": whole["entries"], "only": {row[0]: row[4] for row in only["rows"]}}

    found = with_agent(body)
    assert found["whole"]["shared"]["p"] == 0o775
    assert found["whole"]["shared/run.sh"]["p"] == 0o755
    assert found["only"] == {"shared": 0o775, "shared/run.sh": 0o755}
