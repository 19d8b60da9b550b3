"""A real single-node Slurm (slurmctld + slurmd + its own munged) for one test session.

Recipe: /work/shared/notes/slurm-single-node.md (memory enforced by OverMemoryKill, no
cgroups; kill_invalid_depend). Everything lives in one temp directory: the conf, state,
logs, pidfiles and munged's socket (AuthInfo=socket=...), so it never touches the
machine's /etc/slurm or /run/munge and two sessions can run side by side. The daemons are
stopped by their pidfiles at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tether.hosts.processes import terminate
from tether.hosts.sshd import free_port

MUNGE_KEY = Path("/etc/munge/munge.key")


class SlurmUnavailable(Exception):
    """Slurm is not installed here; the message says why (the tests skip, visibly)."""


class SlurmStartError(Exception):
    """Slurm is installed but the cluster did not come up (the tests fail)."""


@dataclass
class Cluster:
    directory: Path
    conf: Path
    partition: str = "debug"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=self.env()
        )


def conf_text(directory: Path, host: str, ctld_port: int, d_port: int) -> str:
    d = directory
    return f"""ClusterName=tt
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={d}/munge/munge.sock
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/ctld.log
SlurmdLogFile={d}/log/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
DependencyParameters=kill_invalid_depend
KillWait=2
OverTimeLimit=0
MinJobAge=600
ReturnToService=2
MpiDefault=none
NodeName={host} CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def start(base: Path) -> Cluster:
    """Start munged, slurmctld and slurmd; the cluster once `sinfo` shows the node idle."""
    for program in ("slurmctld", "slurmd", "munged", "sbatch"):
        if _find(program) is None:
            raise SlurmUnavailable(f"{program} is not installed (apt-get install slurm-wlm munge)")
    if not MUNGE_KEY.exists():
        raise SlurmUnavailable(f"no munge key at {MUNGE_KEY}")
    directory = Path(tempfile.mkdtemp(prefix="sl-", dir="/tmp"))
    for sub in ("state", "spool", "log", "munge"):
        (directory / sub).mkdir(mode=0o700)
    host = socket.gethostname().split(".")[0]
    conf = directory / "slurm.conf"
    conf.write_text(conf_text(directory, host, free_port(), free_port()))
    cluster = Cluster(directory, conf)
    m = directory / "munge"
    munged = [
        str(_find("munged")), "--force", f"--socket={m}/munge.sock", f"--pid-file={m}/munged.pid",
        f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed", f"--key-file={MUNGE_KEY}",
    ]  # fmt: skip
    try:
        for argv in (
            munged,
            [str(_find("slurmctld")), "-f", str(conf)],
            [str(_find("slurmd")), "-f", str(conf)],
        ):
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=30, env=cluster.env()
            )
            if done.returncode != 0:
                raise SlurmStartError(f"{argv[0]} did not start: {done.stderr.strip()[:300]}")
            if argv is munged:
                _wait_file(m / "munge.sock")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = cluster.run("sinfo", "-h", "-o", "%T")
            if done.returncode == 0 and done.stdout.strip() == "idle":
                return cluster
            time.sleep(0.3)
        raise SlurmStartError(f"the node never became idle: {_tail(directory / 'log' / 'd.log')}")
    except BaseException:
        stop(cluster)
        raise


def _find(program: str) -> str | None:
    """The program on PATH, or in /usr/sbin (daemons live there; not always on PATH)."""
    found = shutil.which(program)
    if found is None and os.access(f"/usr/sbin/{program}", os.X_OK):
        found = f"/usr/sbin/{program}"
    return found


def _wait_file(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-3:])
    except OSError:
        return "(no log)"


def stop(cluster: Cluster) -> None:
    """Cancel what is left, stop slurmd, slurmctld and munged by their pidfiles."""
    with contextlib.suppress(Exception):
        cluster.run("scancel", "--user=root", timeout=10)
    d = cluster.directory
    for pidfile in (d / "slurmd.pid", d / "slurmctld.pid", d / "munge" / "munged.pid"):
        _stop_pid(pidfile)
    shutil.rmtree(d, ignore_errors=True)


def _stop_pid(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    terminate([pid], grace_s=10)
