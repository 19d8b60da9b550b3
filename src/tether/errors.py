"""One exception tree; the CLI maps it to exit codes and one `tether: error:` line."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: `tether send` imports this on a keypress
if TYPE_CHECKING:
    from collections.abc import Sequence


class TetherError(Exception):
    """Base of every error tether reports to the user; exit code 1."""

    exit_code = 1
    # Whether trying again later may succeed (a dropped link, a timeout): commands that
    # keep going (wait, logs -f, watch, the console) retry only these, and end at once on
    # anything permanent (a refused key, a changed host key, an unusable interpreter).
    transient = False

    def __init__(self, what: str, why: str = "", todo: str = "") -> None:
        self.what = what
        self.why = why
        self.todo = todo
        super().__init__(self.line())

    def line(self) -> str:
        """The one-line message: what happened, why, what to do."""
        return ", ".join(part for part in (self.what, self.why, self.todo) if part)


class UsageError(TetherError):
    """The command line itself is wrong; exit code 2."""

    exit_code = 2


class ConfigError(TetherError):
    """tether.toml or [tool.tether] is missing or invalid."""

    def __init__(self, file: str, key: str, problem: str, todo: str = "") -> None:
        self.file = file
        self.key = key
        where = f"{file}: {key}" if key else file
        super().__init__(where, problem, todo or f"fix {file}")


class HostError(TetherError):
    """A host cannot be reached, resolved or used."""

    def __init__(self, host: str, why: str, todo: str = "", transient: bool = False) -> None:
        self.host = host
        self.transient = transient
        super().__init__(f"host {host!r}", why, todo)


class RemoteError(TetherError):
    """A command or agent request failed on the remote."""

    def __init__(self, host: str, what: str, stderr: str = "", todo: str = "") -> None:
        self.host = host
        self.stderr = stderr
        why = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        super().__init__(f"{what} on {host}", why, todo)


class ConnectionLost(TetherError):
    """The ssh link dropped in the middle of a conversation with the agent."""

    transient = True

    def __init__(self, host: str, why: str = "the ssh connection dropped") -> None:
        self.host = host
        super().__init__(f"lost the connection to {host}", why, "check the network and run again")


class ConflictError(TetherError):
    """A push or pull stopped because a file changed on both sides; exit code 3."""

    exit_code = 3

    def __init__(self, target: str, paths: Sequence[str], direction: str = "push") -> None:
        self.target = target
        self.paths = list(paths)
        shown = ", ".join(self.paths[:3]) + (" ..." if len(self.paths) > 3 else "")
        if direction == "push":
            why = "changed on the remote since tether last pushed"
            todo = "pull them, or run `tether push --force` (keeps the remote copy as a backup)"
        else:
            why = "changed locally since tether last pulled"
            todo = "move them aside, or `tether pull --force` (keeps the local copy as a backup)"
        super().__init__(f"{len(self.paths)} conflict(s) on {target}: {shown}", why, todo)


class JobError(TetherError):
    """A job cannot be found, started or controlled."""


def is_transient(error: BaseException) -> bool:
    """Whether an error is worth retrying after a pause: a link failure, not a refusal."""
    if isinstance(error, TetherError):
        return error.transient
    return isinstance(error, (OSError, TimeoutError))
