"""The job rules both sides apply: names, the tmux socket and sessions, states, exit codes.

Shipped in the agent (which builds on it in `jobstore`) and imported by the client
(`tether.jobs.model`, `tether.jobs.tmux`) so the two never disagree on what a job name
may be, what a session is called or what state a record is in. Pure; standard library
only, Python >= 3.8.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

DEFAULT_SOCKET = "tether"
SESSION_PREFIX = "tether-"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
START_GRACE_S = 15.0


def valid_name(name: Any) -> bool:
    """Whether name can be a job name: safe as a file name and a tmux session name."""
    return isinstance(name, str) and NAME_RE.match(name) is not None


def exit_status(returncode: int) -> Tuple[int, Optional[str]]:
    """(exit_code, reason) from a Popen returncode; -N (signal N) becomes 128+N."""
    if returncode < 0:
        return 128 - returncode, "signal %d" % -returncode
    return returncode, None


def derive_state(record: Dict[str, Any], alive: bool, now: float) -> str:
    """queued / running / exited / cancelled / lost from a record and its tmux session."""
    if record.get("ended") is not None:
        return "cancelled" if record.get("exit_code") is None else "exited"
    if record.get("state") == "cancelled":
        return "cancelled"
    created = record.get("created") or 0
    if record.get("state") == "queued":
        return "queued" if alive or now - float(created) < START_GRACE_S else "lost"
    if alive:
        return "running"
    if record.get("started") is None and now - float(created) < START_GRACE_S:
        return "running"
    return "lost"
