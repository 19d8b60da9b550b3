"""The fault-injection suite (DESIGN.md 5): link cuts, SIGKILLs, a full disk, bad inputs.

Every test adds what it did to COUNTS; pytest_terminal_summary prints the totals, so the
closing line of `make test` says how many faults were injected and that no file was lost.

Helpers here are the suite's own; the sandbox, proxy and project fixtures come from
tests/conftest.py and tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import env as harness
from tests.integration.conftest import make_synced, tree  # noqa: F401 - fixture re-export

COUNTS: Counter[str] = Counter()
SEED_ENV = "TETHER_FAULT_SEED"


def rng_for(name: str) -> random.Random:
    """A seeded RNG per test (TETHER_FAULT_SEED=... repeats a run); the seed is printed."""
    seed = os.environ.get(SEED_ENV) or str(random.SystemRandom().randrange(10**9))
    print(f"{name}: seed {seed} (rerun with {SEED_ENV}={seed})")
    return random.Random(f"{seed}:{name}")


def files_now(root: Path) -> dict[str, bytes]:
    """rel -> bytes of every regular file under root, skipping tether's temp files and
    anything that vanishes while we read (a writer may be renaming next to us)."""
    found: dict[str, bytes] = {}
    if not root.is_dir():
        return found
    for directory, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        if not rel_dir:
            dirnames[:] = [name for name in dirnames if name not in (".git", ".tether")]
        for name in filenames:
            if ".tether-tmp." in name:
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                with open(os.path.join(directory, name), "rb") as handle:
                    found[rel] = handle.read()
            except (FileNotFoundError, NotADirectoryError):
                continue
    return found


def check_old_or_new(
    now: dict[str, bytes],
    old: dict[str, bytes],
    new: dict[str, bytes],
    where: str,
    *,
    keep_old: bool = True,
) -> None:
    """Every file in `now` that old or new knows is exactly one of them; no file of `old`
    that is still in `new` vanished (keep_old: a deleted one may stay or go).

    A lost file is counted in COUNTS["files lost"] before the assertion fails.
    """
    lost = [rel for rel in old if rel in new and rel not in now and keep_old]
    mixed = [
        rel
        for rel, data in now.items()
        if (rel in old or rel in new) and data not in (old.get(rel), new.get(rel))
    ]
    COUNTS["files lost"] += len(lost) + len(mixed)
    assert not lost, f"{where}: files vanished: {lost}"
    assert not mixed, f"{where}: neither the old nor the new content: " + ", ".join(
        f"{rel} ({len(now[rel])} bytes)" for rel in mixed
    )


def check_kept(root: Path, planted: dict[str, bytes], where: str) -> None:
    """Files only one side has (remote results, local-only results) are untouched."""
    gone = [rel for rel, data in planted.items() if _read(root / rel) != data]
    COUNTS["files lost"] += len(gone)
    assert not gone, f"{where}: one-side-only files lost or changed: {gone}"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def start_cli(root: Path, *args: str) -> subprocess.Popen[str]:
    """`tether ARGS` started in root (harness environment), output captured."""
    return subprocess.Popen(
        harness.tether_argv(*args),
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Wait for a started CLI; always reaped (killed after timeout)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def cut_when(proxy: Any, process: subprocess.Popen[str], after_bytes: int, after_s: float) -> bool:
    """Cut every proxied link once `after_bytes` crossed it (either way) or `after_s`
    passed, whichever is first. True when the cut hit a live link of a running process
    that had already talked over it (a real cut mid-operation)."""
    start = proxy.stats.bytes_up + proxy.stats.bytes_down
    started = time.monotonic()
    while process.poll() is None:
        moved = proxy.stats.bytes_up + proxy.stats.bytes_down - start
        if moved >= after_bytes or time.monotonic() - started >= after_s:
            return proxy.cut() > 0 and moved > 0 and process.poll() is None
        time.sleep(0.0005)
    return False


def random_bytes(rng: random.Random, low: int, high: int) -> bytes:
    return rng.randbytes(rng.randint(low, high))


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def budget(seconds: float) -> Callable[[], bool]:
    """until_spent() -> True once `seconds` have passed (every fault loop is bounded)."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() > deadline


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not COUNTS:
        return
    cuts = sum(n for key, n in COUNTS.items() if key.startswith("cuts "))
    parts = ", ".join(f"{key} {n}" for key, n in sorted(COUNTS.items()) if key != "files lost")
    terminalreporter.write_sep("-", "tether fault suite")
    terminalreporter.write_line(
        f"link cuts {cuts}, kills {COUNTS['kills']}, bad inputs {COUNTS['bad inputs']}, "
        f"files lost {COUNTS['files lost']}"
    )
    terminalreporter.write_line(f"({parts})")


@pytest.fixture
def seed_rng(request: pytest.FixtureRequest) -> random.Random:
    return rng_for(request.node.name)
