"""Speculative uploads (tether.sync.speculate) in real pushes against a local agent.

A small edit leaves behind the scan request, before its answer; whatever the remote did
meanwhile, the result is the plan's: an unchanged remote takes the edit, a remote edit is
a conflict (kept), a remote that already holds the edit is "same", a deleted remote file
is created again, and nothing stays pending.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.harness.local_agent import with_agent
from tether.core.manifest import FILE, Entry
from tether.core.plan import Conflict, Plan, Upload
from tether.sync import speculate
from tether.sync.local import Scope
from tether.sync.session import Pair, Report, push_pair
from tether.transport.channel import AgentChannel, op_name


def _project(tmp_path: Path) -> tuple[Pair, Path, Path]:
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "pkg").mkdir(parents=True)
    for name in ("a.py", "b.py", "pkg/c.py"):
        (local / name).write_text(f"# {name}\n")
    return Pair("t", local, str(remote), Scope.of((), (), ())), local, remote


def _push_after(
    tmp_path: Path, change: Any
) -> tuple[list[tuple[str, str]], Report, Path, Path, Pair]:
    """First push, then change(local, remote), then a push whose requests are logged."""
    pair, local, remote = _project(tmp_path)
    events: list[tuple[str, str]] = []

    async def body(channel: AgentChannel) -> Report:
        first = await push_pair(channel, pair, local)
        assert first.created and not first.conflicts and not first.errors
        await asyncio.sleep(0.01)  # a rewrite below gets another mtime
        change(local, remote)
        submit = channel.submit

        def logged(request: Any) -> Any:
            future = submit(request)
            op = op_name(request)
            events.append(("submit", op))
            if op == "scan":
                future.add_done_callback(lambda _: events.append(("answer", "scan")))
            return future

        channel.submit = logged  # type: ignore[method-assign]
        return await push_pair(channel, pair, local)

    report = with_agent(body)
    return events, report, local, remote, pair


def _pending(local: Path) -> list[Path]:
    return list((local / ".tether").rglob("*.pending.json"))


def test_a_small_edit_leaves_before_the_scan_answers(tmp_path: Path) -> None:
    events, report, local, remote, _ = _push_after(
        tmp_path, lambda local, remote: (local / "a.py").write_text("edited here\n")
    )
    assert ("submit", "put") in events
    assert events.index(("submit", "put")) < events.index(("answer", "scan")), events
    assert [op for kind, op in events if kind == "submit"].count("put") == 1  # never twice
    assert (report.updated, report.created, report.conflicts, report.errors) == (1, 0, [], [])
    assert (remote / "a.py").read_text() == "edited here\n"
    assert not _pending(local)


def test_a_remote_edit_meanwhile_is_a_conflict_and_kept(tmp_path: Path) -> None:
    def change(local: Path, remote: Path) -> None:
        (local / "a.py").write_text("edited here\n")
        (remote / "a.py").write_text("edited on the remote, longer\n")

    events, report, local, remote, _ = _push_after(tmp_path, change)
    assert events.index(("submit", "put")) < events.index(("answer", "scan"))
    assert [c.path for c in report.conflicts] == ["a.py"]
    assert "changed on the remote" in report.conflicts[0].reason
    assert (remote / "a.py").read_text() == "edited on the remote, longer\n"
    assert report.updated == 0 and not report.errors
    assert not _pending(local)


def test_a_remote_already_holding_the_edit_is_the_same(tmp_path: Path) -> None:
    def change(local: Path, remote: Path) -> None:
        (local / "b.py").write_text("the same edit\n")
        (remote / "b.py").write_text("the same edit\n")

    _, report, local, remote, _ = _push_after(tmp_path, change)
    assert (report.updated, report.conflicts, report.errors) == (0, [], [])
    assert "b.py" in report.plan.same
    assert (remote / "b.py").read_text() == "the same edit\n"
    assert not _pending(local)


def test_a_file_deleted_on_the_remote_is_created_again(tmp_path: Path) -> None:
    def change(local: Path, remote: Path) -> None:
        (local / "pkg" / "c.py").write_text("edited\n")
        (remote / "pkg" / "c.py").unlink()

    _, report, local, remote, _ = _push_after(tmp_path, change)
    assert (report.created, report.updated, report.conflicts) == (1, 0, [])
    assert (remote / "pkg" / "c.py").read_text() == "edited\n"
    assert not _pending(local)


class _Answered:
    """A lane whose answers are all in already (for Speculation.finish alone)."""

    async def settle(self) -> None:
        return None


def test_a_write_that_landed_outside_the_plan_voids_the_plans_word(tmp_path: Path) -> None:
    from tether.sync.state import Base

    entry = Entry(FILE, 5, 7, 0o644, "1" * 64)
    sent = {
        "x": Upload("x", entry, Entry(FILE, 3, 1)),
        "y": Upload("y", entry, Entry(FILE, 3, 1)),
        "z": Upload("z", entry, Entry(FILE, 3, 1)),
    }
    answers = {
        "x": ({"ok": True}, "update", entry),  # the plan makes the same write
        "y": ({"ok": True}, "update", entry),  # landed though the plan saw a change
        "z": ({"ok": False, "kind": "changed"}, "update", entry),  # refused
    }
    plan = Plan(
        uploads=[Upload("x", entry, Entry(FILE, 3, 1)), Upload("w", entry, None)],
        conflicts=[Conflict("y", "changed on the remote"), Conflict("z", "changed")],
    )
    base = Base(tmp_path / "push.json", pending={"x": "1", "y": "1", "z": "1"})
    settled: list[str] = []
    speculation = speculate.Speculation(_Answered(), sent, answers)  # type: ignore[arg-type]
    rest, outside = asyncio.run(
        speculation.finish(plan, base, lambda header, action, path, entry: settled.append(path))
    )
    assert sorted(settled) == ["x", "y"] and outside == {"y"}
    assert [u.path for u in rest.uploads] == ["w"]
    assert [c.path for c in rest.conflicts] == ["z"]
    assert base.pending == {"x": "1", "y": "1"}  # settled by the push's own settle()
