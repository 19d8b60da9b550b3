"""tunnel and shell: port parsing, the -L spec, ssh -O argv and the remote shell script."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tether.cli.commands.remote import (
    control_argv,
    forward_spec,
    parse_ports,
    port_free,
    shell_script,
)
from tether.errors import UsageError


def test_parse_ports_and_forward_spec() -> None:
    assert parse_ports("6006") == (6006, 6006)
    assert parse_ports("8888:18888") == (8888, 18888)
    for bad in ("", "x", "0", "70000", "80:", "80:y", "-1"):
        with pytest.raises(UsageError):
            parse_ports(bad)
    assert forward_spec(6006, 16006) == "127.0.0.1:16006:127.0.0.1:6006"


def test_control_argv_uses_the_transport_control_path() -> None:
    from tether.transport.ssh import control_path

    argv = control_argv("box", "forward", "-L", "127.0.0.1:1:127.0.0.1:2")
    assert argv == ["ssh", "-o", f"ControlPath={control_path()}", "-O", "forward", "-L",
                    "127.0.0.1:1:127.0.0.1:2", "--", "box"]  # fmt: skip


def test_port_free() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert not port_free(taken.getsockname()[1])


@pytest.mark.parametrize("name", ["plain", "a b", "$(touch pwned)", "it's", "-x", "naïve ☃"])
def test_shell_script_lands_in_the_directory_and_quotes_it(tmp_path: Path, name: str) -> None:
    home = tmp_path / "home"
    target = home / name
    target.mkdir(parents=True)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    for path in (f"~/{name}", str(target)):
        script = shell_script(path, "pwd; exit 7")
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env,
                              cwd=tmp_path, check=False)  # fmt: skip
        assert done.returncode == 7, done.stderr
        assert done.stdout.strip() == str(target)
    assert not (tmp_path / "pwned").exists() and not (home / "pwned").exists()
    assert 'exec "${SHELL:-/bin/sh}" -l' in shell_script("~")


def test_shell_script_missing_directory_says_push_first(tmp_path: Path) -> None:
    script = shell_script("~/nowhere it's", "true")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env,
                          check=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        "tether: error: no project directory ~/nowhere it's on the remote, "
        "run `tether push` first\n"
    )
