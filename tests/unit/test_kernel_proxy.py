"""The kernelspec and its proxy's message handling, the send marks, plain tracebacks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tether.config import Target
from tether.kernel import names, proxy, send, spec
from tether.kernel.output import strip_ansi

HEADER = json.dumps({"msg_id": "m1", "msg_type": "execute_request"}).encode()
BODY = [HEADER, b"{}", b"{}", b'{"code": "1"}']


def signed(signer: proxy.Signer, idents: list[bytes], buffers: list[bytes] = ()) -> list[bytes]:  # type: ignore[assignment]
    return [*idents, proxy.DELIM, signer.sign(BODY), *BODY, *buffers]


def test_a_message_signed_by_the_frontend_is_signed_again_with_the_kernels_key() -> None:
    front, back = proxy.Signer("front-key"), proxy.Signer("back-key")
    frames = signed(front, [b"client"], [b"buffer"])
    again = proxy.resign(frames, front, back)
    assert again == signed(back, [b"client"], [b"buffer"])  # idents and buffers kept


def test_a_message_not_signed_with_the_frontends_key_is_dropped() -> None:
    front, back = proxy.Signer("front-key"), proxy.Signer("back-key")
    assert proxy.resign(signed(proxy.Signer("other"), [b"c"]), front, back) is None
    assert proxy.resign([b"c", b"no delimiter"], front, back) is None
    assert proxy.resign([proxy.DELIM, b"sig", HEADER], front, back) is None  # too short


def test_the_signature_scheme_of_the_connection_file_is_used() -> None:
    import hashlib
    import hmac

    signer = proxy.Signer("k", "hmac-sha512")
    assert signer.sign(BODY) == hmac.new(b"k", b"".join(BODY), hashlib.sha512).hexdigest().encode()
    assert proxy.Signer("").sign(BODY) == b""  # no key: unsigned, as Jupyter does


def test_header_of_reads_the_msg_type() -> None:
    assert proxy.header_of(signed(proxy.Signer("k"), [b"c"]))["msg_type"] == "execute_request"
    assert proxy.header_of([b"junk"]) == {}


def test_addresses_follow_the_connection_files_transport() -> None:
    assert proxy.address({"ip": "127.0.0.1", "shell_port": 5}, "shell_port") == "tcp://127.0.0.1:5"
    ipc = {"transport": "ipc", "ip": "/r/k-ab", "shell_port": 1}
    assert proxy.address(ipc, "shell_port") == "ipc:///r/k-ab-1"


def test_a_restart_note_is_taken_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_RUNTIME_DIR", str(tmp_path / "r"))
    (tmp_path / "r").mkdir(mode=0o700)
    connection = str(tmp_path / "kernel-1.json")
    assert not proxy.take_restart_note(connection)
    proxy.restart_note(connection).write_text("now")
    assert proxy.take_restart_note(connection)
    assert not proxy.take_restart_note(connection)


def test_the_kernelspec_runs_the_proxy_for_the_project_and_target(tmp_path: Path) -> None:
    target = Target(name="GPU box", host="gpu1", path="~/p", python="python3")
    tag = names.project_tag(target)
    assert spec.spec_name(target) == f"tether-gpu-box-{tag}"
    assert spec.spec_name(target, "scratch") == f"tether-gpu-box-scratch-{tag}"
    elsewhere = Target(name="GPU box", host="gpu1", path="~/q", python="python3")
    assert spec.spec_name(elsewhere) != spec.spec_name(target)  # another project: another spec
    data = spec.kernel_json(tmp_path / "proj", target)
    assert data["argv"][:3] == [sys.executable, "-m", "tether.kernel.proxy"]
    assert data["argv"][-1] == "{connection_file}"
    assert data["argv"][data["argv"].index("--on") + 1] == "GPU box"
    assert data["display_name"] == "tether: GPU box (proj)"
    assert data["interrupt_mode"] == "message"


def test_the_kernelspec_goes_to_jupyter_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    target = Target(name="gpu", host="gpu1", path="~/p", python="python3")
    installed, replaced = spec.install(tmp_path, target)
    directory = tmp_path / "data/kernels" / f"tether-gpu-{names.project_tag(target)}"
    written = json.loads((directory / "kernel.json").read_text())
    assert installed.path == directory and replaced == []
    assert written == spec.kernel_json(tmp_path, target)


def test_a_sent_range_is_marked_with_its_file_and_first_line() -> None:
    assert send.marked("x = 1\n", "train.py", 40) == "# tether: train.py:40\nx = 1\n"
    assert send.marked("  \n", "train.py", 40) == "  \n"  # nothing to run: nothing sent
    assert send.marked("x = 1\n", "bad\nname.py", 1) == "x = 1\n"


def test_ansi_escapes_are_stripped_for_plain_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        "\x1b[31mZeroDivisionError\x1b[39m \x1b[38;5;28;01mfor\x1b[0m \x1b]8;;f\x07link\x1b]8;;\x07"
    )
    assert strip_ansi(text) == "ZeroDivisionError for link"

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert send.coloured(Tty())
    assert not send.coloured(object())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not send.coloured(Tty())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not send.coloured(Tty())
