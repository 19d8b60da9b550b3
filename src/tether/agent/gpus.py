"""GPUs for jobs: what nvidia-smi says, which GPUs are free, and the per-host FIFO queue.

A GPU is free for `--gpus N` when all three hold:
  - no running tether job on this host holds it (recorded in the job records, so a job
    that has not touched the GPU yet still counts),
  - nvidia-smi lists no compute process on it,
  - its memory.used is below BUSY_MEMORY_MIB (a display or a driver context uses a few
    hundred MiB; anything more is someone's work).

The queue is a directory of entries `<submitted ns>-<name>`, one per waiting job, under
~/.local/share/tether/queue/<hostname>/, guarded by a lock file (flock). Order is strict
FIFO by submission: a job only starts when it is at the head and enough GPUs are free, so
a job asking for many GPUs is never starved by later small ones.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .fsops import names_in, pid_alive

GPU_FIELDS = ("index", "uuid", "name", "memory.used", "memory.total", "utilization.gpu")
APP_FIELDS = ("gpu_uuid", "pid", "used_memory")
BUSY_MEMORY_MIB = 1024
POLL_S = 0.5
Gpu = Dict[str, Any]


def data_dir() -> str:
    return os.path.expanduser("~/.local/share/tether")


def nvidia_smi() -> Optional[str]:
    """The nvidia-smi to run: $TETHER_NVIDIA_SMI, ~/.local/share/tether/bin/nvidia-smi, PATH.

    The tether bin directory serves hosts where nvidia-smi lives off PATH (and tests,
    which put a fake there).
    """
    override = os.environ.get("TETHER_NVIDIA_SMI")
    if override:
        return override
    local = os.path.join(data_dir(), "bin", "nvidia-smi")
    if os.access(local, os.X_OK):
        return local
    return shutil.which("nvidia-smi")


# ---- parsing (unit-tested on stored nvidia-smi output) -----------------------------


def _number(cell: str) -> Optional[int]:
    """'81559', '81559 MiB', '35 %', '[N/A]' -> int or None."""
    text = cell.strip().split(" ")[0] if cell.strip() else ""
    try:
        return int(float(text))
    except ValueError:
        return None


def _rows(text: str) -> Iterator[List[str]]:
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if not line.strip() or cells[0] in ("index", "gpu_uuid"):
            continue  # blank or the header of --format=csv
        yield cells


def parse_gpus(text: str) -> List[Gpu]:
    """Rows of `--query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu`."""
    gpus = []
    for cells in _rows(text):
        if len(cells) < len(GPU_FIELDS):
            continue
        index = _number(cells[0])
        if index is None:
            continue
        gpus.append(
            {
                "index": index,
                "uuid": cells[1],
                "name": cells[2],
                "memory_used": _number(cells[3]),
                "memory_total": _number(cells[4]),
                "utilization": _number(cells[5]),
            }
        )
    return gpus


def parse_apps(text: str) -> List[Dict[str, Any]]:
    """Rows of `--query-compute-apps=gpu_uuid,pid,used_memory`."""
    apps = []
    for cells in _rows(text):
        if len(cells) < len(APP_FIELDS) or not cells[0].startswith(("GPU-", "MIG-")):
            continue
        apps.append({"uuid": cells[0], "pid": _number(cells[1]), "memory": _number(cells[2])})
    return apps


def query() -> Optional[Tuple[List[Gpu], List[Dict[str, Any]]]]:
    """(gpus, compute apps) from nvidia-smi; None where there is none (or it fails)."""
    tool = nvidia_smi()
    if tool is None:
        return None
    fmt = "--format=csv,noheader,nounits"
    try:
        done = subprocess.run(
            [tool, "--query-gpu=" + ",".join(GPU_FIELDS), fmt],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if done.returncode != 0:
            return None
        apps = subprocess.run(
            [tool, "--query-compute-apps=" + ",".join(APP_FIELDS), fmt],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_gpus(done.stdout), parse_apps(apps.stdout if apps.returncode == 0 else "")


def annotate(gpus: List[Gpu], apps: List[Dict[str, Any]], held: Dict[int, str]) -> List[Gpu]:
    """Each GPU with `processes`, `job` (the tether job holding it) and `free`."""
    out = []
    for gpu in gpus:
        procs = [app for app in apps if app["uuid"] == gpu["uuid"]]
        used = gpu.get("memory_used") or 0
        item = dict(gpu)
        item["processes"] = len(procs)
        item["job"] = held.get(gpu["index"])
        item["free"] = item["job"] is None and not procs and used < BUSY_MEMORY_MIB
        out.append(item)
    return out


def held_by_jobs(records: List[Dict[str, Any]], now: float, grace: float) -> Dict[int, str]:
    """GPU index -> name of the live tether job on this host that holds it."""
    host = socket.gethostname()
    held: Dict[int, str] = {}
    for record in records:
        if record.get("ended") is not None or record.get("state") == "queued":
            continue
        if record.get("remote_host") not in (None, host) or not owner_alive(record, now, grace):
            continue
        for part in str(record.get("gpus") or "").split(","):
            if part.strip().isdigit():
                held[int(part)] = str(record.get("name"))
    return held


def owner_alive(record: Dict[str, Any], now: float, grace: float) -> bool:
    """True while the job's wrapper runs (or it was created less than grace seconds ago)."""
    pid = record.get("wrapper_pid")
    if isinstance(pid, int):
        return pid_alive(pid)
    return now - float(record.get("created") or 0) < grace


