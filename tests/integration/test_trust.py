"""Someone else's repository (issue #20): trust before acting, values narrowed even when
trusted, private runtime dir, daemon peers checked.

A project is "cloned" by writing its tether.toml by hand (no `tether init`, no trust
record): every command that would contact a host or run a hook must refuse with one line
saying what the config would do, and leave no trace on either side, until `tether trust`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import env as harness
from tests.integration.conftest import (
    describe,
    end_masters,
    one_error_line,
    run_cli,
    unique_remote,
)

pytestmark = pytest.mark.integration


def clone(root: Path, toml: str) -> Path:
    """A project as it arrives from a clone: files and a tether.toml nobody trusted."""
    harness.make_git_project(root)
    (root / "tether.toml").write_text(toml)
    return root


def target(host: str, path: str, extra: str = "") -> str:
    return f"[targets.box]\nhost = {json.dumps(host)}\npath = {json.dumps(path)}\n" + extra


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A local directory next to the project, holding a secret."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token.txt").write_text("s3cret\n")
    return secrets


def test_an_untrusted_config_sends_and_runs_nothing_until_trusted(
    sandbox: Any, tmp_path: Path, outside: Path
) -> None:
    spec, remote = unique_remote(sandbox)
    drop = f"/tmp/tt-drop-{uuid.uuid4().hex[:8]}"
    marker = Path(sandbox.home) / f"notified-{uuid.uuid4().hex[:8]}"
    toml = target(sandbox.name, spec, "default = true\n")
    toml += f'\n[[targets.box.mappings]]\nlocal = "../secrets"\nremote = "{drop}"\n'
    toml += f'\n[jobs]\nnotify = "touch {marker}"\n'
    root = clone(tmp_path / "proj", toml)
    try:
        for argv in (("push",), ("status",), ("jobs",), ("run", "--", "true"), ("pull",)):
            done = run_cli(root, *argv)
            assert done.returncode == 1, describe(done)
            line = one_error_line(done)
            assert "not trusted yet" in line and "tether trust" in line, line
            assert str(outside) in line and drop in line, line  # what it would send where
            assert f"touch {marker}" in line, line  # the hook it would run
        assert not remote.exists() and not Path(drop).exists() and not marker.exists()
        assert not (root / ".tether").exists()

        shown = run_cli(root, "trust", "--show")
        assert shown.returncode == 0, describe(shown)
        assert "OUTSIDE the project" in shown.stdout and str(outside) in shown.stdout
        assert "not trusted" in shown.stdout
        assert run_cli(root, "push").returncode == 1, "--show recorded the trust"

        trusted = run_cli(root, "trust")
        assert trusted.returncode == 0, describe(trusted)
        assert f"touch {marker}" in trusted.stdout and drop in trusted.stdout
        pushed = run_cli(root, "push")
        assert pushed.returncode == 0, describe(pushed)
        assert (Path(drop) / "token.txt").read_text() == "s3cret\n"
        assert (remote / "train.py").is_file()
    finally:
        shutil.rmtree(drop, ignore_errors=True)


def test_a_changed_value_asks_again_naming_it(sandbox: Any, tmp_path: Path) -> None:
    spec, _ = unique_remote(sandbox)
    root = clone(tmp_path / "proj", target(sandbox.name, spec))
    assert run_cli(root, "trust").returncode == 0
    assert run_cli(root, "push").returncode == 0
    config = root / "tether.toml"
    # A change that decides nothing (results) needs no new trust; `python` does.
    config.write_text(config.read_text() + '\n[sync]\nresults = ["out/"]\n')
    assert run_cli(root, "push").returncode == 0
    config.write_text(config.read_text().replace("[sync]", 'python = "/usr/bin/python3"\n[sync]'))
    done = run_cli(root, "push")
    assert done.returncode == 1, describe(done)
    line = one_error_line(done)
    assert "changed since you trusted it" in line, line
    assert "targets.box.python is now '/usr/bin/python3' (was 'python3')" in line, line
    assert "tether trust" in line
    as_json = run_cli(root, "trust", "--show", "--json")
    report = json.loads(as_json.stdout)
    assert report["state"] == "changed" and report["recorded"] is False
    assert run_cli(root, "trust").returncode == 0
    assert run_cli(root, "push").returncode == 0, "trusting the change did not take"


def test_init_trusts_what_it_wrote(sandbox: Any, tmp_path: Path) -> None:
    root = harness.make_git_project(tmp_path / "proj")
    spec, remote = unique_remote(sandbox)
    assert run_cli(root, "init", "--host", sandbox.name, "--path", spec).returncode == 0
    done = run_cli(root, "push")
    assert done.returncode == 0, describe(done)
    assert (remote / "train.py").is_file()


def test_init_turns_a_locally_expanded_home_back_into_the_remote_home(
    sandbox: Any, tmp_path: Path
) -> None:
    # `tether init --path ~/proj` in a shell arrives as the LOCAL home's absolute path.
    root = harness.make_git_project(tmp_path / "proj")
    name = f"p-{uuid.uuid4().hex[:8]}"
    local_home = Path(os.environ["HOME"])
    done = run_cli(root, "init", "--host", sandbox.name, "--path", str(local_home / name))
    assert done.returncode == 0, describe(done)
    assert f'path = "~/{name}"' in (root / "tether.toml").read_text()


# ------------------------------------------------- narrowed even when trusted


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('python = """sh -c \'touch MARKER; exec python3 "$@"\' sh"""\n', "targets.box.python"),
        ('python = "bash"\n', "targets.box.python"),
        ('python = "python3; touch MARKER"\n', "targets.box.python"),
        ('\n[[targets.box.mappings]]\nlocal = "."\nremote = "~/.ssh"\n', "mappings[0].remote"),
        ('\n[[targets.box.mappings]]\nlocal = "."\nremote = "/etc/x"\n', "mappings[0].remote"),
        ('\n[[targets.box.mappings]]\nlocal = "."\nremote = "~"\n', "mappings[0].remote"),
    ],
)
def test_values_a_config_may_never_hold(sandbox: Any, tmp_path: Path, extra: str, key: str) -> None:
    spec, remote = unique_remote(sandbox)
    marker = Path(sandbox.home) / f"m-{uuid.uuid4().hex[:8]}"
    root = clone(
        tmp_path / "proj", target(sandbox.name, spec, extra.replace("MARKER", str(marker)))
    )
    ssh_dir = Path(sandbox.home) / ".ssh"
    before = sorted(p.name for p in ssh_dir.iterdir()) if ssh_dir.exists() else []
    trusted = run_cli(root, "trust")  # even the user's trust cannot make these valid
    assert trusted.returncode == 1, describe(trusted)
    for argv in (("push",), ("status",)):
        done = run_cli(root, *argv)
        assert done.returncode == 1, describe(done)
        assert key in one_error_line(done)
    assert not marker.exists() and not remote.exists()
    assert (sorted(p.name for p in ssh_dir.iterdir()) if ssh_dir.exists() else []) == before


