"""The wire catalogue: every op the agent answers, its request's fields, the error kinds it
answers with, and what each kind means to the user (one table).

A request is a dataclass (`Scan(root=..., skip=...)`); `to_frame()` makes its frame header
and payload, and `answer(header, payload)` reads the agent's answer (a typed one where its
shape is fixed, else the raw `(header, payload)`). The agent dispatches on `Op`, raises
`ErrorKind` members; the client calls `AgentChannel.call(request)`, which turns an error
answer into tether's error tree with `TABLE`. Shared by the agent and the client; standard
library only, Python >= 3.8.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from enum import Enum
from typing import Any, ClassVar, Dict, Generic, List, Optional, Tuple, TypeVar

Frame = Tuple[Dict[str, Any], bytes]
A = TypeVar("A")


class Op(str, Enum):
    """The name of every request the agent answers."""

    HELLO = "hello"
    SCAN = "scan"
    DIGEST = "digest"
    PUT = "put"
    PUT_BATCH = "put_batch"
    DELETE = "delete"
    READ = "read"
    PROBE = "probe"
    JOB_START = "job_start"
    JOB_LIST = "job_list"
    JOB_LOG = "job_log"
    JOB_KILL = "job_kill"
    STATUS = "status"
    JOB_RM = "job_rm"
    JOB_PRUNE = "job_prune"
    DISK_USE = "disk_use"
    JOB_SHOW = "job_show"
    HOST_BUSY = "host_busy"
    KERNEL_START = "kernel_start"
    KERNEL_INFO = "kernel_info"
    KERNEL_LIST = "kernel_list"
    KERNEL_STOP = "kernel_stop"
    KERNEL_INTERRUPT = "kernel_interrupt"
    KERNEL_INSTALL = "kernel_install"
    KERNEL_CATCHUP = "kernel_catchup"
    SLURM_SUBMIT = "slurm_submit"
    SLURM_LIST = "slurm_list"
    SLURM_LOG = "slurm_log"
    SLURM_KILL = "slurm_kill"
    SLURM_PARTITIONS = "slurm_partitions"
    ENV_SYNC = "env_sync"
    ENV_STATUS = "env_status"
    ENV_PRUNE = "env_prune"
    ENV_WHEELS = "env_wheels"
    ENV_WHEEL_PUT = "env_wheel_put"


class ErrorKind(str, Enum):
    """The stable word of every error answer ("kind"); equal to the word itself."""

    # files and paths
    CHANGED = "changed"  # not what the scan saw: the planner's check failed
    NOSPACE = "nospace"
    PERMISSION = "permission"
    NOTDIR = "notdir"
    TOOLONG = "toolong"
    UNSAFE = "unsafe"
    UNSAFE_ROOT = "unsafe_root"
    OSERROR = "oserror"
    PROTOCOL = "protocol"
    # jobs
    BADARGV = "badargv"
    BADNAME = "badname"
    BADENV = "badenv"
    BADGPUS = "badgpus"
    BADAFTER = "badafter"
    CYCLE = "cycle"
    NODEP = "nodep"
    EXISTS = "exists"
    NOJOB = "nojob"
    NOCOMMAND = "nocommand"
    NOGPUS = "nogpus"
    NOPROJECT = "noproject"
    NOSNAPSHOT = "nosnapshot"
    NOTMUX = "notmux"
    TMUX = "tmux"
    # Slurm
    NOSBATCH = "nosbatch"
    SBATCH = "sbatch"
    SCANCEL = "scancel"
    SINFO = "sinfo"
    # kernels and interpreters
    NOKERNEL = "nokernel"
    KERNEL = "kernel"
    NOPYTHON = "nopython"
    BADPYTHON = "badpython"
    NOIPYKERNEL = "noipykernel"
    PEP668 = "pep668"
    TIMEOUT = "timeout"
    # envs
    BADSPEC = "badspec"
    NOENV = "noenv"
    ENVBUILD = "envbuild"
    BADWHEEL = "badwheel"
    # the agent itself
    UNKNOWN_OP = "unknown-op"
    INTERNAL = "internal"  # a bug: the answer carries the agent's traceback
    ERROR = "error"  # an error answer without a kind (never sent by this agent)

    @classmethod
    def of(cls, word: Any) -> ErrorKind:
        """The member for a word from the wire (ERROR for one this catalogue lacks)."""
        if isinstance(word, cls):
            return word
        try:
            return cls(word)
        except ValueError:
            return cls.ERROR


@dataclasses.dataclass(frozen=True)
class Explained:
    """What an error kind means: the message ("{what}": the agent's own words, which name
    the path, job or program), what to do (may be empty), and whether it is a usage error
    (the command line asked for something impossible: exit code 2)."""

    message: str
    todo: str = ""
    usage: bool = False


_AGENT = Explained("{what}")
_JOBS = Explained("{what}", "see `tether jobs`")
_AFTER = Explained("{what}", "check the --after names", usage=True)

# The one table kind -> (message, what to do).
TABLE: Dict[ErrorKind, Explained] = {
    ErrorKind.CHANGED: Explained("{what}", "scan again (push or pull plans it anew)"),
    ErrorKind.NOSPACE: Explained(
        "{what}", "free some space on the remote and push again (nothing half-written is left)"
    ),
    ErrorKind.PERMISSION: Explained("{what}", "check the remote path's owner and permissions"),
    ErrorKind.NOTDIR: Explained("{what}", "point the target's path at a directory"),
    ErrorKind.TOOLONG: Explained("{what}", "shorten the path"),
    ErrorKind.UNSAFE: Explained("{what}", "tether never writes outside the project tree"),
    ErrorKind.UNSAFE_ROOT: Explained(
        "{what}", "point the target's path or mapping at a project directory"
    ),
    ErrorKind.OSERROR: _AGENT,
    ErrorKind.PROTOCOL: _AGENT,
    ErrorKind.BADARGV: Explained("{what}", "give the command to run after --", usage=True),
    ErrorKind.BADNAME: Explained("{what}", "use letters, digits, '.', '_' and '-'", usage=True),
    ErrorKind.BADENV: Explained("{what}", "use --env NAME=VALUE", usage=True),
    ErrorKind.BADGPUS: Explained("{what}", "use --gpus N or a list like 0,1", usage=True),
    ErrorKind.BADAFTER: _AFTER,
    ErrorKind.CYCLE: _AFTER,
    ErrorKind.NODEP: _JOBS,
    ErrorKind.EXISTS: Explained(
        "{what}", "pick another --name (or leave it out for a generated one)"
    ),
    ErrorKind.NOJOB: _JOBS,
    ErrorKind.NOCOMMAND: Explained(
        "{what}", "check the command (in a job, python and python3 are the target's python)"
    ),
    ErrorKind.NOGPUS: Explained("{what}", "ask for fewer with --gpus N"),
    ErrorKind.NOPROJECT: Explained("{what}", "run `tether push` first"),
    ErrorKind.NOSNAPSHOT: Explained("{what}", "use `tether restart --fresh`"),
    ErrorKind.NOTMUX: _AGENT,  # the agent's words say how to install it
    ErrorKind.TMUX: _AGENT,
    ErrorKind.NOSBATCH: Explained(
        "{what}", "install Slurm's client commands there or put them on the PATH"
    ),
    ErrorKind.SBATCH: _AGENT,
    ErrorKind.SCANCEL: _AGENT,
    ErrorKind.SINFO: _AGENT,
    ErrorKind.NOKERNEL: Explained("{what}", "see `tether kernel list`"),
    ErrorKind.KERNEL: Explained("{what}", "run `tether kernel restart`"),
    ErrorKind.NOPYTHON: Explained("{what}", "fix the target's `python` (or [env] python)"),
    ErrorKind.BADPYTHON: _AGENT,
    ErrorKind.NOIPYKERNEL: _AGENT,  # the agent's words say how to install it
    ErrorKind.PEP668: Explained(
        "{what}",
        "let tether build a venv with ipykernel: add a requirements.txt or an [env] table "
        "to the project and run `tether env sync` (the console then runs in it)",
    ),
    ErrorKind.TIMEOUT: _AGENT,
    ErrorKind.BADSPEC: Explained("{what}", "check the [env] table of the config", usage=True),
    ErrorKind.NOENV: Explained("{what}", "run `tether env sync`"),
    ErrorKind.ENVBUILD: Explained(
        "building the env failed: {what}", "fix the env's files and run `tether env sync` again"
    ),
    ErrorKind.BADWHEEL: Explained("{what}", "run `tether env sync --offline` again"),
    ErrorKind.UNKNOWN_OP: Explained("{what}", "install the same tether version everywhere"),
    ErrorKind.INTERNAL: Explained("{what}", "this is a bug in tether's agent: please report it"),
    ErrorKind.ERROR: _AGENT,
}


def explain(kind: ErrorKind, what: str) -> Tuple[str, str]:
    """(message, what to do) for an error answer of this kind saying `what`."""
    entry = TABLE[kind]
    return entry.message.replace("{what}", what), entry.todo


def error_frame(kind: ErrorKind, message: str) -> Dict[str, Any]:
    """The header of an error answer (the id is added by the dispatcher)."""
    return {"ok": False, "kind": kind.value, "error": message}


# ---- the scan memo, kept by both ends (see agent/scan.ScanMemo, sync/session) ----------

# Scans remembered per agent (and by the client per channel), and at most this many rows in
# all (the newest scan always kept): the client forgets exactly what the agent forgets.
SCAN_KEEP = 16
SCAN_KEEP_ROWS = 1000000


def scan_key(root: str, skip: Any, only: Any, digests: bool) -> str:
    """The memo key of a scan: the same tree, rules and digest mode answer alike."""
    return json.dumps([root, list(skip or []), None if only is None else list(only), digests])


def scans_to_forget(sizes: List[int]) -> int:
    """How many of the oldest remembered scans to drop, given each one's row count
    (oldest first), so that at most SCAN_KEEP scans and SCAN_KEEP_ROWS rows remain."""
    drop = 0
    rows = sum(sizes)
    while len(sizes) - drop > 1 and (len(sizes) - drop > SCAN_KEEP or rows > SCAN_KEEP_ROWS):
        rows -= sizes[drop]
        drop += 1
    return drop


# ---- requests --------------------------------------------------------------------------


class Request(Generic[A]):
    """One request; subclasses are dataclasses naming their OP. Fields left None are not
    sent (the agent's default applies); a `payload` field travels as the frame's payload.
    (Plain dataclasses, not frozen ones: a push makes one per file, and frozen ones take
    four times as long to make.)"""

    OP: ClassVar[Op]

    def to_frame(self) -> Frame:
        """(header without the id, payload)."""
        header: Dict[str, Any] = {"op": self.OP.value}
        payload = b""
        for name, value in vars(self).items():  # the dataclass's fields, in their order
            if name == "payload":
                payload = value
            elif value is not None:
                header[name] = value
        return header, payload

    def answer(self, header: Dict[str, Any], payload: bytes) -> A:
        """The answer of a successful request (the raw frame unless a subclass types it)."""
        return (header, payload)  # type: ignore[return-value]


@dataclasses.dataclass
class Hello(Request[Frame]):
    OP = Op.HELLO
    # A kept channel (the sync daemon's): the agent watches each tree from its first full
    # scan on (agent/watching.py), as the same tree will be scanned again.
    watch: Optional[bool] = None


@dataclasses.dataclass(frozen=True)
class ScanAnswer:
    """A scan in rows: all of them, or (`since` set) those changed since that answer and
    the paths gone since."""

    token: str
    rows: List[List[Any]]
    exists: bool
    root: str
    since: Optional[str] = None
    gone: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Scan(Request[ScanAnswer]):
    OP = Op.SCAN
    root: str
    skip: Optional[List[str]] = None
    only: Optional[List[str]] = None
    digests: bool = False
    since: Optional[str] = None  # the token of this agent's previous answer to this scan
    rows: bool = True

    def answer(self, header: Dict[str, Any], payload: bytes) -> ScanAnswer:
        rows = header["rows"]
        if not isinstance(rows, list):
            rows = list(rows)
        # Not a copy: the reader (sync/endpoint._take_rows) lets each row go as it takes it.
        intern = sys.intern  # paths and digests: the objects of the local side's manifests
        for row in rows:
            if isinstance(row, list) and len(row) > 5 and isinstance(row[0], str):
                row[0] = intern(row[0])
                if isinstance(row[5], str):
                    row[5] = intern(row[5])
        return ScanAnswer(
            str(header["token"]),
            rows,
            bool(header["exists"]),
            str(header["root"]),
            header.get("since"),
            list(header.get("gone", [])),
        )


@dataclasses.dataclass
class Digest(Request[Dict[str, Optional[str]]]):
    """sha256 of files (None for one that is gone): path -> hex digest."""

    OP = Op.DIGEST
    root: str
    paths: List[str]

    def answer(self, header: Dict[str, Any], payload: bytes) -> Dict[str, Optional[str]]:
        return dict(header["digests"])


@dataclasses.dataclass
class Put(Request[Frame]):
    """Write a file (in chunks: offset, last), a directory or a link, checked against expect."""

    OP = Op.PUT
    root: str
    path: str
    kind: Optional[str] = None  # "file" (default), "dir" or "link"
    target: Optional[str] = None
    expect: Optional[Dict[str, Any]] = None
    backup: Optional[bool] = None
    mode: Optional[int] = None
    offset: Optional[int] = None
    last: Optional[bool] = None
    mtime_ns: Optional[int] = None
    payload: bytes = b""


@dataclasses.dataclass
class PutBatch(Request[Frame]):
    """Several whole files, directories or links in one request (a first push's thousands
    of small files): `items` holds one Put header each (its fields but root, offset and
    last; "n": the length of its bytes), the bytes of all of them concatenated in the
    payload in that order. Each item is written and checked alone, exactly as its own Put
    would be; the answer's "answers" holds each one's Put answer (an error frame for a
    refused one), in order."""

    OP = Op.PUT_BATCH
    root: str
    items: List[Dict[str, Any]]
    payload: bytes = b""


@dataclasses.dataclass
class Delete(Request[Frame]):
    OP = Op.DELETE
    root: str
    path: str
    expect: Optional[Dict[str, Any]] = None
    backup: Optional[bool] = None


@dataclasses.dataclass
class Read(Request[Frame]):
    """Bytes of a file from offset (the answer's "entry" is its stat)."""

    OP = Op.READ
    root: str
    path: str
    offset: int = 0
    length: Optional[int] = None


@dataclasses.dataclass
class Probe(Request[Frame]):
    OP = Op.PROBE
    path: Optional[str] = None
    python: Optional[str] = None
