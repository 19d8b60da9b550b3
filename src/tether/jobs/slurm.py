"""The Slurm job backend: sbatch options (pure), Slurm state -> tether state (pure), and
SlurmBackend, the requests to the agent's slurm_* ops (tether.agent.slurm).

The exit code comes from tether's own wrapper record (right without accounting); Slurm's
state, reason and the job's output file explain everything else. An out-of-memory kill is
never a success, whichever way the cluster enforces memory (DESIGN section 10).
"""

from __future__ import annotations

import shlex
from functools import partial
from typing import Any

from tether import invocation
from tether.agent.wire_jobs import (
    SlurmKill,
    SlurmList,
    SlurmLog,
    SlurmPartitions,
    SlurmSubmit,
)
from tether.config import Config, Target
from tether.errors import JobError, UsageError
from tether.jobs import launch
from tether.jobs.launch import Restart, RunSpec, Sink
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
    return invocation.getenv("TETHER_SLURM_CONF") or None


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


# ---- the backend ---------------------------------------------------------------------


class SlurmBackend:
    """A target whose jobs Slurm runs: sbatch, squeue/sacct, the output file, scancel."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def record(self, data: dict[str, Any]) -> JobRecord:
        """A job as the agent reports it, its state mapped from Slurm's."""
        return to_job(self.target, data, {})

    async def run(self, channel: AgentChannel, config: Config, spec: RunSpec) -> list[JobRecord]:
        """Snapshot and sbatch; the records (one per array task). Slurm assigns GPUs: a
        pinned --gpus is refused. With an env spec the jobs run in that env, built on the
        login node first where the agent lacks it (in the shared home)."""
        from tether.envs.client import in_env

        refuse_pinned(spec.pinned, self.target)
        records = await in_env(
            channel,
            self.target,
            spec.env_spec,
            spec.build_env,
            partial(self._submit, channel, config, spec),
        )
        jobs = []
        for data in records:
            job = JobRecord.from_agent(self.target.name, self.target.host, data)
            if data.get("ended") is not None:
                job.state, job.exit_code, job.reason = "cancelled", None, data.get("reason")
            else:
                job.state, job.reason = "queued", f"Slurm job {data.get('slurm_id')}"
            jobs.append(job)
        return jobs

    async def _submit(
        self, channel: AgentChannel, config: Config, spec: RunSpec
    ) -> list[dict[str, Any]]:
        paths_data = launch.synced_paths(config, self.target)
        submit = SlurmSubmit(
            payload=paths_data,
            paths=bool(paths_data),
            name=spec.name,
            argv=spec.argv,
            cwd=spec.cwd,
            env=spec.env or None,
            after=list(spec.after),
            array=spec.array,
            gpu_count=spec.gpu_count or None,
            options=sbatch_options(spec.name, self.target.slurm, spec.gpu_count, spec.array),
            slurm_conf=conf_override(),
            env_spec=spec.env_spec.wire(False) if spec.env_spec is not None else None,
            **await launch.job_fields(channel, config, self.target, spec.info),
        )
        return await launch.request(channel, self.target, submit)

    async def restart(self, channel: AgentChannel, config: Config, again: Restart) -> JobRecord:
        """Not on Slurm yet: one clear error."""
        raise JobError(
            f"{self.target.name} is a Slurm target: tether restart does not resubmit there yet",
            "",
            "run the command again with tether run",
        )

    async def jobs(
        self, channel: AgentChannel, project_only: bool = False, show_all: bool = True
    ) -> list[JobRecord]:
        """The Slurm jobs tether submitted here, newest first, each with Slurm's view."""
        options = launch.listing_options(self.target, project_only, show_all)
        listed = await channel.call(SlurmList(slurm_conf=conf_override(), **options))
        return launch.newest_first(to_jobs(self.target, listed))

    async def follow(
        self, channel: AgentChannel, name: str, write: Sink, keep: bool, start: int = 0
    ) -> dict[str, Any]:
        """Copy the job's Slurm output file from byte `start` to write(); with keep, until
        it ended."""

        async def read(offset: int) -> tuple[dict[str, Any], bytes]:
            log = SlurmLog(name, self.target.path, offset, slurm_conf=conf_override())
            header, data = await launch.request(channel, self.target, log)
            state, code, reason = map_state(header["record"])
            mapped = {"state": state, "exit_code": code, "reason": reason, "size": header["size"]}
            return mapped, data

        return await launch.copy_log(read, write, keep, start, POLL_S)

    async def kill(self, channel: AgentChannel, name: str, grace: float) -> JobRecord:
        """scancel (an array: every task); the job's record once Slurm let it go."""
        kill = SlurmKill(name, self.target.path, slurm_conf=conf_override())
        jobs = to_jobs(self.target, await launch.request(channel, self.target, kill))
        return next((job for job in jobs if job.name == name), jobs[0])

    async def show(self, channel: AgentChannel, name: str) -> dict[str, Any]:
        """The job's whole record with its state as Slurm sees it (`tether show`)."""
        return await launch.show_job(self.target, channel, name, self.record)

    async def status(self, channel: AgentChannel) -> dict[str, Any]:
        """What Slurm adds to `tether status`: the partitions (or why they are unknown)."""
        return {"partitions": await partitions(channel)}

    def attach_argv(self, job: JobRecord) -> list[str]:
        """Slurm jobs have no tmux session: one clear error."""
        raise JobError(
            f"{job.name} on {self.target.name} is a Slurm job",
            "it runs without a tmux session to attach to",
            f"follow its output with `tether logs {job.name} -f`",
        )


async def partitions(channel: AgentChannel) -> list[dict[str, Any]] | str:
    """sinfo's partitions for `tether status`, or why they are not known."""
    try:
        return await channel.call(SlurmPartitions(conf_override()))
    except AgentError as error:
        return error.what


def refuse_pinned(pinned: str | None, target: Target) -> None:
    if pinned:
        raise UsageError(
            f"--gpus {pinned} pins GPUs, which Slurm assigns on {target.name}",
            "",
            "ask for a count instead, e.g. --gpus 2",
        )
