"""Unit tests for tether.hosts.sshconfig and `tether host add|ls|rm` (HOME is a temp dir)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.errors import HostError, TetherError, UsageError
from tether.hosts import sshconfig
from tether.hosts.sshconfig import (
    add_host,
    config_path,
    conflict_warnings,
    list_hosts,
    remove_host,
)
from tether.hosts.sshtext import add_stanza, format_stanza, parse_line, parse_ssh_g, remove_stanza

MESSY = (
    "# ~/.ssh/config of a messy user\n"
    "\tUser   preamble_user\n"
    "Include config.d/*.conf\n"
    "\n"
    "Host work  # trailing comment\n"
    "\tHostName work.example.com\n"
    "  \tPort=2222\n"
    "\n"
    'Match host *.corp.example exec "test -f /nonexistent"\n'
    "    ProxyJump bastion\n"
    "# defaults for everyone\n"
    "Host * !special\n"
    "\tServerAliveInterval 30\n"
    '\tIdentityFile "~/.ssh/id with space"\n'
    "Host special\n"
    "    User root\t\n"
    "  # indented comment\n"
    "Host   last"
)
OPTIONS = [("HostName", "1.2.3.4"), ("User", "ubuntu"), ("Port", "2200")]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME; `ssh -G` is stubbed out unless a test puts it back."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(sshconfig, "_run_ssh_g", lambda name, config: None)
    assert config_path() == home / ".ssh" / "config"
    return home


def write_config(home: Path, text: str, mode: int = 0o644) -> Path:
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    path = ssh / "config"
    path.write_bytes(text.encode())
    path.chmod(mode)
    return path


def insertions(before: str, after: str) -> dict[int, str]:
    """Every way after is before with one contiguous chunk inserted: {offset: chunk}."""
    extra = len(after) - len(before)
    found = {
        k: after[k : k + extra]
        for k in range(len(before) + 1)
        if extra > 0 and after.startswith(before[:k]) and after.endswith(before[k:])
    }
    assert found, "after is not before with one chunk inserted"
    return found


# ---------------------------------------------------------------- round trip


def test_round_trip_on_messy_file_keeps_every_byte(home: Path) -> None:
    path = write_config(home, MESSY)
    assert add_host("gpu1", OPTIONS) == []
    found = insertions(MESSY, path.read_text())
    # `Match host *.corp.example ...` cannot match gpu1; `Host * !special` can
    k = MESSY.index("# defaults for everyone\nHost * !special")
    assert found[k] == format_stanza("gpu1", OPTIONS) + "\n"
    assert remove_host("gpu1") is True
    assert path.read_bytes() == MESSY.encode()


def test_round_trip_before_match_exec_that_cannot_be_judged(home: Path) -> None:
    text = MESSY.replace("Match host *.corp.example exec", "Match exec")
    path = write_config(home, text)
    add_host("gpu1", OPTIONS)
    found = insertions(text, path.read_text())
    assert found[text.index("Match exec")] == format_stanza("gpu1", OPTIONS) + "\n"
    remove_host("gpu1")
    assert path.read_text() == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "Host a\n",
        "Host a",
        "Host a\n\n",
        "Host a\n  \n",
        "Host a\n  HostName x   ",
        "Host a\r\n  HostName x\r\n",
        "Host a\r\n  HostName x",
        "# only a comment",
        "User x\n\n\n",
    ],
)
def test_append_and_remove_restore_exact_text(text: str) -> None:
    new = add_stanza(text, "zz", [("HostName", "h")])
    assert "Host zz" in insertions(text, new)[len(text)]
    assert remove_stanza(new, "zz") == text


LINES = st.sampled_from(
    [
        "\n",
        "  \n",
        "# note\n",
        "Host a b\n",
        "Host *\n",
        "Host g*\n",
        "Host * !g1\n",
        "Match all\n",
        "Match host other\n",
        "  User u\n",
        "\tPort 22\n",
        "Include x/*\n",
        "IdentityFile ~/k\n",
        "\r\n",
        "Host q\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, max_size=12), st.booleans())
def test_add_then_remove_is_identity(lines: list[str], chop: bool) -> None:
    text = "".join(lines)
    if chop and text.endswith("\n"):
        text = text.rstrip("\r\n")
    new = add_stanza(text, "g1", [("HostName", "10.0.0.1"), ("User", "bob smith")])
    insertions(text, new)
    assert remove_stanza(new, "g1") == text


# ---------------------------------------------------------------- placement


def position(text: str, needle: str) -> int:
    index = text.find(needle)
    assert index >= 0, needle
    return index


@pytest.mark.parametrize(
    "blocker",
    ["Host *", "Match all", "Host gpu*", "Host cpu* gp?1", "Match host 10.0.*", "Match !host x"],
)
def test_placed_before_first_block_that_matches(blocker: str) -> None:
    text = f"Host cpu*\n  User c\n\n{blocker}\n  User other\n\nHost *\n  Port 1\n"
    new = add_stanza(text, "gpu1", [("HostName", "10.0.0.5")])
    assert position(new, "Host gpu1") < position(new, blocker)
    assert position(new, "Host cpu*\n") < position(new, "Host gpu1")


@pytest.mark.parametrize(
    "other",
    ["Host * !gpu1", "Host cpu*", "Match originalhost other", "Match host 192.168.*", "Host !x"],
)
def test_appended_when_nothing_matches(other: str) -> None:
    text = f"Host a\n  HostName x\n\n{other}\n  User other\n"
    new = add_stanza(text, "gpu1", [("HostName", "10.0.0.5")])
    assert new == text + "\n" + format_stanza("gpu1", [("HostName", "10.0.0.5")])


def test_negation_is_case_exact_and_positives_case_blind() -> None:
    new = add_stanza("Host * !GPU1\n  User x\n", "gpu1", [("HostName", "h")])
    assert new.startswith("# added by tether\nHost gpu1\n")
    new = add_stanza("Host GPU*\n  User x\n", "gpu1", [("HostName", "h")])
    assert new.startswith("# added by tether\nHost gpu1\n")


# ---------------------------------------------------------------- names, duplicates, quoting


@pytest.mark.parametrize(
    "name", ["", "a b", "a\tb", "gpu*", "gp?", "!gpu", "-oProxyCommand=x", "a#b", "a\nb"]
)
def test_bad_names_are_refused(home: Path, name: str) -> None:
    with pytest.raises(UsageError):
        add_host(name, OPTIONS)
    with pytest.raises(UsageError):
        add_stanza("", name, OPTIONS)
    assert not config_path().exists()


def test_bad_option_values_are_refused() -> None:
    with pytest.raises(UsageError):
        add_stanza("", "a", [("HostName", "")])
    with pytest.raises(UsageError):
        add_stanza("", "a", [("HostName", "x\nProxyCommand evil")])
    with pytest.raises(UsageError):
        add_stanza("", "a", [("Host", "x")])


def test_duplicate_is_refused_naming_the_line(home: Path) -> None:
    text = "Host a\n  HostName x\n\nHost other gpu1\n  HostName old\n"
    path = write_config(home, text)
    with pytest.raises(HostError) as info:
        add_host("gpu1", OPTIONS)
    assert f"{path}:4" in str(info.value)
    assert "Host other gpu1" in str(info.value)
    with pytest.raises(TetherError, match="names other hosts too"):
        add_host("gpu1", OPTIONS, force=True)
    assert path.read_text() == text


def test_force_replaces_in_place(home: Path) -> None:
    text = "Host a\n  HostName x\n\nHost gpu1\n  HostName old\n  # about Host *\nHost *\n  User u\n"
    path = write_config(home, text)
    add_host("gpu1", [("HostName", "new")], force=True)
    assert path.read_text() == (
        "Host a\n  HostName x\n\n# added by tether\nHost gpu1\n    HostName new\n"
        "  # about Host *\nHost *\n  User u\n"
    )
    add_host("gpu1", [("HostName", "newer")], force=True)
    assert path.read_text().count("Host gpu1") == 1
    assert "HostName newer" in path.read_text()


def test_values_with_spaces_are_quoted() -> None:
    options = [("User", "bob smith"), ("IdentityFile", '/k dir/it\'s "q"\\x')]
    new = add_stanza("", "q", options)
    assert '    User "bob smith"\n' in new
    for (key, value), raw in zip(options, new.splitlines()[2:], strict=True):
        assert parse_line(raw).keyword == key.lower()
        assert parse_line(raw).args == (value,)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")
def test_quoted_values_read_back_by_real_ssh(home: Path) -> None:
    import subprocess

    path = write_config(home, "")
    add_host("q", [("HostName", "h"), ("IdentityFile", '/k dir/it\'s "q"')])
    out = subprocess.run(
        ["ssh", "-F", str(path), "-G", "q"],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    assert 'identityfile /k dir/it\'s "q"' in out.splitlines()


# ---------------------------------------------------------------- file handling


def test_mode_backup_and_fresh_ssh_dir(home: Path) -> None:
    add_host("first", OPTIONS)
    ssh = home / ".ssh"
    assert stat.S_IMODE(ssh.stat().st_mode) == 0o700
    path = ssh / "config"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (ssh / "config.tether.bak").exists()
    before = path.read_bytes()
    path.chmod(0o644)
    add_host("second", OPTIONS)
    backup = ssh / "config.tether.bak"
    assert backup.read_bytes() == before
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in ssh.iterdir() if "tmp" in p.name] == []


def test_symlinked_config_is_edited_through_the_link(home: Path) -> None:
    dotfiles = home / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "ssh_config"
    real.write_text("Host *\n  User u\n")
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "config").symlink_to(real)
    add_host("gpu1", OPTIONS)
    assert (ssh / "config").is_symlink()
    assert os.readlink(ssh / "config") == str(real)
    assert real.read_text().startswith("# added by tether\nHost gpu1\n")
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert remove_host("gpu1")
    assert real.read_text() == "Host *\n  User u\n"
    assert (ssh / "config").is_symlink()


def test_remove_absent_and_unmanaged(home: Path) -> None:
    assert remove_host("nothing") is False
    text = "Host a\n  HostName x\n\nHost b\n  HostName y\n\n# defaults\nHost *\n  User u\n"
    path = write_config(home, text)
    assert remove_host("nothing") is False
    assert remove_host("b") is True
    assert path.read_text() == "Host a\n  HostName x\n\n# defaults\nHost *\n  User u\n"


def test_concurrent_adds_lose_nothing(home: Path) -> None:
    write_config(home, "Host *\n  User u\n")
    names = [f"h{i}" for i in range(12)]
    errors: list[BaseException] = []

    def add(name: str) -> None:
        try:
            add_host(name, [("HostName", f"10.0.0.{len(name)}")])
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(e.alias for e in list_hosts()) == sorted(names)


# ---------------------------------------------------------------- list_hosts


def test_list_hosts_follows_includes(home: Path) -> None:
    text = (
        "Include conf.d/*.conf\n"
        "Include ~/elsewhere/extra\n"
        "Host direct alt *.wild !neg\n"
        "  HostName d.example\n"
        "  Port 2022\n"
        "  HostName ignored-second\n"
        "Match host x\n"
        "  User matchuser\n"
    )
    path = write_config(home, text)
    conf = home / ".ssh" / "conf.d"
    conf.mkdir()
    (conf / "b.conf").write_text("Host inc-b\n  User bee\n")
    (conf / "a.conf").write_text("Host inc-a\n  IdentityFile ~/.ssh/a key\n")
    (conf / "skip.txt").write_text("Host not-included\n")
    (home / "elsewhere").mkdir()
    (home / "elsewhere" / "extra").write_text("Host extra\n")
    add_host("mine", [("HostName", "m"), ("User", "me")])
    entries = {e.alias: e for e in list_hosts()}
    assert list(entries) == ["inc-a", "inc-b", "extra", "direct", "alt", "mine"]
    assert entries["direct"].hostname == "d.example"
    assert entries["direct"].port == "2022"
    assert entries["direct"].user is None
    assert entries["inc-b"].user == "bee"
    assert entries["inc-a"].identity_file == "~/.ssh/a"
    assert entries["mine"].managed and not entries["direct"].managed
    assert entries["mine"].file == str(path)
    assert entries["inc-b"].file == str(conf / "b.conf")
    assert entries["inc-b"].line == 1


def test_alias_in_included_file_needs_force(home: Path) -> None:
    write_config(home, "Include conf.d/*\n")
    (home / ".ssh" / "conf.d").mkdir()
    (home / ".ssh" / "conf.d" / "x").write_text("\nHost gpu1\n")
    with pytest.raises(HostError, match=r"conf\.d/x:2"):
        add_host("gpu1", OPTIONS)
    add_host("gpu1", OPTIONS, force=True)


# ---------------------------------------------------------------- ssh -G check


def test_warning_for_option_set_in_preamble(home: Path) -> None:
    path = write_config(home, "# hi\nUser pre\nHost *\n  Port 22\n")
    add_host("gpu1", [("HostName", "h"), ("User", "me"), ("Port", "2200")])
    resolved = parse_ssh_g("hostname h\nuser pre\nport 2200\n")
    warnings = conflict_warnings("gpu1", [*OPTIONS[:1], ("User", "me")], resolved, path)
    assert warnings == [f"User for gpu1 is set to pre by {path}:2"]


def test_warning_names_an_included_file(home: Path) -> None:
    path = write_config(home, "Include extra.conf\n")
    extra = home / ".ssh" / "extra.conf"
    extra.write_text("# extra\nHost *\n  Port 2022\n")
    add_host("gpu1", [("HostName", "h"), ("Port", "2200")])
    resolved = parse_ssh_g("hostname h\nport 2022\n")
    warnings = conflict_warnings("gpu1", [("HostName", "h"), ("Port", "2200")], resolved, path)
    assert warnings == [f"Port for gpu1 is set to 2022 by {extra}:3"]


def test_no_warning_when_ssh_agrees_or_no_earlier_line(home: Path) -> None:
    path = write_config(home, "")
    add_host("gpu1", [("HostName", "H.example"), ("IdentityFile", "~/.ssh/k")])
    resolved = parse_ssh_g("hostname h.example\nidentityfile ~/.ssh/early\nidentityfile ~/.ssh/k\n")
    options = [("HostName", "H.example"), ("IdentityFile", "~/.ssh/k")]
    assert conflict_warnings("gpu1", options, resolved, path) == []
    other = parse_ssh_g("hostname transformed\n")
    assert conflict_warnings("gpu1", options, other, path) == []


def test_add_host_returns_warnings_from_ssh_g(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(home, "User pre\n")
    monkeypatch.setattr(sshconfig, "_run_ssh_g", lambda name, config: "user pre\nport 22\n")
    warnings = add_host("gpu1", [("HostName", "h"), ("User", "me")])
    assert warnings == [f"User for gpu1 is set to pre by {path}:1"]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")
def test_add_host_with_real_ssh_g(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # real _run_ssh_g; HOME again below
    monkeypatch.setenv("HOME", str(home))
    path = write_config(home, "User pre\nHost *\n  Port 2022\n")
    assert config_path() == path
    warnings = add_host("gpu1", [("HostName", "h"), ("User", "me"), ("Port", "2200")])
    assert warnings == [f"User for gpu1 is set to pre by {path}:1"]


# ---------------------------------------------------------------- command line


def run_cli(*args: str) -> int:
    from tether.cli.app import main

    return main(list(args))


def test_cli_add_ls_rm(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(home, MESSY)
    assert run_cli("host", "add", "gpu1", "--hostname", "1.2.3.4", "--port", "2222") == 0
    out = capsys.readouterr().out
    assert "Host gpu1" in out and "Port 2222" in out
    assert run_cli("host", "ls", "--json") == 0
    listed = {e["alias"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["gpu1"]["port"] == 2222
    assert listed["gpu1"]["managed"] is True
    assert listed["work"]["hostname"] == "work.example.com"
    assert listed["work"]["managed"] is False
    assert run_cli("host", "ls") == 0
    assert "gpu1" in capsys.readouterr().out
    assert run_cli("host", "rm", "gpu1") == 0
    assert path.read_bytes() == MESSY.encode()


def test_cli_errors_and_exit_codes(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("host", "rm", "nope") == 1
    err = capsys.readouterr().err
    assert err.startswith("tether: error: host 'nope'") and "tether host ls" in err
    assert run_cli("host", "add", "bad name", "--hostname", "x") == 2
    assert "tether: error: bad host name" in capsys.readouterr().err
    assert run_cli("host", "add", "gpu1") == 2  # --hostname missing
    capsys.readouterr()
    assert run_cli("host", "add", "gpu1", "--hostname", "x") == 0
    assert run_cli("host", "add", "gpu1", "--hostname", "y") == 1
    assert "already in" in capsys.readouterr().err
    assert run_cli("host", "add", "gpu1", "--hostname", "y", "--force") == 0
    assert "Traceback" not in capsys.readouterr().err


def test_cli_prints_warnings(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(home, "User pre\n")
    monkeypatch.setattr(sshconfig, "_run_ssh_g", lambda name, config: "user pre\n")
    assert run_cli("host", "add", "gpu1", "--hostname", "h", "--user", "me") == 0
    err = capsys.readouterr().err
    assert f"tether: warning: User for gpu1 is set to pre by {path}:1\n" in err
