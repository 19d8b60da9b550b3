"""Jobs on a Slurm cluster: snapshot, sbatch a script that runs tether's wrapper, ask Slurm.

Slurm is the engine: tether writes the job's record (argv, snapshot, provenance), a batch
script that execs the same wrapper the tmux jobs use (so the real exit code lands in the
record), and submits it with `sbatch --parsable` (an argv list, never a shell string).
State comes from `squeue` (and `sacct` where accounting is on); the client maps it.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import envs, fsops, provenance, start
from . import record as record_module
from .gpus import key_of
from .jobstore import (
    WRAP_CODE,
    check_name,
    data_dir,
    job_key,
    jobs_dir,
    kill_marker,
    read_record,
    record_path,
    scoped_reader,
    write_json,
)
from .wire import ErrorKind

Answer = Tuple[Dict[str, Any], bytes]
SCHEDULER = "slurm"  # the `scheduler` field of the records this module writes
OOM_TEXT = "exceeded memory limit"
TAIL_BYTES = 65536
ACTIVE_SLURM = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED")
SBATCH_OPT_RE = re.compile(r"^--?[A-Za-z]")


def slurm_dir() -> str:
    return os.path.join(data_dir(), "slurm")


# ---- pure parts (unit-tested) -------------------------------------------------------


def batch_script(python: str, agent_path: str, records: str, name: str) -> str:
    """The batch script: one job (or array task) through tether's wrapper, exec'd."""
    lines = [
        "#!/bin/sh",
        "# Written by tether: runs job %s through tether's wrapper, which starts its argv" % name,
        "# exactly in the snapshot, tees the output and records the real exit code.",
        "name=%s" % shlex.quote(name),
        'if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then name="$name-$SLURM_ARRAY_TASK_ID"; fi',
        'exec %s -c %s %s %s/"$name".json'
        % (
            shlex.quote(python),
            shlex.quote(WRAP_CODE),
            shlex.quote(agent_path),
            shlex.quote(records),
        ),
    ]
    return "\n".join(lines) + "\n"


def sbatch_argv(
    options: List[str], script: str, out: str, cwd: str, dep_ids: List[str]
) -> List[str]:
    """sbatch --parsable with the client's options, the output file and dependencies."""
    argv = ["sbatch", "--parsable", "--output=" + out, "--chdir=" + cwd, "--export=ALL"]
    argv.extend(options)
    if dep_ids:
        argv.append("--dependency=afterok:" + ":".join(dep_ids))
        argv.append("--kill-on-invalid-dep=yes")
    argv.append(script)
    return argv


def parse_squeue(text: str) -> Dict[str, Tuple[str, str]]:
    """{job id: (state, reason)} from `squeue -h -o %i|%T|%r`; `17_[2-3]` expands."""
    found: Dict[str, Tuple[str, str]] = {}
    for line in text.splitlines():
        cells = line.strip().split("|")
        if len(cells) < 3 or not cells[0]:
            continue
        ident, state, reason = cells[0], cells[1], cells[2]
        for one in expand_ids(ident):
            found[one] = (state, reason)
    return found


def expand_ids(ident: str) -> List[str]:
    """'17_[0-2,5]' -> 17_0 17_1 17_2 17_5 ('%N' limits dropped); other ids unchanged."""
    match = re.match(r"^(\d+)_\[([^\]]*)\]$", ident)
    if not match:
        return [ident]
    out: List[str] = []
    for part in match.group(2).split("%")[0].split(","):
        if "-" in part:
            low, high = part.split("-", 1)
            if low.isdigit() and high.isdigit():
                out.extend("%s_%d" % (match.group(1), i) for i in range(int(low), int(high) + 1))
        elif part.isdigit():
            out.append("%s_%s" % (match.group(1), part))
    return out


def parse_sacct(text: str) -> Dict[str, Tuple[str, str]]:
    """{job id: (state, exit code 'N:S')} from `sacct -n -P -X -o JobID,State,ExitCode`."""
    found: Dict[str, Tuple[str, str]] = {}
    for line in text.splitlines():
        cells = line.strip().split("|")
        if len(cells) >= 3 and cells[0]:
            found[cells[0]] = (cells[1].split()[0] if cells[1] else "", cells[2])
    return found


