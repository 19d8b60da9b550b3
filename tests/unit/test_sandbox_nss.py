"""The group file a sandbox's sshd sees: /etc/group without `tty` (see sandbox_nss)."""

from __future__ import annotations

from pathlib import Path

from tether.hosts import sandbox_nss

ETC_GROUP = "root:x:0:\ntty:x:5:\nttyS:x:20:\nusers:x:100:me\n# tty:x:5:\n"


def test_only_the_tty_group_is_left_out(tmp_path: Path) -> None:
    source = tmp_path / "group"
    source.write_text(ETC_GROUP)
    written = tmp_path / "sandbox-group"
    sandbox_nss.write_group(written, source)
    assert written.read_text() == "root:x:0:\nttyS:x:20:\nusers:x:100:me\n# tty:x:5:\n"


def test_an_unreadable_group_file_gives_an_empty_one(tmp_path: Path) -> None:
    written = tmp_path / "sandbox-group"
    sandbox_nss.write_group(written, tmp_path / "missing")
    assert written.read_text() == ""
