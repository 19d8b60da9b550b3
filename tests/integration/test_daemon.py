"""The sync daemon behind `tether push` / `pull` (tether.cli.daemon), end to end.

Real CLI processes, a real daemon, real ssh to the sandbox: the daemon keeps one agent per
host between commands, runs each command with the client's cwd, environment and exit
code, is cancelled by its client going away, and is replaced when it dies or is outdated.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import start_cli
from tests.harness import env as harness
from tests.integration.conftest import SyncProject, describe, one_error_line

pytestmark = pytest.mark.integration


def write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


@pytest.fixture
def short_runtime() -> Iterator[Path]:
    """A runtime dir of its own, short enough for ssh's ControlPath."""
    runtime = Path(tempfile.mkdtemp(prefix="tr", dir="/tmp"))
    yield runtime
    shutil.rmtree(runtime, ignore_errors=True)


def _daemon() -> tuple[int, dict[str, object]]:
    """(pid, ping answer) of the one sync daemon of the session's runtime dir."""
    from tether.cli import daemon
    from tether.cli.fastpath import socket_path

    answer = daemon.ping(socket_path())
    assert answer is not None, "no sync daemon answers"
    pids = list(daemon.running())
    assert pids == [answer["pid"]], pids
    return int(str(answer["pid"])), answer


def _agent_pids(answer: dict[str, object], host: str) -> list[int]:
    channels = answer["channels"]
    assert isinstance(channels, list)
    return [int(c["agent_pid"]) for c in channels if c["host"] == host]


def test_pushes_share_one_daemon_and_one_remote_agent(synced: SyncProject) -> None:
    synced.push_ok()
    pid, first = _daemon()
    (agent,) = _agent_pids(first, synced.host)
    write(synced.root / "pkg" / "model.py", "def forward(x):\n    return 3 * x\n")
    synced.push_ok()
    assert (synced.remote / "pkg" / "model.py").read_text().endswith("3 * x\n")
    again_pid, again = _daemon()
    assert again_pid == pid
    assert _agent_pids(again, synced.host) == [agent], "a new agent was started"
    # An edited ~/.ssh/config may send the alias elsewhere: the old channel is not reused.
    config = Path(os.environ["HOME"]) / ".ssh" / "config"
    os.utime(config, ns=(time.time_ns(), time.time_ns()))
    synced.push_ok()
    (renewed,) = _agent_pids(_daemon()[1], synced.host)
    assert renewed != agent


