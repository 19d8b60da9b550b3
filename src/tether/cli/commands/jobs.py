"""run, jobs, logs, attach, kill: thin commands over tether.jobs."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, TypeVar

import typer

from tether import invocation

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tether.config import Config, Target
    from tether.jobs.backend import JobBackend
    from tether.jobs.model import JobRecord
    from tether.transport.channel import AgentChannel

T = TypeVar("T")

RUN_HELP = """Push, snapshot the remote tree and start CMD in tmux on the target(s).

The job runs against a frozen snapshot (its own copy: later pushes never change it, and
what it writes there changes nothing else), outlives this laptop and records its real exit
code. `python` and `python3` are the target's python. Everything after `--` is passed
exactly; a command that cannot start fails here and leaves the name free.

Examples:

  tether run --name lr3e-4 -- python train.py --lr 3e-4

  tether run --on gpu --gpus 0,1 --follow -- python train.py

  tether run --on gpu --gpus 2 -- python train.py   # two free GPUs; queued until free

  tether run --name train --after prep -- python train.py   # once prep exited 0

  tether run --name sweep --array 4 -- python sweep.py   # sweep-0..3, TETHER_ARRAY_INDEX

  tether run --env SEED=3 --env WANDB_MODE=offline -- python train.py
"""

WAIT_HELP = """Wait until jobs end; one line per job as it ends; exit 1 if any did not exit 0.

Default: every queued or running job of this project on the default targets. Keeps
waiting across a dropped link (reconnects).

Examples:

  tether wait train eval && say done
"""

RESTART_HELP = """Start NAME again as NAME-2 (then -3, ...): same argv, GPUs and snapshot.

--fresh pushes first and snapshots the tree anew. The old job's record is kept.
"""

JOBS_HELP = """List this project's jobs on its default targets (asked in parallel), newest first.

Jobs that ended over a week ago are hidden; --all shows every job on the targets' hosts,
of every project (with its remote directory) and of any age.

Examples:

  tether jobs

  tether jobs --all

  tether jobs --on gpu --json
