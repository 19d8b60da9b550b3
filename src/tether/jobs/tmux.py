"""tmux argv for the client side (attach); the agent builds its own (tether.agent.jobs)."""

from __future__ import annotations

from tether import invocation
from tether.agent.shared_jobs import DEFAULT_SOCKET, SESSION_PREFIX
from tether.agent.shared_jobs import valid_name as valid_name


def socket_name() -> str:
    """The tmux socket tether uses (tests set TETHER_TMUX_SOCKET to a unique one)."""
    return invocation.getenv("TETHER_TMUX_SOCKET") or DEFAULT_SOCKET


def attach_argv(key: str, sock: str | None = None) -> list[str]:
    """`tmux -L SOCKET attach -t tether-KEY`, run on the remote through ssh -t (KEY: the
    job's key on the host, its project's tag and its name, as its record says)."""
    return ["tmux", "-L", sock or socket_name(), "attach-session", "-t", SESSION_PREFIX + key]
