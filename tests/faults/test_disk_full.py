"""The remote's disk fills up mid-push: a 2 MiB tmpfs mounted on the remote directory."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.conftest import COUNTS, files_now, write
from tests.integration.conftest import SyncProject, describe, one_error_line, tmp_files

pytestmark = pytest.mark.integration


@pytest.fixture
def small_remote(sandbox: Any) -> Any:
    from tests.integration.conftest import unique_remote

    spec, on_disk = unique_remote(sandbox, "full")
    on_disk.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(on_disk)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield spec, on_disk
    finally:
        subprocess.run(["umount", "-l", str(on_disk)], capture_output=True)


def test_disk_full_mid_push(make_synced: Callable[..., SyncProject], small_remote: Any) -> None:
    spec, on_disk = small_remote
    synced = make_synced(remote=(spec, on_disk))
    synced.push_ok()
    old = files_now(on_disk)
    big = {f"big/b{i}.bin": os.urandom(700_000) for i in range(4)}  # 2.8 MB > 2 MiB
    for rel, data in big.items():
        write(synced.root / rel, data)
    done = synced.push()
    assert done.returncode == 1, describe(done)
    line = one_error_line(done)
    assert "space" in line.lower(), line
    now = files_now(on_disk)
    for rel, data in now.items():
        assert data in (old.get(rel), big.get(rel)), f"partial file {rel} ({len(data)} bytes)"
    assert tmp_files(on_disk) == []
    COUNTS["disk full"] += 1
    # Free space (drop two of the files locally): the next push converges.
    for rel in list(big)[2:]:
        (synced.root / rel).unlink()
    synced.push_ok()
    assert {r: d for r, d in files_now(on_disk).items()} == files_now(synced.root)
    assert tmp_files(on_disk) == []