"""


def register(app: typer.Typer) -> None:
    """Add run, jobs, logs, attach and kill."""
    app.command("run", help=RUN_HELP)(run)
    app.command("jobs", help=JOBS_HELP)(jobs)
    app.command("logs", help="Print a job's log; -f follows it until the job ends.")(logs)
    app.command("attach", help="Attach to a job's tmux session (Ctrl-b d to leave).")(attach)
    app.command("kill", help="Stop a job: SIGINT, then SIGTERM, then SIGKILL.")(kill)
    app.command("wait", help=WAIT_HELP)(wait)
    app.command("restart", help=RESTART_HELP)(restart)


def run(
    command: list[str] = typer.Argument(..., help="The command and its arguments, after --."),
    on: list[str] = typer.Option(None, "--on", help="Target name (repeatable)."),
    name: str = typer.Option(None, "--name", help="Job name (default: generated)."),
    gpus: str = typer.Option(
        None, "--gpus", help="N free GPUs (queued until free), or GPUs to pin: 0,1 or 3,"
    ),
    after: list[str] = typer.Option(
        None, "--after", help="Start once this job exited 0 (repeatable); kept on the remote."
    ),
    array: int = typer.Option(None, "--array", help="Start N tasks NAME-0 .. NAME-{N-1}."),
    notify: str = typer.Option(
        None, "--notify", help="Shell command run on the remote when the job ends."
    ),
    env: list[str] = typer.Option(
        None, "--env", help="NAME=VALUE in the job's environment (repeatable)."
    ),
    no_push: bool = typer.Option(False, "--no-push", help="Do not push first."),
    no_env_sync: bool = typer.Option(
        False, "--no-env-sync", help="Refuse, rather than build, an env the spec lacks."
    ),
    follow_log: bool = typer.Option(False, "--follow", help="Stream the log until it ends."),
) -> None:
    """Start a job."""
    import asyncio

    from tether import config as config_module
    from tether.envs import spec as env_spec
    from tether.errors import JobError, UsageError
    from tether.jobs.backend import RunSpec, backend_for
    from tether.jobs.launch import provenance, relative_cwd
    from tether.jobs.model import generate_name, parse_gpus
    from tether.jobs.tmux import valid_name
    from tether.sync.targets import each_target

    if not command:
        raise UsageError("no command to run", "", "put it after --, e.g. tether run -- python x.py")
    if name is not None and not valid_name(name):
        raise UsageError(f"bad job name {name!r}", "use up to 64 letters, digits, '_' and '-'")
    pinned, count = parse_gpus(gpus)
    for dep in after or []:
        if not valid_name(dep):
            raise UsageError(f"bad --after name {dep!r}", "", "name a job from `tether jobs`")
    if name is not None and name in (after or []):
        raise UsageError(f"job {name!r} cannot run after itself", "", "check the --after names")
    if array is not None and not 1 <= array <= 1000:
        raise UsageError(f"bad --array {array}", "", "use 1 to 1000 tasks")
    job_env = parse_env(env or [])
    config = config_module.load()
    targets = config.pick(on or [])
    if not no_push:
        _push(config, targets)
    job_name = name or generate_name()
    last = job_name if array is None else f"{job_name}-{array - 1}"
    if not valid_name(last):
        raise UsageError(f"bad job name {last!r}", "use up to 64 letters, digits, '_' and '-'")
    spec = RunSpec(
        name=job_name,
        argv=list(command),
        cwd=relative_cwd(config.root),
        info=provenance(config.root, rules=config.sync),
        pinned=pinned,
        gpu_count=count,
        after=list(after or []),
        array=array,
        env=job_env,
        notify=notify or config.notify,
        notify_timeout=_notify_timeout(),
        env_spec=env_spec.find(config),  # the job runs in the env of the project's spec
        build_env=not no_env_sync,
    )

    async def start(target: Target, channel: AgentChannel) -> list[JobRecord]:
        return await backend_for(target).run(channel, config, spec)

    started = [record for batch in asyncio.run(each_target(targets, start)) for record in batch]
    _report_started(started, count)
    refused = [record for record in started if record.state == "cancelled"]
    if refused:
        first = refused[0]
        raise JobError(f"{first.name} on {first.target} was not started", first.reason or "")
    if follow_log and len(targets) == 1 and array is None:
        _follow(targets[0], job_name, True)
    else:
        invocation.stdout().write(f"follow it: tether logs {spec.names[0]} -f\n")


def parse_env(values: list[str]) -> dict[str, str]:
    """--env NAME=VALUE values (later ones win); UsageError naming a bad one."""
    import re

    from tether.errors import UsageError

    found: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or "\0" in text:
            raise UsageError(f"bad --env {value!r}", "expected NAME=VALUE", "e.g. --env SEED=3")
        found[key] = text
    return found


def _push(config: Config, targets: list[Target]) -> None:
    import asyncio

    from tether.errors import ConflictError
    from tether.sync import runner
    from tether.sync.session import raise_for_errors

    reports = asyncio.run(runner.sync(config, targets, "push", None, False, False))
    raise_for_errors(reports)
    conflicts = [c.path for report in reports for c in report.conflicts]
    if conflicts:
        raise ConflictError(reports[0].target, conflicts, "push")


def _report_started(started: list[JobRecord], count: int) -> None:
    from tether.cli.render import console

    out = console()
    for record in started:
        if record.state == "queued":
            out.print(f"queued {record.name} on {record.target} ({record.reason})")
        elif record.state != "cancelled":
            gpu_note = f" on GPU {record.gpus}" if count and record.gpus else ""
            out.print(f"started {record.name} on {record.target}{gpu_note}")


def _notify_timeout() -> float | None:
    """TETHER_NOTIFY_TIMEOUT (seconds) where set: a shorter hook timeout, for tests."""

    text = invocation.getenv("TETHER_NOTIFY_TIMEOUT")
    try:
        return float(text) if text else None
    except ValueError:
        return None


def wait(
    names: list[str] = typer.Argument(None, help="Job names (default: all queued or running)."),
    on: list[str] = typer.Option(None, "--on", help="These targets (default: the defaults)."),
) -> None:
    """Wait for jobs."""
    import asyncio

    from tether import config as config_module
    from tether.jobs.wait import describe, succeeded, wait_all

    config = config_module.load()
    targets = config.pick(on or [])

    def emit(job: JobRecord) -> None:
        invocation.stdout().write(describe(job) + "\n")
        invocation.stdout().flush()

    def say(line: str) -> None:
        invocation.stderr().write(line + "\n")
        invocation.stderr().flush()

    try:
        ended = asyncio.run(wait_all(targets, list(names or []), emit, say))
    except KeyboardInterrupt:
        invocation.stderr().write("tether: stopped waiting; the jobs go on\n")
        raise SystemExit(130) from None
    if not ended:
        invocation.stdout().write("no queued or running jobs\n")
    if not all(succeeded(job) for job in ended):
        raise SystemExit(1)


def restart(
    name: str = typer.Argument(..., help="Job name."),
    on: str = typer.Option(None, "--on", help="Target where the job ran."),
    fresh: bool = typer.Option(False, "--fresh", help="Push and snapshot anew."),
) -> None:
    """Start a job again under a new name."""
    from tether import config as config_module
    from tether.envs.spec import find
    from tether.jobs.backend import Restart
    from tether.jobs.launch import provenance

    config = config_module.load()
    target = _where(name, on)
    if fresh:
        _push(config, [target])
    again = Restart(name, fresh)
    if fresh:  # else the earlier job's provenance and env, as its code
        again = Restart(name, True, provenance(config.root, rules=config.sync), find(config))
    record = _on_target(target, lambda backend, channel: backend.restart(channel, config, again))
    _report_started([record], 0)


def jobs(
    ctx: typer.Context,
    on: list[str] = typer.Option(None, "--on", help="These targets (default: the defaults)."),
    show_all: bool = typer.Option(
        False, "--all", help="Every job on the hosts: other projects', and older ones."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List jobs."""
    from tether import config as config_module
    from tether import runtime
    from tether.cli.render import print_json
    from tether.jobs.backend import backend_for

    config = config_module.load()
    targets = config.pick(on or [])
    here = runtime.of(ctx.obj)

    async def ask(target: Target, channel: AgentChannel) -> list[JobRecord]:
        return await backend_for(target).jobs(channel, not show_all, show_all)

    nested = here.run(here.each_target(targets, ask))
    records = [job for batch in nested for job in batch]
    records.sort(key=lambda job: -(job.created or job.started or 0.0))
    if as_json:
        print_json([job.to_json() for job in records])
        return
    from tether.cli.render import jobs_table

    jobs_table(records, len(targets), projects=show_all)


