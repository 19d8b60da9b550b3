"""Remote IPython kernels: start detached, list, describe, stop, install ipykernel.

A kernel is an ipykernel run by the target's python in the remote project directory,
in a session of its own (it outlives every connection), with `%autoreload 2` on. It
listens on unix sockets (transport "ipc") in a 0700 directory, or, where that path is
too long for a unix socket, on 127.0.0.1 only; its connection file (random HMAC key)
is 0600. Each kernel keeps ~/.local/share/tether/kernels/NAME/ with kernel.json
(connection), record.json (pid, root, python) and kernel.log; when the client sends the
iopub recorder's source with kernel_start, the recorder runs beside the kernel (stopped
with it) and keeps iopub.jsonl (a bounded buffer `kernel_catchup` reads from).
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from . import envs, fsops, kernel_shim, start
from .jobstore import check_name, kernels_dir, write_json
from .wire import ErrorKind

Answer = Tuple[Dict[str, Any], bytes]
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
START_TIMEOUT_S = 60.0
# `exit`/`quit` (typed in a console or sent) leave the client but keep the kernel.
KEEP_ON_EXIT = (
    "__import__('IPython.core.autocall', fromlist=['_'])"
    ".ZMQExitAutocall.__call__.__defaults__ = (True,)"
)
EXEC_LINES = ("%load_ext autoreload", "%autoreload 2", KEEP_ON_EXIT, kernel_shim.exec_line())
CATCHUP_MAX = 5000
RECORDER_LOG = "iopub.jsonl"
RECORDER_OLD = "iopub.1.jsonl"
INSTALL_HINT = "run `tether kernel install` to install it"


def kernel_dir(name: str) -> str:
    return os.path.join(kernels_dir(), check_name(name))


def _private_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _python(header: Dict[str, Any]) -> List[str]:
    argv = header.get("python") or ["python3"]
    if isinstance(argv, str):
        argv = [argv]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise fsops.OpError(ErrorKind.BADPYTHON, "python must be a non-empty list of strings")
    return list(argv)


def connection_info(directory: str, ports: Optional[List[int]] = None) -> Dict[str, Any]:
    """A connection dict: ipc sockets in directory, or tcp on 127.0.0.1 with given ports."""
    info: Dict[str, Any] = {
        "key": uuid.uuid4().hex + uuid.uuid4().hex,
        "signature_scheme": "hmac-sha256",
        "kernel_name": "",
    }
    prefix = os.path.join(directory, "k")
    if ports is None and len(prefix) + 3 <= SOCKET_MAX:
        info.update(transport="ipc", ip=prefix)
        for number, channel in enumerate(CHANNELS, 1):
            info[channel] = number
    else:
        info.update(transport="tcp", ip="127.0.0.1")
        chosen = ports or _free_ports(len(CHANNELS))
        for index, channel in enumerate(CHANNELS):
            info[channel] = chosen[index]
    return info


def socket_paths(info: Dict[str, Any]) -> List[str]:
    """The unix socket paths of an ipc kernel ([] for tcp)."""
    if info.get("transport") != "ipc":
        return []
    return ["%s-%d" % (info["ip"], info[channel]) for channel in CHANNELS]


def _free_ports(count: int) -> List[int]:
    held = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


AUTORELOAD_LINES = EXEC_LINES[:2]


def launch_argv(python: List[str], connection_file: str, autoreload: bool = True) -> List[str]:
    """The kernel's argv: values travel as argv words, never through a shell. Without
    autoreload (`autoreload = false` in the target) each execute skips its module scan."""
    chosen = [line for line in EXEC_LINES if autoreload or line not in AUTORELOAD_LINES]
    lines = ["--IPKernelApp.exec_lines=%s" % line for line in chosen]
    return [*python, "-m", "ipykernel_launcher", "-f", connection_file, *lines]


def _write_private(path: str, data: Dict[str, Any]) -> None:
    temp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def _alive(record: Dict[str, Any]) -> bool:
    """The kernel's process runs (and is still ours: its argv names our connection file)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or not fsops.pid_alive(pid):
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the pid
    with contextlib.suppress(OSError), open("/proc/%d/stat" % pid, "rb") as handle:
        if handle.read().rsplit(b")", 1)[-1].split()[0] == b"Z":
            return False
    return str(record.get("connection_file", "")).encode() in argv


def _record(name: str) -> Optional[Dict[str, Any]]:
    record = fsops.read_json(os.path.join(kernel_dir(name), "record.json"))
    if record is None:
        return None
    record["alive"] = _alive(record)
    record["state"] = "running" if record["alive"] else "dead"
    return record


