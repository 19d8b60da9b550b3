"""What a config value may say, even when trusted (tether.safety, tether.agent.roots).

Roots: whatever spelling a config uses (`~/`, relative, absolute, `.`, `//`, `..`), a root
the rule lets through never resolves onto or around the user's private directories, the
home itself, or a system directory. The reference below resolves the path the way the
agent does (posixpath.normpath after joining the home) and judges the absolute result.

python: every accepted value splits into words that a remote shell receives unchanged
(quote_argv -> shlex.split round trip) and that hold nothing a shell interprets.
"""

from __future__ import annotations

import posixpath
import shlex

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.agent import roots
from tether.safety import host_problem, python_argv
from tether.transport.ssh import quote_argv

HOMES = ["/home/me", "/root", "/tmp/tt-x/home", "/data/users/me"]
PARTS = [
    "", ".", "..", "~", "me", "home", "root", "tmp", "var", "etc", "usr", "data", "users",
    "work", "proj", ".ssh", ".config", ".local", "bin", "share", "tether", ".cache",
    ".bashrc", "x", "tt-x",
]  # fmt: skip

spelling = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from(["~/", "/", "", "~"]),
    st.lists(st.sampled_from(PARTS), max_size=5),
)


def resolved(path: str, home: str) -> str:
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    elif not path.startswith("/"):
        path = home + "/" + path
    return posixpath.normpath(path)


def forbidden(absolute: str, home: str) -> bool:
    """The reference judgement of an absolute, normalised root."""

    def overlaps(a: str, b: str) -> bool:  # equal, inside, or holding
        return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")

    if overlaps(absolute, home) and not absolute.startswith(home + "/"):
        return True  # the home itself or one of its ancestors
    if any(overlaps(absolute, f"{home}/{private}") for private in roots.HOME_PRIVATE):
        return True
    top = absolute.strip("/").split("/")[0]
    return top in roots.SYSTEM and not absolute.startswith("/var/tmp/") and home != "/root"


@settings(max_examples=3000, deadline=None)
@given(spelling, st.sampled_from(HOMES))
def test_a_root_the_rule_allows_never_touches_private_or_system_directories(
    path: str, home: str
) -> None:
    if path.startswith("~") and not (path == "~" or path.startswith("~/")):
        return  # ~user: refused by the rule, nothing to resolve
    if roots.problem(path, home) is None:
        absolute = resolved(path, home)
        assert not forbidden(absolute, home), (path, home, absolute)


@settings(max_examples=1000, deadline=None)
@given(spelling)
def test_the_client_side_rule_is_never_looser_for_home_relative_roots(path: str) -> None:
    # Without the remote's home the client judges `~/` and relative spellings exactly as
    # the agent will (the home part is known to be the home).
    if path == "~" or path.startswith("~/") or not path.startswith(("/", "~")):
        for home in HOMES:
            if roots.problem(path) is None:
                assert roots.problem(path, home) is None, (path, home)


WORDS = st.text(
    alphabet=st.sampled_from(list("abpy3n/._-~=:,@%+ ;|&$`'\"\\*?<>(){}\t\n!#")),
    min_size=0,
    max_size=24,
)


@settings(max_examples=3000, deadline=None)
@given(WORDS)
def test_an_accepted_python_reaches_the_remote_as_plain_words(text: str) -> None:
    try:
        argv = python_argv(text)
    except ValueError:
        return
    assert argv and not argv[0].startswith("-")
    assert shlex.split(quote_argv(argv)) == argv
    for word in argv:
        assert not set(word) & set(" ;|&$`'\"\\*?<>(){}\t\n!#"), word


@given(st.text(max_size=12))
def test_an_accepted_host_is_never_an_option_or_split(host: str) -> None:
    if host_problem(host) is None:
        assert host and not host.startswith("-")
        assert host.split() == [host] and host.isprintable()
