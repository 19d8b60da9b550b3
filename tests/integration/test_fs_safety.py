"""Modes and symlinked directories end to end: the real CLI against a real sandbox
(DESIGN.md 5, invariants 5 and 10; issue #20 parts 3 and 6).

Only permission bits cross, in both directions: never setuid, setgid or sticky, for files
or directories. A pulled file is made like any new file here (its mode masked by the
umask); a pushed file carries the local permission bits exactly. Stripping never makes a
later push or pull see a change: the second one is a no-op.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import SyncProject, describe, one_error_line, tmp_files

pytestmark = pytest.mark.integration

SPECIAL = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX  # 0o7000


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, describe(done)
    (report,) = json.loads(done.stdout)
    assert isinstance(report, dict)
    return report


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    """The umask of the tether commands run inside (they inherit it, so does the daemon's
    command, which takes the client's)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_pull_brings_no_setuid_setgid_or_sticky_and_applies_the_umask(
    synced: SyncProject,
) -> None:
    root, remote = synced.root, synced.remote
    synced.push_ok()
    tool = remote / "outputs" / "run.sh"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho 1\n")
    tool.chmod(0o6755)
    shared = remote / "outputs" / "shared"
    shared.mkdir()
    shared.chmod(0o3775)  # setgid and sticky
    (shared / "f.txt").write_text("data\n")
    (shared / "f.txt").chmod(0o1644)
    assert _mode(tool) == 0o6755 and _mode(shared) == 0o3775

    with _umask(0o027):
        first = _report(synced.pull("--json"))
        assert first["created"] >= 2 and first["conflicts"] == [], first
        assert _mode(root / "outputs" / "run.sh") == 0o755 & ~0o027
        assert _mode(root / "outputs" / "shared" / "f.txt") == 0o644 & ~0o027
        assert _mode(root / "outputs" / "shared") & SPECIAL == 0
        assert _mode(root / "outputs" / "shared") == 0o777 & ~0o027
        # outputs/ itself is made on the way to its files, with the caller's umask too.
        assert _mode(root / "outputs") == 0o777 & ~0o027
        assert tmp_files(root) == []
        # A pull of one deep file makes the directories on its way, with the umask too.
        deep = remote / "outputs" / "deep" / "er" / "y.txt"
        deep.parent.mkdir(parents=True)
        deep.write_text("y\n")
        one = _report(synced.pull("--json", "outputs/deep/er/y.txt"))
        assert one["errors"] == [] and (root / "outputs" / "deep" / "er" / "y.txt").exists()
        assert _mode(root / "outputs" / "deep") == 0o777 & ~0o027
        assert _mode(root / "outputs" / "deep" / "er") == 0o777 & ~0o027

        # Nothing changed: nothing to do (the masked mode is not a change).
        again = _report(synced.pull("--json"))
        assert again["created"] == 0 and again["conflicts"] == [], again

        # A new version of the file arrives, masked again; no conflict from the mode.
        tool.write_text("#!/bin/sh\necho 2\n")
        tool.chmod(0o6755)
        newer = _report(synced.pull("--json"))
        assert newer["conflicts"] == [] and newer["errors"] == [], newer
        assert (root / "outputs" / "run.sh").read_text() == "#!/bin/sh\necho 2\n"
        assert _mode(root / "outputs" / "run.sh") == 0o750


def test_push_brings_no_setuid_setgid_or_sticky_and_the_next_push_is_a_noop(
    synced: SyncProject,
) -> None:
    root, remote = synced.root, synced.remote
    tools = root / "tools"
    tools.mkdir()
    tools.chmod(0o2775)  # setgid
    (tools / "run.sh").write_text("#!/bin/sh\n")
    (tools / "run.sh").chmod(0o4755)
    (tools / "tmp").mkdir()
    (tools / "tmp").chmod(0o1777)  # sticky
    (tools / "tmp" / "keep.txt").write_text("x\n")
    (root / "train.py").chmod(0o6755)
    assert _mode(tools / "run.sh") == 0o4755 and _mode(tools) == 0o2775

    synced.push_ok()
    assert _mode(remote / "tools" / "run.sh") == 0o755
    assert _mode(remote / "train.py") == 0o755
    assert _mode(remote / "tools") == 0o775
    assert _mode(remote / "tools" / "tmp") == 0o777
    before = {path: os.lstat(remote / path) for path in ("tools/run.sh", "train.py", "tools")}

    again = _report(synced.push("--json"))
    assert again["created"] == again["updated"] == again["deleted"] == 0, again
    assert again["planned"] == {"uploads": [], "deletes": []}, again
    for path, st in before.items():
        now = os.lstat(remote / path)
        assert (now.st_ino, now.st_mtime_ns, now.st_mode) == (
            st.st_ino,
            st.st_mtime_ns,
            st.st_mode,
        ), path


def test_pull_never_writes_through_a_local_symlinked_directory(
    synced: SyncProject, tmp_path: Path
) -> None:
    root, remote = synced.root, synced.remote
    synced.push_ok()
    (remote / "outputs" / "r1").mkdir(parents=True)
    (remote / "outputs" / "r1" / "metrics.json").write_text("{}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "outputs").mkdir()
    os.symlink(elsewhere, root / "outputs" / "r1")

    done = synced.pull()
    assert done.returncode != 0, describe(done)
    line = one_error_line(done)
    assert "symlink" in line and "internal error" not in line, line
    assert list(elsewhere.iterdir()) == [], "pull wrote through a symlinked directory"
    assert os.readlink(root / "outputs" / "r1") == str(elsewhere)
    assert tmp_files(root) == []
