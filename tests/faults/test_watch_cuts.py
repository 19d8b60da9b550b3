"""Link cuts at random moments during `tether watch`: after every reconnect nothing is
lost, nothing is mixed, and watch converges (no false conflict from its own writes)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from tests.faults.conftest import COUNTS, budget, check_kept, check_old_or_new, files_now
from tests.faults.test_link_cuts import (
    REMOTE_ONLY,
    _converged,
    _diff,
    _mutate,
    _report,
    _setup,
    _synced_part,
)
from tests.integration.conftest import SyncProject
from tests.integration.test_watch import Watch

WATCH_CUTS = 40
MakeSynced = Callable[..., SyncProject]


def test_cuts_during_watch(
    make_synced: MakeSynced, proxy: Any, proxy_alias: str, seed_rng: random.Random
) -> None:
    rng, started = seed_rng, time.monotonic()
    synced = _setup(make_synced, proxy_alias, rng)
    spent, cuts, rounds = budget(90), 0, 0
    watch = Watch(synced.root)
    try:
        watch.wait_for(": watching", within=30)
        while cuts < WATCH_CUTS and rounds < 3 * WATCH_CUTS and not spent():
            rounds += 1
            proxy.set_delay(rng.choice((0, 1, 2)))
            old = _synced_part(files_now(synced.remote))
            _mutate(synced.root, rng, rounds, small=True, atomic=True)
            new = files_now(synced.root)
            size = sum(len(data) for rel, data in new.items() if old.get(rel) != data)
            before = proxy.stats.bytes_up
            moment = time.monotonic() + rng.uniform(0.0, 0.6)
            after = rng.randrange(1, size + 5_000)
            while proxy.stats.bytes_up - before < after and time.monotonic() < moment:
                time.sleep(0.0005)
            cut = proxy.cut() > 0 and watch.process.poll() is None
            where = f"watch round {rounds}"
            cuts += cut
            COUNTS["cuts watch"] += cut
            check_old_or_new(_synced_part(files_now(synced.remote)), old, new, where)
            check_kept(synced.remote, REMOTE_ONLY, where)
            # The watch reconnects and its full push converges by itself.
            deadline = time.monotonic() + 30
            while _diff(synced) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _diff(synced) == [], f"{where}: not converged\n{watch.text[-1500:]}"
            # Let it record what it pushed before the next round edits again (an edit
            # racing an unrecorded upload is test_cut_then_edit's bug, kept out of here).
            quiet, seen = time.monotonic() + 5, len(watch.text)
            while time.monotonic() < quiet:
                time.sleep(0.15)
                if len(watch.text) == seen:
                    break
                seen = len(watch.text)
            check_kept(synced.remote, REMOTE_ONLY, where)
        proxy.set_delay(0)
    finally:
        code = watch.stop()
    assert code in (0, 130), watch.text
    assert "Traceback" not in watch.text, watch.text
    assert "conflict" not in watch.text, watch.text
    _converged(synced, "after the watch")
    _report("watch", cuts, rounds, started)
    assert cuts >= WATCH_CUTS, f"only {cuts} cuts landed in {rounds} rounds"
