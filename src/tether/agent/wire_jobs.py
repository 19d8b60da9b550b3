"""The wire catalogue's requests that start and control things on the host: jobs (tmux and
Slurm), housekeeping, kernels and envs. Those that answer with job records answer typed
(a record, or a list of them, as dicts); the others with the raw `(header, payload)`.
See wire.py; standard library only, Python >= 3.8.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from .wire import Frame, Op, Request

Record = Dict[str, Any]


# ---- jobs (agent/jobs.py) ---------------------------------------------------------------


@dataclasses.dataclass
class JobStart(Request[Record]):
    """Start a job in tmux on a snapshot of the project (payload: the synced paths)."""

    OP = Op.JOB_START
    name: str
    root: str
    argv: List[str]
    cwd: str = ""
    project: Optional[str] = None
    gpus: Optional[str] = None
    gpu_count: Optional[int] = None
    results: Optional[List[str]] = None
    socket: Optional[str] = None
    provenance: Optional[Record] = None
    paths: Optional[bool] = None
    after: Optional[List[str]] = None
    notify: Optional[str] = None
    notify_timeout: Optional[float] = None
    array_index: Optional[int] = None
    snapshot_of: Optional[str] = None
    restart_of: Optional[str] = None
    fresh: Optional[bool] = None
    env: Optional[Dict[str, str]] = None
    env_spec: Optional[Record] = None
    env_digest: Optional[str] = None
    python: Optional[List[str]] = None
    payload: bytes = b""

    def answer(self, header: Dict[str, Any], payload: bytes) -> Record:
        return dict(header["record"])


@dataclasses.dataclass
class JobList(Request[List[Record]]):
    OP = Op.JOB_LIST
    root: Optional[str] = None
    since: Optional[float] = None
    full: Optional[bool] = None

    def answer(self, header: Dict[str, Any], payload: bytes) -> List[Record]:
        return list(header["jobs"])


@dataclasses.dataclass
class JobLog(Request[Frame]):
    """The job's log from offset (payload), at most limit bytes."""

    OP = Op.JOB_LOG
    name: str
    root: Optional[str] = None
    offset: int = 0
    limit: Optional[int] = None


@dataclasses.dataclass
class JobKill(Request[Record]):
    OP = Op.JOB_KILL
    name: str
    root: Optional[str] = None
    grace: Optional[float] = None

    def answer(self, header: Dict[str, Any], payload: bytes) -> Record:
        return dict(header["record"])


@dataclasses.dataclass
class Status(Request[Frame]):
    """The host's load, GPUs and the jobs running (for `tether status`)."""

    OP = Op.STATUS
    root: Optional[str] = None


# ---- housekeeping (agent/housekeeping.py) ------------------------------------------------


@dataclasses.dataclass
class JobRm(Request[List[Record]]):
    OP = Op.JOB_RM
    names: List[str]
    root: Optional[str] = None
    dry_run: Optional[bool] = None

    def answer(self, header: Dict[str, Any], payload: bytes) -> List[Record]:
        return list(header["results"])


@dataclasses.dataclass
class JobPrune(Request[Frame]):
    OP = Op.JOB_PRUNE
    root: Optional[str] = None
    older_than: Optional[float] = None
    dry_run: Optional[bool] = None


@dataclasses.dataclass
class DiskUse(Request[Frame]):
    OP = Op.DISK_USE
    root: Optional[str] = None


@dataclasses.dataclass
class JobShow(Request[Frame]):
    OP = Op.JOB_SHOW
    name: str
    root: Optional[str] = None


@dataclasses.dataclass
class HostBusy(Request[Frame]):
    """What of tether's runs on the host (and, with stop, end it)."""

    OP = Op.HOST_BUSY
    stop: bool = False
    grace: Optional[float] = None
    slurm_conf: Optional[str] = None


# ---- kernels (agent/kernels.py) ----------------------------------------------------------


@dataclasses.dataclass
class KernelStart(Request[Frame]):
    """Start the kernel unless it runs (payload: the recorder's source)."""

    OP = Op.KERNEL_START
    name: str = "default"
    root: Optional[str] = None
    restart: Optional[bool] = None
    autoreload: Optional[bool] = None
    python: Optional[List[str]] = None
    transport: Optional[str] = None
    grace: Optional[float] = None
    env_spec: Optional[Record] = None
    payload: bytes = b""


@dataclasses.dataclass
class KernelInfo(Request[Frame]):
    OP = Op.KERNEL_INFO
    name: str = "default"


@dataclasses.dataclass
class KernelList(Request[Frame]):
    OP = Op.KERNEL_LIST


@dataclasses.dataclass
class KernelStop(Request[Frame]):
    OP = Op.KERNEL_STOP
    name: str = "default"
    grace: Optional[float] = None


