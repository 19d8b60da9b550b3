"""Client side of housekeeping: rm, prune, the show text, and what `host clean` must stop first.

Pure helpers (durations, byte counts, the show text) are unit-tested; the requests go to
the agent's ops in tether.agent.housekeeping.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any

from tether.agent.wire_jobs import HostBusy, JobPrune, JobRm
from tether.config import Target
from tether.errors import UsageError
from tether.transport.channel import AgentChannel

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str, option: str = "--older-than") -> float:
    """Seconds in '7d', '12h', '30m', '45s', '2w' (a bare number: seconds)."""
    match = DURATION_RE.match(text or "")
    if not match:
        raise UsageError(f"bad {option} {text!r}", "", "use a number and a unit: 30m, 12h, 7d, 2w")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def human(size: float) -> str:
    """'512 B', '12.0 KiB', '8.0 MiB', '1.2 GiB'."""
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}"
    return f"{size:.1f} TiB"  # pragma: no cover


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


# ---- requests -----------------------------------------------------------------------


async def remove(target: Target, channel: AgentChannel, names: list[str]) -> list[dict[str, Any]]:
    """job_rm on one target: one result per name (removed, or why not)."""
    results = await channel.call(JobRm(names, root=target.path))
    return [dict(entry, target=target.name) for entry in results]


async def prune(
    target: Target, channel: AgentChannel, older_than: float, dry_run: bool
) -> dict[str, Any]:
    """job_prune on one target: the jobs removed (or that would be) and the bytes."""
    answer, _ = await channel.call(JobPrune(target.path, older_than, dry_run))
    return {
        "target": target.name,
        "host": target.host,
        "dry_run": dry_run,
        "older_than": older_than,
        "jobs": list(answer["jobs"]),
        "bytes": int(answer["bytes"]),
    }


# ---- words --------------------------------------------------------------------------


def refusal(entry: dict[str, Any]) -> str:
    """The one line for a name rm did not remove."""
    name, target = entry["name"], entry["target"]
    if entry.get("why") == "active":
        state = entry.get("state") or "running"
        return (
            f"{name} on {target} is {state}, not removed, "
            f"stop it first (tether kill {name}) or wait for it (tether wait {name})"
        )
    return f"no job named {name!r} on {target}, nothing removed, see `tether jobs`"


def command_text(argv: list[str]) -> str:
    """argv as a shell would read it, on one line."""
    text = " ".join(shlex.quote(word) for word in argv)
    return text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def show_lines(info: dict[str, Any]) -> list[str]:
    """`tether show`'s text: the job, then its packages, then its diff."""
    state = info.get("state") or "?"
    if state == "exited":
        state = f"exited {info.get('exit_code')}"
    if info.get("reason"):
        state += f" ({info['reason']})"
    duration = info.get("duration")
    python = info.get("python_path") or "?"
    if info.get("python_version"):
        python += f" (Python {info['python_version']})"
    gpus = info.get("cuda_visible_devices") or info.get("gpus")
    commit = info.get("commit") or "none (not a git repository)"
    if info.get("dirty_diff"):
        commit += " + uncommitted changes (below)"
    rows = [
        ("job", f"{info.get('name')} on {info.get('target')} (host {info.get('host')})"),
        ("state", state),
        ("command", command_text(list(info.get("argv") or []))),
        ("created", info.get("created") or "-"),
        ("started", info.get("started") or "-"),
        ("ended", info.get("ended") or "-"),
        ("duration", "-" if duration is None else f"{duration:.1f} s"),
        ("cwd", info.get("cwd") or "-"),
        ("snapshot", info.get("snapshot") or "-"),
        ("log", info.get("log") or "-"),
        ("commit", commit),
        ("python", python),
        (
            "env",
            f"{info['env_digest']} ({info.get('env_path')})" if info.get("env_digest") else "none",
        ),
        ("GPUs", f"CUDA_VISIBLE_DEVICES={gpus}" if gpus else "none"),
    ]
    if info.get("restart_of"):
        rows.append(("restart of", str(info["restart_of"])))
    if info.get("after"):
        rows.append(("after", ", ".join(info["after"])))
    lines = [f"{key:<10}  {value}" for key, value in rows]
    files = info.get("untracked") or []
    if files:
        lines.append(f"untracked files pushed ({len(files)}):")
        for entry in files:
            if "link" in entry:
                lines.append(f"  {entry['path']} -> {entry['link']}")
                continue
            where = "in the diff" if entry.get("in_diff") else "not in the diff"
            digest = entry.get("sha256") or "?"
            lines.append(
                f"  {entry['path']}  {human(entry.get('size') or 0)}  sha256 {digest}  ({where})"
            )
    packages = info.get("packages")
    if packages is None:
        lines.append("packages: not recorded")
    else:
        lines.append(f"packages ({len(packages)}):")
        lines.extend(f"  {package}" for package in packages)
    if info.get("dirty_diff"):
        lines.append("diff:")
        lines.extend(str(info["dirty_diff"]).rstrip("\n").splitlines())
    return lines


