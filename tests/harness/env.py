"""One isolated fake HOME for the whole test session, so tests never touch the real ~/.ssh.

OpenSSH finds ~/.ssh through the passwd entry (getpwuid), not $HOME, so $HOME alone is not
enough: every subprocess also gets nss_wrapper with a passwd copy whose home field for the
current user is the fake home (see /work/shared/notes/test-isolation.md). `setup()` checks
that `ssh -G` really reads the fake ~/.ssh/config before any test runs.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.hosts.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
INSTALL_NSS = "tether tests need nss_wrapper to isolate ~/.ssh: apt-get install libnss-wrapper"


class IsolationError(RuntimeError):
    """The fake HOME did not take effect; running tests would touch the real ~/.ssh."""


@dataclass
class TestEnv:
    """Where the session's fake machine-wide state lives."""

    home: Path
    runtime: Path
    passwd: Path
    nss_wrapper: str
    real_ssh_dir: Path
    real_ssh_snapshot: dict[str, bytes]
    saved_environ: dict[str, str] = field(default_factory=dict)

    @property
    def ssh_config(self) -> Path:
        """The fake ~/.ssh/config."""
        return self.home / ".ssh" / "config"

    @property
    def state_dir(self) -> Path:
        return self.home / ".local" / "state" / "tether"


def find_nss_wrapper() -> str | None:
    """The libnss_wrapper path, or None (same search as the sandbox uses)."""
    from tether.hosts.sandbox import find_nss_wrapper as find

    return find()


