"""A throwaway local `sshd` that behaves like a separate remote machine.

`up(NAME)` starts OpenSSH's own `sshd` on 127.0.0.1 (free port, own host key and user
key) with a home directory of its own, and adds `Host NAME` to ~/.ssh/config. The
remote side sees that home everywhere: `$HOME`, the session's working directory and
`getpwuid()` all point at it, thanks to nss_wrapper given to sshd and to its sessions
(its group file has no `tty` group, so a sandbox a normal user starts gives ptys too:
sandbox_nss).
Each sandbox also gets its own `TMPDIR`/`TMUX_TMPDIR`, so the tmux servers of two
sandboxes stay apart as on two machines. `down(NAME)` leaves nothing behind: no process,
no listening port, and ~/.ssh/config byte-identical to what it was before `up`.

Everything lives under `state_dir()/sandboxes/NAME`.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tether import invocation, paths
from tether.errors import TetherError
from tether.hosts import footprint, sandbox_nss, sshd
from tether.hosts.processes import marked_processes, run_quiet, terminate
from tether.transport.ssh import control_path

READY_TIMEOUT_S = 10.0
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
NSS_WRAPPER_CANDIDATES = (
    "/usr/lib/*/libnss_wrapper.so",
    "/usr/lib*/libnss_wrapper.so",
    "/usr/local/lib*/libnss_wrapper.so",
)
# Longest suffix a program may put under TMPDIR/TMUX_TMPDIR for a unix socket
# ("tmux-65534/default", "kernel-<uuid>-ipc-1", ...), against the 104-byte limit.
_SOCKET_SLACK = 56
_UNIX_PATH_MAX = 104

_SSH_PROBE = ("ssh", "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "ConnectTimeout=5")


class SandboxError(TetherError):
    """A sandbox cannot be started, found or stopped."""

    def __init__(self, name: str, why: str, todo: str = "") -> None:
        self.name = name
        super().__init__(f"sandbox {name!r}", why, todo)


@dataclass(frozen=True)
class Sandbox:
    """A running sandbox: where its files are and how to reach it."""

    name: str
    port: int
    pid: int
    user: str
    dir: Path
    home: Path
    tmpdir: Path
    tmux_tmpdir: Path
    sshd_config: Path
    log: Path
    identity_file: Path
    known_hosts: Path
    host_key_pub: str
    nss_wrapper: bool

    def ssh_options(self) -> list[tuple[str, str]]:
        """The options of its `Host NAME` stanza in ~/.ssh/config, in order."""
        return [
            ("HostName", "127.0.0.1"),
            ("Port", str(self.port)),
            ("User", self.user),
            ("IdentityFile", str(self.identity_file)),
            ("IdentitiesOnly", "yes"),
            ("UserKnownHostsFile", str(self.known_hosts)),
            ("StrictHostKeyChecking", "yes"),
            ("BatchMode", "yes"),
        ]


@dataclass(frozen=True)
class SandboxInfo:
    """One line of `tether sandbox ls`."""

    name: str
    port: int
    pid: int
    state: str  # "up" or "dead"
    home: str
    nss_wrapper: bool

    def to_json(self) -> dict[str, object]:
        """A plain dict for `--json` output."""
        return asdict(self)


def up(name: str) -> Sandbox:
    """Start sandbox NAME, add `Host NAME` to ~/.ssh/config, return once `ssh NAME` works."""
    from tether.hosts import sshconfig

    _check_name(name)
    if not os.access(sshd.SSHD, os.X_OK):
        raise SandboxError(
            name,
            f"{sshd.SSHD} is not installed",
            "install OpenSSH's server: `apt-get install openssh-server`",
        )
    with _lock():
        directory = sandbox_dir(name)
        if directory.exists():
            meta = _read_meta(directory)
            if meta is not None and sshd.is_our_sshd(_int(meta, "pid"), directory):
                raise SandboxError(
                    name, "is already up", f"use it, or run `tether sandbox down {name}` first"
                )
            # A stale sandbox (its sshd died, e.g. after a reboot): clear it first.
            _teardown(name, directory, meta or {})
        footprint.remember(sandboxes_root())
        sandbox = _create(name, directory)
        existed = sshconfig.config_path().exists()
        _write_meta(sandbox, ssh_config_existed=existed)
        added = False
        try:
            for line in sshconfig.add_host(name, sandbox.ssh_options()):
                _warn(line)
            added = True
            _wait_ready(sandbox)
        except BaseException:
            if added:
                with contextlib.suppress(Exception):
                    _remove_stanza(name, existed)
            _stop_processes(sandbox.dir, sandbox.pid, sandbox.tmux_tmpdir)
            _remove_dirs(sandbox.dir, sandbox.tmpdir.parent)
            raise
        return sandbox


def down(name: str) -> None:
    """Stop sandbox NAME, end every process it started, remove its stanza and its files."""
    _check_name(name)
    with _lock():
        directory = sandbox_dir(name)
        meta = _read_meta(directory) if directory.exists() else None
        if meta is None and not directory.exists():
            raise SandboxError(name, "no such sandbox", "see `tether sandbox ls`")
        _teardown(name, directory, meta or {})


def ls() -> list[SandboxInfo]:
    """Every sandbox with its port, sshd pid, state and remote home."""
    root = sandboxes_root()
    result = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = _read_meta(directory) or {}
        pid = _int(meta, "pid")
        result.append(
            SandboxInfo(
                name=directory.name,
                port=_int(meta, "port"),
                pid=pid,
                state="up" if sshd.is_our_sshd(pid, directory) else "dead",
                home=str(meta.get("home", directory / "home")),
                nss_wrapper=bool(meta.get("nss_wrapper", False)),
            )
        )
    return result


def get(name: str) -> Sandbox:
    """The Sandbox record of NAME as written by `up` (running or not)."""
    _check_name(name)
    meta = _read_meta(sandbox_dir(name))
    if meta is None:
        raise SandboxError(name, "no such sandbox", "see `tether sandbox ls`")
    return _from_meta(name, meta)


def sandboxes_root() -> Path:
    """`state_dir()/sandboxes`, created 0700."""
    root = paths.state_dir() / "sandboxes"
    root.mkdir(mode=0o700, exist_ok=True)
    return root


def sandbox_dir(name: str) -> Path:
    """Where sandbox NAME keeps its keys, config, log, pidfile and home."""
    return sandboxes_root() / name


def find_nss_wrapper() -> str | None:
    """The path of libnss_wrapper if it is installed, else None."""
    for pattern in NSS_WRAPPER_CANDIDATES:
        for candidate in sorted(glob.glob(pattern)):
            if os.path.isfile(candidate):
                return candidate
    return None


def _create(name: str, directory: Path) -> Sandbox:
    """Write keys and config, start sshd (retrying if its port was taken meanwhile)."""
    directory.mkdir(mode=0o700, parents=True)
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
        home = directory / "home"
        home.mkdir(mode=0o755)
        tmpdir = _short_dir(directory)
        tmux_tmpdir = tmpdir / "x"
        (tmpdir / "t").mkdir(mode=0o700, parents=True, exist_ok=True)
        tmux_tmpdir.mkdir(mode=0o700, exist_ok=True)
        host_key = directory / "host_ed25519"
        identity = directory / "id_ed25519"
        _keygen(name, host_key, f"tether-sandbox-{name}-host")
        _keygen(name, identity, f"tether-sandbox-{name}")
        (directory / "authorized_keys").write_bytes(identity.with_suffix(".pub").read_bytes())
        host_key_pub = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
        nss = find_nss_wrapper()
        if nss is not None:
            sshd.write_passwd(directory / "passwd", os.getuid(), user, home)
            sandbox_nss.write_group(directory / "group")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)

        logged: list[str] = []
        for _attempt in range(4):
            port = sshd.free_port()
            config = directory / "sshd_config"
            config.write_text(
                sshd.sshd_config(directory, port, home, tmpdir / "t", tmux_tmpdir, nss), "utf-8"
            )
            (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key_pub}\n")
            env = sshd.session_env(directory, home, tmpdir / "t", tmux_tmpdir, nss)
            pid, logged = sshd.start_sshd(directory, config, port, env)
            if pid:
                sandbox = Sandbox(
                    name=name,
                    port=port,
                    pid=pid,
                    user=user,
                    dir=directory,
                    home=home,
                    tmpdir=tmpdir / "t",
                    tmux_tmpdir=tmux_tmpdir,
                    sshd_config=config,
                    log=directory / "sshd.log",
                    identity_file=identity,
                    known_hosts=directory / "known_hosts",
                    host_key_pub=host_key_pub,
                    nss_wrapper=nss is not None,
                )
                _write_meta(sandbox)
                return sandbox
            if not any("Address already in use" in line for line in logged):
                break
        taken = [line for line in logged if "Address already in use" in line]
        why = (taken or logged or ["no message in its log"])[-1]
        raise SandboxError(
            name,
            f"sshd failed to start: {why}",
            "free the port and try again" if taken else f"see {directory / 'sshd.log'}",
        )
    except BaseException:
        _remove_dirs(directory, _short_dir(directory))
        raise


def _keygen(name: str, path: Path, comment: str) -> None:
    result = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=invocation.spawn_env(),
    )
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["ssh-keygen failed"])[-1]
        raise SandboxError(name, why, "`apt-get install openssh-client`")


def _wait_ready(sandbox: Sandbox) -> None:
    """Until `ssh NAME true` succeeds, bounded by READY_TIMEOUT_S."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    stderr = ""
    while True:
        if not sshd.is_our_sshd(sandbox.pid, sandbox.dir):
            raise SandboxError(
                sandbox.name,
                f"sshd exited: {sshd.last_log_line(sandbox.log) or 'no message in its log'}",
                f"see {sandbox.log}",
            )
        remaining = deadline - time.monotonic()
        try:
            result = subprocess.run(
                [*_SSH_PROBE, "--", sandbox.name, "true"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=max(remaining, 1.0),
                check=False,
                env=invocation.spawn_env(),
            )
        except subprocess.TimeoutExpired:
            result = None
        if result is not None and result.returncode == 0:
            return
        if result is not None:
            stderr = (result.stderr.strip().splitlines() or [""])[-1]
        if time.monotonic() >= deadline:
            log = sshd.last_log_line(sandbox.log)
            why = f"`ssh {sandbox.name} true` still fails after {READY_TIMEOUT_S:.0f} s"
            detail = "; ".join(part for part in (stderr, f"sshd log: {log}" if log else "") if part)
            raise SandboxError(sandbox.name, f"{why}: {detail}" if detail else why)
        time.sleep(0.1)


def _teardown(name: str, directory: Path, meta: dict[str, object]) -> None:
    """Close masters, end processes, remove the stanza, delete the files (in that order)."""

    _close_master(name)
    pid = _int(meta, "pid")
    if not pid:
        with contextlib.suppress(OSError, ValueError):
            pid = int((directory / "sshd.pid").read_text().strip() or 0)
    tmux_tmpdir = Path(str(meta["tmux_tmpdir"])) if "tmux_tmpdir" in meta else None
    home = Path(str(meta.get("home", directory / "home")))
    _kill_listed_pids(home)
    _stop_processes(directory, pid, tmux_tmpdir)
    _remove_stanza(name, meta.get("ssh_config_existed") is not False)
    tmpdir = Path(str(meta["tmpdir"])).parent if "tmpdir" in meta else None
    _remove_dirs(directory, tmpdir)
    root = sandboxes_root()
    footprint.give_back(root, sum(1 for item in root.iterdir() if item.is_dir()))


def _remove_stanza(name: str, config_existed: bool) -> None:
    """Remove `Host NAME`; a config file that `up` created (now empty) goes too."""
    from tether.hosts import sshconfig

    sshconfig.remove_host(name)
    if not config_existed:
        path = sshconfig.config_path()
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
                path.unlink()


def _close_master(name: str) -> None:
    """Stop an ssh ControlMaster for NAME at tether's ControlPath, if there is one."""
    run_quiet(["ssh", "-O", "exit", "-o", f"ControlPath={control_path()}", "--", name])


def _stop_processes(directory: Path, pid: int, tmux_tmpdir: Path | None) -> None:
    """End the sandbox's tmux servers, its sshd and every process that carries its mark."""
    if tmux_tmpdir is not None and tmux_tmpdir.is_dir():
        for socket_path in sorted(tmux_tmpdir.glob("tmux-*/*")):
            if socket_path.is_socket():
                run_quiet(["tmux", "-S", str(socket_path), "kill-server"])
    if pid and sshd.is_our_sshd(pid, directory):
        terminate([pid], grace_s=5.0, reap=sshd.reap)
    terminate(list(marked_processes(directory)), reap=sshd.reap)


def _kill_listed_pids(home: Path) -> None:
    """End the pids the remote side recorded under ~/.local/share/tether/pids/ (kernels)."""
    pids: list[int] = []
    for path in sorted((home / ".local" / "share" / "tether" / "pids").glob("*")):
        with contextlib.suppress(OSError):
            words = path.read_text().split()
            pids += [int(word) for word in words if word.isdigit() and int(word) > 1]
    terminate(pids, reap=sshd.reap)


def _remove_dirs(directory: Path, tmpdir: Path | None) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    if tmpdir is not None and not tmpdir.is_relative_to(directory):
        shutil.rmtree(tmpdir, ignore_errors=True)


def _short_dir(directory: Path) -> Path:
    """A directory for TMPDIR/TMUX_TMPDIR short enough for unix sockets beneath it."""
    inside = directory / "tmp"
    if len(str(inside)) + _SOCKET_SLACK <= _UNIX_PATH_MAX:
        return inside
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:10]
    return paths.runtime_dir() / f"sb-{digest}"


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise SandboxError(
            name,
            "is not a valid sandbox name",
            "use letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)",
        )


