"""A link cut after uploads landed but before their answers came back, then a local edit
of the same files, then a push: tether must recognise its own writes (no false conflict)
and converge (DESIGN.md 5.4)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.conftest import COUNTS, random_bytes, rng_for, write
from tests.faults.test_link_cuts import _setup
from tests.integration.conftest import SyncProject, describe
from tests.integration.test_push_pull import _push_cut_after

pytestmark = pytest.mark.integration


def test_edit_after_a_cut_push_is_no_conflict(
    make_synced: Callable[..., SyncProject], proxy: Any, proxy_alias: str
) -> None:
    rng: random.Random = rng_for("cut-then-edit")
    synced = _setup(make_synced, proxy_alias, rng)
    false_conflicts = []
    for round_ in range(15):
        for index in range(6):
            write(synced.root / "blob" / f"f{index}.bin", random_bytes(rng, 1000, 100_000))
        _, cut = _push_cut_after(synced.root, proxy, rng.randrange(0, 400_000), 20)
        COUNTS["cuts push"] += cut
        for index in range(6):  # the user keeps editing while the link is down
            write(synced.root / "blob" / f"f{index}.bin", random_bytes(rng, 1000, 100_000))
        done = synced.push()
        if done.returncode != 0:
            false_conflicts.append((round_, describe(done)[-300:]))
            assert synced.push("--force").returncode == 0
    assert false_conflicts == [], false_conflicts
