"""tether push killed with SIGKILL at random points: the next push converges and no
temporary file is left on either side (DESIGN.md 5.4)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.conftest import COUNTS, budget, check_old_or_new, files_now, start_cli, write
from tests.integration.conftest import SyncProject, describe, tmp_files, tree

pytestmark = pytest.mark.integration

KILLS = 20


def _stray_local(root: Any) -> list[str]:
    """Temp files tether could leave locally: `.tether-tmp.` anywhere, `*.tmp` in .tether."""
    return sorted(
        rel
        for rel in tree(root, (".git",))
        if ".tether-tmp." in rel or (rel.startswith(".tether/") and rel.endswith(".tmp"))
    )


def test_sigkill_mid_push(make_synced: Callable[..., SyncProject], seed_rng: random.Random) -> None:
    rng, started = seed_rng, time.monotonic()
    synced = make_synced()
    for index in range(4):
        write(synced.root / "big" / f"b{index}.bin", rng.randbytes(2_000_000))
    synced.push_ok()
    spent, kills, rounds = budget(90), 0, 0
    while kills < KILLS and rounds < 3 * KILLS and not spent():
        rounds += 1
        old = files_now(synced.remote)
        for index in rng.sample(range(4), rng.randint(1, 4)):
            write(synced.root / "big" / f"b{index}.bin", rng.randbytes(2_000_000))
        new = files_now(synced.root)
        process = start_cli(synced.root, "push")
        # Start-up takes ~0.2-0.4 s and the push itself ~0.1-0.3 s: kill inside that span.
        time.sleep(rng.uniform(0.05, 0.45))
        alive = process.poll() is None
        process.kill()
        process.communicate(timeout=30)
        kills += alive
        COUNTS["kills"] += alive
        where = f"kill round {rounds}"
        check_old_or_new(files_now(synced.remote), old, new, where)
        clean = synced.push()
        assert clean.returncode == 0, f"{where}: {describe(clean)}"
        assert files_now(synced.remote) == files_now(synced.root), where
        assert tmp_files(synced.remote) == [], f"{where}: temp files on the remote"
        assert _stray_local(synced.root) == [], f"{where}: temp files left locally"
    print(f"kills: {kills} in {rounds} rounds, {time.monotonic() - started:.1f} s")
    assert kills >= KILLS, f"only {kills} kills hit a running push"
