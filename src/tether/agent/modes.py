"""The one rule for file modes that cross between the two sides (DESIGN.md 5, invariant 10).

Only permission bits cross, in both directions, for files and directories: never setuid,
setgid or sticky. Every mode tether scans, sends or writes goes through safe_mode():
the agent's scan and writer, the local scan, and pull's local writes. Shared by the
agent and the client; standard library only, Python >= 3.8.
"""

from __future__ import annotations

import os

PERMISSION_BITS = 0o777


# The 512 permission values as shared objects: a scan of 100,000 files holds one per row.
_MODES = tuple(range(PERMISSION_BITS + 1))


def safe_mode(mode: int) -> int:
    """The bits of a mode that may cross: read, write and execute for user, group, other."""
    return _MODES[int(mode) & PERMISSION_BITS]


def current_umask() -> int:
    """This process's umask, read without changing it where the system allows (Linux:
    /proc; elsewhere os.umask is set and put back at once)."""
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8) & PERMISSION_BITS
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
