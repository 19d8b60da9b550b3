"""A new job's record and snapshot, built in one place for every scheduler.

Each scheduler's module (`jobs` for tmux, `slurm`) checks its request, takes a snapshot
here and builds the record with new_record(), adding only its own fields; the record is
what the wrapper, listings, `show` and housekeeping read.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

from . import fsops, snapshot, start
from .jobstore import job_key, logs_dir, snapshots_dir
from .wire import ErrorKind

SNAPSHOT_FIELDS = ("snapshot_files", "snapshot_bytes", "snapshot_methods")


class Snapshot:
    """Where a job's frozen copy of the project lies, and what taking it cost."""

    def __init__(self, path: str, ident: str, fields: Dict[str, Any]) -> None:
        self.path = path
        self.ident = ident
        self.fields = fields

    def cwd(self, rel: str) -> str:
        """The job's working directory: rel (check_cwd) inside the snapshot."""
        return os.path.join(self.path, rel) if rel else self.path


def check_argv(value: Any) -> List[str]:
    """The job's argv: a non-empty list of strings, or OpError."""
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise fsops.OpError(ErrorKind.BADARGV, "argv must be a non-empty list of strings")
    return value


def check_cwd(value: Any) -> str:
    """The job's working directory relative to the project root ('' at the root), checked
    before any snapshot is taken."""
    return "" if value in (None, "", ".") else fsops.check_rel(value)


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


def new_snapshot(
    root: str, project: str, name: str, header: Dict[str, Any], payload: bytes
) -> Snapshot:
    """Snapshot root (the paths the request names) for job `name` of project."""
    ident = time.strftime("%Y%m%d-%H%M%S") + "-" + name
    path = os.path.join(snapshots_dir(), project, ident)
    return Snapshot(path, ident, take_snapshot(root, path, header, payload))


def reused_snapshot(earlier: Dict[str, Any]) -> Snapshot:
    """The snapshot an earlier job took (an array's later tasks, a restart), or OpError."""
    path = str(earlier["snapshot"])
    if not os.path.isdir(path):
        raise fsops.OpError(ErrorKind.NOSNAPSHOT, "the snapshot of %r is gone" % earlier["name"])
    fields = {key: earlier.get(key) for key in SNAPSHOT_FIELDS}
    return Snapshot(path, str(earlier.get("snapshot_id") or ""), fields)


def new_record(
    header: Dict[str, Any],
    name: str,
    root: str,
    project: str,
    argv: List[str],
    cwd: str,
    snap: Snapshot,
    env: Optional[Dict[str, str]],
    own: Dict[str, Any],
) -> Dict[str, Any]:
    """A new job's record, state "starting": the client's provenance, then what every job
    has, then the scheduler's own fields (own), then the agent's interpreter."""
    key = job_key(name, root)
    record: Dict[str, Any] = dict(header.get("provenance") or {})
    record.update(
        {
            "name": name,
            "key": key,
            "argv": argv,
            "cwd": cwd,
            "root": root,
            "project": project,
            "snapshot": snap.path,
            "snapshot_id": snap.ident,
            "gpus": header.get("gpus"),
            "log": os.path.join(logs_dir(), key + ".log"),
            "created": time.time(),
            "state": "starting",
            "started": None,
            "ended": None,
            "exit_code": None,
            "reason": None,
            "pid": None,
            "python": header.get("python") or record.get("python"),
            "env": env,
        }
    )
    record.update(snap.fields)
    record.update(own)
    record.update(start.interpreter_fields())
    return record