def test_a_host_that_looks_like_an_option_never_reaches_ssh(sandbox: Any, tmp_path: Path) -> None:
    marker = tmp_path / "proxy-ran"
    host = f"-oProxyCommand=touch {marker}"
    root = clone(tmp_path / "proj", target(host, "~/x"))
    assert run_cli(root, "trust").returncode == 1
    for argv in (("push",), ("status",), ("shell",)):
        done = run_cli(root, *argv)
        assert done.returncode == 1, describe(done)
        line = one_error_line(done)
        assert "targets.box.host" in line and "ssh HOST" not in line, line
    # The same value reaching the transport through another door is refused there too.
    sys.path.insert(0, str(harness.SRC))
    from tether.errors import HostError
    from tether.transport.ssh import SshTransport

    with pytest.raises(HostError):
        SshTransport(host)
    assert not marker.exists()


def test_the_agent_refuses_the_remote_home_as_a_project(sandbox: Any, tmp_path: Path) -> None:
    # An absolute path the client cannot judge (it does not know the remote's home): the
    # agent checks it against its real $HOME before scanning or writing anything.
    home = Path(sandbox.home)
    before = sorted(p.name for p in home.iterdir())
    root = clone(tmp_path / "proj", target(sandbox.name, str(home)))
    assert run_cli(root, "trust").returncode == 0
    done = run_cli(root, "push")
    assert done.returncode == 1, describe(done)
    line = one_error_line(done)
    assert "refusing to use" in line and "home directory" in line, line
    assert sorted(p.name for p in home.iterdir()) == before


