"""Jobs on the remote: snapshot, start in tmux through a wrapper, list, log, kill.

The wrapper (`wrapper.wrap_main`) runs inside the tmux pane: it starts argv
exactly (no shell) in the snapshot, tees its output to a durable log and records start,
pid, end and the real exit code in the job record (temp + rename, never half-written).
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import deps, envs, fsops, provenance, snapshot, start
from . import gpus as gpu_queue
from .gpus import key_of

DEFAULT_SOCKET = "tether"
SESSION_PREFIX = "tether-"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SOCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
START_GRACE_S = 15.0
WRAP_CODE = (
    "import sys;sys.path.insert(0,sys.argv[1]);"
    "from tether_agent.wrapper import wrap_main;sys.exit(wrap_main(sys.argv[2]))"
)
Answer = Tuple[Dict[str, Any], bytes]


# ---- places -------------------------------------------------------------------------


def data_dir() -> str:
    return os.path.expanduser("~/.local/share/tether")


def jobs_dir() -> str:
    return os.path.join(data_dir(), "jobs")


def logs_dir() -> str:
    return os.path.join(data_dir(), "logs")


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
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise fsops.OpError(
            "badname",
            "bad job name %r: use up to 64 letters, digits, '_' and '-'" % (name,),
        )
    return name


def check_socket(name: Any) -> str:
    if not isinstance(name, str) or not SOCKET_RE.match(name):
        raise fsops.OpError("badname", "bad tmux socket name %r" % (name,))
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


def exit_status(returncode: int) -> Tuple[int, Optional[str]]:
    """(exit_code, reason) from a Popen returncode; -N (signal N) becomes 128+N."""
    if returncode < 0:
        return 128 - returncode, "signal %d" % -returncode
    return returncode, None


def derive_state(record: Dict[str, Any], alive: bool, now: float) -> str:
    """queued / running / exited / cancelled / lost from a record and its tmux session."""
    if record.get("ended") is not None:
        return "cancelled" if record.get("exit_code") is None else "exited"
    if record.get("state") == "cancelled":
        return "cancelled"
    created = record.get("created") or 0
    if record.get("state") == "queued":
        return "queued" if alive or now - float(created) < START_GRACE_S else "lost"
    if alive:
        return "running"
    if record.get("started") is None and now - float(created) < START_GRACE_S:
        return "running"
    return "lost"


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
    try:
        names = sorted(os.listdir(jobs_dir()))
    except OSError:
        return []
    records = []
    for entry in names:
        if entry.endswith(".json") and not entry.endswith(".tmp"):
            record = read_record(entry[:-5])
            if record is not None:
                records.append(record)
    return records


SNAPSHOT_FIELDS = ("snapshot_files", "snapshot_bytes", "snapshot_methods")

# ---- snapshot -----------------------------------------------------------------------


def take_snapshot(root: str, dest: str, header: Dict[str, Any], payload: bytes) -> Dict[str, Any]:
    """A new frozen snapshot of root at dest (agent/snapshot.py); the record's fields."""
    stats = snapshot.take(
        root, dest, snapshot.paths_of(header, payload), header.get("results") or []
    )
    return {
        "snapshot_files": stats.files,
        "snapshot_bytes": stats.bytes,
        "snapshot_methods": stats.methods,
    }


# ---- ops ----------------------------------------------------------------------------


def new_session(argv: List[str]) -> subprocess.CompletedProcess[str]:
    """tmux new-session; again when it met the server just as it was leaving (the last
    session ended at that moment: tmux exits when empty, and the new client loses)."""
    for _attempt in range(3):
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
        if done.returncode == 0 or "server exited unexpectedly" not in done.stderr:
            return done
        time.sleep(0.05)
    return done


def _tmux_version() -> str:
    if shutil.which("tmux") is None:
        raise fsops.OpError(
            "notmux",
            "tmux is not installed on the remote; install it (e.g. `sudo apt-get install tmux`)",
        )
    done = subprocess.run(["tmux", "-V"], capture_output=True, text=True, timeout=10)
    return done.stdout.strip()


def _sessions(sock: str) -> Optional[Set[str]]:
    """Session names on the socket; empty when no server runs; None if tmux is missing."""
    if shutil.which("tmux") is None:
        return None
    done = subprocess.run(list_sessions_argv(sock), capture_output=True, text=True, timeout=15)
    if done.returncode != 0:
        return set()
    return set(done.stdout.split())


