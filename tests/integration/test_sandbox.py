"""The sandbox is a real remote: real sshd, real ssh, own home; and the harness proxy works."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import env as harness
from tests.harness.proxy import Proxy, drop_alias, proxied_alias
from tether.transport.ssh import control_path

pytestmark = pytest.mark.integration

HOME_PROBE = (
    'echo "$HOME"; pwd; '
    'python3 -c "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_dir)"; '
    'echo "$TMPDIR"; echo "$TMUX_TMPDIR"'
)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[-1].split()[:1] not in ([b"Z"], [b"X"])


def test_plain_ssh_reaches_the_sandbox(sandbox) -> None:
    result = harness.ssh(sandbox.name, "echo", "ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_remote_home_cwd_and_passwd_are_the_sandbox_home(sandbox) -> None:
    assert sandbox.nss_wrapper
    result = harness.ssh(sandbox.name, HOME_PROBE)
    assert result.returncode == 0, result.stderr
    home, cwd, pw_dir, tmpdir, tmux_tmpdir = result.stdout.splitlines()
    assert home == cwd == pw_dir == str(sandbox.home)
    assert tmpdir == str(sandbox.tmpdir)
    assert tmux_tmpdir == str(sandbox.tmux_tmpdir)
    # Short enough for unix sockets beneath them.
    assert len(f"{tmux_tmpdir}/tmux-{os.getuid()}/default") < 100


def test_sandbox_stanza_and_ls(sandbox, test_env) -> None:
    from tether.hosts import sandbox as sandbox_module

    text = test_env.ssh_config.read_text()
    assert f"Host {sandbox.name}" in text
    (info,) = [box for box in sandbox_module.ls() if box.name == sandbox.name]
    assert (info.port, info.pid, info.state, info.home) == (
        sandbox.port,
        sandbox.pid,
        "up",
        str(sandbox.home),
    )
    assert sandbox.dir.is_relative_to(test_env.state_dir)


def test_two_sandboxes_are_separate_machines(sandbox, sandbox2, tmux_socket) -> None:
    first = harness.ssh(sandbox.name, HOME_PROBE)
    second = harness.ssh(sandbox2.name, HOME_PROBE)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.splitlines()[0] == str(sandbox.home)
    assert second.stdout.splitlines()[0] == str(sandbox2.home)
    assert sandbox.home != sandbox2.home and sandbox.port != sandbox2.port
    # A tmux server in one sandbox is invisible from the other.
    started = harness.ssh(sandbox.name, f"tmux -L {tmux_socket} new-session -d -s s1 sleep 60")
    assert started.returncode == 0, started.stderr
    here = harness.ssh(sandbox.name, f"tmux -L {tmux_socket} has-session -t s1")
    there = harness.ssh(sandbox2.name, f"tmux -L {tmux_socket} has-session -t s1")
    assert here.returncode == 0, here.stderr
    assert there.returncode != 0


def test_down_leaves_nothing_behind(fresh_sandbox, test_env) -> None:
    from tether.hosts import sandbox as sandbox_module

    config = test_env.ssh_config
    original = config.read_bytes() if config.exists() else None
    mine = b"# my hosts\nHost other\n  HostName 10.0.0.1  # keep me\n\n"
    mine += b"Host *\n  ServerAliveInterval 30\n"
    before = (original or b"") + mine
    config.write_bytes(before)
    config.chmod(0o600)
    try:
        box = fresh_sandbox()
        assert config.read_bytes() != before
        assert harness.ssh(box.name, "true").returncode == 0
        # A ControlMaster at tether's ControlPath and a remote tmux server must go too.
        control = f"ControlPath={control_path()}"
        master = subprocess.Popen(
            ["ssh", "-o", "ControlMaster=yes", "-o", control, "-N", box.name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            check = ("-O", "check", "-o", control)
            _wait(lambda: harness.ssh(box.name, options=check).returncode == 0)
            assert harness.ssh(box.name, "tmux new-session -d -s j sleep 300").returncode == 0
            sandbox_module.down(box.name)
            master.wait(timeout=10)
        finally:
            if master.poll() is None:
                master.kill()
                master.wait(timeout=5)
        assert config.read_bytes() == before
        assert not _alive(box.pid)
        assert not _port_open(box.port)
        assert not box.dir.exists()
        assert not box.tmpdir.exists()
        assert box.name not in [info.name for info in sandbox_module.ls()]
        assert _processes_with(f"={box.home}".encode()) == []
    finally:
        current = config.read_bytes()
        if current.endswith(mine):
            config.write_bytes(current[: -len(mine)])


def test_down_gives_back_a_missing_config(fresh_sandbox, test_env) -> None:
    """With no ~/.ssh/config before `up`, there is none after `down`."""
    from tether.hosts import sandbox as sandbox_module

    config = test_env.ssh_config
    aside = config.with_name("config.test-aside")
    if config.exists():
        config.rename(aside)
    try:
        box = fresh_sandbox()
        assert config.exists()
        assert harness.ssh(box.name, "true").returncode == 0
        sandbox_module.down(box.name)
        assert not config.exists()
    finally:
        if aside.exists():
            aside.rename(config)


def _processes_with(mark: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_cli_up_existing_name_fails_with_one_error_line(sandbox) -> None:
    result = harness.run_tether("sandbox", "up", sandbox.name)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tether: error: ")
    assert "already up" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_up_ls_down_round_trip(test_env) -> None:
    import json

    name = f"tt-cli{os.getpid() % 10000}"
    up = harness.run_tether("sandbox", "up", name)
    try:
        assert up.returncode == 0, up.stderr
        assert harness.ssh(name, "echo", "ok").stdout == "ok\n"
        listed = harness.run_tether("sandbox", "ls", "--json")
        assert listed.returncode == 0, listed.stderr
        (row,) = [row for row in json.loads(listed.stdout) if row["name"] == name]
        assert row["state"] == "up" and row["port"] > 0 and row["home"].endswith("/home")
        table = harness.run_tether("sandbox", "ls")
        assert name in table.stdout
    finally:
        down = harness.run_tether("sandbox", "down", name)
    assert down.returncode == 0, down.stderr
    assert not _alive(row["pid"])
    again = harness.run_tether("sandbox", "down", name)
    assert again.returncode == 1 and again.stderr.startswith("tether: error: ")


def test_sandbox_help_has_examples() -> None:
    result = harness.run_tether("sandbox", "--help")
    assert result.returncode == 0
    assert "Examples:" in result.stdout and "tether sandbox up" in result.stdout


def test_ssh_through_the_proxy(sandbox, proxy, proxy_alias) -> None:
    result = harness.ssh(proxy_alias, "echo", "via-proxy")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "via-proxy\n"
    assert proxy.stats.connections >= 1
    assert proxy.stats.bytes_up > 0 and proxy.stats.bytes_down > 0


def test_proxy_delay_adds_round_trip_latency(sandbox, proxy, proxy_alias, test_env) -> None:
    control = f"ControlPath={control_path()}"
    proxy.set_delay(25)
    argv = ["ssh", "-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-o", control]
    master = subprocess.Popen(
        [*argv, "-N", proxy_alias],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        check = ("-O", "check", "-o", control)
        _wait(lambda: harness.ssh(proxy_alias, options=check).returncode == 0)
        timings = []
        for _ in range(3):
            start = time.monotonic()
            result = harness.ssh(proxy_alias, "true", options=("-o", control))
            timings.append(time.monotonic() - start)
            assert result.returncode == 0, result.stderr
        assert min(timings) >= 0.050, timings
        proxy.set_delay(0)
        start = time.monotonic()
        assert harness.ssh(proxy_alias, "true", options=("-o", control)).returncode == 0
        assert time.monotonic() - start < min(timings), "delay 0 should be faster"
    finally:
        harness.ssh(proxy_alias, options=("-O", "exit", "-o", control))
        try:
            master.wait(timeout=10)
        finally:
            if master.poll() is None:
                master.kill()
                master.wait(timeout=5)


def test_proxy_cut_kills_a_running_session_quickly(sandbox, proxy, proxy_alias) -> None:
    running = subprocess.Popen(
        ["ssh", proxy_alias, "echo $$; exec sleep 5"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    remote_pid = ""
    try:
        assert running.stdout is not None
        remote_pid = running.stdout.readline().strip()
        assert remote_pid.isdigit()
        start = time.monotonic()
        assert proxy.cut() >= 1
        code = running.wait(timeout=3)
        assert code != 0
        assert time.monotonic() - start < 2.0
        # New connections still work after a cut.
        assert harness.ssh(proxy_alias, "true").returncode == 0
    finally:
        if running.poll() is None:
            running.kill()
        running.wait(timeout=5)
        if remote_pid.isdigit():
            harness.ssh(sandbox.name, f"kill {remote_pid} 2>/dev/null; true")


def test_proxy_refuse_blocks_new_connections(sandbox, proxy, proxy_alias) -> None:
    proxy.refuse(True)
    try:
        result = harness.ssh(proxy_alias, "true", timeout=15)
        assert result.returncode == 255
        assert proxy.stats.refused >= 1
    finally:
        proxy.refuse(False)
    assert harness.ssh(proxy_alias, "true").returncode == 0


def test_second_proxy_alias_by_hand(sandbox) -> None:
    with Proxy("127.0.0.1", sandbox.port, delay_ms=5) as proxy:
        alias = proxied_alias(sandbox, proxy, alias=f"{sandbox.name}-hand")
        try:
            result = harness.ssh(alias, "echo", "$HOME")
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == str(sandbox.home)
        finally:
            drop_alias(alias)


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_without_nss_wrapper_home_still_set(fresh_sandbox, monkeypatch) -> None:
    from tether.hosts import sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module, "find_nss_wrapper", lambda: None)
    box = fresh_sandbox()
    assert not box.nss_wrapper
    result = harness.ssh(box.name, 'echo "$HOME"; echo "${LD_PRELOAD:-none}"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(box.home), "none"]
    (info,) = [info for info in sandbox_module.ls() if info.name == box.name]
    assert info.nss_wrapper is False


def test_missing_sshd_says_how_to_install(monkeypatch) -> None:
    from tether.errors import TetherError
    from tether.hosts import sandbox as sandbox_module
    from tether.hosts import sshd

    monkeypatch.setattr(sshd, "SSHD", "/nonexistent/sshd")
    with pytest.raises(TetherError, match="apt-get install openssh-server"):
        sandbox_module.up("tt-nosshd")
    assert not sandbox_module.sandbox_dir("tt-nosshd").exists()


def test_port_taken_shows_the_sshd_log_line(monkeypatch, test_env) -> None:
    from tether.errors import TetherError
    from tether.hosts import sandbox as sandbox_module
    from tether.hosts import sshd

    config = test_env.ssh_config
    before = config.read_bytes() if config.exists() else None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(sshd, "free_port", lambda: port)
        with pytest.raises(TetherError, match="Address already in use") as caught:
            sandbox_module.up("tt-taken")
    assert "sshd failed to start" in str(caught.value)
    assert not sandbox_module.sandbox_dir("tt-taken").exists()
    assert (config.read_bytes() if config.exists() else None) == before


@pytest.fixture
def bare_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a user whose home has no ~/.ssh at all (own passwd entry)."""
    home = Path(tempfile.mkdtemp(prefix="tb", dir="/tmp"))
    home.chmod(0o700)
    passwd = tmp_path_factory.mktemp("nss") / "passwd"
    harness._write_passwd(passwd, home)
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        TETHER_RUNTIME_DIR=str(home / "r"),
        NSS_WRAPPER_PASSWD=str(passwd),
    )
    try:
        yield env
    finally:
        with contextlib.suppress(Exception):  # whatever is still up goes down
            subprocess.run(harness.tether_argv("sandbox", "down", "tb-a", "tb-b"), env=env,
                           capture_output=True, timeout=120, check=False)  # fmt: skip
        _end_processes_under(home)  # even when `down` itself failed
        shutil.rmtree(home, ignore_errors=True)


def _end_processes_under(home: Path) -> None:
    """End (by pid) every process whose command line names a path under home."""
    from tether.hosts.processes import terminate

    mark = str(home).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if mark in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    terminate(pids)


@pytest.mark.parametrize("order", [("tb-a", "tb-b"), ("tb-b", "tb-a"), ("tb-a tb-b",)])
def test_any_number_of_sandboxes_in_any_order_leave_no_ssh_dir(
    bare_home: dict[str, str], order: tuple[str, ...]
) -> None:
    ssh_dir = Path(bare_home["HOME"]) / ".ssh"
    for name in ("tb-a", "tb-b"):
        up = subprocess.run(harness.tether_argv("sandbox", "up", name), env=bare_home,
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert up.returncode == 0, up.stderr
    assert (ssh_dir / "config").is_file()
    for names in order:
        down = subprocess.run(harness.tether_argv("sandbox", "down", *names.split()),
                              env=bare_home, capture_output=True, text=True, timeout=120,
                              check=False)  # fmt: skip
        assert down.returncode == 0, down.stderr
    assert not ssh_dir.exists(), sorted(p.name for p in ssh_dir.iterdir())
