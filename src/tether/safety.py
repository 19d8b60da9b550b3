"""What a config value may say, even when the user trusts the config (pure checks).

A config arrives with a clone, so its values are hostile until checked: a host never
becomes an ssh option, `python` is one executable plus plain arguments (never a shell
string), and a remote directory is never one of the user's private or system directories
(the rule itself lives in tether.agent.roots, which the agent applies again remotely).
"""

from __future__ import annotations

import re
import shlex

from tether.agent import roots

# Characters a plain argument may hold: nothing a shell would interpret.
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./~-]+")
# Executables that would turn the arguments back into a shell program.
SHELLS = frozenset(
    [
        "sh",
        "bash",
        "dash",
        "zsh",
        "ksh",
        "mksh",
        "pdksh",
        "yash",
        "fish",
        "csh",
        "tcsh",
        "busybox",
        "env",
        "sudo",
        "su",
        "doas",
        "nohup",
        "xargs",
        "perl",
        "ruby",
        "node",
    ]
)


def host_problem(host: str) -> str | None:
    """Why `host` cannot be an ssh destination, or None."""
    if not host:
        return "is empty"
    if host.startswith("-"):
        return "starts with '-' (ssh would read it as an option)"
    if any(ch.isspace() or not ch.isprintable() for ch in host):
        return "holds whitespace or control characters"
    return None


def python_argv(text: str) -> list[str]:
    """`python` split into one executable and plain arguments; ValueError saying why not."""
    try:
        argv = shlex.split(text)
    except ValueError as error:
        raise ValueError(f"cannot be split into words ({error})") from None
    if not argv:
        raise ValueError("is empty")
    for word in argv:
        if not _PLAIN.fullmatch(word):
            raise ValueError(
                f"{word!r} is not a plain word: `python` is one executable and plain "
                "arguments, never shell code"
            )
    if argv[0].startswith("-"):
        raise ValueError("must start with an executable, not an option")
    if argv[0].rsplit("/", 1)[-1] in SHELLS:
        raise ValueError(f"runs {argv[0]!r}, which would run arbitrary commands; name python")
    return argv


def remote_dir_problem(path: str) -> str | None:
    """Why a remote directory may not be synced to (judged as written), or None."""
    if any(ord(ch) < 32 for ch in path):
        return "holds control characters"
    return roots.problem(path)
