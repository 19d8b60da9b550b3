"""Jobs on the remote: snapshot, start in tmux through a wrapper, list, log, kill.

The wrapper (`wrapper.wrap_main`) runs inside the tmux pane: it starts argv
exactly (no shell) in the snapshot, tees its output to a durable log and records start,
pid, end and the real exit code in the job record (temp + rename, never half-written).
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from . import deps, envs, fsops, provenance, start
from . import gpus as gpu_queue
from . import record as record_module
from .gpus import key_of
from .jobstore import (
    DEFAULT_SOCKET,
    START_GRACE_S,
    all_records,
    check_name,
    check_socket,
    derive_state,
    job_key,
    kill_marker,
    list_sessions_argv,
    new_session_argv,
    read_record,
    record_path,
    scoped_reader,
    session_name,
    shown,
    tmux_major,
    wrapper_alive,
    wrapper_command,
    write_json,
)
from .wire import ErrorKind

Answer = Tuple[Dict[str, Any], bytes]
SCHEDULER = "tmux"  # records without a `scheduler` field are tmux's


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
            ErrorKind.NOTMUX,
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
    argv = record_module.check_argv(header.get("argv"))
    version = _tmux_version()
    if not os.path.isdir(root):
        raise fsops.OpError(
            ErrorKind.NOPROJECT, "no project directory %s on the remote; push first" % root
        )
    sessions = _sessions(sock) or set()
    if read_record(key) is not None or session_name(key) in sessions:
        raise fsops.OpError(ErrorKind.EXISTS, "a job named %r already exists" % name)
    after = deps.check_after(name, header.get("after"), read)
    project = check_name(header.get("project") or "project")
    count = _gpu_count(header.get("gpu_count"))
    cwd_rel = record_module.check_cwd(header.get("cwd"))
    env = start.check_env(header.get("env"))
    in_env = envs.for_job(header)  # before the snapshot: "noenv" makes the client build it
    fresh_snapshot = not header.get("snapshot_of")
    if header.get("snapshot_of"):
        snap = record_module.reused_snapshot(_need(job_key(header["snapshot_of"], root)))
    else:
        snap = record_module.new_snapshot(root, project, name, header, payload)
    cwd = snap.cwd(cwd_rel)
    own = {
        "socket": sock,
        "session": session_name(key),
        "gpu_count": count,
        "cuda_visible_devices": header.get("gpus"),
        "remote_host": socket.gethostname(),
        "after": after,
        "notify": header.get("notify") or None,
        "notify_timeout": header.get("notify_timeout") or None,
        "array_index": header.get("array_index"),
        "restart_of": header.get("restart_of"),
    }
    record = record_module.new_record(header, name, root, project, argv, cwd, snap, env, own)
    record.update(in_env)
    if not after:  # a dependency may still make it; otherwise it must start now
        why = start.why_not_startable(argv[0], cwd, record)
        if why is not None:
            if fresh_snapshot:
                shutil.rmtree(snap.path, ignore_errors=True)
            raise fsops.OpError(
                ErrorKind.NOCOMMAND,
                "cannot start %s on %s: %s" % (argv[0], socket.gethostname(), why),
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
        raise fsops.OpError(ErrorKind.TMUX, "tmux new-session failed: %s" % done.stderr.strip())
    if record["state"] == "starting":
        now = start.await_start(path)
        if now is not None and str(now.get("reason") or "").startswith("cannot start"):
            for gone in (path, str(record["log"])):
                with contextlib.suppress(OSError):
                    os.unlink(gone)
            if fresh_snapshot:
                shutil.rmtree(snap.path, ignore_errors=True)
            raise fsops.OpError(
                ErrorKind.NOCOMMAND, "%s on %s: %s" % (argv[0], socket.gethostname(), now["reason"])
            )
        record = now or record
    return {"record": record}, b""


def _gpu_count(value: Any) -> int:
    """The N of --gpus N (0: none asked); refused where the host has fewer than N GPUs."""
    if value is None or value == 0:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise fsops.OpError(ErrorKind.BADGPUS, "bad GPU count %r" % (value,))
    found = gpu_queue.query()
    total = len(found[0]) if found else 0
    if total < value:
        where = "nvidia-smi finds %d" % total if found else "no nvidia-smi"
        raise fsops.OpError(
            ErrorKind.NOGPUS, "asked for %d GPU%s but this host has %s" % (value, _s(value), where)
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
        alive = _alive(record, cache)
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
        raise fsops.OpError(ErrorKind.NOJOB, "no job named %r" % shown(key))
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
        raise fsops.OpError(ErrorKind.NOJOB, "job %r has no running process" % shown(name))
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


def state_now(record: Dict[str, Any], header: Dict[str, Any], cache: Dict[str, Any]) -> str:
    """The job's state from its record and its tmux session (sessions asked once per
    socket, kept in cache)."""
    return derive_state(record, _alive(record, cache), time.time())


def _alive(record: Dict[str, Any], cache: Dict[str, Optional[Set[str]]]) -> bool:
    """Whether the job's tmux session is up: from its wrapper's stamp where the record keeps
    one (the wrapper is the session's only process), else by asking tmux (once per socket,
    kept in cache)."""
    if record.get("scheduler", SCHEDULER) == SCHEDULER:
        known = wrapper_alive(record)
        if known is not None:
            return known
    sock = str(record.get("socket") or DEFAULT_SOCKET)
    if sock not in cache:
        cache[sock] = _sessions(sock)
    return session_name(key_of(record)) in (cache[sock] or set())


def stop(named: Dict[str, Any], header: Dict[str, Any], grace: float) -> Dict[str, Any]:
    """Kill the named job (name, root) as job_kill does; its record."""
    record: Dict[str, Any] = job_kill(dict(named, grace=grace), b"")[0]["record"]
    return record


def register(agent: Any) -> None:
    """Add the job ops to the agent."""
    agent.add(job_start, job_list, job_log, job_kill, status)