@dataclasses.dataclass
class KernelInterrupt(Request[Frame]):
    OP = Op.KERNEL_INTERRUPT
    name: str = "default"


@dataclasses.dataclass
class KernelInstall(Request[Frame]):
    """`python -m pip install --user ipykernel` (the user said yes first)."""

    OP = Op.KERNEL_INSTALL
    python: Optional[List[str]] = None


@dataclasses.dataclass
class KernelCatchup(Request[Frame]):
    """The kernel's output recorded after message `after` (or since a date)."""

    OP = Op.KERNEL_CATCHUP
    name: str = "default"
    after: Optional[str] = None
    since: Optional[str] = None


# ---- Slurm (agent/slurm.py) --------------------------------------------------------------


@dataclasses.dataclass
class SlurmSubmit(Request[List[Record]]):
    """sbatch a job on a snapshot of the project (payload: the synced paths)."""

    OP = Op.SLURM_SUBMIT
    name: str
    root: str
    argv: List[str]
    cwd: str = ""
    project: Optional[str] = None
    results: Optional[List[str]] = None
    provenance: Optional[Record] = None
    paths: Optional[bool] = None
    env: Optional[Dict[str, str]] = None
    after: Optional[List[str]] = None
    array: Optional[int] = None
    gpus: Optional[str] = None
    gpu_count: Optional[int] = None
    options: Optional[List[str]] = None
    python: Optional[List[str]] = None
    slurm_conf: Optional[str] = None
    env_spec: Optional[Record] = None
    env_digest: Optional[str] = None
    payload: bytes = b""

    def answer(self, header: Dict[str, Any], payload: bytes) -> List[Record]:
        return list(header["records"])


@dataclasses.dataclass
class SlurmList(Request[List[Record]]):
    OP = Op.SLURM_LIST
    root: Optional[str] = None
    since: Optional[float] = None
    slurm_conf: Optional[str] = None

    def answer(self, header: Dict[str, Any], payload: bytes) -> List[Record]:
        return list(header["jobs"])


@dataclasses.dataclass
class SlurmLog(Request[Frame]):
    OP = Op.SLURM_LOG
    name: str
    root: Optional[str] = None
    offset: int = 0
    limit: Optional[int] = None
    slurm_conf: Optional[str] = None


@dataclasses.dataclass
class SlurmKill(Request[List[Record]]):
    OP = Op.SLURM_KILL
    name: str
    root: Optional[str] = None
    wait: Optional[float] = None
    slurm_conf: Optional[str] = None

    def answer(self, header: Dict[str, Any], payload: bytes) -> List[Record]:
        return list(header["records"])


@dataclasses.dataclass
class SlurmPartitions(Request[List[Record]]):
    OP = Op.SLURM_PARTITIONS
    slurm_conf: Optional[str] = None

    def answer(self, header: Dict[str, Any], payload: bytes) -> List[Record]:
        return list(header["partitions"])


# ---- envs (agent/envs.py) ----------------------------------------------------------------


@dataclasses.dataclass
class EnvSync(Request[Frame]):
    """The env of a spec: its state, or (build, streamed) built where it is missing."""

    OP = Op.ENV_SYNC
    env_spec: Record
    root: Optional[str] = None
    builder: Optional[str] = None
    build: Optional[bool] = None
    offline: Optional[bool] = None  # build from the wheels pushed (env_wheel_put)
    describe: Optional[bool] = None  # a missing env's answer says what it is built for


@dataclasses.dataclass
class EnvStatus(Request[Frame]):
    OP = Op.ENV_STATUS
    env_spec: Optional[Record] = None
    root: Optional[str] = None


@dataclasses.dataclass
class EnvPrune(Request[Frame]):
    OP = Op.ENV_PRUNE
    dry_run: Optional[bool] = None


@dataclasses.dataclass
class EnvWheels(Request[Frame]):
    """Which of these wheels ({name, sha256}) the host lacks."""

    OP = Op.ENV_WHEELS
    wheels: List[Record]


@dataclasses.dataclass
class EnvWheelPut(Request[Frame]):
    """One chunk of a wheel at offset (the last one is checked and renamed into place)."""

    OP = Op.ENV_WHEEL_PUT
    name: str
    sha256: str
    size: int
    offset: int
    payload: bytes = b""


REQUESTS = (
    JobStart, JobList, JobLog, JobKill, Status, JobRm, JobPrune, DiskUse, JobShow, HostBusy,
    KernelStart, KernelInfo, KernelList, KernelStop, KernelInterrupt, KernelInstall,
    KernelCatchup, SlurmSubmit, SlurmList, SlurmLog, SlurmKill, SlurmPartitions,
    EnvSync, EnvStatus, EnvPrune, EnvWheels, EnvWheelPut,
)  # fmt: skip