def _warn(line: str) -> None:
    text = line if line.startswith("tether: warning:") else f"tether: warning: {line}"
    invocation.stderr().write(text.rstrip("\n") + "\n")


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Serialise up/down across processes (one lock file for all sandboxes)."""
    path = sandboxes_root() / ".lock"
    with open(path, "a+b") as handle:  # closing the file releases the lock
        deadline = time.monotonic() + 60.0
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TetherError("another `tether sandbox` command holds its lock") from None
                time.sleep(0.05)
        yield


def _write_meta(sandbox: Sandbox, **extra: object) -> None:
    data: dict[str, object] = {
        key: str(value) if isinstance(value, Path) else value
        for key, value in asdict(sandbox).items()
    }
    data.update(extra)
    path = sandbox.dir / "sandbox.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _read_meta(directory: Path) -> dict[str, object] | None:
    try:
        data = json.loads((directory / "sandbox.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _int(meta: dict[str, object], key: str) -> int:
    try:
        return int(str(meta.get(key, 0)))
    except ValueError:
        return 0


def _from_meta(name: str, meta: dict[str, object]) -> Sandbox:
    values: dict[str, Any] = {}
    for field in fields(Sandbox):
        raw = meta.get(field.name, "")
        if field.type == "int":
            values[field.name] = _int(meta, field.name)
        elif field.type == "bool":
            values[field.name] = bool(raw)
        elif field.type == "Path":
            values[field.name] = Path(str(raw))
        else:
            values[field.name] = str(raw)
    values["name"] = name
    return Sandbox(**values)
