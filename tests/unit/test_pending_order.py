"""A push's writes leave before their pending record is written beside the base (a file
write that the remote's copy need not wait for), and that record is on disk before any
answer is read: a push killed mid-flight still finds what it may have written."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.harness.local_agent import with_agent
from tether.sync.local import Scope
from tether.sync.session import Pair, push_pair
from tether.transport.channel import AgentChannel, op_name


def _pending(local: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for file in (local / ".tether").rglob("*.pending.json"):
        found.update(json.loads(file.read_text()))
    return found


def test_a_watch_batch_leaves_before_its_pending_record_which_precedes_the_answer(
    tmp_path: Path,
) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "pkg").mkdir(parents=True)
    for name in ("a.py", "pkg/b.py"):
        (local / name).write_text(f"# {name}\n")
    pair = Pair("t", local, str(remote), Scope.of((), (), ()))
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def body(channel: AgentChannel) -> None:
        first = await push_pair(channel, pair, local)
        assert first.created and not first.conflicts and not first.errors
        await asyncio.sleep(0.01)  # the edit below gets another mtime
        (local / "a.py").write_text("edited\n")
        (local / "pkg" / "new.py").write_text("new\n")
        submit = channel.submit

        def logged(request: Any) -> Any:
            future = submit(request)
            op = op_name(request)
            if op.startswith("put"):
                seen.append(("submit", op, _pending(local)))
                future.add_done_callback(lambda _: seen.append(("answer", op, _pending(local))))
            return future

        channel.submit = logged  # type: ignore[method-assign]
        only = ["a.py", "pkg/new.py"]
        report = await push_pair(channel, pair, local, only=only, trust_base=True)
        assert not report.conflicts and not report.errors

    with_agent(body)
    kinds = [kind for kind, _, _ in seen]
    sent = kinds.count("submit")
    assert sent and kinds == ["submit"] * sent + ["answer"] * sent  # (directories, files)
    assert all(record == {} for _, _, record in seen[:sent])  # sent before the record ...
    for _, _, record in seen[sent:]:  # ... which is on disk before any answer is read
        assert set(record) == {"a.py", "pkg/new.py"}
    assert _pending(local) == {}
    assert (remote / "a.py").read_text() == "edited\n"
    assert (remote / "pkg" / "new.py").read_text() == "new\n"