def logs(
    name: str = typer.Argument(..., help="Job name."),
    follow_log: bool = typer.Option(False, "-f", "--follow", help="Follow until it ends."),
    on: str = typer.Option(None, "--on", help="Target where the job runs."),
) -> None:
    """Print a job's log."""
    target = _where(name, on)
    _follow(target, name, follow_log)


def attach(
    name: str = typer.Argument(..., help="Job name."),
    on: str = typer.Option(None, "--on", help="Target where the job runs."),
) -> None:
    """Attach to the job's tmux session."""
    import os

    from tether.jobs.backend import backend_for

    target, job = _locate(name, on)
    if job.state not in ("running", "queued"):
        _say_ended(target, job)
    argv = backend_for(target).attach_argv(job)
    os.execvp(argv[0], argv)  # noqa: S606 - argv list, no shell


def _say_ended(target: Target, job: JobRecord) -> None:
    """An ended job has no session to attach to: its log's tail, then one error line."""

    from tether.errors import JobError

    lines: list[bytes] = []
    with contextlib.suppress(Exception):  # the tail is a courtesy; the error line is the answer
        _follow(target, job.name, False, sink=lines.append)
    tail = b"".join(lines).decode("utf-8", "replace").splitlines()[-TAIL_LINES:]
    for line in tail:
        invocation.stdout().write(line + "\n")
    reason = f", {job.reason}" if job.reason else ""
    raise JobError(
        f"{job.name} on {target.name} has ended ({job.state_text()}{reason})",
        "there is no session to attach to",
        f"see the whole log with `tether logs {job.name}`",
    )


