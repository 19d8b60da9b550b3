"""tether tunnel and tether shell against a real sandbox (sshd, ControlMaster)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ptys
from tests.harness.env import run_tether, ssh, tether_argv, write_config
from tests.integration.test_jobs import Cli
from tests.integration.test_jobs import remote_project as remote_project
from tether.hosts.sshd import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def http_server(sandbox: Any, remote_project: Path, tether_cli: Cli) -> Iterator[int]:
    """python -m http.server on the sandbox's 127.0.0.1, serving the pushed project."""
    assert tether_cli("push").returncode == 0
    (remote_project / "hello.txt").write_text("hello through the tunnel\n")
    port = free_port()
    command = (
        f"cd {remote_project} && {{ python3 -m http.server {port} --bind 127.0.0.1"
        " >/dev/null 2>&1 </dev/null & echo $!; }"
    )
    started = ssh(sandbox.name, command)
    pid = started.stdout.strip()
    assert started.returncode == 0 and pid.isdigit(), started.stderr
    try:
        fetch(port)  # the sandbox shares this machine's loopback: wait until it serves
        yield port
    finally:
        ssh(sandbox.name, f"kill {pid}")


def fetch(port: int, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=3) as page:
                text: str = page.read().decode()
                return text
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_tunnel_answers_before_and_after_the_master_goes(
    sandbox: Any, http_server: int, tether_cli: Cli
) -> None:
    from tether.transport.ssh import SshTransport

    local = free_port()
    while local == http_server:
        local = free_port()
    argv = tether_argv("tunnel", f"{http_server}:{local}")
    pipe = subprocess.PIPE
    tunnel = subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True)
    try:
        assert fetch(local) == "hello through the tunnel\n"
        SshTransport(sandbox.name).stop_master()
        time.sleep(0.3)
        assert fetch(local, timeout=30) == "hello through the tunnel\n"
        taken = tether_cli("tunnel", f"{http_server}:{local}")
        assert taken.returncode == 2
        assert taken.stderr.startswith(f"tether: error: local port {local} is taken")
    finally:
        tunnel.send_signal(signal.SIGINT)
        out, err = tunnel.communicate(timeout=30)
    assert tunnel.returncode == 0, err
    assert "re-made" in err and "tunnel closed" in err, err
    assert f"127.0.0.1:{local}" in out
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", local))  # the forward is gone


def test_shell_under_a_pty_lands_in_the_project_dir(remote_project: Path, tether_cli: Cli) -> None:
    assert tether_cli("push").returncode == 0
    pid, fd = pty.fork()
    if pid == 0:  # the child: tether shell on the pty
        argv = tether_argv("shell")
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    os.write(fd, b"echo WHERE=$(pwd); exit 7\n")
    seen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 7, seen
    assert f"WHERE={remote_project}".encode() in seen, seen


def test_attach_under_a_pty_shows_the_job_and_detaches(
    remote_project: Path, tether_cli: Cli
) -> None:
    job = "import time\nprint('JOB-SAYS-' + str(6 * 7), flush=True)\ntime.sleep(600)\n"
    started = tether_cli("run", "--name", "talk", "--", "python3", "-c", job)
    assert started.returncode == 0, started.stderr
    attached = ptys.spawn(tether_argv("attach", "talk"))
    try:
        attached.expect(b"JOB-SAYS-42")  # tmux's screen of the job's session
        ptys.tmux_detach(attached)
        assert attached.wait() == 0, attached.text()
    finally:
        attached.close()
    listed = json.loads(tether_cli("jobs", "--json").stdout)
    assert [j["state"] for j in listed if j["name"] == "talk"] == ["running"], listed


def test_shell_command_path_and_missing_directory(
    sandbox: Any, remote_project: Path, project: Path, tether_cli: Cli
) -> None:
    assert tether_cli("push").returncode == 0
    done = tether_cli("shell", "--command", "pwd; exit 3")
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == str(remote_project)
    config = project / "tether.toml"
    write_config(config, config.read_text().replace(remote_project.name, "never-pushed"))
    missing = tether_cli("shell", "--command", "true")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "tether: error: no project directory ~/never-pushed on the remote, run `tether push` first"
    )


def test_host_check_gives_up_after_ten_seconds_on_a_silent_host(sandbox: Any) -> None:
    import socket

    from tests.faults.test_bad_inputs import _stanza

    with socket.socket() as silent:  # accepts TCP, never says a word (a wedged sshd)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        alias = _stanza(sandbox, "tt-silent", Port=str(silent.getsockname()[1]))
        try:
            started = time.monotonic()
            done = run_tether("host", "check", alias, timeout=60)
            took = time.monotonic() - started
        finally:
            from tether.hosts import sshconfig

            sshconfig.remove_host(alias)
    assert done.returncode == 1, done.stderr
    assert "no answer within 10 s" in done.stderr, done.stderr
    assert took < 20, took