def setup() -> TestEnv:
    """Create the fake HOME, point os.environ at it and verify ssh honours it."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    nss = find_nss_wrapper()
    if nss is None:
        raise IsolationError(INSTALL_NSS)
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    real_ssh = real_home / ".ssh"
    home = Path(tempfile.mkdtemp(prefix="tt-", dir="/tmp"))
    home.chmod(0o700)
    runtime = home / "r"
    for sub in (".ssh", ".config", ".cache", ".local/state", ".local/share", "r", "x", ".nss"):
        (home / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    passwd = home / ".nss" / "passwd"
    _write_passwd(passwd, home)
    env = TestEnv(
        home=home,
        runtime=runtime,
        passwd=passwd,
        nss_wrapper=nss,
        real_ssh_dir=real_ssh,
        real_ssh_snapshot=_snapshot(real_ssh),
        saved_environ=dict(os.environ),
    )
    pythonpath = os.environ.get("PYTHONPATH", "")
    os.environ.update(
        {
            "HOME": str(home),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "TETHER_RUNTIME_DIR": str(runtime),
            "TMUX_TMPDIR": str(home / "x"),
            "LD_PRELOAD": nss,
            "NSS_WRAPPER_PASSWD": str(passwd),
            "NSS_WRAPPER_GROUP": "/etc/group",
            "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), pythonpath) if p),
            "TETHER_TEST_HOME": str(home),
        }
    )
    for name in ("XDG_RUNTIME_DIR", "SSH_AUTH_SOCK", "SSH_AGENT_PID", "TMUX", "TMUX_PANE"):
        os.environ.pop(name, None)
    # A runner that starts the tests with SIGINT ignored (a background job of a
    # non-interactive shell, as CI runners do) hands that on to every process a test starts,
    # and Python then never turns SIGINT into KeyboardInterrupt: a test's Ctrl-C would do
    # nothing (a push went on to the end, exit 0). The tests stand for a user at a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        verify(env)
    except BaseException:
        teardown(env)
        raise
    return env


def verify(env: TestEnv) -> None:
    """Fail unless ssh (in a subprocess) and tether (in this process) use the fake ~/.ssh."""
    config = env.ssh_config
    config.write_text("Host probe\n  HostName 127.0.0.42\n")
    config.chmod(0o600)
    try:
        result = subprocess.run(
            ["ssh", "-G", "probe"], capture_output=True, text=True, timeout=10, check=False
        )
    finally:
        config.unlink()
    lines = result.stdout.splitlines()
    if "hostname 127.0.0.42" not in lines:
        raise IsolationError(
            f"`ssh -G probe` did not read {config} (it would use the real ~/.ssh): "
            f"{result.stderr.strip() or 'no hostname 127.0.0.42 in its output'}"
        )
    known = [line for line in lines if line.startswith("userknownhostsfile ")]
    if not known or str(env.home) not in known[0]:
        raise IsolationError(f"ssh still uses the real known_hosts: {known}")
    from tether import paths

    if paths.ssh_dir() != env.home / ".ssh" or not str(paths.state_dir()).startswith(str(env.home)):
        raise IsolationError(f"tether.paths still points at the real home: {paths.ssh_dir()}")
    with contextlib.suppress(NotImplementedError):
        from tether.hosts import sshconfig

        if sshconfig.config_path() != config:
            raise IsolationError(
                f"tether.hosts.sshconfig.config_path() is {sshconfig.config_path()}, "
                f"not the test's {config}: it must follow $HOME in-process"
            )


def teardown(env: TestEnv) -> None:
    """Remove the fake HOME and give back the original environment."""
    shutil.rmtree(env.home, ignore_errors=True)
    os.environ.clear()
    os.environ.update(env.saved_environ)


def real_ssh_changed(env: TestEnv) -> list[str]:
    """Files of the real ~/.ssh that appeared, vanished or changed during the session."""
    now = _snapshot(env.real_ssh_dir)
    before = env.real_ssh_snapshot
    return sorted(name for name in set(now) | set(before) if now.get(name) != before.get(name))


def _snapshot(directory: Path) -> dict[str, bytes]:
    result: dict[str, bytes] = {}
    if not directory.is_dir():
        return result
    for path in directory.iterdir():
        with contextlib.suppress(OSError):
            if path.is_file():
                result[path.name] = path.read_bytes()
    return result


def _write_passwd(path: Path, home: Path) -> None:
    uid = os.getuid()
    lines = []
    found = False
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[2] == str(uid) and not found:
            fields[5] = str(home)
            found = True
            line = ":".join(fields)
        lines.append(line)
    if not found:
        user = os.environ.get("USER") or f"u{uid}"
        lines.append(f"{user}:x:{uid}:{os.getgid()}::{home}:/bin/sh")
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- leftover processes


def session_processes(env: TestEnv) -> list[tuple[int, str]]:
    """Live processes (other than this one) whose environment points into the fake HOME.

    Every process the harness or a test starts (ssh, sshd and its sessions, tmux, kernels)
    inherits HOME/TETHER_TEST_HOME from os.environ or gets a sandbox home under it.
    """
    home = str(env.home).encode()
    marks = (b"=" + home + b"/", b"=" + home + b"\0")
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if any(mark in environ for mark in marks):
            found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def wait_for_leftovers(env: TestEnv, grace_s: float = 3.0) -> list[tuple[int, str]]:
    """Session processes still alive after a short grace period."""
    deadline = time.monotonic() + grace_s
    left = session_processes(env)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = session_processes(env)
    return left


# ---------------------------------------------------------------- sandboxes and helpers


@contextlib.contextmanager
def sandbox_up(name: str) -> Iterator[Sandbox]:
    """`sandbox.up(name)` for the duration of the block; always `down` afterwards."""
    from tether.hosts import sandbox

    box = sandbox.up(name)
    try:
        yield box
    finally:
        sandbox.down(name)


DEFAULT_TRAIN = "print('train')\n"


def make_git_project(root: Path, train_source: str = DEFAULT_TRAIN) -> Path:
    """A small committed git repository: a package, train.py, README and .gitignore."""
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text('VERSION = "0.1"\n')
    (root / "pkg" / "model.py").write_text("def forward(x):\n    return 2 * x\n")
    (root / "train.py").write_text(train_source)
    (root / "README.md").write_text("# proj\n")
    (root / ".gitignore").write_text("data/\n*.ckpt\noutputs/\n__pycache__/\n")
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.name", "Tether Test"],
        ["git", "config", "user.email", "test@tether.invalid"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "initial"],
    ):
        subprocess.run(argv, cwd=root, check=True, capture_output=True, timeout=30)
    return root


def tether_argv(*args: str) -> list[str]:
    """The argv that runs the tether CLI from this checkout in a subprocess."""
    return [sys.executable, "-m", "tether", *args]


def run_tether(
    *args: str, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the tether CLI as a subprocess (isolated env), capturing text output."""
    return subprocess.run(
        tether_argv(*args),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ssh(
    alias: str, *command: str, timeout: float = 30, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Plain `ssh ALIAS COMMAND...` with the isolated environment."""
    return subprocess.run(
        ["ssh", *options, alias, *command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def trust_config(root: Path) -> None:
    """Trust root's tether.toml as `tether trust` would (the user wrote it by hand)."""
    from tether import config, trust

    trust.record(config.load(root, trusted=False))


def write_config(path: Path, text: str) -> None:
    """Write a project's tether.toml as its user would, then trust it (`tether trust`)."""
    path.write_text(text)
    trust_config(path.parent)
