"""What every job backend shares: the job to run (RunSpec), what a new job carries (local
provenance, the synced paths, the project's name) and what the agent's job errors mean.

Backends (tether.jobs.client for tmux, tether.jobs.slurm) import this module, never each
other; tether.jobs.backend picks one per target.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tether import invocation
from tether.agent.wire import TABLE, ErrorKind, Request, explain
from tether.agent.wire_jobs import JobShow
from tether.config import Config, SyncRules, Target
from tether.errors import JobError, UsageError
from tether.jobs.model import JobRecord, _iso
from tether.transport.channel import AgentChannel, AgentError

if TYPE_CHECKING:
    from tether.envs.spec import EnvSpec

DIFF_LIMIT = 1 << 20
Sink = Callable[[bytes], None]  # where a followed log goes
WEEK_S = 7 * 24 * 3600.0
A = TypeVar("A")


@dataclass(frozen=True)
class RunSpec:
    """One `tether run`: what to start, as every backend receives it."""

    name: str
    argv: list[str]
    cwd: str  # relative to the project root ('' at the root)
    info: dict[str, Any]  # local provenance (provenance())
    pinned: str | None = None  # --gpus 0,1
    gpu_count: int = 0  # --gpus N
    after: list[str] = field(default_factory=list)
    array: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    notify: str | None = None
    notify_timeout: float | None = None
    env_spec: EnvSpec | None = None  # the project's env spec, if any
    build_env: bool = True  # build an env the spec lacks (False: refuse)

    @property
    def names(self) -> list[str]:
        """The job names: NAME, or NAME-0 .. NAME-{N-1} for --array N."""
        if self.array is None:
            return [self.name]
        return [f"{self.name}-{index}" for index in range(self.array)]


@dataclass(frozen=True)
class Restart:
    """One `tether restart`: the job to start again; with fresh, from a new snapshot with
    info's provenance and env_spec's env (else the job's own)."""

    name: str
    fresh: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    env_spec: EnvSpec | None = None


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
    here = (cwd or Path(invocation.cwd())).resolve()
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
            ["git", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=invocation.spawn_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def relative_cwd(root: Path, cwd: Path | None = None) -> str:
    """The working directory relative to the project root ('' at the root or outside)."""
    here = (cwd or Path(invocation.cwd())).resolve()
    try:
        rel = here.relative_to(root.resolve())
    except ValueError:
        return ""
    text = rel.as_posix()
    return "" if text == "." else text


async def job_fields(
    channel: AgentChannel, config: Config, target: Target, info: dict[str, Any]
) -> dict[str, Any]:
    """The request fields every new job carries: its provenance (with where it runs), the
    paths sync owns (the snapshot holds exactly those), the project and its results."""
    prov = dict(info)
    if prov:  # empty: a restart keeps the earlier job's provenance
        remote_python = (await channel.ready()).get("python")
        prov.update(target=target.name, host=target.host, remote_python=remote_python)
    return {
        "root": target.path,
        "project": project_name(config),
        "results": list(config.sync.results),
        "provenance": prov,
    }


def synced_paths(config: Config, target: Target) -> bytes:
    """What sync owns in the target's tree (the last push's base), NUL-separated: the
    snapshot holds exactly that (a .venv or data made on the remote stays out). Empty:
    never pushed from here, the agent takes the tree."""
    from tether.sync.state import Base, base_file

    base = Base.load(base_file(config.root, target.name, target.path))
    return "\0".join(sorted(base.entries)).encode("utf-8", "surrogateescape")


def project_name(config: Config) -> str:
    """The project's name on the remote (its snapshots' folder): the root's, made safe."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", config.root.name).lstrip("_-") or "project"
    return cleaned[:64]


def next_name(name: str, taken: set[str]) -> str:
    """NAME-2, NAME-3, ...: the first not taken (the name of a restart)."""
    number = 2
    while f"{name}-{number}" in taken:
        number += 1
    return f"{name}-{number}"


def listing_options(target: Target, project_only: bool, show_all: bool) -> dict[str, Any]:
    """A job listing's request fields: this project's jobs only (the target's remote
    directory), and without those that ended over a week ago unless show_all."""
    options: dict[str, Any] = {}
    if project_only:
        options["root"] = target.path
    if not show_all:
        options["since"] = time.time() - WEEK_S
    return options


def newest_first(jobs: list[JobRecord]) -> list[JobRecord]:
    """Jobs by creation (or start), the newest first."""
    return sorted(jobs, key=lambda job: -(job.created or job.started or 0.0))


async def request(channel: AgentChannel, target: Target, about: Request[A]) -> A:
    """One request about a job (its `name` field); the agent's refusal becomes tether's
    error (raise_job)."""
    try:
        return await channel.call(about)
    except AgentError as error:
        raise_job(error, str(getattr(about, "name", None)), target)
        raise


async def copy_log(
    read: Callable[[int], Awaitable[tuple[dict[str, Any], bytes]]],
    write: Sink,
    keep: bool,
    start: int,
    poll_s: float,
) -> dict[str, Any]:
    """Copy a job's log from byte `start` to write(), one read(offset) -> (header, data) at a
    time; with keep, until the header's state says the job ended. The last header (size,
    state, exit_code, reason)."""
    offset = start
    while True:
        header, data = await read(offset)
        if data:
            write(data)
            offset += len(data)
        if offset < int(header["size"]):
            continue
        if not keep or header["state"] not in ("running", "queued"):
            return header
        await asyncio.sleep(poll_s)


async def show_job(
    target: Target,
    channel: AgentChannel,
    name: str,
    record: Callable[[dict[str, Any]], JobRecord],
) -> dict[str, Any]:
    """One job's whole record with its state now (record(): the backend's view of it), in
    the shape of `show --json`."""
    answer, _ = await request(channel, target, JobShow(name, root=target.path))
    data = dict(answer["record"])
    job = record(data)
    data.pop("slurm", None)  # the scheduler's raw view: the state above says what it means
    data.update(job.to_json())
    data.update(
        created=_iso(data.get("created")),
        duration=job.duration(),
        record_file=answer.get("record_file"),
    )
    return data


# The job kinds whose refusal becomes JobError (UsageError where the table says usage),
# worded "TARGET: what the agent said, what to do" with the table's message and todo.
JOB_KINDS = frozenset(
    {
        ErrorKind.EXISTS,
        ErrorKind.NOJOB,
        ErrorKind.NOPROJECT,
        ErrorKind.NOTMUX,
        ErrorKind.NOSBATCH,
        ErrorKind.SBATCH,
        ErrorKind.SCANCEL,
        ErrorKind.SINFO,
        ErrorKind.NOGPUS,
        ErrorKind.NODEP,
        ErrorKind.CYCLE,
        ErrorKind.BADAFTER,
        ErrorKind.NOCOMMAND,
        ErrorKind.BADENV,
        ErrorKind.NOSNAPSHOT,
    }
)


def raise_job(error: AgentError, name: str, target: Target) -> None:
    """The agent's refusal of a job request as tether's error (other kinds: as they are).

    What to do comes from wire.TABLE; only the words need what the table lacks: the
    job's name and the target as the user calls them (the agent knows the job by its key
    and the host by its hostname), so a few kinds get their own line here."""
    kind, what = error.kind, error.what
    if kind not in JOB_KINDS:
        raise error
    said, todo = explain(kind, what)
    own = {
        ErrorKind.EXISTS: f"a job named {name!r} already exists on {target.name}",
        ErrorKind.NOJOB: f"no job named {name!r} on {target.name}",
        ErrorKind.NOPROJECT: f"no project directory {target.path} on {target.name}",
        ErrorKind.NOSBATCH: f"{target.name} is a Slurm target but {what} on {target.host}",
        # the agent's words say "on the remote" and how to install it: said here for the
        # host by its name, the how as what to do
        ErrorKind.NOTMUX: f"tmux is not installed on {target.host}",
        ErrorKind.NOCOMMAND: said,  # the agent's words name the command and the host
    }
    if kind is ErrorKind.NOTMUX:
        todo = "install it there (e.g. `sudo apt-get install tmux`)"
    line = own.get(kind, f"{target.name}: {said}")
    raise (UsageError if TABLE[kind].usage else JobError)(line, "", todo) from None
