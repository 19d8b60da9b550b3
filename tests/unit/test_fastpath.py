"""The push/pull client's pieces that need no daemon: fingerprint, socket name, fallback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tether.cli import fastpath

PACKAGE = Path(fastpath.__file__).resolve().parents[1]


def test_fingerprint_follows_the_source_and_ignores_bytecode(tmp_path: Path) -> None:
    copy = tmp_path / "tether"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = fastpath.fingerprint(str(copy))
    assert before == fastpath.fingerprint(str(copy))
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert fastpath.fingerprint(str(copy)) == before
    module = copy / "sync" / "session.py"
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1))
    assert fastpath.fingerprint(str(copy)) != before
    (copy / "sync" / "new.py").write_text("")
    assert len({before, fastpath.fingerprint(str(copy))}) == 2


def test_socket_lives_in_the_runtime_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TETHER_RUNTIME_DIR", str(tmp_path / "rt"))
    path = fastpath.socket_path("0123456789abcdef")
    assert path == str(tmp_path / "rt" / "sync-0123456789abcdef.sock")
    assert (tmp_path / "rt").stat().st_mode & 0o777 == 0o700
    assert fastpath.connect(path) is None  # nothing listens: the caller starts a daemon


def test_the_client_imports_nothing_heavy() -> None:
    """`tether push` reaches the daemon before typing, typer or rich are imported."""
    code = (
        "import sys\n"
        "import tether.cli.app, tether.cli.fastpath, tether.paths\n"
        "names = ('typing', 'typer', 'rich', 'asyncio', 'pathlib')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == ""
