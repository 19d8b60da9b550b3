"""The wire catalogue (tether.agent.wire): the client names no op by string, every error kind
the agent raises is an ErrorKind with an entry in the one table, every op has one request
class and one handler, and an error answer becomes tether's error at the channel.
"""

from __future__ import annotations

import ast
import inspect
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.harness.local_agent import Raw, with_agent
from tether.agent import wire, wire_jobs
from tether.agent.bundle import agent_zip
from tether.agent.scan import ScanMemo
from tether.agent.server import Agent
from tether.agent.wire import TABLE, ErrorKind, Op, Put, Request
from tether.transport.channel import AgentChannel, AgentError

SRC = Path(__file__).resolve().parents[2] / "src" / "tether"
OPS = {op.value for op in Op}
# Calls whose string arguments are never ops, though some spell like one: a dict key
# (answer.get("digest")), a CLI command's name (app.command("status")), the demo running
# one (tour.cli("status")), and a push lane's action (lane.send("delete", ...)).
NOT_OPS = {"get", "pop", "setdefault", "command", "cli"}
NOT_OPS_IN = {("sync/lanes.py", "send")}


def ops_named_by_string(source: str, relative: str = "") -> list[str]:
    """'line: op' for each call given a string equal to an op's name as an argument: the
    channel's own methods and every helper an op passes through on its way there."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _called(node)
        if name in NOT_OPS or (relative, name) in NOT_OPS_IN:
            continue
        for arg in [*node.args, *(keyword.value for keyword in node.keywords)]:
            if isinstance(arg, ast.Constant) and arg.value in OPS:
                found.append(f"{node.lineno}: {arg.value}")
    return found


def test_the_op_check_sees_an_op_named_by_string() -> None:
    assert ops_named_by_string('await channel.request("scan", root=r)') == ["1: scan"]
    assert ops_named_by_string('ask(target, "kernel_list")') == ["1: kernel_list"]
    assert ops_named_by_string('request(channel, target, "job_show", name=n)') == ["1: job_show"]
    assert ops_named_by_string('self._about(channel, op="slurm_kill")') == ["1: slurm_kill"]
    assert ops_named_by_string("await channel.call(Scan(root))") == []
    assert ops_named_by_string('answer.get("digest")') == []


def test_no_client_module_names_an_op_by_string() -> None:
    naming = {}
    for source in sorted(SRC.rglob("*.py")):
        relative = source.relative_to(SRC).as_posix()
        if relative.startswith("agent/"):
            continue
        found = ops_named_by_string(source.read_text(), relative)
        if found:
            naming[relative] = found
    assert not naming, f"use channel.call(Request(...)) from tether.agent.wire: {naming}"


def test_the_channel_takes_only_requests() -> None:
    for method in (AgentChannel.request, AgentChannel.submit, AgentChannel.stream):
        assert list(inspect.signature(method).parameters) == ["self", "request"], method


def kinds_raised(source: str) -> tuple[set[str], list[str]]:
    """(the kinds an agent module raises, the raises whose kind is no ErrorKind member).

    A kind is read from OpError(kind, ...) and error_frame(kind, ...) as an ErrorKind
    member (`error.kind` passes one on; a bare string is refused); a subclass of OpError
    names its kind in its super().__init__."""
    tree = ast.parse(source)
    subclasses = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(getattr(base, "id", getattr(base, "attr", "")) == "OpError" for base in node.bases)
    ]
    raises = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _called(node) in ("OpError", "error_frame")
    ]
    for subclass in subclasses:
        raises += [
            node
            for node in ast.walk(subclass)
            if isinstance(node, ast.Call) and _called(node) == "__init__"
        ]
    kinds: set[str] = set()
    unread: list[str] = []
    for node in raises:
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Attribute) and getattr(first.value, "id", "") == "ErrorKind":
            kinds.add(getattr(getattr(ErrorKind, first.attr, None), "value", first.attr))
        elif not (isinstance(first, ast.Attribute) and first.attr == "kind"):
            unread.append(f"{node.lineno}: {ast.unparse(node)[:60]}")
    return kinds, unread


def _called(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def test_the_kind_check_reads_every_form_of_raise() -> None:
    source = (
        "class Failed(OpError):\n"
        "    def __init__(self, m):\n"
        "        super().__init__(ErrorKind.ENVBUILD, m)\n"
        "raise Failed('x')\n"
        "raise OpError(ErrorKind.NOJOB, 'x')\n"
        "raise fsops.OpError(ErrorKind.NOSPACE, 'x')\n"
        "raise OpError(kind, 'x')\n"
        "raise OpError(ErrorKind.NO_SUCH, 'x')\n"
        "raise OpError('nospace', 'x')\n"
    )
    kinds, unread = kinds_raised(source)
    assert kinds == {"envbuild", "nojob", "nospace", "NO_SUCH"}
    assert unread == ["7: OpError(kind, 'x')", "9: OpError('nospace', 'x')"]


def test_every_kind_the_agent_raises_is_an_error_kind() -> None:
    known = {kind.value for kind in ErrorKind}
    raised: set[str] = set()
    for source in sorted((SRC / "agent").glob("*.py")):
        kinds, unread = kinds_raised(source.read_text())
        assert not unread, f"{source.name}: a kind that is no ErrorKind member: {unread}"
        unknown = kinds - known
        assert not unknown, f"{source.name} raises {unknown}: add them to wire.ErrorKind"
        raised |= kinds
    assert {"nospace", "changed", "unsafe", "nojob", "envbuild", "internal"} <= raised


def handlers_named_by_string(source: str) -> list[str]:
    """'line: op' for each `handlers["op"]` (a handler is registered under Op.X.value)."""
    return [
        f"{node.lineno}: {node.slice.value}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Subscript)
        and getattr(node.value, "attr", getattr(node.value, "id", "")) == "handlers"
        and isinstance(node.slice, ast.Constant)
    ]


def test_every_handler_is_registered_under_its_op() -> None:
    assert handlers_named_by_string('agent.handlers["job_list"] = f') == ["1: job_list"]
    assert handlers_named_by_string("agent.handlers[Op.JOB_LIST.value] = f") == []
    naming = {}
    for source in sorted((SRC / "agent").glob("*.py")):
        found = handlers_named_by_string(source.read_text())
        if found:
            naming[source.name] = found
    assert not naming, f"register handlers under Op.X.value: {naming}"


def test_every_error_kind_has_one_table_entry_keeping_the_agents_words() -> None:
    assert set(TABLE) == set(ErrorKind)
    for kind, entry in TABLE.items():
        assert "{what}" in entry.message, kind


def test_every_op_has_one_request_class_and_one_handler() -> None:
    requests = [
        value
        for module in (wire, wire_jobs)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Request) and value is not Request
    ]
    ops = [request.OP for request in set(requests)]
    assert sorted(ops) == sorted(Op), "each op needs exactly one Request class"
    agent = Agent(io.BytesIO())
    agent.extend()
    assert set(agent.handlers) == OPS


def test_a_request_leaves_out_unset_fields_and_carries_its_payload() -> None:
    header, payload = Put("/r", "a.py", mode=0o644, last=True, payload=b"data").to_frame()
    assert header == {"op": "put", "root": "/r", "path": "a.py", "mode": 0o644, "last": True}
    assert payload == b"data"


def test_the_client_and_the_agent_forget_the_same_scans() -> None:
    memo = ScanMemo()
    for index in range(wire.SCAN_KEEP + 3):
        memo.answer(f"scan{index}", None, {"a": ["a", "file", 1, 1, 0o644, None, None]})
    assert len(memo.scans) == wire.SCAN_KEEP
    assert wire.scans_to_forget([1] * (wire.SCAN_KEEP + 3)) == 3
    assert wire.scans_to_forget([wire.SCAN_KEEP_ROWS, 5, 5]) == 1
    assert wire.scans_to_forget([wire.SCAN_KEEP_ROWS + 1]) == 0  # the newest stays


def test_the_catalogue_parses_as_python_3_8() -> None:
    for name in ("wire.py", "wire_jobs.py"):
        ast.parse((SRC / "agent" / name).read_text(), feature_version=(3, 8))


def test_an_error_answer_becomes_one_line_with_what_to_do(tmp_path: Path) -> None:
    async def body(channel: AgentChannel) -> Any:
        with pytest.raises(AgentError) as unsafe:
            await channel.call(Put(str(tmp_path), "../outside", payload=b"x"))
        with pytest.raises(AgentError) as unknown:
            await channel.request(Raw("no_such_op"))
        return unsafe.value, unknown.value

    unsafe, unknown = with_agent(body)
    assert unsafe.kind is ErrorKind.UNSAFE and unsafe.exit_code == 1
    assert unsafe.what == "unsafe path '../outside'"
    assert str(unsafe) == (
        "unsafe path '../outside' (on local), tether never writes outside the project tree"
    )
    assert unknown.kind is ErrorKind.UNKNOWN_OP
    assert "install the same tether version everywhere" in str(unknown)


def test_a_usage_kind_exits_2(tmp_path: Path) -> None:
    async def body(channel: AgentChannel) -> AgentError:
        with pytest.raises(AgentError) as bad:
            await channel.call(wire_jobs.KernelInfo("no/such name"))
        return bad.value

    bad = with_agent(body)
    assert bad.kind is ErrorKind.BADNAME and bad.exit_code == 2


def test_the_catalogue_ships_in_the_agent_zipapp() -> None:
    with zipfile.ZipFile(io.BytesIO(agent_zip()[0])) as archive:
        names = set(archive.namelist())
    assert {"tether_agent/wire.py", "tether_agent/wire_jobs.py"} <= names


def test_the_job_ops_that_answer_records_answer_them_typed(tmp_path: Path) -> None:
    async def body(channel: AgentChannel) -> tuple[Any, Any]:
        listed = await channel.call(wire_jobs.JobList(root=str(tmp_path)))
        removed = await channel.call(wire_jobs.JobRm(["no-such-job"], root=str(tmp_path)))
        return listed, removed

    listed, removed = with_agent(body)
    assert listed == []
    assert [entry["name"] for entry in removed] == ["no-such-job"]


@pytest.mark.parametrize("count", [0, 3, 4096, 4097, 10_000])
def test_a_long_rows_list_is_encoded_in_chunks_into_the_same_frame(count: int) -> None:
    import json

    from tether.agent.protocol import ROWS_CHUNK, encode_parts, read_frame

    rows = [[f"d/f{i} é", "file", i, 10**18 + i, 0o644, None, None] for i in range(count)]
    for header in ({"id": 7, "token": "t", "rows": rows, "exists": True}, {"rows": rows}):
        parts = encode_parts(header, b"pay")
        frame = read_frame(io.BytesIO(b"".join(parts)))
        assert frame is not None and frame[1] == b"pay"
        assert frame[0] == dict(header, n=3)
        assert json.loads(b"".join(parts[1:-1])) == dict(header, n=3)
        assert count <= ROWS_CHUNK or len(parts) > 4, "a long list comes in pieces"


def test_a_scan_answer_shares_its_path_and_digest_objects() -> None:
    # 100,000 files: the remote's rows, the local manifest and the base hold each path and
    # digest once (interned), not one decoded copy per manifest.
    import json
    import sys

    digest = "ab" * 32
    frame = json.dumps({"token": "t", "rows": [["a/b.py", "file", 1, 2, 420, digest, None]],
                        "exists": True, "root": "/r"})  # fmt: skip
    answer = wire.Scan("/r").answer(json.loads(frame), b"")
    assert answer.rows[0][0] is sys.intern("".join(["a/", "b.py"]))
    assert answer.rows[0][5] is sys.intern("".join(["ab"] * 32))
