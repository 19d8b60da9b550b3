"""Link cuts at random moments of push, pull, watch and job start (DESIGN.md 5.1, 5.3, 5.4).

Every cut is followed by the invariants check: each file is absent, old or new (never
a prefix or a mix), no file only one side has is lost, and the next clean push (or pull)
converges with no `.tether-tmp.` file left. Cuts are cheap: small trees, a 0-2 ms proxy,
a cut after a random number of bytes or a random short delay.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import (
    COUNTS,
    budget,
    check_kept,
    check_old_or_new,
    cut_when,
    files_now,
    finish,
    random_bytes,
    start_cli,
    write,
)
from tests.integration.conftest import (
    SyncProject,
    describe,
    one_error_line,
    tmp_files,
)
from tests.integration.test_push_pull import _push_cut_after

pytestmark = pytest.mark.integration

MakeSynced = Callable[..., SyncProject]
PUSH_CUTS, PULL_CUTS, JOB_CUTS = 80, 60, 60
BLOBS = 6

# Remote-only files planted before the cuts: results and a stray file next to the code.
REMOTE_ONLY = {
    "outputs/metrics.json": b'{"loss": 0.1}\n',
    "runs/r1/ckpt.bin": bytes(range(256)) * 64,
    "blob/remote_note.txt": b"written on the remote, never pushed\n",
    "scratch/notes.md": b"remote notes\n",
}


def _mutate(
    root: Path, rng: random.Random, gen: int, *, small: bool = False, atomic: bool = False
) -> None:
    """A new generation: update 1-3 blobs, sometimes add or delete one.

    atomic: each file is written next to the project and renamed in, so a watcher never
    sees a half-written local file (what it pushes is then always old or new).
    """
    high = 40_000 if small else 300_000

    def put(path: Path, data: bytes) -> None:
        if not atomic:
            return write(path, data)
        staging = root.parent / f"{root.name}-staging"
        staging.mkdir(exist_ok=True)
        write(staging / path.name, data)
        os.replace(staging / path.name, path)

    for index in rng.sample(range(BLOBS), rng.randint(1, 3)):
        put(root / "blob" / f"f{index}.bin", random_bytes(rng, 1, high))
    extra = sorted((root / "blob").glob("g*.bin"))
    if rng.random() < 0.3:
        put(root / "blob" / f"g{gen}.bin", random_bytes(rng, 0, high))
    if extra and rng.random() < 0.3:
        rng.choice(extra).unlink()


def _setup(make_synced: MakeSynced, alias: str, rng: random.Random) -> SyncProject:
    synced = make_synced(host=alias)
    for index in range(BLOBS):
        write(synced.root / "blob" / f"f{index}.bin", random_bytes(rng, 1, 50_000))
    synced.push_ok()
    for rel, data in REMOTE_ONLY.items():
        write(synced.remote / rel, data)
    return synced


def _synced_part(files: dict[str, bytes]) -> dict[str, bytes]:
    """Files sync owns: neither results (outputs/, runs/) nor the remote-only ones."""
    return {
        rel: data
        for rel, data in files.items()
        if rel not in REMOTE_ONLY and not rel.startswith(("outputs/", "runs/"))
    }


def _diff(synced: SyncProject) -> list[str]:
    remote, local = _synced_part(files_now(synced.remote)), _synced_part(files_now(synced.root))
    return sorted(rel for rel in set(remote) | set(local) if remote.get(rel) != local.get(rel))


def _converged(synced: SyncProject, where: str) -> None:
    """A clean push: remote == local on synced paths, remote-only files kept, no temp."""
    clean = synced.push()
    assert clean.returncode == 0, f"{where}: {describe(clean)}"
    assert _diff(synced) == [], where
    check_kept(synced.remote, REMOTE_ONLY, where)
    assert tmp_files(synced.remote) == [], f"{where}: temporary files left on the remote"
    assert tmp_files(synced.root) == [], f"{where}: temporary files left locally"


def _failed_cleanly(done: Any, alias: str, where: str) -> None:
    if done.returncode != 0:
        assert done.returncode == 1, f"{where}: {describe(done)}"
        line = one_error_line(done)
        assert alias in line, f"{where}: {line}"


def _report(kind: str, cuts: int, rounds: int, started: float) -> None:
    print(
        f"{kind}: {cuts} cuts in {rounds} rounds, {time.monotonic() - started:.1f} s, "
        f"files lost {COUNTS['files lost']}"
    )


def test_cuts_during_push(
    make_synced: MakeSynced, proxy: Any, proxy_alias: str, seed_rng: random.Random
) -> None:
    rng, started = seed_rng, time.monotonic()
    synced = _setup(make_synced, proxy_alias, rng)
    spent, cuts, rounds = budget(150), 0, 0
    while cuts < PUSH_CUTS and rounds < 3 * PUSH_CUTS and not spent():
        rounds += 1
        proxy.set_delay(rng.choice((0, 1, 2)))
        old = _synced_part(files_now(synced.remote))
        _mutate(synced.root, rng, rounds)
        new = files_now(synced.root)
        size = sum(len(data) for rel, data in new.items() if old.get(rel) != data)
        after = rng.randrange(0, size + 20_000)
        # Mostly after some bytes; sometimes a short delay (connect, bootstrap, scan).
        deadline = rng.uniform(0.3, 0.8) if rng.random() < 0.3 else 20.0
        done, cut = _push_cut_after(synced.root, proxy, after, deadline)
        where = f"push round {rounds} (cut after {after} bytes / {deadline:.2f} s)"
        cuts += cut
        COUNTS["cuts push"] += cut
        _failed_cleanly(done, proxy_alias, where)
        check_old_or_new(_synced_part(files_now(synced.remote)), old, new, where)
        check_kept(synced.remote, REMOTE_ONLY, where)
        proxy.set_delay(0)
        _converged(synced, where)
    _report("push", cuts, rounds, started)
    # The time budget keeps a slow machine green with half the cuts (printed above).
    assert cuts >= (PUSH_CUTS // 2 if spent() else PUSH_CUTS), (
        f"only {cuts} cuts in {rounds} rounds"
    )


def test_cuts_during_pull(
    make_synced: MakeSynced, proxy: Any, proxy_alias: str, seed_rng: random.Random
) -> None:
    rng, started = seed_rng, time.monotonic()
    synced = _setup(make_synced, proxy_alias, rng)
    root, remote = synced.root, synced.remote
    local_only = {"outputs/local.json": b"made here\n", "runs/mine/log.txt": b"older run\n"}
    for rel, data in local_only.items():
        write(root / rel, data)
    spent, cuts, rounds = budget(110), 0, 0

    def results(side: Path) -> dict[str, bytes]:
        return {
            rel: data
            for rel, data in files_now(side).items()
            if rel.startswith(("outputs/", "runs/")) and rel not in local_only
        }

    while cuts < PULL_CUTS and rounds < 3 * PULL_CUTS and not spent():
        rounds += 1
        proxy.set_delay(rng.choice((0, 1, 2)))
        for _ in range(rng.randint(1, 3)):
            rel = f"outputs/m{rng.randrange(5)}.bin" if rng.random() < 0.7 else "runs/r1/log.txt"
            write(remote / rel, random_bytes(rng, 1, 200_000))
        remote_before = files_now(remote)
        old, new = results(root), results(remote)
        size = sum(len(data) for rel, data in new.items() if old.get(rel) != data)
        process = start_cli(root, "pull")
        cut = cut_when(
            proxy, process, rng.randrange(0, size + 10_000), rng.uniform(0.3, 0.8)
            if rng.random() < 0.3 else 20.0,
        )  # fmt: skip
        done = finish(process)
        where = f"pull round {rounds}"
        cuts += cut
        COUNTS["cuts pull"] += cut
        _failed_cleanly(done, proxy_alias, where)
        check_old_or_new(results(root), old, new, where)
        check_kept(root, local_only, where)
        assert files_now(remote) == remote_before, f"{where}: a pull changed the remote"
        proxy.set_delay(0)
        clean = synced.pull()
        assert clean.returncode == 0, f"{where}: {describe(clean)}"
        assert results(root) == results(remote), where
        check_kept(root, local_only, where)
        assert tmp_files(root) == [], f"{where}: temporary files left locally"
    _converged(synced, "after the pulls")
    _report("pull", cuts, rounds, started)
    # The time budget keeps a slow machine green with half the cuts (printed above).
    assert cuts >= (PULL_CUTS // 2 if spent() else PULL_CUTS), (
        f"only {cuts} cuts in {rounds} rounds"
    )


def test_cuts_during_job_start(
    make_synced: MakeSynced,
    proxy: Any,
    proxy_alias: str,
    seed_rng: random.Random,
    tmux_socket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    rng, started = seed_rng, time.monotonic()
    synced = _setup(make_synced, proxy_alias, rng)
    spent, cuts, rounds = budget(130), 0, 0
    ran: dict[str, bool] = {}  # job name -> `tether run` said it started
    while cuts < JOB_CUTS and rounds < 3 * JOB_CUTS and not spent():
        rounds += 1
        proxy.set_delay(rng.choice((0, 1, 2)))
        old = _synced_part(files_now(synced.remote))
        _mutate(synced.root, rng, rounds, small=True)
        new = files_now(synced.root)
        size = sum(len(data) for rel, data in new.items() if old.get(rel) != data)
        name = f"js{rounds}"
        process = start_cli(synced.root, "run", "--name", name, "--", "python3", "-c", "0")
        cut = cut_when(
            proxy, process, rng.randrange(0, size + 30_000), rng.uniform(0.3, 1.0)
            if rng.random() < 0.3 else 20.0,
        )  # fmt: skip
        done = finish(process)
        where = f"job start round {rounds} ({name})"
        cuts += cut
        COUNTS["cuts job start"] += cut
        _failed_cleanly(done, proxy_alias, where)
        ran[name] = done.returncode == 0
        check_old_or_new(_synced_part(files_now(synced.remote)), old, new, where)
        check_kept(synced.remote, REMOTE_ONLY, where)
        proxy.set_delay(0)
        _converged(synced, where)

    # Every job `run` reported is there and exited 0; a cut start either never made a
    # job or made one that ran to its end (never half-started: lost or running forever).
    deadline = time.monotonic() + 30
    while True:
        listed = synced.run("jobs", "--json")  # this project's (--all: every project's)
        assert listed.returncode == 0, describe(listed)
        jobs = {job["name"]: job for job in json.loads(listed.stdout)}
        busy = [n for n, job in jobs.items() if job["state"] in ("running", "queued")]
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for name, reported in ran.items():
        job = jobs.get(name)
        if reported:
            assert job is not None, f"{name}: `tether run` said started, jobs does not list it"
        if job is not None:
            assert (job["state"], job["exit_code"]) == ("exited", 0), f"{name}: {job}"
    assert set(jobs) <= set(ran), sorted(set(jobs) - set(ran))
    _report("job start", cuts, rounds, started)
    print(f"jobs started {sum(ran.values())}, cut starts that still ran "
          f"{sum(1 for n, ok in ran.items() if not ok and n in jobs)}")  # fmt: skip
    # The time budget keeps a slow machine green with half the cuts (printed above).
    assert cuts >= (JOB_CUTS // 2 if spent() else JOB_CUTS), f"only {cuts} cuts in {rounds} rounds"