def parse_scontrol(text: str) -> Dict[str, str]:
    """Key=value pairs of one `scontrol -o show job` line."""
    found: Dict[str, str] = {}
    for word in text.split():
        if "=" in word:
            key, value = word.split("=", 1)
            found.setdefault(key, value)
    return found


# ---- running Slurm's commands -------------------------------------------------------


def _env(header: Dict[str, Any]) -> Dict[str, str]:
    env = dict(os.environ)
    conf = header.get("slurm_conf")
    if isinstance(conf, str) and conf:
        env["SLURM_CONF"] = conf
    return env


def _run(
    argv: List[str], env: Dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL
    )


def _need_sbatch(env: Dict[str, str]) -> None:
    if shutil.which("sbatch", path=env.get("PATH")) is None:
        raise fsops.OpError(
            ErrorKind.NOSBATCH,
            "sbatch is not installed or not on the PATH of non-interactive ssh sessions",
        )


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines) or "no message"


# ---- ops ----------------------------------------------------------------------------


def slurm_submit(header: Dict[str, Any], payload: bytes) -> Answer:
    """Snapshot the project, write the records and the batch script, sbatch it."""
    env = _env(header)
    _need_sbatch(env)
    base = check_name(header.get("name"))
    argv = record_module.check_argv(header.get("argv"))
    options = header.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise fsops.OpError(ErrorKind.BADARGV, "sbatch options must be a list of strings")
    array = header.get("array")
    names = [base] if array is None else ["%s-%d" % (base, i) for i in range(int(array))]
    root = fsops.sync_root(header["root"])
    for name in names:
        if read_record(job_key(name, root)) is not None:
            raise fsops.OpError(ErrorKind.EXISTS, "a job named %r already exists" % name)
    if not os.path.isdir(root):
        raise fsops.OpError(
            ErrorKind.NOPROJECT, "no project directory %s on the remote; push first" % root
        )
    after = [check_name(dep) for dep in header.get("after") or []]
    dep_ids, failed = _dependencies(after, scoped_reader(root))
    project = check_name(header.get("project") or "project")
    job_env = start.check_env(header.get("env"))
    cwd_rel = record_module.check_cwd(header.get("cwd"))
    in_env = envs.for_job(header)  # before the snapshot: "noenv" makes the client build it
    snap = record_module.new_snapshot(root, project, base, header, payload)
    cwd = snap.cwd(cwd_rel)
    os.makedirs(slurm_dir(), mode=0o700, exist_ok=True)
    os.makedirs(jobs_dir(), mode=0o700, exist_ok=True)
    records = []
    remote = {} if in_env else provenance.remote(header)
    for index, name in enumerate(names):
        own = {
            "scheduler": SCHEDULER,
            "gpu_count": header.get("gpu_count"),
            "slurm_out": os.path.join(slurm_dir(), job_key(name, root) + ".out"),
            "slurm_after": after,
            "array_index": None if array is None else index,
            "array_base": None if array is None else base,
        }
        record = record_module.new_record(
            header, name, root, project, argv, cwd, snap, job_env, own
        )
        record.update(remote)
        record.update(in_env)  # the env's bin first on PATH, on whichever node runs it
        records.append(record)
    if failed is not None:
        for record in records:
            record.update(state="cancelled", ended=time.time(), reason=failed)
            write_json(record_path(key_of(record)), record)
        return {"records": records}, b""
    base_key = job_key(base, root)  # the array's tasks are base_key-N, as their keys are
    script = os.path.join(slurm_dir(), base_key + ".sh")
    agent = os.path.abspath(sys.argv[0])
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(batch_script(sys.executable, agent, jobs_dir(), base_key))
    os.chmod(script, 0o700)
    out = os.path.join(slurm_dir(), base_key + ("-%a.out" if array is not None else ".out"))
    done = _run(sbatch_argv(list(options), script, out, cwd, dep_ids), env, timeout=60)
    if done.returncode != 0:
        raise fsops.OpError(ErrorKind.SBATCH, "sbatch refused the job: " + _one_line(done.stderr))
    job_id = done.stdout.strip().split(";")[0]
    for record in records:
        index = record["array_index"]
        record["slurm_id"] = job_id if index is None else "%s_%d" % (job_id, index)
        record["slurm_job"] = job_id
        write_json(record_path(key_of(record)), record)
    return {"records": records, "slurm_id": job_id}, b""