def test_every_command_the_daemon_serves_runs_on_its_kept_agent(
    synced: SyncProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # push, pull, jobs and status each get the daemon's Runtime (its channel pool): none of
    # them starts an ssh process of its own. An `ssh` first on PATH logs every start.
    synced.push_ok()
    real = shutil.which("ssh")
    assert real is not None
    bin_dir, log = tmp_path / "bin", tmp_path / "ssh.log"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    synced.push_ok()  # the daemon's channel is up before counting
    pid, _ = _daemon()
    (agent,) = _agent_pids(_daemon()[1], synced.host)
    for args in (
        ["jobs"],
        ["pull"],
        ["jobs", "--json"],
        ["status"],
        ["status", "--json"],
        ["push"],
    ):
        log.write_text("")
        done = synced.run(*args)
        assert done.returncode == 0, describe(done)
        pid_now, answer = _daemon()
        assert pid_now == pid
        assert _agent_pids(answer, synced.host) == [agent], f"`tether {args[0]}`: a new agent"
        started = [line for line in log.read_text().splitlines() if "-O" not in line.split()]
        assert started == [], f"`tether {' '.join(args)}` started ssh itself: {started[0][:120]}"
    (entry,) = json.loads(synced.run("status", "--json").stdout)
    assert entry["reachable"] and entry["target"] == "box", entry
    # Without the daemon, status runs in its own process on a channel of its own.
    monkeypatch.setenv("TETHER_NO_DAEMON", "1")
    log.write_text("")
    alone = synced.run("status", "--json")
    assert alone.returncode == 0, describe(alone)
    assert json.loads(alone.stdout)[0]["reachable"], alone.stdout
    assert any("-O" not in line.split() for line in log.read_text().splitlines())
    assert _agent_pids(_daemon()[1], synced.host) == [agent]


def test_status_through_the_daemon_reports_an_unreachable_target_beside_a_reachable_one(
    synced: SyncProject,
) -> None:
    synced.push_ok()
    config = synced.root / "tether.toml"
    harness.write_config(
        config,
        config.read_text()
        + '\n[targets.gone]\nhost = "tt-no-such-host.invalid"\npath = "~/gone"\n',
    )
    done = synced.run("status", "--json", timeout=90)
    assert done.returncode == 0, describe(done)
    entries = {entry["target"]: entry for entry in json.loads(done.stdout)}
    assert entries["box"]["reachable"] and entries["box"]["error"] is None, entries["box"]
    assert not entries["gone"]["reachable"], entries["gone"]
    assert "tt-no-such-host.invalid" in entries["gone"]["error"]
    assert _agent_pids(_daemon()[1], synced.host), "the reachable target's agent is kept"
    text = synced.run("status", timeout=90)
    assert "gone (tt-no-such-host.invalid): unreachable: " in text.stdout, describe(text)


def test_the_command_runs_in_the_clients_cwd_with_its_exit_codes(synced: SyncProject) -> None:
    synced.push_ok()
    write(synced.root / "pkg" / "model.py", "def forward(x):\n    return 4 * x\n")
    write(synced.root / "train.py", "print('local edit')\n")
    done = harness_run(synced.root / "pkg", "push", "--json", "model.py")
    assert done.returncode == 0, describe(done)
    (report,) = json.loads(done.stdout)
    uploads = report["planned"]["uploads"]
    assert "pkg/model.py" in uploads and "train.py" not in uploads, uploads
    assert "local edit" not in (synced.remote / "train.py").read_text()
    usage = harness_run(synced.root, "push", "--no-such-flag")
    assert usage.returncode == 2 and "No such option" in usage.stderr, describe(usage)
    helped = harness_run(synced.root, "push", "--help")
    assert helped.returncode == 0 and "--dry-run" in helped.stdout, describe(helped)
    write(synced.remote / "README.md", "# edited on the remote\n")
    write(synced.root / "README.md", "# edited here\n")
    conflict = synced.push()
    assert conflict.returncode == 3, describe(conflict)
    assert one_error_line(conflict).startswith("tether: error: 1 conflict(s) on box: README.md")
    outside = harness_run(synced.root.parent, "push")
    assert outside.returncode == 1
    assert "no tether.toml" in one_error_line(outside)


def test_a_served_command_ends_its_process_at_once_with_its_output_whole(
    synced: SyncProject,
) -> None:
    """The client of a served command has nothing left to tidy: it ends without the
    interpreter's shutdown (~3 ms: no atexit hook runs), after writing all it was sent."""
    synced.push_ok()
    names = [f"{index:03d}{'x' * 200}.txt" for index in range(60)]  # a long report
    for name in names:
        write(synced.root / "many" / name, name)
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('interpreter shutdown ran\\n'))\n"
        "sys.argv = ['tether', 'push', '--json']\n"
        "from tether.cli.app import main\n"
        "raise SystemExit(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=synced.root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, describe(done)
    (report,) = json.loads(done.stdout)
    assert sorted(report["planned"]["uploads"]) == ["many", *(f"many/{name}" for name in names)]
    assert "interpreter shutdown ran" not in done.stderr
    _daemon()  # (it was served: the daemon runs)
    conflict_free = subprocess.run(
        [sys.executable, "-c", code.replace("'push', '--json'", "'push', '--no-such-flag'")],
        cwd=synced.root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert conflict_free.returncode == 2 and "No such option" in conflict_free.stderr


def harness_run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        harness.tether_argv(*args), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_a_killed_daemon_is_replaced_by_the_next_push(synced: SyncProject) -> None:
    synced.push_ok()
    pid, _ = _daemon()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    write(synced.root / "train.py", "print('after the daemon died')\n")
    synced.push_ok()
    assert (synced.remote / "train.py").read_text() == "print('after the daemon died')\n"
    new_pid, _ = _daemon()
    assert new_pid != pid


def kill_while_it_waits(
    server: int, process: subprocess.Popen[str], waiting: Callable[[int], bool]
) -> tuple[int, str, str]:
    """SIGKILL the (stopped) server once process waits on it (waiting(pid)); process's
    exit code and output. Both are gone afterwards, whatever happened."""
    try:
        reached = _wait(lambda: waiting(process.pid), process)
        assert reached, f"the client never waited on the server's socket: {process.poll()}"
        os.kill(server, signal.SIGKILL)
        out, err = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, err


def test_a_daemon_killed_before_it_took_the_command_leaves_it_to_the_client(
    synced: SyncProject,
) -> None:
    """A push that connected to a daemon in the moment it was killed (its socket still
    listened: the connection sat in the backlog) never started there, so the client runs
    it itself instead of failing with "the sync daemon stopped in the middle"."""
    synced.push_ok()
    pid, _ = _daemon()
    write(synced.root / "train.py", "print('pushed past a dying daemon')\n")
    os.kill(pid, signal.SIGSTOP)  # it accepts nothing: the client's connection waits in the backlog
    process = start_cli(synced.root, "push")
    code, out, err = kill_while_it_waits(pid, process, _blocked_on_a_socket)
    assert code == 0, f"{code} {out} {err}"
    assert (synced.remote / "train.py").read_text() == "print('pushed past a dying daemon')\n"


# Where Ctrl-C lands, each made certain by what the test waits for before sending it:
# the daemon stopped (SIGSTOP) while the client waits on its socket, the push's Scan
# request seen by the proxy (its answer is 2 s away), 4 MB of uploads through the proxy.
INTERRUPT_POINTS = ("before-the-command", "during-the-scan", "during-the-uploads")


@pytest.mark.parametrize("point", INTERRUPT_POINTS)
def test_ctrl_c_cancels_the_push_in_the_daemon(
    make_synced: Any, proxy: Any, proxy_alias: str, point: str
) -> None:
    from tether.cli import daemon
    from tether.cli.fastpath import socket_path

    synced = make_synced(host=proxy_alias)
    synced.push_ok()  # the daemon runs and keeps a channel through the proxy
    files = {f"f{index:02d}.bin": os.urandom(1 << 20) * 2 for index in range(30)}
    for name, data in files.items():
        write(synced.root / "big" / name, data)
    pid, _ = _daemon()
    log = Path(os.environ["TETHER_RUNTIME_DIR"]) / "sync-daemon.log"
    logged = log.stat().st_size
    proxy.set_delay(1000 if point == "during-the-scan" else 150)
    sent = proxy.stats.bytes_up
    if point == "before-the-command":
        os.kill(pid, signal.SIGSTOP)
    process = start_cli(synced.root, "push")
    try:
        if point == "before-the-command":
            reached = _wait(lambda: _blocked_on_a_socket(process.pid), process)
        elif point == "during-the-scan":
            reached = _wait(lambda: proxy.stats.bytes_up > sent, process)
        else:
            reached = _wait(lambda: proxy.stats.bytes_up - sent > 4 << 20, process)
        assert reached, f"the push never got {point}: {process.poll()}"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if point == "before-the-command":
            os.kill(pid, signal.SIGCONT)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, f"{process.returncode} {out} {err}"
    assert err.strip().splitlines()[-1:] == ["tether: interrupted"], err
    # The daemon ended that push as interrupted: once it is idle again, nothing half
    # written, and every upload that was sent but not answered is recorded as pending.
    deadline = time.monotonic() + 60
    while (daemon.ping(socket_path()) or {}).get("busy") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.ping(socket_path()) is not None and _daemon()[0] == pid
    told = log.read_bytes()[logged:].decode(errors="replace")
    assert "Traceback" not in told and "internal error" not in told, told
    big = synced.remote / "big"
    landed = sorted(big.glob("*.bin")) if big.exists() else []
    pending = [
        json.loads(path.read_text()) for path in (synced.root / ".tether").rglob("*.pending.json")
    ]
    if point == "during-the-uploads":
        assert len(landed) < 30 and len(pending) == 1, (landed, pending)
        names = {f"big/{name}" for name in files}
        # Every file that did not land is pending (some that landed may be too: answers lost).
        assert names - {f"big/{path.name}" for path in landed} <= set(pending[0]) <= names
    else:  # nothing was planned yet: nothing sent, nothing pending
        assert landed == [] and pending == [], (landed, pending)
    for path in landed:
        assert path.read_bytes() == files[path.name], path
    # The next push, on the same daemon, completes it: no conflict from what landed.
    proxy.set_delay(0)
    synced.push_ok()
    assert _daemon()[0] == pid
    assert {p.name: p.read_bytes() for p in big.glob("*.bin")} == files
    assert not [p for p in big.iterdir() if ".tether-tmp." in p.name]
    assert not list((synced.root / ".tether").rglob("*.pending.json"))


def test_ctrl_c_while_the_client_waits_for_the_daemon_to_start(
    synced: SyncProject, short_runtime: Path
) -> None:
    # Another client is starting the daemon (the test holds the start lock): Ctrl-C ends
    # the wait with the one line and 130, not a traceback.
    import fcntl

    from tether.cli import daemon
    from tether.cli.fastpath import fingerprint

    lock_path = short_runtime / f"sync-{fingerprint()}.lock"
    lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    env = dict(os.environ, TETHER_RUNTIME_DIR=str(short_runtime))
    process = subprocess.Popen(
        harness.tether_argv("push"), cwd=synced.root, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        waiting = _wait(lambda: _has_open(process.pid, lock_path), process)
        assert waiting, f"the client never waited for the start lock: {process.poll()}"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        os.close(lock)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, f"{process.returncode} {out} {err}"
    assert err.strip() == "tether: interrupted", err
    assert daemon.running(short_runtime) == {}


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _wait(condition: Callable[[], bool], process: subprocess.Popen[str]) -> bool:
    """Poll condition (every 5 ms, 30 s at most) while process runs."""
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def _blocked_on_a_socket(pid: int) -> bool:
    """pid sleeps in a system call on a socket (the client, once it connected and sent its
    request, waits on the daemon's socket for the answer)."""
    try:
        call = Path(f"/proc/{pid}/syscall").read_text().split()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state != "S" or len(call) < 2 or call[0] == "running":
            return False
        return os.readlink(f"/proc/{pid}/fd/{int(call[1], 16)}").startswith("socket:")
    except (OSError, ValueError):
        return False


def test_no_daemon_runs_with_tether_no_daemon(synced: SyncProject, short_runtime: Path) -> None:
    from tether.cli import daemon

    runtime = short_runtime
    env = dict(os.environ, TETHER_NO_DAEMON="1", TETHER_RUNTIME_DIR=str(runtime))
    done = subprocess.run(
        harness.tether_argv("push"),
        cwd=synced.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, describe(done)
    assert (synced.remote / "train.py").exists()
    assert daemon.running(runtime) == {}
    env.pop("TETHER_NO_DAEMON")
    try:
        again = subprocess.run(
            harness.tether_argv("push"), cwd=synced.root, env=env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert again.returncode == 0, describe(again)
        assert len(daemon.running(runtime)) == 1
    finally:
        daemon.stop_all(runtime)  # its ssh channels end with it; the master is ours to stop
        subprocess.run(
            ["ssh", "-o", f"ControlPath={runtime}/%C-%n", "-O", "exit", synced.host],
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert daemon.running(runtime) == {}


def test_an_outdated_daemon_leaves_by_itself(short_runtime: Path) -> None:
    """A daemon whose socket name carries another source fingerprint exits on its own."""
    from tether.cli import daemon

    runtime = short_runtime
    path = runtime / "sync-00000000deadbeef.sock"
    lock = os.open(runtime / "sync-00000000deadbeef.lock", os.O_RDWR | os.O_CREAT, 0o600)
    env = dict(os.environ, TETHER_RUNTIME_DIR=str(runtime))
    process = subprocess.Popen(
        [*harness.tether_argv()[:-2], "-m", "tether.cli.daemon", str(path), str(lock)],
        pass_fds=(lock,),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(lock)
    try:
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not path.exists(), "the socket of a daemon that left is removed"
    assert daemon.running(runtime) == {}


def test_a_busy_daemon_lets_the_next_command_run_on_its_own(
    make_synced: Any, proxy: Any, proxy_alias: str
) -> None:
    """While the daemon runs a slow push (1 s RTT), another push runs in its own process."""
    from tether.cli import daemon
    from tether.cli.fastpath import socket_path

    slow = make_synced(host=proxy_alias)
    quick = make_synced()
    slow.push_ok()
    quick.push_ok()
    write(slow.root / "train.py", "print('slow')\n")
    write(quick.root / "train.py", "print('quick')\n")
    proxy.set_delay(500)
    process = start_cli(slow.root, "push")
    try:
        deadline = time.monotonic() + 20
        busy = False
        while not busy and process.poll() is None and time.monotonic() < deadline:
            busy = (daemon.ping(socket_path()) or {}).get("busy") is True
            time.sleep(0.01)
        assert busy, "the daemon never said it was busy during the slow push"
        started = time.monotonic()
        done = quick.push()
        assert done.returncode == 0, describe(done)
        assert process.poll() is None, "the slow push ended first: the quick one waited for it"
        assert time.monotonic() - started < 10
        assert (quick.remote / "train.py").read_text() == "print('quick')\n"
    finally:
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, f"{out} {err}"
    assert (slow.remote / "train.py").read_text() == "print('slow')\n"


def test_two_targets_after_an_ssh_config_change(synced: SyncProject, sandbox2: Any) -> None:
    # Both targets' kept channels turn stale at once; the daemon serves the two concurrently
    # and each drops the stale ones (it raised KeyError when both dropped the same key).
    config = synced.root / "tether.toml"
    spec = f"~/two-{os.getpid()}-{time.time_ns() % 10**6}"
    two = f'\n[targets.two]\nhost = "{sandbox2.name}"\npath = "{spec}"\ndefault = true\n'
    harness.write_config(config, config.read_text() + two)
    synced.push_ok()
    for _ in range(2):
        ssh_config = Path(os.environ["HOME"]) / ".ssh" / "config"
        os.utime(ssh_config, ns=(time.time_ns(), time.time_ns()))
        write(synced.root / "pkg" / "model.py", f"X = {time.time_ns()}\n")
        synced.push_ok()


def _process_state(pid: int) -> tuple[str, str]:
    """(cwd, umask) of a process, as the kernel has them."""
    umask = next(
        line.split()[1]
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("Umask:")
    )
    return os.readlink(f"/proc/{pid}/cwd"), umask


def test_the_daemon_keeps_its_own_process_state_while_it_serves_a_client(
    make_synced: Any, proxy: Any, proxy_alias: str
) -> None:
    """The command runs under the client's cwd, environment and umask (tether.invocation),
    but the daemon's own cwd and umask never change: its loop and watchdog, and the next
    command, must not see one client's state."""
    from tether.cli import daemon
    from tether.cli.fastpath import socket_path

    slow = make_synced(host=proxy_alias)
    slow.push_ok()
    pid, _ = _daemon()
    own = _process_state(pid)
    assert own[0] != str(slow.root)
    write(slow.root / "train.py", "print('slow')\n")
    write(slow.remote / "outputs" / "metrics.txt", "loss=0.1\n")
    os.chmod(slow.remote / "outputs" / "metrics.txt", 0o666)
    proxy.set_delay(300)
    process = subprocess.Popen(
        harness.tether_argv("push"),
        cwd=slow.root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=0o027,
    )
    seen: set[tuple[str, str]] = set()
    busy_samples = 0
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if (daemon.ping(socket_path()) or {}).get("busy") is True:
                busy_samples += 1
                seen.add(_process_state(pid))
            time.sleep(0.01)
    finally:
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, f"{out} {err}"
    assert busy_samples >= 3, "the push ended before the daemon was seen serving it"
    assert seen == {own}, f"the daemon's own cwd/umask changed while serving: {seen}"
    proxy.set_delay(0)
    # The client's umask still applies to what its pull writes here.
    pulled = subprocess.run(
        harness.tether_argv("pull"), cwd=slow.root, capture_output=True, text=True,
        timeout=120, umask=0o027,
    )  # fmt: skip
    assert pulled.returncode == 0, describe(pulled)
    assert (slow.root / "outputs" / "metrics.txt").stat().st_mode & 0o777 == 0o640
    assert _daemon()[0] == pid, "the pull did not run in the same daemon"


def test_status_is_served_beside_a_running_push_but_a_second_push_is_not(
    make_synced: Any, proxy: Any, proxy_alias: str
) -> None:
    """The daemon serves jobs/status while a push runs (no process of their own, on its
    kept imports); a second push or pull runs in its own process (they share kept scans)."""
    from tether.cli import daemon
    from tether.cli.fastpath import socket_path

    slow = make_synced(host=proxy_alias)
    other = make_synced(host=proxy_alias)
    slow.push_ok()
    other.push_ok()
    pid, _ = _daemon()
    write(slow.root / "train.py", "print('slow')\n")
    write(other.root / "train.py", "print('other')\n")
    proxy.set_delay(300)
    push = start_cli(slow.root, "push")
    status = second = None
    seen: set[tuple[str, ...]] = set()
    try:
        deadline = time.monotonic() + 60
        while push.poll() is None and time.monotonic() < deadline:
            serving = tuple((daemon.ping(socket_path()) or {}).get("serving") or ())
            seen.add(serving)
            if serving == ("push",) and status is None:
                status = start_cli(slow.root, "status", "--json")
                second = start_cli(other.root, "push")
            time.sleep(0.01)
        assert status is not None and second is not None, f"never saw the push served: {seen}"
        done_status = status.communicate(timeout=120)
        done_second = second.communicate(timeout=120)
    finally:
        out, err = push.communicate(timeout=120)
        for process in (status, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    assert push.returncode == 0, f"{out} {err}"
    assert status.returncode == 0, done_status
    assert json.loads(done_status[0])[0]["reachable"], done_status
    assert second.returncode == 0, done_second
    assert ("push", "status") in seen, f"status was not served beside the push: {seen}"
    assert not any(names.count("push") > 1 for names in seen), seen
    assert (slow.remote / "train.py").read_text() == "print('slow')\n"
    assert (other.remote / "train.py").read_text() == "print('other')\n"
    assert _daemon()[0] == pid
