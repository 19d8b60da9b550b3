"""A table of bad inputs: each gives exactly one `tether: error:` line, its exit code
(1 error, 2 usage, 3 conflict) and changes nothing on either side (DESIGN.md 4, 5)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import COUNTS
from tests.integration.conftest import (
    SyncProject,
    describe,
    one_error_line,
    tree,
    unique_remote,
    write_toml,
)

pytestmark = pytest.mark.integration

MakeSynced = Callable[..., SyncProject]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _toml(synced: SyncProject, old: str, new: str) -> None:
    path = synced.root / "tether.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _host(synced: SyncProject, host: str) -> None:
    write_toml(synced.root, host, synced.remote_spec)


def _stanza(sandbox: Any, alias: str, **changes: str) -> str:
    from tether.hosts import sshconfig

    options = [(key, changes.get(key, value)) for key, value in sandbox.ssh_options()]
    sshconfig.add_host(alias, options)
    return alias


def _wrong_key(sandbox: Any) -> str:
    known = str(WRONG_KEYS)
    return _stanza(sandbox, "tt-bad-hostkey", HostName="localhost", UserKnownHostsFile=known)


def _non_utf8(synced: SyncProject) -> None:
    with open(os.path.join(os.fsencode(synced.root), b"bad\xff.txt"), "wb") as handle:
        handle.write(b"latin-1 name\n")


def _conflict(synced: SyncProject, sandbox: Any) -> None:
    (synced.remote / "README.md").write_text("# edited on the remote\n")
    (synced.root / "README.md").write_text("# edited here\n")


# name: (setup(synced, sandbox) -> None, argv, exit code, words the error line names)
CASES: dict[str, tuple[Callable[..., Any], tuple[str, ...], int, tuple[str, ...]]] = {
    "bad toml": (lambda s, b: _toml(s, "[sync]", "[sync"), ("push",), 1, ("tether.toml",)),
    "unknown key": (
        lambda s, b: _toml(s, "default = true", 'default = true\ncolour = "red"'),
        ("push",), 1, ("tether.toml", "colour"),
    ),
    "default = yes": (
        lambda s, b: _toml(s, "default = true", 'default = "yes"'),
        ("push",), 1, ("tether.toml", "default"),
    ),
    "unknown target": (lambda s, b: None, ("push", "--to", "nope"), 2, ("nope",)),
    "unknown host alias": (
        lambda s, b: _host(s, "tt-no-such-alias.invalid"), ("push",), 1, ("tt-no-such-alias",),
    ),
    "closed port": (
        lambda s, b: _host(s, _stanza(b, "tt-bad-closed", Port=str(_closed_port()))),
        ("push",), 1, ("tt-bad-closed",),
    ),
    "host key mismatch": (
        lambda s, b: _host(s, _wrong_key(b)),
        ("push",), 1, ("tt-bad-hostkey",),
    ),
    "path outside the project": (lambda s, b: None, ("push", "../x"), 2, ("../x",)),
    "non-UTF-8 local name": (lambda s, b: _non_utf8(s), ("push",), 1, ("UTF-8",)),
    "unknown job for logs": (lambda s, b: None, ("logs", "nope"), 1, ("nope",)),
    "unknown job for kill": (lambda s, b: None, ("kill", "nope"), 1, ("nope",)),
    "send with a bad range": (lambda s, b: None, ("send", "train.py:5-2"), 2, ("5-2",)),
    "host add with a bad name": (
        lambda s, b: None, ("host", "add", "bad name", "--hostname", "1.2.3.4"), 2, ("bad name",),
    ),
    "tunnel with a bad port": (lambda s, b: None, ("tunnel", "99999"), 2, ("99999",)),
    "conflict": (_conflict, ("push",), 3, ("README.md",)),
}  # fmt: skip
WRONG_KEYS = Path("/nonexistent")  # set per session below


@pytest.fixture(scope="module")
def wrong_known_hosts(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A known_hosts naming the sandbox's address with a key it does not have.

    The stanza says HostName localhost: with 127.0.0.1 it would share tt-box1's
    ControlPath (%C) and ride its master, never checking the host key at all."""
    global WRONG_KEYS
    folder = tmp_path_factory.mktemp("keys")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "k")],
                   check=True, capture_output=True)  # fmt: skip
    public = (folder / "k.pub").read_text().split()
    WRONG_KEYS = folder / "known_hosts"
    WRONG_KEYS.write_text(f"[localhost]:{sandbox.port} {public[0]} {public[1]}\n")
    return WRONG_KEYS


def _local(root: Path) -> dict[str, Any]:
    """The project's bytes, .tether/state included; only tether's digest cache may change."""
    return {
        rel: value
        for rel, value in tree(root, (".git",)).items()
        if not rel.startswith(".tether/digests-") and rel != ".tether"
    }


def _state(synced: SyncProject, test_env: Any, case: str) -> tuple[Any, ...]:
    local = _local(synced.root)
    if case == "conflict":  # a conflicted push still re-records the stats it saw
        local = {rel: value for rel, value in local.items() if not rel.startswith(".tether")}
    return (
        local,
        tree(synced.remote),
        (test_env.home / ".ssh" / "config").read_bytes(),
    )


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(
    case: str,
    make_synced: MakeSynced,
    sandbox: Any,
    wrong_known_hosts: Path,
    test_env: Any,
    tmux_socket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tether.hosts import sshconfig

    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    setup, argv, code, words = CASES[case]
    spec, on_disk = unique_remote(sandbox, "bad")
    synced = make_synced(remote=(spec, on_disk))
    synced.push_ok()
    try:
        setup(synced, sandbox)
        before = _state(synced, test_env, case)
        done = synced.run(*argv, timeout=60)
        assert done.returncode == code, f"{case}: {describe(done)}"
        line = one_error_line(done)
        for word in words:
            assert word in line, f"{case}: {line}"
        assert _state(synced, test_env, case) == before, f"{case}: something changed"
        COUNTS["bad inputs"] += 1
        print(f"{case}: exit {code}: {line}")
    finally:
        for alias in ("tt-bad-closed", "tt-bad-hostkey"):
            if alias in (synced.root / "tether.toml").read_text():
                sshconfig.remove_host(alias)


def test_remote_path_is_a_file(make_synced: MakeSynced, sandbox: Any, test_env: Any) -> None:
    spec, on_disk = unique_remote(sandbox, "file")
    on_disk.parent.mkdir(parents=True, exist_ok=True)
    on_disk.write_text("I am a file\n")
    synced = make_synced(remote=(spec, on_disk))
    before = _local(synced.root)
    done = synced.push()
    assert done.returncode == 1, describe(done)
    assert "not a directory" in one_error_line(done).lower()
    assert on_disk.read_text() == "I am a file\n"
    assert _local(synced.root) == before
    COUNTS["bad inputs"] += 1