def _dependencies(
    after: List[str], read: Callable[[str], Optional[Dict[str, Any]]]
) -> Tuple[List[str], Optional[str]]:
    """(Slurm ids to wait for, reason the job can never start or None)."""
    ids: List[str] = []
    for dep in after:
        record = read(dep)
        if record is None:
            raise fsops.OpError(ErrorKind.NODEP, "no job named %r to run after" % dep)
        if record.get("ended") is not None:
            code = record.get("exit_code")
            if code is None:
                return ids, "dependency %s was cancelled" % dep
            if code != 0:
                return ids, "dependency %s exited %s" % (dep, code)
            continue
        if not record.get("slurm_id"):
            raise fsops.OpError(ErrorKind.BADAFTER, "job %r is not a Slurm job" % dep)
        ids.append(str(record["slurm_id"]))
    return ids, None


def _slurm_records(root: Optional[str]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    try:
        entries = sorted(os.listdir(jobs_dir()))
    except OSError:
        return out
    for entry in entries:
        if entry.endswith(".json"):
            record = read_record(entry[:-5])
            mine = root is None or (record or {}).get("root") == root
            if record and record.get("scheduler") == SCHEDULER and mine:
                out.append(provenance.light(record))
    return out


def _oom_in(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - TAIL_BYTES))
            return OOM_TEXT.encode() in handle.read()
    except OSError:
        return False


def annotate(records: List[Dict[str, Any]], env: Dict[str, str]) -> None:
    """Add what Slurm says (squeue, then sacct, then scontrol) to each record as `slurm`."""
    queue: Dict[str, Tuple[str, str]] = {}
    if shutil.which("squeue", path=env.get("PATH")):
        done = _run(["squeue", "-h", "-a", "-t", "all", "-o", "%i|%T|%r"], env)
        if done.returncode == 0:
            queue = parse_squeue(done.stdout)
    missing = [
        str(r["slurm_id"]) for r in records if r.get("slurm_id") and r["slurm_id"] not in queue
    ]
    acct: Dict[str, Tuple[str, str]] = {}
    if missing and shutil.which("sacct", path=env.get("PATH")):
        done = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j",
                     ",".join(sorted({m.split("_")[0] for m in missing}))], env)  # fmt: skip
        if done.returncode == 0:
            acct = parse_sacct(done.stdout)
    for record in records:
        ident = str(record.get("slurm_id") or "")
        info: Dict[str, Any] = {"state": None, "reason": None, "exit": None}
        if ident in queue:
            info["state"], info["reason"] = queue[ident]
        if ident and (info["state"] is None or info["state"] not in ACTIVE_SLURM):
            if ident in acct:
                info["state"], info["exit"] = acct[ident]
            else:
                done = _run(["scontrol", "-o", "show", "job", ident], env)
                if done.returncode == 0 and done.stdout.strip():
                    fields = parse_scontrol(done.stdout.splitlines()[0])
                    info["state"] = fields.get("JobState") or info["state"]
                    info["reason"] = fields.get("Reason") or info["reason"]
                    info["exit"] = fields.get("ExitCode")
        info["oom"] = _oom_in(str(record.get("slurm_out") or ""))
        info["killed"] = os.path.exists(kill_marker(key_of(record)))
        record["slurm"] = info


def slurm_list(header: Dict[str, Any], payload: bytes) -> Answer:
    """This project's (or every) Slurm job record, each with what Slurm says of it."""
    root = fsops.root_path(header["root"]) if header.get("root") else None
    since = header.get("since")
    records = [
        r
        for r in _slurm_records(root)
        if since is None or r.get("ended") is None or float(r["ended"]) >= float(since)
    ]
    annotate(records, _env(header))
    return {"jobs": records}, b""


