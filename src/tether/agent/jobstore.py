"""Where jobs live on the remote and what their records say: places, keys, names, states.

A job's identity on a host is its key (its project's tag and its name): records, logs,
tmux sessions, kill markers and queue entries are named by it. The pure parts are unit
tested; `jobs` (the ops), `wrapper`, `slurm` and `housekeeping` build on them.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Callable, Dict, List, Optional

from . import fsops
from .shared_jobs import DEFAULT_SOCKET as DEFAULT_SOCKET  # the rules the client shares
from .shared_jobs import SESSION_PREFIX as SESSION_PREFIX
from .shared_jobs import START_GRACE_S as START_GRACE_S
from .shared_jobs import derive_state as derive_state
from .shared_jobs import exit_status as exit_status
from .shared_jobs import valid_name
from .wire import ErrorKind

SOCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
WRAP_CODE = (
    "import sys;sys.path.insert(0,sys.argv[1]);"
    "from tether_agent.wrapper import wrap_main;sys.exit(wrap_main(sys.argv[2]))"
)


# ---- places -------------------------------------------------------------------------


def data_dir() -> str:
    return os.path.expanduser("~/.local/share/tether")


def jobs_dir() -> str:
    return os.path.join(data_dir(), "jobs")


def logs_dir() -> str:
    return os.path.join(data_dir(), "logs")


def kernels_dir() -> str:
    return os.path.join(data_dir(), "kernels")


def snapshots_dir() -> str:
    return os.path.expanduser("~/.cache/tether/snapshots")


def project_tag(root: str) -> str:
    """A project's mark on this host: a hash of its resolved remote directory."""
    real = os.path.realpath(fsops.root_path(root))
    return hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def job_key(name: Any, root: Optional[str]) -> str:
    """A job's identity on the host: its project's tag, then its name (job names are per
    project: two projects may both have `train`). Without a root (an older client), the
    name itself."""
    name = check_name(name)
    return "%s-%s" % (project_tag(root), name) if root else name


def shown(key: str) -> str:
    """The job name in a key."""
    tag, sep, name = key.partition("-")
    if sep and len(tag) == 8 and all(ch in "0123456789abcdef" for ch in tag) and name:
        return name
    return key


def scoped_reader(root: Optional[str]) -> Callable[[str], Optional[Dict[str, Any]]]:
    """read_record by a job name of the project at root (for --after and restarts)."""
    return lambda name: read_record(job_key(name, root))


def record_path(name: str) -> str:
    return os.path.join(jobs_dir(), name + ".json")


def kill_marker(name: str) -> str:
    return os.path.join(jobs_dir(), name + ".kill")


# ---- pure parts (unit-tested) -------------------------------------------------------


def check_name(name: Any) -> str:
    """A job name safe as a file name and a tmux session name, or OpError."""
    if not isinstance(name, str) or not valid_name(name):
        raise fsops.OpError(
            ErrorKind.BADNAME,
            "bad job name %r: use up to 64 letters, digits, '_' and '-'" % (name,),
        )
    return name


def check_socket(name: Any) -> str:
    if not isinstance(name, str) or not SOCKET_RE.match(name):
        raise fsops.OpError(ErrorKind.BADNAME, "bad tmux socket name %r" % (name,))
    return name


def session_name(name: str) -> str:
    return SESSION_PREFIX + name


def new_session_argv(sock: str, name: str, command: List[str], tmux_major: int = 3) -> List[str]:
    """argv that starts `command` detached in session tether-NAME.

    tmux >= 3.0 execs a command given as several words directly (no shell); older tmux
    joins them and runs the result through the shell, so there every word is quoted.
    """
    words = list(command)
    if tmux_major < 3:
        import shlex

        words = [" ".join(shlex.quote(word) for word in command)]
    return ["tmux", "-L", sock, "new-session", "-d", "-s", session_name(name), "--", *words]


def list_sessions_argv(sock: str) -> List[str]:
    return ["tmux", "-L", sock, "list-sessions", "-F", "#{session_name}"]


def wrapper_command(python: str, agent_path: str, spec_path: str) -> List[str]:
    """The wrapper's argv: values travel as argv words, never inside code."""
    return [python, "-c", WRAP_CODE, agent_path, spec_path]


def process_stamp(pid: int) -> Optional[str]:
    """Who process pid is, for as long as it runs: this boot's id and the pid's start time
    (Linux /proc). None when it is not running (a zombie included) or /proc cannot say.

    A job's wrapper is its tmux pane's process: its stamp, kept in its record, tells
    whether the job's session is up without asking tmux (a process start per listing). A
    reused pid starts later; another boot (or another host sharing this home) has another
    boot id."""
    try:
        with open("/proc/%d/stat" % int(pid), "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        with open("/proc/sys/kernel/random/boot_id", "rb") as handle:
            boot = handle.read().strip()
    except (OSError, IndexError, ValueError, OverflowError):
        return None
    if len(fields) < 20 or fields[0] in (b"Z", b"X", b"x"):  # (fields from the 3rd: state)
        return None
    return "%s:%s" % (boot.decode("ascii", "replace"), fields[19].decode("ascii", "replace"))


def wrapper_alive(record: Dict[str, Any]) -> Optional[bool]:
    """Whether the job's wrapper (so its tmux session) still runs, from the stamp its record
    keeps; None when the record keeps none (an older tether, no /proc, not started yet)."""
    stamp, pid = record.get("wrapper_stamp"), record.get("wrapper_pid")
    if not isinstance(stamp, str) or not isinstance(pid, int) or isinstance(pid, bool):
        return None
    return process_stamp(pid) == stamp


def tmux_major(version: str) -> int:
    """3 from 'tmux 3.3a', 2 from 'tmux 2.9'; 3 when unknown."""
    match = re.search(r"(\d+)\.", version or "")
    return int(match.group(1)) if match else 3


# ---- records ------------------------------------------------------------------------


def write_json(path: str, data: Dict[str, Any]) -> None:
    """Write JSON atomically: temp file in the same directory, fsync, rename."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temp = "%s.%d.tmp" % (path, os.getpid())
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def read_record(name: str) -> Optional[Dict[str, Any]]:
    try:
        with open(record_path(name), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def all_records() -> List[Dict[str, Any]]:
    records = []
    for entry in fsops.names_in(jobs_dir()):
        if entry.endswith(".json") and not entry.endswith(".tmp"):
            record = read_record(entry[:-5])
            if record is not None:
                records.append(record)
    return records
