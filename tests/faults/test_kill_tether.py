"""tether push killed with SIGKILL at random points: the next push converges and no
temporary file is left on either side (DESIGN.md 5.4).

A push runs in the sync daemon (tether.cli.daemon): killing the `tether push` process
cancels it there, and every other round kills the daemon itself in the middle of the
push (the process that writes), which the next push replaces."""

from __future__ import annotations

import os
import random
import signal
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
    span = _push_seconds(synced, rng)
    spent, kills, rounds = budget(90), 0, 0
    daemon_kills = 0
    while kills < KILLS and rounds < 3 * KILLS and not spent():
        rounds += 1
        old = files_now(synced.remote)
        for index in rng.sample(range(4), rng.randint(1, 4)):
            write(synced.root / "big" / f"b{index}.bin", rng.randbytes(2_000_000))
        new = files_now(synced.root)
        daemon = _daemon_pid() if rounds % 2 == 0 else None
        process = start_cli(synced.root, "push")
        # Kill inside the span a whole push takes (measured above).
        time.sleep(rng.uniform(0.005, span))
        alive = process.poll() is None
        if daemon is not None and alive:
            os.kill(daemon, signal.SIGKILL)
            _, err = process.communicate(timeout=30)
            assert process.returncode in (0, 1), err  # finished, or one error line
            assert process.returncode == 0 or "sync daemon stopped" in err, err
            daemon_kills += 1
        else:
            process.kill()
            process.communicate(timeout=30)
        kills += alive
        COUNTS["kills"] += alive
        where = f"kill round {rounds}"
        check_old_or_new(files_now(synced.remote), old, new, where)
        clean = synced.push()
        assert clean.returncode == 0, f"{where}: {describe(clean)}\n{_daemon_log()}"
        assert files_now(synced.remote) == files_now(synced.root), where
        assert tmp_files(synced.remote) == [], f"{where}: temp files on the remote"
        assert _stray_local(synced.root) == [], f"{where}: temp files left locally"
    print(
        f"kills: {kills} ({daemon_kills} of the daemon) in {rounds} rounds, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert kills >= KILLS, f"only {kills} kills hit a running push"
    assert daemon_kills >= KILLS // 4, f"only {daemon_kills} kills of the daemon"


def _daemon_log() -> str:
    """The end of the sync daemons' log (what a failed push's message points at)."""
    from tether.paths import runtime_dir

    try:
        return "sync-daemon.log:\n" + (runtime_dir() / "sync-daemon.log").read_text()[-4000:]
    except OSError as error:
        return f"no sync-daemon.log: {error}"


def _daemon_pid() -> int | None:
    """The pid of the sync daemon the pushes use (None when it does not run)."""
    from tether.cli import daemon

    pids = list(daemon.running())
    return pids[0] if len(pids) == 1 else None


def _push_seconds(synced: SyncProject, rng: random.Random) -> float:
    """How long a whole push of this test's size takes here (the shortest of three)."""
    spans = []
    for _ in range(3):
        for index in range(4):
            write(synced.root / "big" / f"b{index}.bin", rng.randbytes(2_000_000))
        started = time.monotonic()
        synced.push_ok()
        spans.append(time.monotonic() - started)
    print(f"a whole push: {spans}")
    return min(spans)