def _need(header: Dict[str, Any]) -> Dict[str, Any]:
    """The Slurm job a request names (its name, in its root's project)."""
    record = read_record(job_key(header.get("name"), header.get("root")))
    if record is None or record.get("scheduler") != SCHEDULER:
        raise fsops.OpError(ErrorKind.NOJOB, "no job named %r" % header.get("name"))
    return record


def slurm_log(header: Dict[str, Any], payload: bytes) -> Answer:
    """Bytes of the job's Slurm output file from offset, with the record and Slurm's view."""
    record = _need(header)
    offset = int(header.get("offset") or 0)
    limit = int(header.get("limit") or (1 << 20))
    data, size = b"", 0
    try:
        with open(str(record["slurm_out"]), "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(offset)
            data = handle.read(limit)
    except FileNotFoundError:
        pass
    annotate([record], _env(header))
    return {"offset": offset, "size": size, "record": record}, data


def slurm_kill(header: Dict[str, Any], payload: bytes) -> Answer:
    """scancel the job (an array task's whole array); wait a while for the end."""
    record = _need(header)
    env = _env(header)
    job = str(record.get("slurm_job") or record.get("slurm_id") or "")
    if record.get("ended") is not None or not job:
        annotate([record], env)
        return {"records": [record]}, b""
    base = record.get("array_base")
    group = [r for r in _slurm_records(None) if r.get("slurm_job") == job] if base else [record]
    for one in group:
        with open(kill_marker(key_of(one)), "w", encoding="utf-8") as handle:
            handle.write("killed by tether kill\n")
    done = _run(["scancel", job], env)
    if done.returncode != 0:
        raise fsops.OpError(ErrorKind.SCANCEL, "scancel failed: " + _one_line(done.stderr))
    deadline = time.time() + float(header.get("wait", 20.0))
    while time.time() < deadline:
        group = [read_record(key_of(one)) or one for one in group]
        annotate(group, env)
        if all(_over(one) for one in group):
            break
        time.sleep(0.3)
    return {"records": group}, b""


def _over(record: Dict[str, Any]) -> bool:
    """Ended in the record, or Slurm no longer runs it (or has forgotten it)."""
    state = (record.get("slurm") or {}).get("state")
    return record.get("ended") is not None or state not in ACTIVE_SLURM


def slurm_partitions(header: Dict[str, Any], payload: bytes) -> Answer:
    """`sinfo` per partition (nodes by state, GPUs) for `tether status`."""
    env = _env(header)
    if shutil.which("sinfo", path=env.get("PATH")) is None:
        raise fsops.OpError(ErrorKind.NOSBATCH, "sinfo is not installed on the remote")
    done = _run(["sinfo", "-h", "-o", "%P|%a|%D|%T|%G"], env)
    if done.returncode != 0:
        raise fsops.OpError(ErrorKind.SINFO, "sinfo failed: " + _one_line(done.stderr))
    rows = []
    for line in done.stdout.splitlines():
        cells = line.split("|")
        if len(cells) >= 5:
            rows.append(
                {
                    "partition": cells[0],
                    "avail": cells[1],
                    "nodes": cells[2],
                    "state": cells[3],
                    "gres": cells[4],
                }
            )
    return {"partitions": rows}, b""


def state_now(record: Dict[str, Any], header: Dict[str, Any], cache: Dict[str, Any]) -> str:
    """The job's state: from its record once ended, else from what Slurm says (added to
    the record as `slurm`, which the client maps)."""
    if record.get("ended") is not None:
        return "cancelled" if record.get("exit_code") is None else "exited"
    annotate([record], _env(header))
    return "running" if not _over(record) else "lost"


def stop(named: Dict[str, Any], header: Dict[str, Any], grace: float) -> Dict[str, Any]:
    """scancel the named job (name, root) and wait a while; its record ({} if none)."""
    conf = {"slurm_conf": header["slurm_conf"]} if header.get("slurm_conf") else {}
    answer = slurm_kill(dict(named, wait=10.0, **conf), b"")[0]
    return answer["records"][0] if answer.get("records") else {}


def register(agent: Any) -> None:
    """Add the Slurm ops to the agent."""
    agent.add(slurm_submit, slurm_list, slurm_log, slurm_kill, slurm_partitions)
