"""The tmux job backend: jobs in detached tmux sessions on a plain host, through the
agent's job_* ops (tether.agent.jobs). Chosen by tether.jobs.backend.backend_for."""

from __future__ import annotations

from functools import partial
from typing import Any

from tether.agent.wire_jobs import JobKill, JobList, JobLog, JobStart
from tether.config import Config, Target
from tether.jobs.launch import (
    Restart,
    RunSpec,
    Sink,
    copy_log,
    job_fields,
    listing_options,
    newest_first,
    next_name,
    request,
    show_job,
    synced_paths,
)
from tether.jobs.model import JobRecord
from tether.jobs.tmux import attach_argv, socket_name
from tether.transport.channel import AgentChannel

POLL_S = 0.3


class TmuxBackend:
    """A target whose jobs run in tmux: start, list, log, kill, restart, show, attach."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def record(self, data: dict[str, Any]) -> JobRecord:
        """A job as the agent reports it (the agent derives its state from tmux)."""
        return JobRecord.from_agent(self.target.name, self.target.host, data)

    async def run(self, channel: AgentChannel, config: Config, spec: RunSpec) -> list[JobRecord]:
        """Start the job (each task of an array: the later ones share the first's
        snapshot) in the project's env, built first where the agent lacks it."""
        from tether.envs.client import in_env

        common: dict[str, Any] = {
            "argv": spec.argv,
            "cwd": spec.cwd,
            "gpus": spec.pinned,
            "gpu_count": spec.gpu_count or None,
            "after": list(spec.after) or None,
            "notify": spec.notify,
            "notify_timeout": spec.notify_timeout,
            "env": spec.env or None,
            "env_spec": spec.env_spec.wire(False) if spec.env_spec is not None else None,
        }
        records = []
        for index, task in enumerate(spec.names):
            fields = dict(common, name=task)
            if spec.array is not None:
                fields.update(array_index=index, snapshot_of=spec.names[0] if index else None)
            start = partial(self._start, channel, config, spec.info, fields)
            records.append(await in_env(channel, self.target, spec.env_spec, spec.build_env, start))
        return records

    async def restart(self, channel: AgentChannel, config: Config, again: Restart) -> JobRecord:
        """Start job `again.name` again as NAME-2 (-3, ...): its argv, GPUs and snapshot,
        or with fresh, a new snapshot with again's provenance and env."""
        from tether.envs.client import in_env

        taken = {job.name for job in await self.jobs(channel, project_only=True)}
        spec = again.env_spec
        fields: dict[str, Any] = {
            "name": next_name(again.name, taken),
            "argv": ["restart"],  # the agent copies the earlier job's
            "cwd": "",
            "restart_of": again.name,
            "fresh": again.fresh or None,
            "env_spec": spec.wire(False) if spec is not None else None,
        }
        start = partial(self._start, channel, config, again.info, fields)
        return await in_env(channel, self.target, spec, True, start)

    async def _start(
        self, channel: AgentChannel, config: Config, info: dict[str, Any], fields: dict[str, Any]
    ) -> JobRecord:
        """job_start with fields (name, argv, cwd and the optional ones: None leaves one
        out) and what every new job carries; the record with its provenance (an empty
        info with restart_of keeps the earlier job's)."""
        paths_data = synced_paths(config, self.target)
        start = JobStart(
            payload=paths_data,
            paths=bool(paths_data),
            socket=socket_name(),
            **await job_fields(channel, config, self.target, info),
            **{key: value for key, value in fields.items() if value is not None},
        )
        return self.record(await request(channel, self.target, start))

    async def jobs(
        self, channel: AgentChannel, project_only: bool = False, show_all: bool = True
    ) -> list[JobRecord]:
        """Jobs the agent on this target knows, newest first (listing_options)."""
        options = listing_options(self.target, project_only, show_all)
        listed = await channel.call(JobList(**options))
        return newest_first([self.record(data) for data in listed])

    async def follow(
        self, channel: AgentChannel, name: str, write: Sink, keep: bool, start: int = 0
    ) -> dict[str, Any]:
        """Copy the job's log from byte `start` to write(); with keep, until the job ended."""

        async def read(offset: int) -> tuple[dict[str, Any], bytes]:
            return await request(channel, self.target, JobLog(name, self.target.path, offset))

        return await copy_log(read, write, keep, start, POLL_S)

    async def kill(self, channel: AgentChannel, name: str, grace: float) -> JobRecord:
        """SIGINT, SIGTERM, SIGKILL with grace periods; the record once the end is written."""
        kill = JobKill(name, root=self.target.path, grace=grace)
        return self.record(await request(channel, self.target, kill))

    async def show(self, channel: AgentChannel, name: str) -> dict[str, Any]:
        """The job's whole record with its state now (`tether show`)."""
        return await show_job(self.target, channel, name, self.record)

    async def status(self, channel: AgentChannel) -> dict[str, Any]:
        """What tmux adds to `tether status`: nothing (the agent's status says it all)."""
        return {}

    def attach_argv(self, job: JobRecord) -> list[str]:
        """The job's tmux session (named by its key on the host) through ssh -t."""
        from tether.transport.ssh import interactive_argv

        key = str(job.raw.get("key") or job.name)
        return interactive_argv(self.target.host, attach_argv(key, job.socket))
