"""The group file nss_wrapper gives a sandbox's sshd and its sessions.

OpenSSH's `pty_setowner()` (sshpty.c) gives a session's pty to the user and, when a group
named `tty` exists, to that group with mode 0620; without one, to the user's own group with
mode 0600. It calls chown only when the pty's owner or group differ from that, and a chown
that fails is fatal to the session.

An sshd started by a normal user cannot chown to `tty` unless the kernel already made the
pty that group (devpts mounted with `gid=5`). Where devpts has no `gid=` option (containers,
some minimal systems) a new pty gets its creator's group, so `tether shell` and
`tether attach` died with "chown(/dev/pts/N) failed" on such a sandbox. Without a `tty`
group sshd wants the user's own group and mode 0600: what the kernel gives the unprivileged
sshd already, or what its owner may set (a user may chown a file it owns to its own
group). A root sshd can chown anything either way. The `tty` group only decides who may
`write` to the session's terminal; a throwaway sandbox does not need that.
"""

from __future__ import annotations

from pathlib import Path

TTY_GROUP = "tty"


def group_lines(etc_group: str) -> list[str]:
    """The lines of an /etc/group text without the `tty` group's entry."""
    return [line for line in etc_group.splitlines() if line.split(":", 1)[0].strip() != TTY_GROUP]


def write_group(path: Path, source: Path = Path("/etc/group")) -> None:
    """A copy of SOURCE without the `tty` group, for NSS_WRAPPER_GROUP."""
    try:
        text = source.read_text()
    except OSError:
        text = ""
    lines = group_lines(text)
    path.write_text("".join(line + "\n" for line in lines))
