"""Job dependencies (`--after`) and end-of-job notify hooks, kept on the remote.

A dependent job's wrapper waits in its tmux pane (state `queued`, reason "after A") until
every dependency exited 0; if one exited non-zero, was cancelled or was lost, the job is
recorded `cancelled` with reason "dependency A exited 3" and never starts. Its own
dependents see it cancelled and follow.

The notify hook runs through `sh -c` with TETHER_JOB, TETHER_STATE, TETHER_EXIT_CODE,
TETHER_HOST and TETHER_LOG_TAIL set; it is killed after its timeout (30 s by default) and
whatever it does is logged to logs/<name>.notify.log, never to the job's record.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import gpus as gpu_queue
from .fsops import OpError
from .wire import ErrorKind

NOTIFY_TIMEOUT_S = 30.0
TAIL_LINES = 20
TAIL_BYTES = 65536
Record = Dict[str, Any]


# ---- dependencies -------------------------------------------------------------------


def verdict(
    names: List[str], read: Callable[[str], Optional[Record]], now: float, grace: float
) -> Tuple[List[str], Optional[str]]:
    """(still pending names, reason the dependent can never start or None)."""
    pending = []
    for name in names:
        record = read(name)
        if record is not None and record.get("ended") is None:
            if gpu_queue.owner_alive(record, now, grace):
                pending.append(name)
                continue
            record = read(name)  # it may have ended between the two reads
            if record is not None and record.get("ended") is None:
                return pending, "dependency %s was lost" % name
        if record is None:
            return pending, "dependency %s is gone" % name
        code = record.get("exit_code")
        if code is None:
            return pending, "dependency %s was cancelled" % name
        if code != 0:
            return pending, "dependency %s exited %s" % (name, code)
    return pending, None


def after_reason(pending: List[str]) -> str:
    return "after " + ", ".join(pending)


PROVENANCE_KEYS = (
    "commit", "dirty_diff", "untracked", "local_cwd", "local_python", "target", "host",
    "remote_python",
)  # fmt: skip


def from_earlier(header: Dict[str, Any], earlier: Dict[str, Any]) -> None:
    """Fill a restart's header from the earlier job's record."""
    header["argv"] = earlier.get("argv")
    count = int(earlier.get("gpu_count") or 0)
    header["gpu_count"] = count or None
    header["gpus"] = None if count else earlier.get("gpus")
    for key in ("notify", "notify_timeout", "array_index", "env"):
        header.setdefault(key, earlier.get(key))
    snap = str(earlier.get("snapshot") or "")
    cwd = str(earlier.get("cwd") or snap)
    header["cwd"] = os.path.relpath(cwd, snap) if snap else ""
    if not header.get("fresh"):  # the same code in the same env
        header["snapshot_of"] = earlier["name"]
        header.setdefault("env_digest", earlier.get("env_digest"))
    if not header.get("provenance"):
        header["provenance"] = {key: earlier.get(key) for key in PROVENANCE_KEYS}


def check_after(name: str, value: Any, read: Callable[[str], Optional[Record]]) -> List[str]:
    """The dependency names, each an existing job; refuses unknown names and cycles."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise OpError(ErrorKind.BADAFTER, "after must be a list of job names")
    names: List[str] = []
    for item in value:
        if item == name:
            raise OpError(ErrorKind.CYCLE, "job %r cannot run after itself" % name)
        if read(item) is None:
            raise OpError(ErrorKind.NODEP, "no job named %r to run after" % item)
        if item not in names:
            names.append(item)
    # Every dependency exists before its dependent does, so a new job cannot close a
    # cycle; a record edited by hand could: refuse any chain that leads back to name.
    seen: Set[str] = set()
    todo = list(names)
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        record = read(current) or {}
        for upstream in record.get("after") or []:
            if upstream == name:
                raise OpError(ErrorKind.CYCLE, "--after %s would make a cycle" % current)
            todo.append(str(upstream))
    return names


# ---- notify -------------------------------------------------------------------------


def log_tail(path: str, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of the log (decoded leniently); '' if there is none."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").replace("\x00", "")
    return "\n".join(text.splitlines()[-lines:])


def notify_env(record: Record, base: Dict[str, str]) -> Dict[str, str]:
    """The hook's environment: base plus the TETHER_* variables of DESIGN section 8."""
    env = dict(base)
    code = record.get("exit_code")
    env.update(
        TETHER_JOB=str(record.get("name")),
        TETHER_STATE=str(record.get("state") or ("exited" if code is not None else "cancelled")),
        TETHER_EXIT_CODE="" if code is None else str(code),
        TETHER_HOST=str(record.get("host") or record.get("remote_host") or socket.gethostname()),
        TETHER_LOG_TAIL=log_tail(str(record.get("log") or "")),
    )
    if record.get("reason"):
        env["TETHER_REASON"] = str(record["reason"])
    return env


def run_notify(record: Record) -> Optional[str]:
    """Run the record's notify hook (if any); returns what was logged about it."""
    command = record.get("notify")
    if not isinstance(command, str) or not command.strip():
        return None
    timeout = float(record.get("notify_timeout") or NOTIFY_TIMEOUT_S)
    log_path = os.path.splitext(str(record.get("log") or "job.log"))[0] + ".notify.log"
    env = notify_env(record, dict(os.environ))
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
    try:
        out = open(log_path, "ab")  # noqa: SIM115 - closed below
    except OSError:
        out = open(os.devnull, "ab")  # noqa: SIM115
    with out:
        out.write(("[%s] notify: %s\n" % (time.strftime("%F %T"), command)).encode())
        out.flush()
        try:
            hook = subprocess.Popen(
                ["sh", "-c", command],
                cwd=os.path.expanduser("~"),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        except OSError as error:
            note = "notify could not start: %s" % error.strerror
        else:
            try:
                code = hook.wait(timeout)
                note = "notify exited %d" % code
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(hook.pid, signal.SIGKILL)
                hook.wait()
                note = "notify killed after %g s" % timeout
        out.write(("[%s] %s\n" % (time.strftime("%F %T"), note)).encode())
    return note
