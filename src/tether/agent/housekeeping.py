"""Housekeeping on the remote: remove ended jobs, prune old ones, disk use, show, host busy.

Removing a job removes its record, its log (and Slurm output) and its snapshot, the
snapshot only when no remaining job uses it (a restart shares its job's snapshot). The
bytes reported are the disk blocks of the inodes whose last link went: a file a snapshot
shares with the live tree (a hard link) frees nothing and is not counted. A dry run
counts the same way and removes nothing. Every path comes from the job record and the
helpers in jobs.py, and is removed only where it lies inside tether's own directories.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from . import du, fsops, jobs, kernels, slurm
from . import jobstore as store
from .gpus import key_of
from .wire import ErrorKind

Answer = Tuple[Dict[str, Any], bytes]
ACTIVE = ("queued", "running", "starting")
Inode = Tuple[int, int]


# ---- which jobs ---------------------------------------------------------------------


def _mine(record: Dict[str, Any], header: Dict[str, Any]) -> bool:
    """Whether a record belongs to the project the request names (all with no root)."""
    root = header.get("root")
    return not root or record.get("root") == fsops.root_path(str(root))


# The scheduler modules: each has SCHEDULER (the records' `scheduler` field; tmux's
# records have none), state_now(record, header, cache) and stop(named, header, grace).
SCHEDULERS = {module.SCHEDULER: module for module in (jobs, slurm)}


def scheduler_of(record: Dict[str, Any]) -> Any:
    """The module that runs the record's job."""
    return SCHEDULERS.get(str(record.get("scheduler") or jobs.SCHEDULER), jobs)


class States:
    """A record's state now, as its scheduler sees it (each asked once where it can)."""

    def __init__(self, header: Dict[str, Any]) -> None:
        self.header = header
        self.cache: Dict[str, Any] = {}

    def of(self, record: Dict[str, Any]) -> str:
        return str(scheduler_of(record).state_now(record, self.header, self.cache))


def _age_stamp(record: Dict[str, Any]) -> float:
    """When a job stopped mattering: its end, else (lost) its start or creation."""
    for key in ("ended", "started", "created"):
        value = record.get(key)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


# ---- paths and bytes ----------------------------------------------------------------


def _inside(path: Any, base: str) -> Optional[str]:
    """path (its last part not followed) when it lies strictly inside base, else None."""
    if not isinstance(path, str) or not path:
        return None
    full = os.path.abspath(path)
    real = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
    return real if real.startswith(os.path.realpath(base) + os.sep) else None


def _own_files(record: Dict[str, Any]) -> List[str]:
    """The record, its log and Slurm output: what removing the job always removes."""
    key = key_of(record)
    paths = [store.record_path(key), store.kill_marker(key)]
    for key in ("log", "slurm_out"):
        inside = _inside(record.get(key), store.data_dir())
        if inside:
            paths.append(inside)
    return paths


def snapshot_of(record: Dict[str, Any]) -> Optional[str]:
    return _inside(record.get("snapshot"), store.snapshots_dir())


class Ledger:
    """Counts links seen per inode: an inode is freed once all its links were seen."""

    def __init__(self) -> None:
        self.seen: Dict[Inode, int] = {}

    def add(self, paths: Iterable[str]) -> int:
        """Bytes these paths free, given the paths added before them go too."""
        freed = 0
        for top in paths:
            for _, st in du.walk(top):
                if stat.S_ISDIR(st.st_mode):
                    freed += st.st_blocks * 512
                    continue
                key = (st.st_dev, st.st_ino)
                count = self.seen.get(key, 0) + 1
                self.seen[key] = count
                if count == st.st_nlink:
                    freed += st.st_blocks * 512
        return freed


def _remove_tree(top: str) -> None:
    """rmtree; where it is refused, make the directories (never the files) writable."""
    try:
        shutil.rmtree(top)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    for path, st in du.walk(top):
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o700 != 0o700:
            with contextlib.suppress(OSError):
                os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
    shutil.rmtree(top, ignore_errors=True)


def remove(records: List[Dict[str, Any]], dry_run: bool) -> List[Dict[str, Any]]:
    """Remove (or, dry, measure) jobs; a snapshot goes with the last job that uses it."""
    keys = {key_of(record) for record in records}
    in_use = {snapshot_of(r) for r in store.all_records() if key_of(r) not in keys}
    claimed: Set[str] = set()
    ledger = Ledger()
    out = []
    for record in records:
        paths = _own_files(record)
        snap = snapshot_of(record)
        if snap and snap not in in_use and snap not in claimed:
            claimed.add(snap)
            paths.insert(0, snap)
        freed = ledger.add(paths)
        if not dry_run:
            for path in paths:
                if os.path.isdir(path) and not os.path.islink(path):
                    _remove_tree(path)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
        out.append({"name": record.get("name"), "bytes": freed, "snapshot": snap in claimed})
    return out


# ---- ops ----------------------------------------------------------------------------