def job_start(header: Dict[str, Any], payload: bytes) -> Answer:
    """Snapshot (or reuse a job's snapshot) and start the wrapper in a new tmux session.

    `restart_of` copies argv, GPUs, notify and provenance from an earlier job;
    `snapshot_of` reuses that job's snapshot and cwd; `after` names dependencies.
    """
    name = check_name(header.get("name"))
    sock = check_socket(header.get("socket") or DEFAULT_SOCKET)
    header = dict(header)
    root = fsops.sync_root(header["root"])
    key = job_key(name, root)
    read = scoped_reader(root)
    if header.get("restart_of"):
        deps.from_earlier(header, _need(job_key(header["restart_of"], root)))
    argv = header.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise fsops.OpError("badargv", "argv must be a non-empty list of strings")
    version = _tmux_version()
    if not os.path.isdir(root):
        raise fsops.OpError("noproject", "no project directory %s on the remote; push first" % root)
    sessions = _sessions(sock) or set()
    if read_record(key) is not None or session_name(key) in sessions:
        raise fsops.OpError("exists", "a job named %r already exists" % name)
    after = deps.check_after(name, header.get("after"), read)
    project = check_name(header.get("project") or "project")
    count = _gpu_count(header.get("gpu_count"))
    cwd_rel = (
        fsops.check_rel(header.get("cwd") or "") if header.get("cwd") not in (None, "", ".") else ""
    )
    env = start.check_env(header.get("env"))
    in_env = envs.for_job(header)  # before the snapshot: "noenv" makes the client build it
    fresh_snapshot = not header.get("snapshot_of")
    if header.get("snapshot_of"):
        earlier = _need(job_key(header["snapshot_of"], root))
        snap, snap_id = str(earlier["snapshot"]), str(earlier.get("snapshot_id") or "")
        if not os.path.isdir(snap):
            raise fsops.OpError("nosnapshot", "the snapshot of %r is gone" % earlier["name"])
        taken = {key: earlier.get(key) for key in SNAPSHOT_FIELDS}
    else:
        snap_id = time.strftime("%Y%m%d-%H%M%S") + "-" + name
        snap = os.path.join(snapshots_dir(), project, snap_id)
        taken = take_snapshot(root, snap, header, payload)
    cwd = os.path.join(snap, cwd_rel) if cwd_rel else snap
    gpus = header.get("gpus")
    record: Dict[str, Any] = dict(header.get("provenance") or {})
    record.update(
        {
            "name": name,
            "key": key,
            "argv": argv,
            "cwd": cwd,
            "root": root,
            "project": project,
            "snapshot": snap,
            "snapshot_id": snap_id,
            "socket": sock,
            "session": session_name(key),
            "gpus": gpus,
            "gpu_count": count,
            "cuda_visible_devices": gpus,
            "remote_host": socket.gethostname(),
            "log": os.path.join(logs_dir(), key + ".log"),
            "created": time.time(),
            "state": "starting",
            "started": None,
            "ended": None,
            "exit_code": None,
            "reason": None,
            "pid": None,
            "python": header.get("python") or record.get("python"),
            "after": after,
            "notify": header.get("notify") or None,
            "notify_timeout": header.get("notify_timeout") or None,
            "array_index": header.get("array_index"),
            "restart_of": header.get("restart_of"),
        }
    )
    record.update(taken)
    record.update(start.interpreter_fields(), env=env)
    record.update(in_env)
    if not after:  # a dependency may still make it; otherwise it must start now
        why = start.why_not_startable(argv[0], cwd, record)
        if why is not None:
            if fresh_snapshot:
                shutil.rmtree(snap, ignore_errors=True)
            raise fsops.OpError(
                "nocommand", "cannot start %s on %s: %s" % (argv[0], socket.gethostname(), why)
            )
    if not in_env:
        record.update(provenance.remote(header))
    path = record_path(key)
    pending, failed = deps.verdict(after, read, time.time(), START_GRACE_S)
    if failed is not None:
        record.update(state="cancelled", ended=time.time(), reason=failed)
        write_json(path, record)
        return {"record": record}, b""
    entry = ""
    if pending:
        record.update(state="queued", reason=deps.after_reason(pending), queued=time.time())
        write_json(path, record)
    elif count:
        entry = place(path, record, count)
    else:
        write_json(path, record)
    agent_path = os.path.abspath(sys.argv[0])
    command = wrapper_command(sys.executable, agent_path, path)
    argv_tmux = new_session_argv(sock, key, command, tmux_major(version))
    done = new_session(argv_tmux)
    if done.returncode != 0:
        os.unlink(path)
        if entry:
            with contextlib.suppress(OSError):
                os.unlink(entry)
        raise fsops.OpError("tmux", "tmux new-session failed: %s" % done.stderr.strip())
    if record["state"] == "starting":
        now = start.await_start(path)
        if now is not None and str(now.get("reason") or "").startswith("cannot start"):
            for gone in (path, str(record["log"])):
                with contextlib.suppress(OSError):
                    os.unlink(gone)
            if fresh_snapshot:
                shutil.rmtree(snap, ignore_errors=True)
            raise fsops.OpError(
                "nocommand", "%s on %s: %s" % (argv[0], socket.gethostname(), now["reason"])
            )
        record = now or record
    return {"record": record}, b""