def kill(
    name: str = typer.Argument(..., help="Job name."),
    on: str = typer.Option(None, "--on", help="Target where the job runs."),
    grace: float = typer.Option(5.0, "--grace", help="Seconds between signals."),
) -> None:
    """Stop a job."""
    from tether.cli.render import console

    target = _where(name, on)
    record = _on_target(target, lambda backend, channel: backend.kill(channel, name, grace))
    reason = f" ({record.reason})" if record.reason else ""
    console().print(f"{name} on {target.name}: {record.state_text()}{reason}")


def _on_target(target: Target, work: Callable[[JobBackend, AgentChannel], Awaitable[T]]) -> T:
    """work(the target's job backend, a channel to the target), run to its end."""
    import asyncio

    from tether.jobs.backend import backend_for
    from tether.sync.targets import open_channel

    async def go() -> T:
        channel = await open_channel(target)
        try:
            return await work(backend_for(target), channel)
        finally:
            await channel.close()

    return asyncio.run(go())


def _where(name: str, on: str | None) -> Target:
    """The target where job `name` runs (asks every target unless --on)."""
    return _locate(name, on)[0]


def _locate(name: str, on: str | None) -> tuple[Target, JobRecord]:
    """(target, job) of this project's job `name` (asks every target unless --on)."""
    import asyncio

    from tether import config as config_module
    from tether.jobs.backend import locate

    config = config_module.load()
    targets = config.pick([on]) if on else list(config.targets.values())
    return asyncio.run(locate(targets, name))


TAIL_LINES = 20
RECONNECT_START_S = 0.5
RECONNECT_MAX_S = 10.0


def _follow(
    target: Target,
    name: str,
    keep: bool,
    sink: Callable[[bytes], object] | None = None,
) -> None:
    import asyncio
    import contextlib

    from tether.errors import TetherError, is_transient
    from tether.jobs.backend import backend_for
    from tether.sync.targets import open_channel

    backend = backend_for(target)
    printed = 0

    def write(data: bytes) -> None:
        nonlocal printed
        if sink is not None:
            sink(data)
        else:
            invocation.stdout().buffer.write(data)
            invocation.stdout().buffer.flush()
        printed += len(data)

    async def go() -> dict[str, object]:
        """Follow; after a transient drop, reconnect and go on from what was printed."""
        delay, said = RECONNECT_START_S, False
        while True:
            try:
                channel = await open_channel(target)
                try:
                    return await backend.follow(channel, name, write, keep, printed)
                finally:
                    with contextlib.suppress(Exception):  # a dead channel may fail to close
                        await channel.close()
            except Exception as error:
                if not keep or not is_transient(error):
                    raise
                if not said:
                    why = error.line() if isinstance(error, TetherError) else str(error)
                    invocation.stderr().write(f"tether: lost {target.name} ({why}); reconnecting\n")
                    said = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    try:
        header = asyncio.run(go())
    except KeyboardInterrupt:
        invocation.stderr().write(f"tether: detached; {name} goes on (tether logs {name} -f)\n")
        return
    if keep and header.get("state") == "exited":
        reason = f" ({header['reason']})" if header.get("reason") else ""
        invocation.stderr().write(f"tether: {name} exited {header.get('exit_code')}{reason}\n")
