"""The seam between push and pull (tether.sync.endpoint): both sides answer alike.

A LocalEndpoint (this machine, the agent's writer run here) and a RemoteEndpoint (a real
agent, started as a local subprocess) are driven through the same calls: each scans and
digests its tree, refuses a write or delete of a path changed since its scan with the same
CHANGED answer, keeps the changed file and leaves no temp file, and push and pull settle
that answer the same way (Report.refused: a conflict). A pull then meets a local edit made
while it runs, and refuses it exactly like that.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.harness.local_agent import with_agent
from tether.agent.fsops import DigestCache
from tether.agent.wire import Delete, ErrorKind, Op, Put
from tether.core.plan import Conflict, Plan
from tether.sync.endpoint import Endpoint, LocalEndpoint, RemoteEndpoint
from tether.sync.local import Scope
from tether.sync.pull import pull_pair
from tether.sync.session import Pair, Report, push_pair
from tether.sync.state import Base
from tether.transport.channel import AgentChannel

RACE = "changed since the scan"


def _tree(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.txt").write_text("scanned\n")
    (root / "pkg" / "b.txt").write_text("scanned too\n")


async def _refusals(side: Endpoint, root: Path, base: Base) -> dict[str, Any]:
    """Scan side, change two files behind its back, then write and delete them as scanned."""
    scanned = await side.scan(base, None)
    assert {"pkg", "pkg/a.txt", "pkg/b.txt"} <= set(scanned)
    scanned["pkg/a.txt"] = replace(scanned["pkg/a.txt"], digest=None)
    await side.digests(scanned, ["pkg/a.txt"])
    assert scanned["pkg/a.txt"].digest == hashlib.sha256(b"scanned\n").hexdigest()
    os.utime(root / "pkg" / "a.txt", ns=(1, 10**18))
    (root / "pkg" / "b.txt").write_text("edited meanwhile, longer\n")
    put = Put(
        side.root, "pkg/a.txt", expect=scanned["pkg/a.txt"].to_json(), payload=b"new\n", mode=0o644
    )
    delete = Delete(side.root, "pkg/b.txt", expect=scanned["pkg/b.txt"].to_json())
    answers = [await side.submit(put), await side.submit(delete)]
    report = Report("t", side.root, Plan())
    settled = [
        report.refused(side, Op.PUT, answers[0][0], "pkg/a.txt", RACE),
        report.refused(side, Op.DELETE, answers[1][0], "pkg/b.txt", RACE),
    ]
    return {
        "kinds": [header.get("kind") for header, _ in answers],
        "settled": settled,
        "conflicts": report.conflicts,
        "errors": report.errors,
        "a": (root / "pkg" / "a.txt").read_text(),
        "b": (root / "pkg" / "b.txt").read_text(),
        "temps": [p.name for p in root.rglob("*") if ".tether-tmp." in p.name],
    }


def test_a_change_since_the_scan_is_refused_alike_on_both_sides(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    _tree(here)
    _tree(there)
    cache = DigestCache(str(tmp_path / "cache"), str(here))
    local = LocalEndpoint(here, Scope.of((), (), ()), lambda: cache)
    base = Base(tmp_path / "base.json")

    async def remote_side(channel: AgentChannel) -> dict[str, Any]:
        return await _refusals(RemoteEndpoint(channel, str(there)), there, base)

    remote_result = with_agent(remote_side)
    local_result = asyncio.run(_refusals(local, here, base))
    assert remote_result == local_result
    assert local_result == {
        "kinds": [ErrorKind.CHANGED.value, ErrorKind.CHANGED.value],
        "settled": [True, True],
        "conflicts": [Conflict("pkg/a.txt", RACE), Conflict("pkg/b.txt", RACE)],
        "errors": [],
        "a": "scanned\n",
        "b": "edited meanwhile, longer\n",
        "temps": [],
    }


def test_a_local_edit_during_a_pull_is_a_conflict_and_kept(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "src").mkdir(parents=True)
    (local / "src" / "main.py").write_text("print('hi')\n")
    pair = Pair("t", local, str(remote), Scope.of((), (), ("outputs",)), ("outputs",))
    edited: list[str] = []

    def edit_the_next(_: int) -> None:
        # After the first pulled file lands, the user writes the second one here.
        if not edited:
            (local / "outputs" / "b.csv").write_text("written here during the pull\n")
            edited.append("outputs/b.csv")

    async def body(channel: AgentChannel) -> Report:
        pushed = await push_pair(channel, pair, local)
        assert pushed.created and not pushed.conflicts and not pushed.errors
        (remote / "outputs").mkdir()
        (remote / "outputs" / "a.csv").write_text("1\n")
        (remote / "outputs" / "b.csv").write_text("2\n")
        return await pull_pair(channel, pair, local, progress=edit_the_next)

    report = with_agent(body)
    assert edited == ["outputs/b.csv"]
    assert report.conflicts == [Conflict("outputs/b.csv", "changed locally during the pull")]
    assert (report.created, report.errors) == (1, [])
    assert (local / "outputs" / "a.csv").read_text() == "1\n"
    assert (local / "outputs" / "b.csv").read_text() == "written here during the pull\n"
    assert not [p for p in local.rglob("*") if ".tether-tmp." in p.name]
