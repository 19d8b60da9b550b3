"""The client side of remote envs: make sure a target has the env of the spec, report it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tether import invocation
from tether.agent.wire import ErrorKind
from tether.agent.wire_jobs import EnvSync
from tether.config import Target
from tether.envs.spec import EnvSpec
from tether.errors import TetherError
from tether.transport.channel import AgentChannel, AgentError

Say = Callable[[str], None]
T = TypeVar("T")


class EnvError(TetherError):
    """An env could not be had on a target (a failed build, or --no-env-sync)."""


def builder() -> str:
    """uv (else pip) by default; TETHER_ENV_BUILDER=pip|uv forces one (bench, tests)."""
    value = invocation.getenv("TETHER_ENV_BUILDER") or "auto"
    return value if value in ("auto", "uv", "pip") else "auto"


async def ensure(
    channel: AgentChannel,
    target: Target,
    spec: EnvSpec,
    say: Say,
    build: bool = True,
    offline: bool = False,
) -> dict[str, Any]:
    """The agent's answer for the spec's env on target, built first where it is missing
    (installer lines go to say; offline: from wheels downloaded here and pushed, with no
    index there). One round trip when it is there already."""
    answer, _ = await channel.call(
        EnvSync(spec.wire(False), target.path, builder(), describe=offline or None)
    )
    if answer["state"] == "ready":
        return answer
    if not build:
        raise EnvError(
            f"the env for {spec.source} is not built on {target.name}",
            "--no-env-sync was given",
            "run `tether env sync` (or leave out --no-env-sync)",
        )
    if offline:
        from tether.envs.offline import prepare

        await prepare(channel, target, spec, answer.get("target"), say)
    say(f"{target.name}: building the env for {spec.source} (digest {answer['digest']})")
    try:
        build_it = EnvSync(spec.wire(True), target.path, builder(), True, offline or None)
        async for header, _ in channel.stream(build_it):
            if header.get("more"):
                say(f"{target.name}: {header.get('line', '')}")
                continue
            return header
    except AgentError as error:
        raise _env_error(error, target, spec) from None
    raise EnvError(f"no answer from the env build on {target.name}")


def _env_error(error: AgentError, target: Target, spec: EnvSpec) -> TetherError:
    """A refused env build as EnvError, in words the table cannot have: the target by its
    name (the agent knows its host by its hostname), the spec's file for a failed build,
    and [env] python for a missing interpreter (the only python an env build looks for;
    the table's todo also covers a kernel's or a job's)."""
    if error.kind is ErrorKind.ENVBUILD:
        return EnvError(
            f"building the env on {target.name} failed: {error.what}",
            "",
            f"fix {spec.source} and run `tether env sync` again (jobs keep the env they had)",
        )
    if error.kind is ErrorKind.NOPYTHON:
        return EnvError(f"{target.name}: {error.what}", "", "fix [env] python in the config")
    return error


def summary(target: Target, answer: dict[str, Any], spec: EnvSpec) -> str:
    """One line: the env is ready (and what a build installed, how long it took)."""
    meta = answer.get("meta") or {}
    head = f"{target.name}: env {answer['digest']} for {spec.source}"
    if not answer.get("built"):
        return f"{head} is up to date (python {meta.get('python_version')})"
    packages = answer.get("packages") or []
    from tether.envs.spec import normalize

    named = [p for p in packages if normalize(p.partition("==")[0]) in _named(spec)]
    shown = ", ".join(named[:8]) + (
        f" and {len(packages) - len(named[:8])} more" if packages else ""
    )
    how = f"{meta.get('builder')} {meta.get('builder_version') or ''}".strip()
    return (
        f"{head} built in {meta.get('seconds')} s with {how}: python "
        f"{meta.get('python_version')}, {len(packages)} packages ({shown})"
    )


def _named(spec: EnvSpec) -> set[str]:
    return set(spec.named) | {"ipykernel"}


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def status_lines(target: Target, spec: EnvSpec, answer: dict[str, Any]) -> list[str]:
    """What `env status` prints for one target."""
    from tether.envs.spec import differences

    meta = answer.get("meta")
    lines = [f"{target.name}: spec {spec.source} (digest {spec.digest[:12]})"]
    if meta:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(meta.get("created") or 0)))
        lines.append(
            f"  env {answer['digest']}: built {when}, {_human(float(meta.get('size') or 0))}, "
            f"python {meta.get('python_version')}, {len(meta.get('packages') or [])} packages"
        )
        diff = differences(spec.pins, meta.get("packages"))
        lines += [f"  differs from the spec: {line}" for line in diff]
    else:
        lines.append(
            f"  env {answer['digest']}: not built (`tether env sync` or `tether run` builds it)"
        )
        previous = answer.get("previous")
        if previous:
            lines.append(f"  the env in use until now: {previous.get('digest')}")
            diff = differences(spec.pins, previous.get("packages"))
            lines += [f"  would change: {line}" for line in diff]
    return lines


def env_report(target: Target, spec: EnvSpec, answer: dict[str, Any]) -> dict[str, Any]:
    """The env of the spec on a target, as host check and status show it."""
    meta = answer.get("meta") or {}
    return {
        "target": target.name,
        "spec": spec.source,
        "digest": answer["digest"],
        "built": answer["state"] == "ready",
        "python_version": meta.get("python_version"),
    }


def env_line(env: dict[str, Any]) -> str:
    """'DIGEST for requirements.txt: built, python 3.11.2' (or not built)."""
    if env["built"]:
        state = f"built, python {env['python_version']}"
    else:
        state = "not built (`tether env sync` builds it)"
    return f"{env['digest']} for {env['spec']}: {state}"


def say_stderr(line: str) -> None:
    """Installer progress for commands whose stdout is their result (run, send)."""
    stream = invocation.stderr()
    stream.write(line + "\n")
    stream.flush()


async def in_env(
    channel: AgentChannel,
    target: Target,
    spec: EnvSpec | None,
    build: bool,
    start: Callable[[], Awaitable[T]],
) -> T:
    """start() (a job_start or kernel_start naming the spec); where the agent says the env is
    not built, build it (unless not build: then EnvError) and start again. A warm start
    costs no round trip more than start itself."""
    try:
        return await start()
    except AgentError as error:
        if error.kind is not ErrorKind.NOENV or spec is None:
            raise
    await ensure(channel, target, spec, say_stderr, build)
    return await start()
