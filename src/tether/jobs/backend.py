"""Job backends behind one interface, chosen once from the target.

A target's `scheduler` names its backend: tmux (tether.jobs.client.TmuxBackend) or Slurm
(tether.jobs.slurm.SlurmBackend). The CLI, `tether status` and `tether wait` talk only to
a JobBackend; a new scheduler is one class here in BACKENDS (plus its agent module and its
name in tether.config.SCHEDULERS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from tether.config import Config, Target
from tether.errors import JobError, UsageError
from tether.jobs.client import TmuxBackend
from tether.jobs.launch import Restart, RunSpec, Sink
from tether.jobs.model import JobRecord
from tether.jobs.slurm import SlurmBackend
from tether.transport.channel import AgentChannel

__all__ = ["BACKENDS", "JobBackend", "Restart", "RunSpec", "backend_for", "locate"]


class JobBackend(Protocol):
    """What the CLI asks of a target's jobs; each call is one or a few agent requests over
    the caller's channel. Errors are tether's (JobError, UsageError), never the agent's."""

    target: Target

    def record(self, data: dict[str, Any]) -> JobRecord:
        """A job record as the agent keeps it -> the job with its state now."""
        ...

    async def run(self, channel: AgentChannel, config: Config, spec: RunSpec) -> list[JobRecord]:
        """Snapshot and start (or submit) the job; one record per task."""
        ...

    async def restart(self, channel: AgentChannel, config: Config, again: Restart) -> JobRecord:
        """Start job `again.name` again as NAME-2 (then -3, ...)."""
        ...

    async def jobs(
        self, channel: AgentChannel, project_only: bool = False, show_all: bool = True
    ) -> list[JobRecord]:
        """The target's jobs (this project's only, recent only), newest first."""
        ...

    async def follow(
        self, channel: AgentChannel, name: str, write: Sink, keep: bool, start: int = 0
    ) -> dict[str, Any]:
        """Copy the job's log from byte `start` to write(), with keep until the job ended;
        the last state (state, exit_code, reason, size)."""
        ...

    async def kill(self, channel: AgentChannel, name: str, grace: float) -> JobRecord:
        """Stop the job; its record once it ended."""
        ...

    async def show(self, channel: AgentChannel, name: str) -> dict[str, Any]:
        """The job's whole record (provenance included) with its state now."""
        ...

    async def status(self, channel: AgentChannel) -> dict[str, Any]:
        """What the backend adds to the target's `tether status` entry."""
        ...

    def attach_argv(self, job: JobRecord) -> list[str]:
        """The local argv that attaches this terminal to the running job."""
        ...


BACKENDS: dict[str, Callable[[Target], JobBackend]] = {
    "tmux": TmuxBackend,
    "slurm": SlurmBackend,
}


def backend_for(target: Target) -> JobBackend:
    """The job backend of the target's scheduler (config validation checked the name)."""
    return BACKENDS[target.scheduler](target)


async def locate(targets: list[Target], name: str) -> tuple[Target, JobRecord]:
    """The one target (of targets) where this project's job called name exists, and the
    job as `jobs` shows it (one listing per target); clear errors otherwise."""
    from tether.sync.targets import each_target

    async def find(target: Target, channel: AgentChannel) -> JobRecord | None:
        jobs = await backend_for(target).jobs(channel, project_only=True)
        return next((job for job in jobs if job.name == name), None)

    jobs = await each_target(targets, find)
    hits = [(t, job) for t, job in zip(targets, jobs, strict=True) if job is not None]
    if not hits:
        where = ", ".join(target.name for target in targets)
        raise JobError(f"no job named {name!r}", f"looked on {where}", "see `tether jobs`")
    if len(hits) > 1:
        where = ", ".join(target.name for target, _ in hits)
        raise UsageError(f"job {name!r} runs on several targets ({where})", "", "pass --on TARGET")
    return hits[0]
