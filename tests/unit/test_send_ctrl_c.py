"""Ctrl-C during `tether send` through the helper interrupts the remote cell wherever the
signal lands (while a line is read, or while an output is being printed), and a second
Ctrl-C leaves at once. A fake helper on a real unix socket; the signal is real."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether import clientwire
from tether.kernel import send


class Helper:
    """A helper's socket: reads the request, writes `lines` (frames), then waits for `release`."""

    def __init__(self, path: Path, lines: list[tuple[str, str]]) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.lines = lines
        self.release = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            request = json.loads(conn.recv(1 << 16))
            assert set(request) >= {"code", "root", "colour"}
            for kind, text in self.lines:
                conn.sendall(clientwire.frame(kind, text))
            self.release.wait(10)
            with contextlib.suppress(OSError):  # the send may have left (second Ctrl-C)
                conn.sendall(clientwire.frame(clientwire.EXIT, "1"))

    def close(self) -> None:
        self.release.set()
        self.thread.join(10)
        self.server.close()


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "h.sock"


class SignallingStdout(io.StringIO):
    """stdout that gets SIGINT while the first output is being written (inside render)."""

    def write(self, text: str) -> int:
        if not self.getvalue():
            os.kill(os.getpid(), signal.SIGINT)
        return super().write(text)


def stream(text: str) -> tuple[str, str]:
    return (clientwire.OUT, text)


def test_ctrl_c_while_an_output_is_printed_interrupts_the_remote_cell(
    sock_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper = Helper(sock_path, [stream("sleeping\n")])
    monkeypatch.setattr("sys.stdout", SignallingStdout())
    interrupted: list[bool] = []

    def interrupt() -> None:
        interrupted.append(True)
        helper.release.set()  # the kernel's cell ends with KeyboardInterrupt

    try:
        code = send.via_helper(sock_path, "import time; time.sleep(30)", tmp_path, interrupt)
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C left send without interrupting the remote cell")
    finally:
        helper.close()
    assert interrupted == [True]
    assert code == 130
    assert "sleeping" in sys.stdout.getvalue()  # type: ignore[attr-defined]  # shown


def test_a_second_ctrl_c_leaves_at_once(
    sock_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper = Helper(sock_path, [stream("sleeping\n")])
    monkeypatch.setattr("sys.stdout", SignallingStdout())
    calls: list[bool] = []

    def interrupt() -> None:  # the remote interrupt does not take: the user presses again
        calls.append(True)
        os.kill(os.getpid(), signal.SIGINT)

    try:
        with pytest.raises(KeyboardInterrupt):
            send.via_helper(sock_path, "while True: pass", tmp_path, interrupt)
    finally:
        helper.close()
    assert calls == [True]


def test_the_sigint_handler_is_given_back_after_a_send(sock_path: Path, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    helper = Helper(sock_path, [])
    helper.release.set()
    try:
        assert send.via_helper(sock_path, "1", tmp_path, lambda: None) == 1
    finally:
        helper.close()
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd left behind