# ------------------------------------------------------------- runtime dir


@pytest.fixture
def runtime_parent() -> Iterator[Path]:
    parent = Path(tempfile.mkdtemp(prefix="trt", dir="/tmp"))
    try:
        yield parent
    finally:
        for runtime in parent.iterdir():
            end_masters(runtime)
        shutil.rmtree(parent, ignore_errors=True)


def _push_with_runtime(sandbox: Any, tmp_path: Path, runtime: Path) -> Any:
    spec, _ = unique_remote(sandbox)
    root = harness.make_git_project(tmp_path / "proj")
    harness.write_config(root / "tether.toml", target(sandbox.name, spec))
    env = {**os.environ, "TETHER_RUNTIME_DIR": str(runtime)}
    return subprocess.run(harness.tether_argv("push"), cwd=root, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_a_symlinked_runtime_dir_is_refused_and_its_target_untouched(
    sandbox: Any, tmp_path: Path, runtime_parent: Path
) -> None:
    elsewhere = runtime_parent / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    elsewhere.chmod(0o755)
    link = runtime_parent / "rt"
    link.symlink_to(elsewhere)
    done = _push_with_runtime(sandbox, tmp_path, link)
    assert done.returncode == 1, describe(done)
    line = one_error_line(done)
    assert "unsafe directory" in line and "symlink" in line, line
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755, "tether chmodded the link's target"
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("case", ["foreign", "world-writable"])
def test_a_runtime_dir_others_own_or_can_write_is_refused(
    sandbox: Any, tmp_path: Path, runtime_parent: Path, case: str
) -> None:
    runtime = runtime_parent / "rt"
    runtime.mkdir()
    if case == "foreign":
        if os.getuid() != 0:
            pytest.skip("needs root to make a directory another user owns")
        os.chown(runtime, 65534, 65534)
        runtime.chmod(0o700)
    else:
        runtime.chmod(0o777)
    done = _push_with_runtime(sandbox, tmp_path, runtime)
    assert done.returncode == 1, describe(done)
    line = one_error_line(done)
    assert "unsafe directory" in line, line
    assert list(runtime.iterdir()) == [], "tether used the directory anyway"


# ------------------------------------------------------------- daemon peers

_OTHER_CLIENT = """
import json, os, socket, sys
os.setgid(65534); os.setuid(65534)
conn = socket.socket(socket.AF_UNIX)
conn.settimeout(20)
conn.connect(sys.argv[1])
data = b""
try:
    conn.sendall(json.dumps({"op": sys.argv[2], "args": ["push"], "cwd": "/", "env": {}})
                 .encode() + b"\\n")
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
except (ConnectionResetError, BrokenPipeError):
    pass  # closed without a word (before or after the request went out)
sys.stdout.write(data.decode())
"""


def test_the_sync_daemon_answers_no_other_user(
    sandbox: Any, tmp_path: Path, runtime_parent: Path
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to connect as another uid (a throwaway user's process)")
    runtime = runtime_parent / "rt"
    done = _push_with_runtime(sandbox, tmp_path, runtime)
    assert done.returncode == 0, describe(done)
    (sock,) = runtime.glob("sync-*.sock")
    pid = int(sock.with_suffix(".pid").read_text())
    try:
        # Even if the directory and socket were opened up, the peer's uid is checked.
        runtime_parent.chmod(0o711)
        runtime.chmod(0o711)
        sock.chmod(0o666)
        for op in ("ping", "run"):
            argv = [sys.executable, "-c", _OTHER_CLIENT, str(sock), op]
            other = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            assert other.returncode == 0, other.stderr
            assert other.stdout == "", f"the daemon answered uid 65534: {other.stdout!r}"
        mine = socket.socket(socket.AF_UNIX)
        mine.settimeout(10)
        mine.connect(str(sock))
        mine.sendall(b'{"op": "ping"}\n')
        assert json.loads(mine.makefile("rb").readline())["pid"] == pid
        mine.close()
    finally:
        runtime.chmod(0o700)
        from tether.hosts.processes import terminate

        terminate([pid])
