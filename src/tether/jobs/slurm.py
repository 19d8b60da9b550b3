"""Slurm targets, client side: sbatch options (pure), Slurm state -> tether state (pure),
and the requests to the agent's slurm_* ops (tether.agent.slurm).

The exit code comes from tether's own wrapper record (right without accounting); Slurm's
state, reason and the job's output file explain everything else. An out-of-memory kill is
never a success, whichever way the cluster enforces memory (DESIGN section 10).
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Callable
from typing import Any

from tether.config import Config, Target
from tether.errors import JobError, UsageError
from tether.jobs.model import JobRecord
from tether.transport.channel import AgentChannel, AgentError

POLL_S = 0.5
OOM = "out of memory"
REASONS = {
    "TIMEOUT": "time limit",
    "DEADLINE": "time limit",
    "NODE_FAIL": "node failure",
    "PREEMPTED": "preempted",
    "BOOT_FAIL": "node failed to boot",
    "OUT_OF_MEMORY": OOM,
}
RUNNING = ("RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING")
QUEUED = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED")


def conf_override() -> str | None:
    """TETHER_SLURM_CONF: a SLURM_CONF for the remote's Slurm commands (tests set it)."""
    return os.environ.get("TETHER_SLURM_CONF") or None


# ---- pure: sbatch options ------------------------------------------------------------


def sbatch_options(
    name: str, settings: dict[str, Any], gpus: int = 0, array: int | None = None
) -> list[str]:
    """sbatch options from a target's [slurm] table, --gpus N and --array N."""
    opts = ["--job-name=" + name]
    for key, flag in (
        ("partition", "--partition"),
        ("time", "--time"),
        ("cpus", "--cpus-per-task"),
        ("mem", "--mem"),
        ("account", "--account"),
        ("qos", "--qos"),
    ):
        value = settings.get(key)
        if value is not None and str(value) != "":
            opts.append(f"{flag}={value}")
    gres = settings.get("gres")
    if gpus:
        kind = str(gres) if gres else "gpu"
        parts = kind.split(":")
        if len(parts) > 1 and parts[-1].isdigit():
            kind = ":".join(parts[:-1])
        opts.append(f"--gres={kind}:{gpus}")
    elif gres:
        opts.append(f"--gres={gres}")
    if array is not None:
        opts.append(f"--array=0-{array - 1}")
    extra = settings.get("extra")
    if isinstance(extra, str):
        opts.extend(shlex.split(extra))
    elif isinstance(extra, list):
        opts.extend(str(word) for word in extra)
    return opts


# ---- pure: state mapping --------------------------------------------------------------


def exit_from_slurm(code: str | None) -> int | None:
    """'3:0' -> 3, '0:15' -> 143 (signal 15), None/garbage -> None."""
    if not code or ":" not in code:
        return None
    left, right = code.split(":", 1)
    if not (left.isdigit() and right.isdigit()):
        return None
    return 128 + int(right) if int(right) else int(left)


def is_oom(slurm: dict[str, Any]) -> bool:
    """OUT_OF_MEMORY, ExitCode 0:125, 0:9 on a failed job, or the text in the output file."""
    state = slurm.get("state") or ""
    code = slurm.get("exit") or ""
    if state == "OUT_OF_MEMORY" or code == "0:125" or slurm.get("oom"):
        return True
    return state == "FAILED" and code == "0:9"


def map_state(record: dict[str, Any]) -> tuple[str, int | None, str | None]:
    """(state, exit_code, reason) of a Slurm job from its wrapper record and `slurm` info."""
    slurm: dict[str, Any] = record.get("slurm") or {}
    state = str(slurm.get("state") or "")
    reason = slurm.get("reason")
    killed = "killed by tether kill" if slurm.get("killed") else None
    code = record.get("exit_code")
    started = record.get("started") is not None
    if record.get("ended") is not None:
        if code is None:
            return "cancelled", None, record.get("reason")
        why = record.get("reason")
        if is_oom(slurm):
            return "exited", code if code else 137, OOM
        if state in REASONS:
            why = REASONS[state]
        return "exited", int(code), why
    if state in QUEUED:
        after = record.get("slurm_after") or []
        if reason == "Dependency" and after:
            return "queued", None, "after " + ", ".join(after)
        return "queued", None, None if reason in (None, "None") else str(reason)
    if state in RUNNING:
        return "running", None, None
    if is_oom(slurm):
        return "exited", 137, OOM
    if state == "CANCELLED":
        if reason == "DependencyNeverSatisfied":
            return "cancelled", None, "dependency never satisfied"
        if not started:
            return "cancelled", None, killed or "cancelled in Slurm"
        return "exited", exit_from_slurm(slurm.get("exit")) or 143, killed or "cancelled in Slurm"
    if state in REASONS:
        if not started:
            return "cancelled", None, REASONS[state]
        return "exited", exit_from_slurm(slurm.get("exit")) or 137, REASONS[state]
    if state in ("COMPLETED", "FAILED"):
        if not started and state == "FAILED":
            return "exited", exit_from_slurm(slurm.get("exit")) or 1, "failed to start in Slurm"
        return "running", None, None  # the wrapper is writing its record
    if not state:
        return "lost", None, "Slurm no longer knows the job and tether has no exit record"
    return "running", None, state.lower()


