"""`tether wait`: block until jobs end, one line each, across link drops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from tether.config import Target
from tether.errors import ConnectionLost, HostError, JobError, is_transient
from tether.jobs.backend import backend_for
from tether.jobs.model import JobRecord
from tether.transport.channel import AgentChannel

ACTIVE = ("queued", "running", "starting")
POLL_S = 1.0
BACKOFF_MAX_S = 10.0
LIST_TIMEOUT_S = 30.0


def describe(job: JobRecord) -> str:
    """'train on box: exited 0', 'eval on box: cancelled (dependency train exited 1)'."""
    reason = f" ({job.reason})" if job.reason else ""
    return f"{job.name} on {job.target}: {job.state_text()}{reason}"


def succeeded(job: JobRecord) -> bool:
    return job.state == "exited" and job.exit_code == 0


def pick(listed: list[list[JobRecord]], names: list[str]) -> list[set[str]]:
    """Per target, the job names to wait for; unknown names are refused."""
    if not names:
        return [{job.name for job in jobs if job.state in ACTIVE} for jobs in listed]
    found = {job.name for jobs in listed for job in jobs}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise JobError(f"no job named {unknown[0]!r} in this project", "", "see `tether jobs`")
    wanted = set(names)
    return [{job.name for job in jobs if job.name in wanted} for jobs in listed]


class Waiter:
    """Keep one target's channel open (reopening it after a drop) and poll its jobs."""

    def __init__(self, target: Target, poll: float = POLL_S) -> None:
        self.target = target
        self.backend = backend_for(target)
        self.channel: AgentChannel | None = None
        self.poll = poll
        self.drops = 0

    async def _open(self) -> AgentChannel:
        from tether.sync.targets import open_channel

        return await open_channel(self.target)

    async def jobs(self, say: Callable[[str], None] | None = None) -> list[JobRecord]:
        """This project's jobs on the target; retries with backoff while the link is down."""
        delay = 0.5
        while True:
            try:
                if self.channel is None or not self.channel.alive:
                    await self.close()
                    self.channel = await self._open()
                listing = self.backend.jobs(self.channel, project_only=True)
                return await asyncio.wait_for(listing, LIST_TIMEOUT_S)
            except (ConnectionLost, HostError, OSError, asyncio.TimeoutError) as error:
                if not is_transient(error):
                    raise  # a refused key or interpreter: waiting will not fix it
                self.drops += 1
                await self.close()
                if say is not None and self.drops == 1:
                    say(f"tether: lost {self.target.name} ({error.__class__.__name__}); retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def until_ended(
        self, names: set[str], emit: Callable[[JobRecord], None], say: Callable[[str], None]
    ) -> list[JobRecord]:
        """Poll until every name ended; emit(job) as each one does."""
        left = set(names)
        done: list[JobRecord] = []
        while left:
            jobs = {job.name: job for job in await self.jobs(say)}
            now_ended = []
            for name in sorted(left):
                job = jobs.get(name)
                if job is None:
                    job = JobRecord(name, self.target.name, self.target.host, "lost")
                    job.reason = "its record is gone"
                elif job.state in ACTIVE:
                    continue
                now_ended.append(job)
            for job in sorted(now_ended, key=lambda job: job.ended or 0.0):
                left.discard(job.name)
                done.append(job)
                emit(job)
            if left:
                await asyncio.sleep(self.poll)
        return done

    async def close(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            with contextlib.suppress(Exception):  # a dead channel may fail to close
                await channel.close()


async def wait_all(
    targets: list[Target],
    names: list[str],
    emit: Callable[[JobRecord], None],
    say: Callable[[str], None],
    poll: float = POLL_S,
) -> list[JobRecord]:
    """Wait for the named jobs (default: every queued or running one) on the targets."""
    waiters = [Waiter(target, poll=poll) for target in targets]
    try:
        listed = await asyncio.gather(*(waiter.jobs(say) for waiter in waiters))
        wanted = pick(list(listed), names)
        results = await asyncio.gather(
            *(
                waiter.until_ended(want, emit, say)
                for waiter, want in zip(waiters, wanted, strict=True)
            )
        )
    finally:
        await asyncio.gather(*(waiter.close() for waiter in waiters))
    return [job for batch in results for job in batch]
