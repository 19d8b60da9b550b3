"""`tether status`: every target asked in parallel, all its questions in one round trip."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from tether.agent.wire_jobs import DiskUse, EnvStatus, Status
from tether.config import Target
from tether.envs.spec import EnvSpec
from tether.errors import TetherError
from tether.jobs.backend import backend_for
from tether.runtime import LOCAL, Runtime
from tether.transport.channel import AgentChannel


async def target_status(
    target: Target, spec: EnvSpec | None = None, runtime: Runtime = LOCAL
) -> dict[str, Any]:
    """What the target's agent says (load, disk, GPUs, jobs, the spec's env), or why it is
    unreachable: every question in one round trip, on the runtime's channel."""
    entry: dict[str, Any] = {"target": target.name, "host": target.host, "path": target.path}
    started = time.monotonic()

    async def ask(target: Target, channel: AgentChannel) -> dict[str, Any]:
        asks: list[Awaitable[Any]] = [
            channel.call(Status(target.path)),
            channel.call(DiskUse(target.path)),
            backend_for(target).status(channel),
        ]
        if spec is not None:
            asks.append(channel.call(EnvStatus(spec.wire(False))))
        (answer, _), (disk, _), extra, *env = await asyncio.gather(*asks)
        answer["snapshots"] = disk["snapshots"]
        answer.update(extra)
        if spec is not None:
            from tether.envs.client import env_report

            answer["env"] = env_report(target, spec, env[0][0])
            del answer["env"]["target"]  # the entry names it
        return dict(answer)

    try:
        answer = await runtime.on_target(target, ask)
    except (TetherError, OSError) as error:
        entry.update(reachable=False, error=_line(error))
        return entry
    entry.update({k: v for k, v in answer.items() if k not in ("id", "ok")})
    entry.update(reachable=True, error=None, seconds=round(time.monotonic() - started, 3))
    return entry


def _line(error: BaseException) -> str:
    return error.line() if isinstance(error, TetherError) else str(error)


async def gather(
    targets: list[Target], spec: EnvSpec | None = None, runtime: Runtime = LOCAL
) -> list[dict[str, Any]]:
    """target_status for every target at once, in the targets' order."""
    asks = (target_status(target, spec, runtime) for target in targets)
    return list(await asyncio.gather(*asks))


def gpu_text(entry: dict[str, Any]) -> str:
    """'1/2 free (80 GiB free)', 'none', '' for unreachable targets."""
    if not entry.get("reachable"):
        return ""
    gpus = entry.get("gpus") or []
    if not gpus:
        return "none"
    free = [gpu for gpu in gpus if gpu.get("free")]
    mem_free = sum(
        max(0, (gpu.get("memory_total") or 0) - (gpu.get("memory_used") or 0)) for gpu in gpus
    )
    mem_total = sum(gpu.get("memory_total") or 0 for gpu in gpus)
    return (
        f"{len(free)}/{len(gpus)} free, {_gib(mem_free * 2**20)}/{_gib(mem_total * 2**20)} mem free"
    )


def jobs_text(counts: dict[str, int]) -> str:
    """'2 running, 1 queued' (only the states present)."""
    parts = [f"{counts[state]} {state}" for state in ("running", "queued") if counts.get(state)]
    return ", ".join(parts) or "-"


def _gib(size: float) -> str:
    return f"{size / 2**30:.0f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def lines(entries: list[dict[str, Any]]) -> list[str]:
    """The one-screen text: a few lines per target."""
    out: list[str] = []
    for entry in entries:
        head = f"{entry['target']} ({entry['host']})"
        if not entry.get("reachable"):
            out.append(f"{head}: unreachable: {entry.get('error')}")
            continue
        load = entry.get("load")
        load_text = "load ?" if not load else f"load {load[0]:.2f} on {entry.get('cpus')} cpus"
        disk = _gib(float(entry.get("disk_free") or 0))
        out.append(f"{head}: up, {load_text}, {disk} disk free")
        gpus = entry.get("gpus") or []
        if gpus:
            each = []
            for gpu in gpus:
                used = _gib((gpu.get("memory_used") or 0) * 2**20)
                total = _gib((gpu.get("memory_total") or 0) * 2**20)
                who = (
                    f"job {gpu['job']}" if gpu.get("job") else "free" if gpu.get("free") else "busy"
                )
                each.append(f"{gpu['index']}: {used}/{total} {who}")
            out.append(f"  GPUs {gpu_text(entry)}; " + "; ".join(each))
        else:
            out.append("  GPUs: none")
        parts = entry.get("partitions") or []
        if isinstance(parts, str):
            out.append(f"  Slurm: {parts}")
            parts = []
        for part in parts:
            out.append(
                f"  partition {part['partition']} ({part['avail']}): {part['nodes']} node(s) "
                f"{part['state']}"
                + (f", {part['gres']}" if part["gres"] not in ("", "(null)") else "")
            )
        snaps = entry.get("snapshots")
        if snaps:
            out.append("  " + snapshots_text(snaps))
        project = jobs_text(entry.get("project_jobs") or {})
        host = jobs_text(entry.get("jobs") or {})
        out.append(f"  jobs: this project {project}; everyone's on the host {host}")
        env = entry.get("env")
        if env:
            from tether.envs.client import env_line

            out.append(f"  env {env_line(env)}")
    return out


def snapshots_text(snaps: dict[str, Any]) -> str:
    """'snapshots: this project 3, 12.0 MiB (9.0 MiB their own); host 12, 40.0 MiB; logs ...'."""
    from tether.jobs.housekeeping import human

    mine = (
        f"this project {snaps.get('project_count', 0)}, {human(snaps.get('project_bytes', 0))}"
        f" ({human(snaps.get('project_own_bytes', 0))} their own); "
    )
    return (
        f"snapshots: {mine}host {snaps.get('count', 0)}, {human(snaps.get('bytes', 0))}; "
        f"logs {human(snaps.get('logs_bytes', 0))}"
    )