def dependency_reason(record: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> str | None:
    """'dependency A exited 1' for a job Slurm cancelled because a dependency failed."""
    for dep in record.get("slurm_after") or []:
        other = by_name.get(dep)
        if other is None:
            continue
        state, code, _ = map_state(other)
        if state == "exited" and code != 0:
            return f"dependency {dep} exited {code}"
        if state in ("cancelled", "lost"):
            return f"dependency {dep} was {state}"
    return None


def to_job(target: Target, data: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> JobRecord:
    job = JobRecord.from_agent(target.name, target.host, data)
    job.state, job.exit_code, job.reason = map_state(data)
    if job.reason == "dependency never satisfied":
        job.reason = dependency_reason(data, by_name) or job.reason
    return job


def to_jobs(target: Target, records: list[dict[str, Any]]) -> list[JobRecord]:
    by_name = {str(data.get("name")): data for data in records}
    return [to_job(target, data, by_name) for data in records]


# ---- requests -------------------------------------------------------------------------


def _raise(error: AgentError, name: str, target: Target) -> None:
    if error.kind == "nosbatch":
        raise JobError(
            f"{target.name} is a Slurm target but {error.what} on {target.host}",
            "",
            "install Slurm's client commands there or put them on the PATH",
        ) from None
    if error.kind in ("sbatch", "scancel", "sinfo"):
        raise JobError(f"{target.name}: {error.what}", "", "") from None
    from tether.jobs.client import _raise_job

    _raise_job(error, name, target)


async def submit(
    channel: AgentChannel,
    config: Config,
    target: Target,
    name: str,
    argv: list[str],
    cwd: str,
    info: dict[str, Any],
    gpus: int = 0,
    after: list[str] | None = None,
    array: int | None = None,
    env: dict[str, str] | None = None,
    env_spec: dict[str, Any] | None = None,
) -> list[JobRecord]:
    """Snapshot and sbatch on a Slurm target; the records (one per array task). With an
    env spec the jobs run in that env, built on the login node (AgentError "noenv" until)."""
    from tether.jobs.client import _project_name, synced_paths

    prov = dict(info)
    if prov:
        remote_python = (await channel.ready()).get("python")
        prov.update(target=target.name, host=target.host, remote_python=remote_python)
    paths_data = synced_paths(config, target)  # empty: never pushed from here, take the tree
    try:
        answer, _ = await channel.request(
            "slurm_submit",
            paths_data,
            paths=bool(paths_data),
            name=name,
            root=target.path,
            project=_project_name(config),
            argv=argv,
            cwd=cwd,
            results=list(config.sync.results),
            provenance=prov,
            env=env or None,
            env_spec=env_spec,
            after=list(after or []),
            array=array,
            gpu_count=gpus or None,
            options=sbatch_options(name, target.slurm, gpus, array),
            slurm_conf=conf_override(),
        )
    except AgentError as error:
        if error.kind == "noenv":
            raise  # envs.client.in_env builds it and submits again
        _raise(error, name, target)
        raise
    records = list(answer["records"])
    jobs = []
    for data in records:
        job = JobRecord.from_agent(target.name, target.host, data)
        if data.get("ended") is not None:
            job.state, job.exit_code, job.reason = "cancelled", None, data.get("reason")
        else:
            job.state, job.reason = "queued", f"Slurm job {data.get('slurm_id')}"
        jobs.append(job)
    return jobs


async def list_jobs(
    target: Target, channel: AgentChannel, options: dict[str, Any]
) -> list[JobRecord]:
    answer, _ = await channel.request("slurm_list", slurm_conf=conf_override(), **options)
    return to_jobs(target, list(answer["jobs"]))


async def follow(
    channel: AgentChannel,
    target: Target,
    name: str,
    write: Callable[[bytes], None],
    keep_following: bool,
    start: int = 0,
) -> dict[str, Any]:
    """Copy the job's Slurm output file from byte `start` to write(); with
    keep_following, until it ended."""
    offset = start
    while True:
        try:
            header, data = await channel.request(
                "slurm_log",
                name=name,
                root=target.path,
                offset=offset,
                slurm_conf=conf_override(),
            )
        except AgentError as error:
            _raise(error, name, target)
            raise
        if data:
            write(data)
            offset += len(data)
        if offset < int(header["size"]):
            continue
        state, code, reason = map_state(header["record"])
        if not keep_following or state not in ("running", "queued"):
            return {"state": state, "exit_code": code, "reason": reason, "size": header["size"]}
        await asyncio.sleep(POLL_S)


async def kill(channel: AgentChannel, target: Target, name: str) -> JobRecord:
    """scancel (an array: every task); the job's record once Slurm let it go."""
    try:
        answer, _ = await channel.request(
            "slurm_kill", name=name, root=target.path, slurm_conf=conf_override()
        )
    except AgentError as error:
        _raise(error, name, target)
        raise
    jobs = to_jobs(target, list(answer["records"]))
    return next((job for job in jobs if job.name == name), jobs[0])


async def partitions(channel: AgentChannel) -> list[dict[str, Any]] | str:
    """sinfo's partitions for `tether status`, or why they are not known."""
    try:
        answer, _ = await channel.request("slurm_partitions", slurm_conf=conf_override())
    except AgentError as error:
        return error.what
    return list(answer["partitions"])


def refuse_pinned(pinned: str | None, target: Target) -> None:
    if pinned:
        raise UsageError(
            f"--gpus {pinned} pins GPUs, which Slurm assigns on {target.name}",
            "",
            "ask for a count instead, e.g. --gpus 2",
        )
