"""The console's is_complete check: the kernel's while the link is up, local otherwise."""

from __future__ import annotations

import queue
from typing import Any

import pytest
from jupyter_console.utils import run_sync

from tether.kernel.console import complete_through_link, local_complete
from tether.kernel.shell import sent_block


class FakeChannel:
    """A shell channel whose replies are queued by the test (blocking get_msg)."""

    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []

    def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        if not self.replies:
            raise queue.Empty
        return self.replies.pop(0)


class AsyncChannel(FakeChannel):
    """The same with a coroutine get_msg (jupyter_client's async client)."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        return FakeChannel.get_msg(self, timeout)


class FakeClient:
    def __init__(self) -> None:
        self.shell_channel = FakeChannel()
        self.asked: list[str] = []

    def is_complete(self, code: str) -> str:
        self.asked.append(code)
        return f"req-{len(self.asked)}"


class FakeShell:
    def __init__(self, channel: FakeChannel | None = None) -> None:
        self.client = FakeClient()
        if channel is not None:
            self.client.shell_channel = channel
        self.kernel_is_complete_timeout = 0.05
        self.use_kernel_is_complete = True
        self.check_complete: Any = None


def reply(msg_id: str, status: str, indent: str = "") -> dict[str, Any]:
    return {"parent_header": {"msg_id": msg_id}, "content": {"status": status, "indent": indent}}


def test_local_complete_uses_the_compiler() -> None:
    assert local_complete("x = 1\n") == (False, "")
    more, indent = local_complete("for i in range(3):\n")
    assert more and indent == "    "
    assert local_complete("x = )\n") == (False, "")  # invalid: run it, the kernel says why


def test_down_link_checks_locally_and_the_kernel_comes_back() -> None:
    shell = FakeShell()
    state = {"up": False}
    complete_through_link(shell, lambda: state["up"])
    check: Any = shell.check_complete

    assert check("if True:\n") == (True, "    ")
    assert check("x = 1\n") == (False, "")
    assert shell.client.asked == []  # nothing sent while down

    state["up"] = True
    shell.client.shell_channel.replies.append(reply("req-1", "incomplete", "  "))
    assert check("while x:\n") == (True, "  ")  # the kernel's answer again
    assert shell.client.asked == ["while x:\n"]
    assert shell.use_kernel_is_complete


@pytest.mark.parametrize("channel_class", [FakeChannel, AsyncChannel])
def test_a_timeout_falls_back_once_and_its_late_reply_is_dropped(
    channel_class: type[FakeChannel],
) -> None:
    shell = FakeShell(channel_class())
    complete_through_link(shell, lambda: True)
    check: Any = shell.check_complete

    assert check("class A:\n") == (True, "    ")  # no reply in time: local answer
    assert shell.use_kernel_is_complete
    channel = shell.client.shell_channel
    channel.replies += [reply("req-1", "incomplete"), reply("req-2", "complete")]
    assert check("y = 2\n") == (False, "")  # the late req-1 reply was skipped
    assert shell.client.asked == ["class A:\n", "y = 2\n"]
    assert channel.replies == []

    channel.replies.append(reply("exec-1", "ok"))
    got = run_sync(channel.get_msg)(timeout=0.1)  # others' messages pass through
    assert got["parent_header"]["msg_id"] == "exec-1"


def test_a_stale_reply_before_the_answer_is_skipped() -> None:
    shell = FakeShell()
    complete_through_link(shell, lambda: True)
    check: Any = shell.check_complete
    channel = shell.client.shell_channel
    channel.replies += [reply("probe-1", "ok"), reply("req-1", "incomplete", "  ")]
    assert check("def f():\n") == (True, "  ")  # the kernel's answer, not a local guess
    assert channel.replies == []


def test_a_sent_block_has_one_prefix_and_marked_continuation_lines() -> None:
    def text(lines: list[Any]) -> list[str]:
        return ["".join(part for _, part in tokens) for tokens in lines]

    assert text(sent_block("x = 1", 9)) == ["[send] In [9]: x = 1"]
    assert text(sent_block("for i in r:\n    f(i)\n\n", 10)) == [
        "[send] In [10]: for i in r:",
        "           ...:     f(i)",
    ]
    assert text(sent_block("# tether: train.py:41\nloss = step()\nprint(loss)", 3)) == [
        "[send train.py:41] In [3]: loss = step()",
        "                      ...: print(loss)",
    ]
