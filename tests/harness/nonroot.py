"""Run tether as a throwaway normal user when the suite runs as root.

Much of what users hit only shows for a non-root user: ptys handed out by an unprivileged
sshd, the runtime dir /tmp/tether-<uid> without XDG_RUNTIME_DIR, PEP 668 pythons, other
users on the machine. `create()` makes one user per session:

- `useradd` of a unique `tt-nr-<hex>` with its own home under a session directory in /tmp
  (removed at the end with `userdel -r`); or the existing user named by
  $TETHER_TEST_NONROOT_USER (a user dedicated to these tests: it is kept, its processes
  are ended at the end);
- a venv made from the system's /usr/bin/python3 (the test's own python may live where
  other users cannot read, e.g. under /root) with this checkout installed in it, not
  editable: the user runs tether as a `pip install` would give it. Made once per session;
- a clean environment: its passwd home as HOME (ssh reads it through getpwuid, so no
  nss_wrapper is needed), no XDG_RUNTIME_DIR or TETHER_RUNTIME_DIR (tether's own default,
  /tmp/tether-<uid>), nothing of the root harness's isolation.

Commands run as the user through setgroups/setgid/setuid in the child (no PAM, no login).
`pty_spawn` runs one on a new pty that the user owns, as its terminal would be
(tests/harness/ptys.py).
`unavailable()` says why none of this can work here (not root, no useradd, ...).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import ptys
from tests.harness.ptys import PtyProcess
from tether.hosts.processes import alive, terminate

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
USER_ENV = "TETHER_TEST_NONROOT_USER"
MARK = "TETHER_TEST_NONROOT"
_ROOT_ONLY = ("useradd", "userdel")


class NonRootUnavailable(RuntimeError):
    """A throwaway user or its Python cannot be had here (the reason is the message)."""


def unavailable() -> str | None:
    """Why tests cannot run as a throwaway user here, or None if they can."""
    if os.geteuid() != 0:
        return (
            f"the suite runs as uid {os.geteuid()}, not root: it cannot create a throwaway "
            "user (the rest of the suite already runs as this normal user)"
        )
    if os.environ.get(USER_ENV):
        return None
    missing = [name for name in _ROOT_ONLY if shutil.which(name, path=_SBIN_PATH) is None]
    if missing:
        return f"no {' or '.join(missing)} on this machine to create a throwaway user"
    return None


_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin"


@dataclass
class NonRootUser:
    """A normal user that runs this checkout's tether (see the module docstring)."""

    name: str
    uid: int
    gid: int
    home: Path
    venv: Path
    base: Path | None  # the session directory we made (home and venv), or None if reused
    created: bool  # we ran useradd (so userdel -r at the end)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def runtime_dir(self) -> Path:
        """tether's runtime dir for this user without XDG_RUNTIME_DIR."""
        return Path(f"/tmp/tether-{self.uid}")

    def env(self, **extra: str) -> dict[str, str]:
        """The user's whole environment: a login's worth, nothing from the harness."""
        env = {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "SHELL": "/bin/bash",
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TERM": "xterm",
            "GIT_AUTHOR_NAME": "Tether Test",
            "GIT_AUTHOR_EMAIL": "test@tether.invalid",
            "GIT_COMMITTER_NAME": "Tether Test",
            "GIT_COMMITTER_EMAIL": "test@tether.invalid",
            MARK: self.token,
        }
        env.update(extra)
        return env

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        timeout: float = 120,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """argv as this user (cwd defaults to its home), output captured as text."""
        return subprocess.run(
            list(argv),
            cwd=cwd or self.home,
            env=env or self.env(),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=self.uid,
            group=self.gid,
            extra_groups=[self.gid],
        )

    def tether(
        self, *args: str, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`tether ARGS` as this user (the venv's console script)."""
        return self.run([str(self.venv / "bin" / "tether"), *args], cwd=cwd, timeout=timeout)

    def pty_spawn(self, argv: Sequence[str], *, cwd: Path | None = None) -> PtyProcess:
        """argv as this user on a new 24x80 pty it owns (its controlling terminal)."""
        return ptys.spawn(argv, cwd=cwd or self.home, env=self.env(), user=(self.uid, self.gid))

    def processes(self) -> list[tuple[int, str]]:
        """Live processes (not zombies) of this user: (pid, command line)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid != self.uid:
                    continue
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if alive(int(entry)):  # zombies too are left out (this init never reaps)
                found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace")))
        return found


def create() -> NonRootUser:
    """The session's user with its venv (see the module docstring); NonRootUnavailable if
    it cannot be had here."""
    why = unavailable()
    if why:
        raise NonRootUnavailable(why)
    base = Path(tempfile.mkdtemp(prefix="tt-nr-", dir="/tmp"))
    base.chmod(0o755)  # the user must reach its home and the venv beneath
    created = False
    name = os.environ.get(USER_ENV, "")
    try:
        if not name:
            name = f"tt-nr-{uuid.uuid4().hex[:8]}"
            _root(["useradd", "--create-home", "--home-dir", str(base / "home"),
                   "--shell", "/bin/bash", "--user-group", "--no-log-init", name])  # fmt: skip
            created = True
        uid = int(_root(["id", "-u", name]))
        gid = int(_root(["id", "-g", name]))
        home = Path(_root(["getent", "passwd", name]).split(":")[5])
        if uid == 0:
            raise NonRootUnavailable(f"{USER_ENV}={name} is root")
        venv = base / "venv"
        _make_venv(venv)
        return NonRootUser(name, uid, gid, home, venv, base, created)
    except BaseException:
        if created:
            _root(["userdel", "--remove", name], check=False)
        shutil.rmtree(base, ignore_errors=True)
        raise


def destroy(user: NonRootUser) -> list[str]:
    """End the user's sync daemon and every process left, remove its runtime dir, the user
    (if we made it) and the session directory. Returns what was still running."""
    with contextlib.suppress(Exception):  # `tether push` leaves its daemon (by design)
        user.run([str(user.venv / "bin" / "python"), "-c",
                  "from tether.cli import daemon; daemon.stop_all()"], timeout=30)  # fmt: skip
    left = user.processes()
    terminate([pid for pid, _ in left])
    shutil.rmtree(user.runtime_dir, ignore_errors=True)
    if user.created:
        done = _root(["userdel", "--remove", user.name], check=False)
        if "currently used" in done:  # a process we could not end: the user goes anyway
            _root(["userdel", "--force", "--remove", user.name], check=False)
    if user.base is not None:
        shutil.rmtree(user.base, ignore_errors=True)
    return [f"{pid} {cmdline[:160]}" for pid, cmdline in left]


def _make_venv(venv: Path) -> None:
    """A venv of the system python with this checkout installed (readable by everyone)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise NonRootUnavailable(f"no {SYSTEM_PYTHON} to make the user's venv from")
    made = subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], env=_root_env(),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    if made.returncode != 0:
        raise NonRootUnavailable(
            f"`{SYSTEM_PYTHON} -m venv` failed ({_last(made.stderr + made.stdout)}): "
            "run .ci/system-packages.sh (python3-venv)"
        )
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input",
           "--disable-pip-version-check", "--root-user-action=ignore", str(REPO)]  # fmt: skip
    done = subprocess.run(pip, env=_root_env(), capture_output=True, text=True, timeout=600,
                          check=False, cwd="/")  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"installing tether into {venv} failed: {_last(done.stderr)}")


def _root_env() -> dict[str, str]:
    """The harness's environment without its nss_wrapper and PYTHONPATH (for root's tools)."""
    drop = ("LD_PRELOAD", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("NSS_")}
    env["PATH"] = _SBIN_PATH
    return env


def _root(argv: list[str], check: bool = True) -> str:
    done = subprocess.run(argv, env=_root_env(), capture_output=True, text=True, timeout=60,
                          check=False, stdin=subprocess.DEVNULL)  # fmt: skip
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {_last(done.stderr)}")
    return done.stdout.strip() if done.returncode == 0 else done.stderr.strip()


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
