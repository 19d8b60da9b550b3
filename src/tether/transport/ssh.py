"""The user's own OpenSSH client, one ControlMaster per host: every later call is one RTT."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import subprocess
import time
from collections.abc import AsyncIterator, Sequence

from tether import invocation
from tether.errors import HostError
from tether.paths import runtime_dir
from tether.safety import host_problem
from tether.transport.base import Result

PERSIST_SECONDS = 600

# ssh's own words for link-level failures -> what to tell the user, and whether waiting may
# help (transient: the network) or not (permanent: keys, host keys).
_FAILURES: tuple[tuple[str, str, str, bool], ...] = (
    (
        r"Could not resolve hostname",
        "unknown host (ssh cannot resolve it)",
        "check the name, or add it with `tether host add`",
        True,  # DNS fails too while a laptop is offline
    ),
    (
        r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed",
        "host key verification failed (the host key is unknown or changed)",
        "check the host's key, then fix ~/.ssh/known_hosts (ssh-keygen -R HOST)",
        False,
    ),
    (
        r"Permission denied \(",
        "authentication refused (no accepted key)",
        "check User and IdentityFile for this host (`tether host ls`)",
        False,
    ),
    (r"Connection refused", "connection refused", "is sshd running on that host and port?", True),
    (
        r"Connection timed out|Operation timed out|No route to host|Network is unreachable",
        "unreachable (connection timed out)",
        "check the network, VPN or the HostName",
        True,
    ),
    (
        r"Connection closed by|Connection reset by|Broken pipe|closed by remote host",
        "the connection was closed",
        "check the network and try again",
        True,
    ),
    (
        r"too long for Unix domain socket",
        "ControlPath too long",
        "set TETHER_RUNTIME_DIR=/tmp/t",
        False,
    ),
)


def quote_argv(argv: Sequence[str]) -> str:
    """One remote-shell command line that runs exactly argv (every element quoted)."""
    return " ".join(shlex.quote(arg) for arg in argv)


def control_path() -> str:
    """ControlPath in tether's 0700 runtime dir: %C (a hash) keeps it short; %n (the alias)
    keeps two aliases of one endpoint from sharing a master, so each alias's own host-key
    settings are checked when its connection is made."""
    return str(runtime_dir() / "%C-%n")


def ssh_options(persist: int = PERSIST_SECONDS) -> list[str]:
    """The options tether adds to every ssh: share one master per host."""
    return [
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={control_path()}",
        "-o",
        f"ControlPersist={persist}",
    ]


def link_failure(stderr: bytes | str, returncode: int) -> tuple[str, str] | None:
    """(why, todo) if ssh itself failed (exit 255) for a reason we recognise."""
    failure = classify(stderr, returncode)
    return None if failure is None else failure[:2]


def classify(stderr: bytes | str, returncode: int) -> tuple[str, str, bool] | None:
    """(why, todo, transient) if ssh itself failed (exit 255)."""
    if returncode != 255:
        return None
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    for pattern, why, todo, transient in _FAILURES:
        if re.search(pattern, text):
            return why, todo, transient
    last = [line for line in text.strip().splitlines() if line.strip()]
    why = last[-1] if last else "ssh failed (exit 255)"
    return why, "check the host with `tether host check`", True


def resolve(host: str) -> dict[str, list[str]]:
    """OpenSSH's own view of a host (`ssh -G`): option -> values."""
    checked_host(host)
    done = subprocess.run(
        ["ssh", "-G", "--", host],
        capture_output=True,
        text=True,
        timeout=20,
        env=invocation.spawn_env(),
    )
    if done.returncode != 0:
        reason = link_failure(done.stderr, 255) or ("ssh -G failed", "")
        raise HostError(host, reason[0], reason[1])
    options: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key.lower(), []).append(value)
    return options


def checked_host(host: str) -> str:
    """host, if it can only ever be an ssh destination (never an option); else HostError."""
    problem = host_problem(host)
    if problem is not None:
        raise HostError(host, f"refused: the host name {problem}", "name an ssh alias or user@host")
    return host


def check_argv(host: str) -> list[str]:
    """`ssh -O check` on tether's master for host."""
    return ["ssh", "-o", f"ControlPath={control_path()}", "-O", "check", "--", checked_host(host)]