def job_rm(header: Dict[str, Any], payload: bytes) -> Answer:
    """Remove the named ended jobs; running, queued and unknown ones are refused, each."""
    states = States(header)
    results: List[Dict[str, Any]] = []
    doomed: List[Dict[str, Any]] = []
    for name in header.get("names") or []:
        record = store.read_record(store.job_key(name, header.get("root")))
        if record is None or not _mine(record, header):
            results.append({"name": name, "removed": False, "why": "nojob"})
            continue
        state = states.of(record)
        if state in ACTIVE:
            results.append({"name": name, "removed": False, "why": "active", "state": state})
            continue
        doomed.append(record)
        results.append({"name": name, "removed": True, "state": state})
    done = {str(entry["name"]): entry for entry in remove(doomed, bool(header.get("dry_run")))}
    for entry in results:
        if entry["removed"]:
            entry.update(done[str(entry["name"])])
    return {"results": results}, b""


def job_prune(header: Dict[str, Any], payload: bytes) -> Answer:
    """Remove (or, dry, list) this project's jobs that ended over older_than seconds ago."""
    cutoff = time.time() - float(header.get("older_than") or 0)
    states = States(header)
    old = []
    for record in store.all_records():
        if not _mine(record, header) or _age_stamp(record) > cutoff:
            continue
        state = states.of(record)
        if state not in ACTIVE:
            record["state"] = state
            old.append(record)
    old.sort(key=_age_stamp)
    removed = remove(old, bool(header.get("dry_run")))
    for index, entry in enumerate(removed):
        entry.update(state=old[index]["state"], ended=old[index].get("ended"))
    return {"jobs": removed, "bytes": sum(int(entry["bytes"]) for entry in removed)}, b""


def disk_use(header: Dict[str, Any], payload: bytes) -> Answer:
    """Snapshot and log disk use: the host's, and this project's (root) where asked. The
    snapshots only ended jobs use are measured once and kept (agent/du.py)."""
    top = store.snapshots_dir()
    records = store.all_records()
    usage = du.Usage(du.frozen_snapshots(records, snapshot_of), du.load_kept())
    host = usage.measure([top])
    count = sum(len(_subdirs(project)) for project in _subdirs(top))
    answer: Dict[str, Any] = {"path": top, "count": count, **host}
    answer["logs_bytes"] = du.Usage(set(), {}).measure([store.logs_dir()])["bytes"]
    if header.get("root"):
        mine_records = [r for r in records if _mine(r, header)]
        snaps = sorted({s for s in (snapshot_of(r) for r in mine_records) if s})
        mine = usage.measure(snaps)
        answer.update(
            project_count=len(snaps),
            project_bytes=mine["bytes"],
            project_own_bytes=mine["own_bytes"],
        )
    du.save_kept(usage)
    return {"snapshots": answer}, b""


def _subdirs(path: str) -> List[str]:
    try:
        with os.scandir(path) as listing:
            return [entry.path for entry in listing if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def job_show(header: Dict[str, Any], payload: bytes) -> Answer:
    """One job's whole record (provenance included) with its state now."""
    name = store.check_name(header.get("name"))
    key = store.job_key(name, header.get("root"))
    record = store.read_record(key)
    if record is None or not _mine(record, header):
        raise fsops.OpError(ErrorKind.NOJOB, "no job named %r" % name)
    record["state"] = States(header).of(record)
    return {"record": record, "record_file": store.record_path(key)}, b""


def host_busy(header: Dict[str, Any], payload: bytes) -> Answer:
    """Every project's running or queued jobs and live kernels; with stop, stop them."""
    states = States(header)
    jobs = []
    for record in store.all_records():
        state = states.of(record)
        if state in ACTIVE:
            keep = ("name", "key", "scheduler", "root")
            jobs.append(dict({key: record.get(key) for key in keep}, state=state))
    live = [k for k in kernels.kernel_list({}, b"")[0]["kernels"] if k.get("alive")]
    found = [{"name": k.get("name"), "pid": k.get("pid"), "root": k.get("root")} for k in live]
    if header.get("stop"):
        grace = float(header.get("grace", 1.0))
        for job in jobs:
            job["stopped"] = _stop_job(job, grace, header)
        for kernel in found:
            with contextlib.suppress(fsops.OpError):
                kernels.kernel_stop({"name": kernel["name"], "grace": grace}, b"")
            kernel["stopped"] = True
    return {"jobs": jobs, "kernels": found, "stop": bool(header.get("stop"))}, b""


def _stop_job(job: Dict[str, Any], grace: float, header: Dict[str, Any]) -> Optional[str]:
    """Kill one job; the outcome in words ('exited 143', 'cancelled'), None if it failed."""
    named = {"name": job["name"], "root": job.get("root") if job.get("key") else None}
    try:
        record = scheduler_of(job).stop(named, header, grace)
    except fsops.OpError:
        return None
    if record.get("exit_code") is not None:
        return "exited %s" % record["exit_code"]
    return "cancelled" if record.get("ended") is not None else "signalled"


def register(agent: Any) -> None:
    """Add the housekeeping ops to the agent."""
    agent.add(job_rm, job_prune, disk_use, job_show, host_busy)