def prune_line(entry: dict[str, Any]) -> str:
    """'box: removed 2 jobs (a, b), freed 1.2 MiB' (or what a dry run would do)."""
    jobs = entry["jobs"]
    if not jobs:
        return f"{entry['target']}: no ended job older than {age_text(entry['older_than'])}"
    names = ", ".join(str(job["name"]) for job in jobs[:6]) + (", ..." if len(jobs) > 6 else "")
    size = human(entry["bytes"])
    if entry["dry_run"]:
        return (
            f"{entry['target']}: would remove {plural(len(jobs), 'job')} ({names}), "
            f"would free {size}"
        )
    return f"{entry['target']}: removed {plural(len(jobs), 'job')} ({names}), freed {size}"


def age_text(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{seconds / UNITS[unit]:.0f}{unit}"
    return f"{seconds:.0f}s"


def busy_line(host: str, answer: dict[str, Any]) -> str | None:
    """What on host keeps `host clean` from going ahead (None: nothing)."""
    jobs, kernels = answer.get("jobs") or [], answer.get("kernels") or []
    parts = []
    if jobs:
        parts.append(f"{plural(len(jobs), 'running or queued job')} ({_names(jobs)})")
    if kernels:
        parts.append(f"{plural(len(kernels), 'live kernel')} ({_names(kernels)})")
    return f"{host} has " + " and ".join(parts) if parts else None


def _names(items: list[dict[str, Any]], most: int = 5) -> str:
    names = ", ".join(str(item["name"]) for item in items[:most])
    return names + (", ..." if len(items) > most else "")


def stopped_lines(answer: dict[str, Any]) -> list[str]:
    out = []
    for job in answer.get("jobs") or []:
        how = job.get("stopped")
        out.append(
            f"stopped job {job['name']} ({how})" if how else f"could not stop job {job['name']}"
        )
    for kernel in answer.get("kernels") or []:
        out.append(f"stopped kernel {kernel['name']}")
    return out


def host_busy(
    host: str, python: str, stop: bool, force: bool, warn: Callable[[str], None]
) -> dict[str, Any] | None:
    """What runs on host (every project's jobs, live kernels); with stop, stopped first.

    None where the agent cannot start and force says to go ahead regardless (the caller's
    warn() says so).
    """
    import asyncio

    from tether.errors import HostError, RemoteError
    from tether.jobs.slurm import conf_override
    from tether.transport.ssh import SshTransport

    async def ask() -> dict[str, Any]:
        channel = await AgentChannel.open(SshTransport(host), python)
        try:
            answer, _ = await channel.call(HostBusy(stop, grace=1.0, slurm_conf=conf_override()))
        finally:
            await channel.close()
        return answer

    try:
        return asyncio.run(ask())
    except (HostError, RemoteError) as error:
        if not force:
            raise HostError(
                host,
                f"cannot check it for running jobs and kernels: {error.why or error.line()}",
                "pass --python PY, or --force to remove tether's files regardless",
            ) from None
        warn(f"could not check {host} for running jobs and kernels ({error.line()}); going on")
        return None
