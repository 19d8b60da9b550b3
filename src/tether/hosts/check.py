"""`host check`: reachability, round trip, python, tmux, ipykernel, GPUs, disk — one request."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.agent.wire import Hello, Probe
from tether.agent.wire_jobs import EnvStatus
from tether.errors import HostError
from tether.transport.channel import AgentChannel
from tether.transport.ssh import SshTransport

if TYPE_CHECKING:
    from tether.config import Target
    from tether.envs.spec import EnvSpec


@dataclass
class HostReport:
    """What `host check` found on one host."""

    host: str
    reachable: bool
    connect_seconds: float = 0.0
    rtt_ms: float | None = None
    probe: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {
            "host": self.host,
            "reachable": self.reachable,
            "connect_seconds": round(self.connect_seconds, 3),
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 1),
            "error": self.error,
            "warnings": self.warnings,
            **self.probe,
        }


CHECK_TIMEOUT_S = 10.0


def target_python(host: str) -> str:
    """The python of this project's target on host (a trusted config only), else python3."""
    from tether import config as config_module
    from tether.errors import TetherError

    try:
        config = config_module.load()
    except TetherError:
        return "python3"
    for target in config.targets.values():
        if target.host == host:
            return target.python
    return "python3"


def project_env(host: str) -> tuple[Target, EnvSpec] | None:
    """This project's target on host and its env spec (a trusted config only), else None."""
    from tether import config as config_module
    from tether.envs.spec import find
    from tether.errors import TetherError

    try:
        config = config_module.load()
        spec = find(config)
    except TetherError:
        return None
    target = next((t for t in config.targets.values() if t.host == host), None)
    return None if target is None or spec is None else (target, spec)


async def check_host(
    host: str, python: str = "python3", env: tuple[Target, EnvSpec] | None = None
) -> HostReport:
    """Connect (master + agent), time one round trip, and probe the host (and the env of
    this project's spec there, in the same round trip)."""
    transport = SshTransport(host)
    started = time.monotonic()
    try:
        channel = await AgentChannel.open(transport, python)
    except HostError as error:
        return HostReport(host, False, time.monotonic() - started, error=error.why or error.line())
    try:
        connect = time.monotonic() - started
        rtts = []
        for _ in range(3):
            tick = time.monotonic()
            await channel.call(Hello())
            rtts.append((time.monotonic() - tick) * 1000)
        asks = [channel.call(Probe(python=python))]
        if env is not None:
            asks.append(channel.call(EnvStatus(env_spec=env[1].wire(False))))
        (probe, _), *env_answer = await asyncio.gather(*asks)
    finally:
        await channel.close()
    probe = {k: v for k, v in probe.items() if k not in ("id", "ok")}
    if env is not None:
        from tether.envs.client import env_report

        probe["env"] = env_report(env[0], env[1], env_answer[0][0])
    report = HostReport(host, True, connect, sorted(rtts)[1], probe)
    if not probe.get("tmux"):
        report.warnings.append(f"tmux is missing on {host}: jobs need it (apt-get install tmux)")
    if not probe.get("ipykernel"):
        report.warnings.append(
            f"ipykernel is missing for {python} on {host}: run `tether kernel install`"
        )
    if probe.get("linger") == "kills":
        report.warnings.append(
            f"systemd-logind on {host} kills processes at logout (tmux too): "
            "run `loginctl enable-linger` there"
        )
    return report
