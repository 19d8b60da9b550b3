"""Job records as the agent keeps them, their --json shape, and generated names."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from tether.agent.shared_jobs import derive_state, exit_status

__all__ = ["JobRecord", "derive_state", "exit_status", "generate_name", "parse_gpus"]

ADJECTIVES = (
    "amber", "brave", "calm", "dapper", "eager", "fuzzy", "gentle", "happy", "icy", "jolly",
    "keen", "lucky", "mellow", "nimble", "olive", "proud", "quiet", "rapid", "sunny", "tidy",
    "urban", "vivid", "witty", "young", "zesty",
)  # fmt: skip
NOUNS = (
    "otter", "falcon", "maple", "comet", "badger", "heron", "lynx", "pebble", "quartz", "raven",
    "salmon", "tulip", "walrus", "yak", "zebra", "cedar", "dune", "ember", "fjord", "grove",
)  # fmt: skip


def generate_name(taken: set[str] | None = None, rng: random.Random | None = None) -> str:
    """A short readable name, adjective-noun-NN, not in taken."""
    pick = rng or random.Random()
    for _ in range(1000):
        name = f"{pick.choice(ADJECTIVES)}-{pick.choice(NOUNS)}-{pick.randint(10, 99)}"
        if not taken or name not in taken:
            return name
    raise RuntimeError("no free job name")


def parse_gpus(spec: str | None) -> tuple[str | None, int]:
    """(pinned CUDA_VISIBLE_DEVICES, count) for --gpus.

    '0,1' pins GPUs 0 and 1 ('3,' pins GPU 3 alone); a bare 'N' asks for N free GPUs,
    picked on the remote (queued until that many are free).
    """
    from tether.errors import UsageError

    if spec is None or spec == "":
        return None, 0
    text = spec.strip()
    if "," not in text:
        if not text.isdigit() or int(text) < 1:
            raise UsageError(
                f"bad --gpus {spec!r}",
                "",
                "ask for N free GPUs with --gpus N, or pin them with --gpus 0,1 (or 3, alone)",
            )
        return None, int(text)
    pins = [part.strip() for part in text.split(",") if part.strip()]
    if not pins or not all(part.isdigit() for part in pins):
        raise UsageError(f"bad --gpus {spec!r}", "", "use GPU indices such as --gpus 0,1")
    return ",".join(pins), 0


@dataclass
class JobRecord:
    """One job on one target, as the agent reports it."""

    name: str
    target: str
    host: str
    state: str
    exit_code: int | None = None
    reason: str | None = None
    started: float | None = None
    ended: float | None = None
    gpus: str | None = None
    commit: str | None = None
    argv: list[str] = field(default_factory=list)
    snapshot: str | None = None
    log: str | None = None
    socket: str | None = None
    created: float | None = None
    root: str | None = None  # the project's remote directory
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_agent(cls, target: str, host: str, data: dict[str, Any]) -> JobRecord:
        """A record from the agent's JSON (job_list entry or job_start answer)."""
        return cls(
            name=str(data.get("name")),
            target=str(data.get("target") or target),
            host=str(data.get("host") or host),
            state=str(data.get("state") or "running"),
            exit_code=data.get("exit_code"),
            reason=data.get("reason"),
            started=data.get("started"),
            ended=data.get("ended"),
            gpus=data.get("gpus"),
            commit=data.get("commit"),
            argv=list(data.get("argv") or []),
            snapshot=data.get("snapshot"),
            log=data.get("log"),
            socket=data.get("socket"),
            created=data.get("created"),
            root=data.get("root"),
            raw=data,
        )

    def to_json(self) -> dict[str, Any]:
        """The shape `tether jobs --json` promises (DESIGN section 8)."""
        return {
            "name": self.name,
            "target": self.target,
            "host": self.host,
            "state": self.state,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "started": _iso(self.started),
            "ended": _iso(self.ended),
            "gpus": self.gpus,
            "commit": self.commit,
            "argv": self.argv,
            "snapshot": self.snapshot,
            "root": self.root,
        }

    def state_text(self) -> str:
        """'running', 'exited 3', 'lost', ..."""
        if self.state == "exited":
            return f"exited {self.exit_code}"
        return self.state

    def duration(self, now: float | None = None) -> float | None:
        """Seconds from start to end (or to now while it runs)."""
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else (now or time.time())
        return max(0.0, end - self.started)


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stamp))