def plural(count: int) -> str:
    return "waiting for %d GPU%s" % (count, "" if count == 1 else "s")


# ---- the queue ----------------------------------------------------------------------


def key_of(record: Dict[str, Any]) -> str:
    """A job record's identity on the host (its project's tag and its name; older records:
    the name). Files, tmux sessions and queue entries are named by it."""
    return str(record.get("key") or record.get("name"))


def queue_dir() -> str:
    return os.path.join(data_dir(), "queue", socket.gethostname())


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """The host's queue lock (flock on queue/<host>/.lock)."""
    directory = queue_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def enqueue(name: str) -> str:
    """Add name at the tail; returns the entry's path."""
    path = os.path.join(queue_dir(), "%020d-%s" % (time.time_ns(), name))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(name + "\n")
    return path


def entries() -> List[Tuple[str, str]]:
    """(entry file, job name) in FIFO order."""
    out = []
    for entry in names_in(queue_dir()):
        stamp, _, name = entry.partition("-")
        if stamp.isdigit() and name:
            out.append((os.path.join(queue_dir(), entry), name))
    return out


def dequeue(name: str) -> None:
    for path, entry_name in entries():
        if entry_name == name:
            with contextlib.suppress(OSError):
                os.unlink(path)


def claim(
    name: str, count: int, records: List[Dict[str, Any]], now: float, grace: float
) -> Optional[List[int]]:
    """Under the lock: count free GPU indices if name may start now, else None.

    name may start when the queue (without entries of dead or ended jobs, which are
    dropped here) is empty or has name at its head.
    """
    by_name = {key_of(record): record for record in records}
    waiting = []
    for path, entry_name in entries():
        record = by_name.get(entry_name)
        live = (
            record is not None
            and record.get("ended") is None
            and record.get("state") == "queued"
            and owner_alive(record, now, grace)
        )
        if live:
            waiting.append(entry_name)
        elif entry_name != name:
            with contextlib.suppress(OSError):
                os.unlink(path)
    if waiting and waiting[0] != name:
        return None
    found = query()
    if found is None:
        return None
    gpus, apps = found
    held = held_by_jobs([r for r in records if key_of(r) != name], now, grace)
    free = [gpu["index"] for gpu in annotate(gpus, apps, held) if gpu["free"]]
    return free[:count] if len(free) >= count else None