def _check_ipykernel(python: List[str]) -> None:
    try:
        done = subprocess.run(
            [*python, "-c", "import ipykernel"],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise fsops.OpError(
            ErrorKind.NOPYTHON, "no %s on the remote; set `python = ...` in the target" % python[0]
        ) from None
    except subprocess.TimeoutExpired:
        raise fsops.OpError(
            ErrorKind.TIMEOUT, "%s did not start within 120 s" % python[0]
        ) from None
    if done.returncode != 0:
        if "No module named" in done.stderr:
            raise fsops.OpError(
                ErrorKind.NOIPYKERNEL,
                "ipykernel is not installed for %s; %s" % (python[0], INSTALL_HINT),
            )
        last = (done.stderr.strip().splitlines() or ["exit %d" % done.returncode])[-1]
        raise fsops.OpError(
            ErrorKind.BADPYTHON, "%s cannot import ipykernel: %s" % (python[0], last)
        )


def _wait_ready(info: Dict[str, Any], process: Any, log: str) -> None:
    deadline = time.time() + START_TIMEOUT_S
    paths = socket_paths(info)
    while time.time() < deadline:
        if process.poll() is not None:
            raise fsops.OpError(ErrorKind.KERNEL, "the kernel exited at start: %s" % _tail(log))
        if paths:
            if all(os.path.exists(path) for path in paths):
                return
        elif all(_listening(info[channel]) for channel in CHANNELS):
            return
        time.sleep(0.05)
    raise fsops.OpError(ErrorKind.KERNEL, "the kernel did not listen within %d s" % START_TIMEOUT_S)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _tail(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def kernel_start(header: Dict[str, Any], payload: bytes) -> Answer:
    """Start kernel NAME unless it runs (then answer with it); `restart` stops it first."""
    name = check_name(header.get("name") or "default")
    if header.get("restart"):
        _stop(name, float(header.get("grace", 5.0)))
    record = _record(name)
    if record is not None and record["alive"]:
        return {"record": record, "connection": _connection(record), "started": False}, b""
    in_env = envs.for_job(header)
    python = [in_env["python_executable"]] if in_env else _python(header)
    _check_ipykernel(python)
    root = fsops.sync_root(header["root"]) if header.get("root") else fsops.root_path("~")
    os.makedirs(root, exist_ok=True)
    directory = kernel_dir(name)
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    _private_dir(kernels_dir())
    _private_dir(directory)
    info = connection_info(directory, None if header.get("transport") != "tcp" else _free_ports(5))
    connection_file = os.path.join(directory, "kernel.json")
    _write_private(connection_file, info)
    log = os.path.join(directory, "kernel.log")
    env = start.job_env(in_env, dict(os.environ))  # the env's bin first on PATH
    for variable in ("JPY_PARENT_PID", "PYTHONPATH", "PYTHONHOME"):
        env.pop(variable, None)
    with open(log, "ab") as output:
        process = subprocess.Popen(
            launch_argv(python, connection_file, header.get("autoreload", True) is not False),
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    record = {
        "name": name,
        "pid": process.pid,
        "root": root,
        "python": python,
        "env_digest": in_env.get("env_digest"),
        "started": time.time(),
        "transport": info["transport"],
        "connection_file": connection_file,
        "log": log,
    }
    write_json(os.path.join(directory, "record.json"), record)
    try:
        _wait_ready(info, process, log)
        if payload:
            record["recorder_pid"] = _start_recorder(python, directory, payload, process.pid)
            write_json(os.path.join(directory, "record.json"), record)
    except BaseException:
        _stop(name, 1.0)
        raise
    record.update(alive=True, state="running")
    return {"record": record, "connection": info, "started": True}, b""


def _start_recorder(python: List[str], directory: str, source: bytes, pid: int) -> int:
    """Run the iopub recorder (sent as source); it ends itself when the kernel does."""
    script = os.path.join(directory, "recorder.py")
    with open(script, "wb") as handle:
        handle.write(source)
    with open(os.path.join(directory, "recorder.log"), "ab") as output:
        recorder = subprocess.Popen(
            [*python, script, os.path.join(directory, "kernel.json"), directory, str(pid)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return recorder.pid


def read_log(directory: str, limit: int = CATCHUP_MAX) -> List[Dict[str, Any]]:
    """The recorder's entries, oldest first (the last `limit`)."""
    entries: List[Dict[str, Any]] = []
    for file in (RECORDER_OLD, RECORDER_LOG):
        try:
            with open(os.path.join(directory, file), "rb") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
    return entries[-limit:]


def catchup(entries: List[Dict[str, Any]], after: Optional[str], since: Optional[str]) -> Any:
    """Entries after the one with msg_id `after`; else those dated after `since`."""
    if after:
        for index, entry in enumerate(entries):
            if entry.get("msg_id") == after:
                return entries[index + 1 :], True
    if since:
        newer = [e for e in entries if str(e.get("header", {}).get("date", "")) > since]
        return newer, False
    return [], False


def kernel_catchup(header: Dict[str, Any], payload: bytes) -> Answer:
    """The iopub messages a client missed: after msg_id `after` (or dated after `since`)."""
    name = check_name(header.get("name") or "default")
    directory = kernel_dir(name)
    if not os.path.isdir(directory):
        raise fsops.OpError(ErrorKind.NOKERNEL, "no kernel named %r" % name)
    messages, found = catchup(read_log(directory), header.get("after"), header.get("since"))
    return {"messages": messages, "found": found}, b""


def _connection(record: Dict[str, Any]) -> Dict[str, Any]:
    info = fsops.read_json(str(record.get("connection_file")))
    if info is None:
        raise fsops.OpError(
            ErrorKind.NOKERNEL, "kernel %r has no connection file" % record.get("name")
        )
    return info


def kernel_info(header: Dict[str, Any], payload: bytes) -> Answer:
    name = check_name(header.get("name") or "default")
    record = _record(name)
    if record is None:
        raise fsops.OpError(ErrorKind.NOKERNEL, "no kernel named %r" % name)
    return {"record": record, "connection": _connection(record)}, b""


def kernel_list(header: Dict[str, Any], payload: bytes) -> Answer:
    records = []
    for entry in fsops.names_in(kernels_dir()):
        with contextlib.suppress(fsops.OpError):
            record = _record(entry)
            if record is not None:
                records.append(record)
    return {"kernels": records}, b""


def _stop(name: str, grace: float) -> Optional[Dict[str, Any]]:
    """Stop the kernel's process group (TERM, then KILL) and remove its directory."""
    record = _record(name)
    if record is None:
        return None
    pid = record.get("pid")
    if record["alive"] and isinstance(pid, int):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            stop = time.time() + grace
            while True:
                ended = _ended(pid)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # reap it where this agent started it
                if ended or time.time() >= stop:
                    break
                time.sleep(0.05)
            if ended:
                break
    recorder = record.get("recorder_pid")
    if isinstance(recorder, int) and _owned(recorder, "recorder.py"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(recorder, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(recorder, 0)
    shutil.rmtree(kernel_dir(name), ignore_errors=True)
    return record


def _ended(pid: int) -> bool:
    """The process is gone or a zombie: it has exited, its parent has not reaped it yet.
    A detached kernel's parent is init, which in a container may reap late (seconds) or
    never; `kernel stop` waited for that."""
    if not fsops.pid_alive(pid):
        return True
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            state = handle.read().rsplit(b")", 1)[-1].split()[:1]
    except OSError:
        return False  # no /proc here (macOS): pid_alive's word
    return state in ([b"Z"], [b"X"])


def _owned(pid: int, word: str) -> bool:
    """The process runs and its argv names word (True where /proc is missing)."""
    if not fsops.pid_alive(pid):
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return word.encode() in handle.read()
    except OSError:
        return True


def kernel_stop(header: Dict[str, Any], payload: bytes) -> Answer:
    name = check_name(header.get("name") or "default")
    record = _stop(name, float(header.get("grace", 5.0)))
    if record is None:
        raise fsops.OpError(ErrorKind.NOKERNEL, "no kernel named %r" % name)
    return {"record": record, "was_alive": record["alive"]}, b""


def kernel_interrupt(header: Dict[str, Any], payload: bytes) -> Answer:
    """SIGINT to the kernel (what Ctrl-C in a local IPython does): the running cell ends
    with KeyboardInterrupt, the kernel and its state stay."""
    name = check_name(header.get("name") or "default")
    record = _record(name)
    if record is None:
        raise fsops.OpError(ErrorKind.NOKERNEL, "no kernel named %r" % name)
    if not record["alive"]:
        raise fsops.OpError(ErrorKind.KERNEL, "the kernel %s is dead" % name)
    os.kill(int(record["pid"]), signal.SIGINT)
    return {"record": record}, b""


def kernel_install(header: Dict[str, Any], payload: bytes) -> Answer:
    """`python -m pip install --user ipykernel` (the client asked the user first); refused
    at once for an interpreter the system manages (PEP 668: pip would refuse anyway)."""
    python = _python(header)
    if _externally_managed(python):
        raise fsops.OpError(
            ErrorKind.PEP668,
            "%s is managed by the system (PEP 668): pip will not install ipykernel into it"
            % python[0],
        )
    try:
        done = subprocess.run(
            [*python, "-m", "pip", "install", "--user", "ipykernel"],
            capture_output=True,
            text=True,
            timeout=1800,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise fsops.OpError(ErrorKind.NOPYTHON, "no %s on the remote" % python[0]) from None
    output = (done.stdout + done.stderr)[-8000:]
    return {"returncode": done.returncode, "output": output}, b""


_PEP668 = (
    "import os, sys, sysconfig; venv = sys.prefix != getattr(sys, 'base_prefix', sys.prefix); "
    "marker = os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED'); "
    "print('managed' if not venv and os.path.exists(marker) else 'free')"
)


def _externally_managed(python: List[str]) -> bool:
    """Whether pip refuses to install into this interpreter (PEP 668's marker, no venv)."""
    try:
        done = subprocess.run(
            [*python, "-c", _PEP668], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.stdout.strip() == "managed"


def register(agent: Any) -> None:
    """Add the kernel ops to the agent."""
    agent.add(
        kernel_start,
        kernel_info,
        kernel_list,
        kernel_stop,
        kernel_interrupt,
        kernel_install,
        kernel_catchup,
    )