def _gpu_count(value: Any) -> int:
    """The N of --gpus N (0: none asked); refused where the host has fewer than N GPUs."""
    if value is None or value == 0:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise fsops.OpError("badgpus", "bad GPU count %r" % (value,))
    found = gpu_queue.query()
    total = len(found[0]) if found else 0
    if total < value:
        where = "nvidia-smi finds %d" % total if found else "no nvidia-smi"
        raise fsops.OpError(
            "nogpus", "asked for %d GPU%s but this host has %s" % (value, _s(value), where)
        )
    return value


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def place(path: str, record: Dict[str, Any], count: int) -> str:
    """Give the job count free GPUs now, or queue it; the record is written under the lock.

    Returns the queue entry's path ("" when the job got its GPUs at once).
    """
    with gpu_queue.locked():
        got = gpu_queue.claim(key_of(record), count, all_records(), time.time(), START_GRACE_S)
        entry = ""
        if got is None:
            record.update(state="queued", reason=gpu_queue.plural(count), queued=time.time())
            entry = gpu_queue.enqueue(key_of(record))
        else:
            picked = ",".join(str(index) for index in got)
            record.update(gpus=picked, cuda_visible_devices=picked)
        write_json(path, record)
    return entry


def job_list(header: Dict[str, Any], payload: bytes) -> Answer:
    """Jobs with their state; `root` keeps one project's, `since` hides older finished ones."""
    root = header.get("root")
    want = fsops.root_path(root) if root else None
    since = header.get("since")
    records = []
    for record in all_records():
        if want is not None and record.get("root") != want:
            continue
        ended = record.get("ended")
        if since is not None and ended is not None and float(ended) < float(since):
            continue
        records.append(record if header.get("full") else provenance.light(record))
    cache: Dict[str, Optional[Set[str]]] = {}
    now = time.time()
    for index, record in enumerate(records):
        sock = str(record.get("socket") or DEFAULT_SOCKET)
        if sock not in cache:
            cache[sock] = _sessions(sock)
        alive = session_name(key_of(record)) in (cache[sock] or set())
        if not alive and record.get("ended") is None:
            # Read before the sessions were listed: it may have ended in between (its
            # session then goes), which is not "lost".
            again = read_record(key_of(record))
            if again is not None and again.get("ended") is not None:
                record = again if header.get("full") else provenance.light(again)
                records[index] = record
        record["alive"] = alive
        record["state"] = derive_state(record, alive, now)
    return {"jobs": records, "tmux": shutil.which("tmux") is not None}, b""


def status(header: Dict[str, Any], payload: bytes) -> Answer:
    """One answer for `tether status`: load, disk, GPUs (with who holds them), job counts."""
    path = fsops.root_path(header.get("root") or "~")
    while not os.path.isdir(path) and path != "/":
        path = os.path.dirname(path)
    usage = shutil.disk_usage(path)
    now = time.time()
    jobs = job_list({}, b"")[0]["jobs"]
    found = gpu_queue.query()
    held = gpu_queue.held_by_jobs(jobs, now, START_GRACE_S)
    gpus = gpu_queue.annotate(found[0], found[1], held) if found else []
    counts: Dict[str, int] = {}
    mine: Dict[str, int] = {}
    root = fsops.root_path(header["root"]) if header.get("root") else None
    for job in jobs:
        counts[job["state"]] = counts.get(job["state"], 0) + 1
        if job.get("root") == root:
            mine[job["state"]] = mine.get(job["state"], 0) + 1
    try:
        load: Optional[List[float]] = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "hostname": socket.gethostname(),
        "load": load,
        "cpus": os.cpu_count(),
        "disk_free": usage.free,
        "disk_total": usage.total,
        "disk_path": path,
        "gpus": gpus,
        "nvidia_smi": found is not None,
        "jobs": counts,
        "project_jobs": mine,
        "queue": [name for _, name in gpu_queue.entries()],
        "tmux": shutil.which("tmux") is not None,
    }, b""