def master_alive(host: str, timeout: float = 10) -> bool:
    """Whether tether's master for host answers (blocking; threads that keep a link)."""
    try:
        done = subprocess.run(
            check_argv(host),
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=invocation.spawn_env(),
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


class SshTransport:
    """Reach one host through OpenSSH with a shared ControlMaster.

    Every ssh argv ends its options with `--` before the destination, so no value can
    become an option."""

    def __init__(self, host: str) -> None:
        self.host = checked_host(host)
        self._master_ok = False

    def argv(self, remote: Sequence[str] | None, *extra: str) -> list[str]:
        """Full local argv for ssh running `remote` (quoted) on the host."""
        base = ["ssh", *ssh_options(), *extra, "--", self.host]
        return base if remote is None else [*base, quote_argv(remote)]

    def raise_for_link(self, stderr: bytes, returncode: int) -> None:
        """HostError if ssh (not the remote command) failed."""
        failure = classify(stderr, returncode)
        if failure is not None:
            todo = failure[1].replace("HOST", self.host)
            raise HostError(self.host, failure[0], todo, transient=failure[2])

    def describe_failure(self, stderr: bytes, returncode: int) -> str | None:
        failure = link_failure(stderr, returncode)
        return None if failure is None else failure[0]

    async def _master_alive(self) -> bool:
        check = await asyncio.create_subprocess_exec(
            *check_argv(self.host),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=invocation.spawn_env(),
        )
        return await check.wait() == 0

    async def ensure_master(self) -> float:
        """Start the host's ControlMaster unless it runs; return seconds spent.

        One master per host across every tether process: the start happens under an flock
        in the runtime dir, after a second check (two masters racing for one control
        socket: the loser cannot listen and lives on as a stray connection)."""
        started = time.monotonic()
        if self._master_ok:
            return 0.0
        if not await self._master_alive():
            async with master_lock(self.host):
                if not await self._master_alive():
                    await self._start_master()
        self._master_ok = True
        return time.monotonic() - started

    async def _start_master(self) -> None:
        master = await asyncio.create_subprocess_exec(
            "ssh",
            *ssh_options(),
            "-o",
            "ControlMaster=yes",
            "-f",
            "-N",
            "--",
            self.host,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=invocation.spawn_env(),
        )
        try:
            _, stderr = await asyncio.wait_for(master.communicate(), timeout=60)
        except asyncio.TimeoutError:
            master.kill()
            raise HostError(
                self.host, "ssh did not connect within 60 s", "check the network", True
            ) from None
        self.raise_for_link(stderr, 255 if master.returncode else 0)
        if master.returncode:
            raise HostError(self.host, stderr.decode(errors="replace").strip() or "ssh failed")

    async def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Result:
        await self.ensure_master()
        process = await asyncio.create_subprocess_exec(
            *self.argv(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=invocation.spawn_env(),
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(input), timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise HostError(
                self.host, f"no answer within {timeout:.0f} s", "check the network", True
            ) from None
        returncode = process.returncode if process.returncode is not None else 255
        self.raise_for_link(stderr, returncode)
        return Result(tuple(argv), returncode, stdout, stderr)

    async def spawn(self, argv: list[str]) -> asyncio.subprocess.Process:
        await self.ensure_master()
        from tether.hosts.processes import spawn_piped

        return await spawn_piped(self.argv(argv))

    def stop_master(self) -> None:
        """Close this host's master (ignoring a master that is not running)."""
        subprocess.run(
            ["ssh", "-o", f"ControlPath={control_path()}", "-O", "exit", "--", self.host],
            capture_output=True,
            timeout=20,
            check=False,
            env=invocation.spawn_env(),
        )
        self._master_ok = False


MASTER_LOCK_WAIT_S = 90.0


@contextlib.asynccontextmanager
async def master_lock(host: str) -> AsyncIterator[None]:
    """An exclusive flock per host in the runtime dir, waited for without blocking the loop."""
    digest = hashlib.sha256(host.encode()).hexdigest()[:16]
    fd = os.open(runtime_dir() / f"m-{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + MASTER_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HostError(host, "another tether is still connecting", "", True) from None
                await asyncio.sleep(0.02)
        yield
    finally:
        os.close(fd)


def interactive_argv(host: str, remote: Sequence[str] | None, tty: bool = True) -> list[str]:
    """argv for an ssh the user drives (attach, shell): a connection of its own, never the
    master's: a session that fails badly on the remote (sshd cannot set up the pty) ends
    only itself, not the master that watch, the console and the daemon share."""
    extra = ["-t"] if tty else []
    base = ["ssh", "-o", "ControlMaster=no", "-o", "ControlPath=none", *extra, "--"]
    base.append(checked_host(host))
    return base if remote is None else [*base, quote_argv(remote)]
