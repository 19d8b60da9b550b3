"""`tether --help` from the text kept last time (tether.cli.helpcache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tether.cli import app, helpcache


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "rt"
    monkeypatch.setenv("TETHER_RUNTIME_DIR", str(directory))
    monkeypatch.setenv("COLUMNS", "90")
    return directory


def _kept(runtime: Path) -> list[Path]:
    return sorted(runtime.glob("help-*.txt"))


def test_the_help_is_rendered_once_then_printed_from_the_kept_text(
    runtime: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app.main(["--help"]) == 0
    first = capsys.readouterr().out
    assert "Usage: tether" in first and "push" in first
    (kept,) = _kept(runtime)
    assert kept.read_text() == first
    assert os.stat(kept).st_mode & 0o777 == 0o600
    # The kept text is what the next --help prints (here marked, to see it used) ...
    kept.write_text(first + "MARK\n")
    assert app.main(["-h"]) == 0
    assert capsys.readouterr().out == first + "MARK\n"
    # ... and the framework's own rendering is the same as the first one.
    assert app.run_mapped(["--help"], False) == 0
    assert capsys.readouterr().out == first


def test_another_terminal_width_or_tether_source_renders_afresh(
    runtime: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app.main(["--help"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "60")
    assert app.main(["--help"]) == 0
    narrow = capsys.readouterr().out
    assert max(len(line) for line in narrow.splitlines()) <= 60
    assert len(_kept(runtime)) == 2
    # A changed tether (another source fingerprint): the old texts go.
    monkeypatch.setattr("tether.cli.fastpath.fingerprint", lambda package="": "0" * 16)
    assert app.main(["--help"]) == 0
    assert capsys.readouterr().out == narrow
    assert [path.name.split("-")[1] for path in _kept(runtime)] == ["0" * 16]


def test_the_key_covers_colour_and_terminal(runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = helpcache.key()
    monkeypatch.setenv("NO_COLOR", "1")
    assert helpcache.key() != plain
    monkeypatch.delenv("NO_COLOR")
    assert helpcache.key() == plain


def test_a_command_help_is_kept_per_command_and_other_arguments_are_not(
    runtime: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tether status --help` imported the CLI framework on every call (~75 ms)."""
    assert app.main(["status", "--help"]) == 0
    status = capsys.readouterr().out
    assert "Usage: tether status" in status
    (kept,) = _kept(runtime)
    kept.write_text(status + "MARK\n")
    assert app.main(["status", "-h"]) == 0
    assert capsys.readouterr().out == status + "MARK\n"
    assert app.main(["kernel", "ls", "--help"]) == 0
    assert "Usage: tether kernel ls" in capsys.readouterr().out
    assert len(_kept(runtime)) == 2
    # A path (or anything but command words) before --help is rendered, never kept.
    assert app.main(["push", "src/a.py", "--help"]) == 0
    assert "Usage: tether push" in capsys.readouterr().out
    assert len(_kept(runtime)) == 2
    assert helpcache.words(["push", "--to", "--help"]) is None
    assert helpcache.words(["push", "--help"]) == ["push"]
