"""The client side of jobs: provenance, start, list, find by name, logs, kill."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tether.config import Config, SyncRules, Target
from tether.errors import JobError, UsageError
from tether.jobs.model import JobRecord
from tether.jobs.tmux import socket_name
from tether.transport.channel import AgentChannel, AgentError

DIFF_LIMIT = 1 << 20
POLL_S = 0.3


def provenance(
    root: Path, cwd: Path | None = None, rules: SyncRules | None = None
) -> dict[str, Any]:
    """Git commit and uncommitted diff of the local project (untracked files that a push
    sends included: small ones in the diff, every one by size and sha256), the local cwd
    and python. The remote half (interpreter, packages) is taken by the agent."""
    from tether.jobs import untracked

    commit = _git(root, ["rev-parse", "HEAD"]).strip() or None
    files: list[dict[str, Any]] = []
    diff = ""
    if commit:
        pushed = untracked.pushed_untracked(root, rules or SyncRules())
        files, small = untracked.describe(root, pushed)
        diff = untracked.diff_with(root, small) or ""
    if len(diff) > DIFF_LIMIT:
        diff = diff[:DIFF_LIMIT] + "\n[tether: diff truncated at 1 MB]\n"
    here = (cwd or Path.cwd()).resolve()
    return {
        "commit": commit,
        "dirty_diff": diff or None,
        "untracked": files,
        "local_cwd": str(here),
        "local_python": sys.version.split()[0],
    }


def _git(root: Path, args: list[str]) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def relative_cwd(root: Path, cwd: Path | None = None) -> str:
    """The working directory relative to the project root ('' at the root or outside)."""
    here = (cwd or Path.cwd()).resolve()
    try:
        rel = here.relative_to(root.resolve())
    except ValueError:
        return ""
    text = rel.as_posix()
    return "" if text == "." else text


def _raise_job(error: AgentError, name: str, target: Target) -> None:
    if error.kind == "exists":
        raise JobError(
            f"a job named {name!r} already exists on {target.name}",
            "",
            "pick another --name (or leave it out for a generated one)",
        ) from None
    if error.kind == "nojob":
        raise JobError(f"no job named {name!r} on {target.name}", "", "see `tether jobs`") from None
    if error.kind == "notmux":
        raise JobError(
            f"tmux is not installed on {target.host}",
            "",
            "install it there (e.g. `sudo apt-get install tmux`)",
        ) from None
    if error.kind == "nogpus":
        raise JobError(f"{target.name}: {error.what}", "", "ask for fewer with --gpus N") from None
    if error.kind == "nodep":
        raise JobError(f"{target.name}: {error.what}", "", "see `tether jobs`") from None
    if error.kind in ("cycle", "badafter"):
        raise UsageError(f"{target.name}: {error.what}", "", "check the --after names") from None
    if error.kind == "nocommand":
        raise JobError(
            error.what,
            "",
            "check the command (in a job, python and python3 are the target's python)",
        ) from None
    if error.kind == "badenv":
        raise UsageError(f"{target.name}: {error.what}", "", "use --env NAME=VALUE") from None
    if error.kind == "nosnapshot":
        raise JobError(f"{target.name}: {error.what}", "", "use `tether restart --fresh`") from None
    if error.kind == "noproject":
        raise JobError(
            f"no project directory {target.path} on {target.name}", "", "run `tether push` first"
        ) from None
    raise error


async def start(
    channel: AgentChannel,
    config: Config,
    target: Target,
    name: str,
    argv: list[str],
    cwd: str,
    gpus: str | None,
    info: dict[str, Any],
    gpu_count: int = 0,
    extra: dict[str, Any] | None = None,
) -> JobRecord:
    """job_start on one target; the record with its provenance.

    extra carries the optional fields: after, notify, notify_timeout, array_index,
    snapshot_of, restart_of (with fresh); an empty info with restart_of keeps the
    earlier job's provenance.
    """
    if target.scheduler == "slurm":  # run submits through tether.jobs.slurm; restart: not yet
        raise JobError(
            f"{target.name} is a Slurm target: tether restart does not resubmit there yet",
            "",
            "run the command again with tether run",
        )
    prov = dict(info)
    if prov:
        remote_python = (await channel.ready()).get("python")
        prov.update(target=target.name, host=target.host, remote_python=remote_python)
    paths_data = synced_paths(config, target)  # empty: never pushed from here, take the tree
    try:
        answer, _ = await channel.request(
            "job_start",
            paths_data,
            paths=bool(paths_data),
            name=name,
            root=target.path,
            project=_project_name(config),
            argv=argv,
            cwd=cwd,
            gpus=gpus,
            gpu_count=gpu_count or None,
            results=list(config.sync.results),
            socket=socket_name(),
            provenance=prov,
            **{key: value for key, value in (extra or {}).items() if value is not None},
        )
    except AgentError as error:
        _raise_job(error, name, target)
        raise
    return JobRecord.from_agent(target.name, target.host, answer["record"])


def synced_paths(config: Config, target: Target) -> bytes:
    """What sync owns in the target's tree (the last push's base), NUL-separated: the
    snapshot holds exactly that (a .venv or data made on the remote stays out)."""
    from tether.sync.state import Base, base_file

    base = Base.load(base_file(config.root, target.name, target.path))
    return "\0".join(sorted(base.entries)).encode("utf-8", "surrogateescape")


def _project_name(config: Config) -> str:
    import re

    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", config.root.name).lstrip("_-") or "project"
    return cleaned[:64]


WEEK_S = 7 * 24 * 3600.0


async def list_jobs(
    target: Target, channel: AgentChannel, project_only: bool = False, show_all: bool = True
) -> list[JobRecord]:
    """Jobs the agent on this target knows: all of them, or this project's (the target's
    remote directory), without those that ended over a week ago unless show_all."""
    import time

    options: dict[str, Any] = {}
    if project_only:
        options["root"] = target.path
    if not show_all:
        options["since"] = time.time() - WEEK_S
    if target.scheduler == "slurm":
        from tether.jobs import slurm

        jobs = await slurm.list_jobs(target, channel, options)
    else:
        answer, _ = await channel.request("job_list", **options)
        jobs = [JobRecord.from_agent(target.name, target.host, data) for data in answer["jobs"]]
    jobs.sort(key=lambda job: -(job.created or job.started or 0.0))
    return jobs


async def locate(targets: list[Target], name: str) -> tuple[Target, JobRecord]:
    """The one target (of targets) where this project's job called name exists, and the
    job as `jobs` shows it (one listing per target); clear errors otherwise."""
    from tether.sync.targets import each_target

    async def find(target: Target, channel: AgentChannel) -> JobRecord | None:
        jobs = await list_jobs(target, channel, project_only=True)
        return next((job for job in jobs if job.name == name), None)

    jobs = await each_target(targets, find)
    hits = [(t, job) for t, job in zip(targets, jobs, strict=True) if job is not None]
    found = [t for t, _ in hits]
    if not found:
        where = ", ".join(target.name for target in targets)
        raise JobError(f"no job named {name!r}", f"looked on {where}", "see `tether jobs`")
    if len(found) > 1:
        where = ", ".join(target.name for target in found)
        raise UsageError(f"job {name!r} runs on several targets ({where})", "", "pass --on TARGET")
    return hits[0]


async def follow(
    channel: AgentChannel,
    target: Target,
    name: str,
    write: Callable[[bytes], None],
    keep_following: bool,
    start: int = 0,
) -> dict[str, Any]:
    """Copy the job's log from byte `start` to write(); with keep_following, until the job
    ended."""
    if target.scheduler == "slurm":
        from tether.jobs import slurm

        return await slurm.follow(channel, target, name, write, keep_following, start)
    offset = start
    while True:
        try:
            header, data = await channel.request(
                "job_log", name=name, root=target.path, offset=offset
            )
        except AgentError as error:
            _raise_job(error, name, target)
            raise
        if data:
            write(data)
            offset += len(data)
        if offset < int(header["size"]):
            continue
        if not keep_following or header["state"] not in ("running", "queued"):
            return header
        await asyncio.sleep(POLL_S)


async def kill(channel: AgentChannel, target: Target, name: str, grace: float) -> JobRecord:
    """SIGINT, SIGTERM, SIGKILL with grace periods; the record once the end is written."""
    if target.scheduler == "slurm":
        from tether.jobs import slurm

        return await slurm.kill(channel, target, name)
    try:
        answer, _ = await channel.request("job_kill", name=name, root=target.path, grace=grace)
    except AgentError as error:
        _raise_job(error, name, target)
        raise
    return JobRecord.from_agent(target.name, target.host, answer["record"])