def _need(key: str) -> Dict[str, Any]:
    """The record of the job with this key (job_key); `nojob` naming the job otherwise."""
    record = read_record(key)
    if record is None:
        raise fsops.OpError("nojob", "no job named %r" % shown(key))
    return record


def _key(header: Dict[str, Any]) -> str:
    """The key of the job a request names (its name, in its root's project)."""
    return job_key(header.get("name"), header.get("root"))


def job_log(header: Dict[str, Any], payload: bytes) -> Answer:
    record = _need(_key(header))
    offset = int(header.get("offset") or 0)
    limit = int(header.get("limit") or (1 << 20))
    sessions = _sessions(str(record.get("socket") or DEFAULT_SOCKET)) or set()
    alive = session_name(key_of(record)) in sessions
    state = derive_state(record, alive, time.time())
    data = b""
    size = 0
    try:
        with open(record["log"], "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(offset)
            data = handle.read(limit)
    except FileNotFoundError:
        pass
    return {
        "offset": offset,
        "size": size,
        "state": state,
        "exit_code": record.get("exit_code"),
        "reason": record.get("reason"),
    }, data


def job_kill(header: Dict[str, Any], payload: bytes) -> Answer:
    """SIGINT, then SIGTERM, then SIGKILL to the job's process group; wait for the record."""
    name = _key(header)
    record = _need(name)
    grace = float(header.get("grace", 5.0))
    if record.get("state") == "queued" and record.get("ended") is None:
        cancelled = _cancel_queued(name)
        if cancelled is not None:
            return {"record": cancelled, "signalled": []}, b""
        record = _need(name)  # it left the queue meanwhile: stop it as a running job
    deadline = time.time() + START_GRACE_S
    while record.get("pid") is None and record.get("ended") is None and time.time() < deadline:
        time.sleep(0.1)
        record = _need(name)
    if record.get("ended") is not None:
        return {"record": record, "signalled": False}, b""
    pgid = record.get("pid")
    if not isinstance(pgid, int):
        raise fsops.OpError("nojob", "job %r has no running process" % shown(name))
    with open(kill_marker(name), "w", encoding="utf-8") as handle:
        handle.write("killed by tether kill\n")
    sent = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if not fsops.pid_alive(pgid, group=True):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        sent.append(int(sig))
        stop = time.time() + grace
        while time.time() < stop and fsops.pid_alive(pgid, group=True):
            time.sleep(0.05)
    stop = time.time() + 10
    while time.time() < stop:
        record = _need(name)
        if record.get("ended") is not None:
            break
        time.sleep(0.05)
    return {"record": record, "signalled": sent}, b""


def _cancel_queued(name: str) -> Optional[Dict[str, Any]]:
    """Stop a queued job before it starts: its wrapper records `cancelled` and leaves.

    None if the job got its GPUs meanwhile (it runs: the caller stops it as such).
    """
    with open(kill_marker(name), "w", encoding="utf-8") as handle:
        handle.write("killed by tether kill\n")
    stop = time.time() + 10
    record = _need(name)
    while time.time() < stop and record.get("ended") is None:
        if record.get("state") != "queued":
            return None
        if not gpu_queue.owner_alive(record, time.time(), START_GRACE_S):
            break
        time.sleep(0.05)
        record = _need(name)
    if record.get("ended") is None:  # the wrapper is gone: record it here
        with gpu_queue.locked():
            gpu_queue.dequeue(name)
            record = _need(name)
            if record.get("ended") is None:
                record.update(state="cancelled", ended=time.time(), reason="killed by tether kill")
                write_json(record_path(name), record)
    with contextlib.suppress(OSError):
        os.unlink(kill_marker(name))
    return record


def register(agent: Any) -> None:
    """Add the job ops to the agent."""
    agent.handlers["job_start"] = job_start
    agent.handlers["job_list"] = job_list
    agent.handlers["job_log"] = job_log
    agent.handlers["job_kill"] = job_kill
    agent.handlers["status"] = status
