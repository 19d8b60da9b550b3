"""Which directories may be a sync root (a target's path or a mapping's remote side).

One rule for both sides: the client checks a config's remote paths as written (`~/...` or
absolute; the remote home unknown), the agent checks again with the real $HOME before any
scan or write. A root may not be, hold or lie inside the user's ssh, gnupg or config
directories, shell start-up files, tether's own state, a home directory itself, or a
system directory. Standard library only, Python >= 3.8 (shipped inside the agent).
"""

import posixpath
from typing import List, Optional, Tuple

# Relative to the home directory: a root may be none of these, inside none, hold none.
HOME_PRIVATE = (
    ".ssh",
    ".gnupg",
    ".config",
    ".aws",
    ".kube",
    ".docker",
    ".pki",
    ".netrc",
    "bin",
    ".local/bin",
    ".local/share/tether",
    ".cache/tether",
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".kshrc",
    ".cshrc",
    ".tcshrc",
    ".login",
    ".inputrc",
    ".pam_environment",
)
# Directory names that mark private data wherever they appear in an absolute path.
PRIVATE_NAMES = frozenset(p for p in HOME_PRIVATE if "/" not in p and p != "bin")
# Top-level system directories (writes there would change the machine, not a project).
SYSTEM = frozenset(
    [
        "bin",
        "boot",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "run",
        "sbin",
        "sys",
        "usr",
        "var",
    ]
)
SYSTEM_ALLOWED = (("var", "tmp"),)  # scratch space under a system directory
HOMES = frozenset(("home", "Users"))  # /home/NAME, /Users/NAME; /root too


def _parts(path: str) -> List[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _overlaps(parts: List[str], private: List[str]) -> bool:
    """parts is private, inside it, or holds it."""
    size = min(len(parts), len(private))
    return parts[:size] == private[:size]


def _home_problem(rel: List[str]) -> Optional[str]:
    if not rel:
        return "is the home directory itself"
    for private in HOME_PRIVATE:
        if _overlaps(rel, private.split("/")):
            return "is or holds ~/%s (private to the user or tether)" % private
    return None


def split(path: str) -> Tuple[bool, List[str]]:
    """(home-relative?, components) of a root as a config writes it."""
    if path == "~" or path.startswith("~/"):
        return True, _parts(path[1:])
    return False, _parts(path)


def problem(path: str, home: Optional[str] = None) -> Optional[str]:
    """Why `path` must not be a sync root, or None when it may.

    `home`: the remote's real home directory when known (on the agent); `~user` forms and
    relative paths are judged as written."""
    if "\x00" in path:
        return "holds a NUL character"
    relative_home, parts = split(path)
    if ".." in parts:
        return "climbs out with '..'"
    if relative_home:
        return _home_problem(parts)
    if path.startswith("~"):
        return "names another user's home (~user)"
    if not path.startswith("/"):
        return _home_problem(parts)  # relative to the remote home, where ssh starts
    if not parts:
        return "is the root directory /"
    if home:
        home_parts = _parts(posixpath.normpath(home))
        if parts == home_parts[: len(parts)]:
            return "is or holds the home directory %s" % home
        if home_parts == parts[: len(home_parts)]:
            return _home_problem(parts[len(home_parts) :])
    if parts[0] == "root":  # root's home
        return _home_problem(parts[1:])
    if parts[0] in HOMES:
        if len(parts) <= 2:
            return "is a home directory (or all of them)"
        return _home_problem(parts[2:])
    if parts[0] in SYSTEM and not any(
        len(parts) > len(allowed) and tuple(parts[: len(allowed)]) == allowed
        for allowed in SYSTEM_ALLOWED
    ):
        return "is a system directory (/%s)" % parts[0]
    for part in parts:
        if part in PRIVATE_NAMES:
            return "lies in or holds a private directory (%s)" % part
    return None
