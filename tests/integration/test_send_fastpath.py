"""The send fast path (tether.kernel.sendcache) against a real sandbox kernel: a second
send skips the config while it and its trust are unchanged, and any change to them (same
size and mtime included) or a withdrawn trust goes through the trust check again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import describe, one_error_line
from tests.integration.test_send_helper import hproject

pytestmark = pytest.mark.integration
__all__ = ["hproject"]  # the fixture, used by name

Cli = Callable[..., Any]
# Runs `tether send` in-process and says on stderr whether the config was parsed.
PROBE = (
    "import sys\n"
    "from tether.cli.app import main\n"
    "code = main(['send'])\n"
    "sys.stderr.write('config loaded: %s\\n' % ('tether.config' in sys.modules))\n"
    "sys.exit(code)\n"
)


def probe_send(project: Path) -> tuple[subprocess.CompletedProcess[str], bool]:
    """`tether send` of print(1) from project; (the run, whether it parsed the config)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=project, input="print(1)\n",
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = done.stderr.splitlines()
    assert lines and lines[-1].startswith("config loaded: "), describe(done)
    done.stderr = "\n".join(lines[:-1]) + ("\n" if lines[:-1] else "")
    return done, lines[-1] == "config loaded: True"


def settle(project: Path) -> None:
    """Wait until the config and the trust store are older than the cache's racy window,
    so that the next send may keep its answer (bounded)."""
    from tether.kernel.sendcache import RACY_NS
    from tether.paths import trust_store

    files = [project / "tether.toml", Path(trust_store())]
    newest = max(max(f.stat().st_mtime_ns, f.stat().st_ctime_ns) for f in files)
    deadline = time.monotonic() + RACY_NS / 1e9 + 2.0
    while time.time_ns() < newest + RACY_NS + 50_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)


def warm(project: Path) -> None:
    """Sends until one uses the kept answer: a first one (kernel, helper), one that keeps
    its answer (the first, unless the config was too new then), then one that uses it."""
    for _ in range(2):
        sent, _ = probe_send(project)
        assert sent.returncode == 0 and sent.stdout == "1\n", describe(sent)
        settle(project)
    fast, parsed = probe_send(project)
    assert fast.returncode == 0 and fast.stdout == "1\n", describe(fast)
    assert not parsed, "the second send parsed the config again"


def test_a_second_send_skips_the_config_while_it_and_its_trust_are_unchanged(
    hproject: Path,
) -> None:
    warm(hproject)
    (hproject / "notes.py").write_text("x = 1\n")  # other files do not matter
    again, parsed = probe_send(hproject)
    assert again.returncode == 0 and again.stdout == "1\n" and not parsed, describe(again)


def test_a_changed_tether_toml_goes_through_trust_even_at_the_same_size_and_mtime(
    hproject: Path,
) -> None:
    warm(hproject)
    config = hproject / "tether.toml"
    before = config.read_bytes()
    st = config.stat()
    text = before.decode()
    start = text.index("helper-") + len("helper-")
    changed = text[:start] + ("0" if text[start] != "0" else "1") + text[start + 1 :]
    with open(config, "r+b") as handle:  # in place: same inode, same size
        handle.write(changed.encode())
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert config.stat().st_size == st.st_size and config.stat().st_mtime_ns == st.st_mtime_ns
    refused, parsed = probe_send(hproject)
    assert refused.returncode == 1 and parsed, describe(refused)
    assert "tether.toml changed since you trusted it" in one_error_line(refused)
    assert refused.stdout == ""
    with open(config, "r+b") as handle:  # as trusted again: sends work again
        handle.write(before)
    back, _ = probe_send(hproject)
    assert back.returncode == 0 and back.stdout == "1\n", describe(back)


def test_a_send_after_the_trust_is_withdrawn_is_refused(hproject: Path) -> None:
    from tether.paths import trust_store

    warm(hproject)
    store = Path(trust_store())
    records = json.loads(store.read_text())
    del records[str((hproject / "tether.toml").resolve())]
    store.write_text(json.dumps(records))
    refused, parsed = probe_send(hproject)
    assert refused.returncode == 1 and parsed, describe(refused)
    assert "is not trusted yet" in one_error_line(refused)


def test_a_send_its_helper_served_ends_its_process_at_once_with_its_output_whole(
    hproject: Path,
) -> None:
    """As `tether send` from an editor's key: served by the helper, it ends without the
    interpreter's shutdown (no atexit hook runs), after writing everything it was sent."""
    warm(hproject)
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('interpreter shutdown ran\\n'))\n"
        "sys.argv = ['tether', 'send']\n"
        "from tether.cli.app import main\n"
        "raise SystemExit(main())\n"
    )
    cell = "print('x' * 300_000)\nprint('end')\n"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=hproject, input=cell,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, describe(done)
    assert done.stdout == "x" * 300_000 + "\nend\n"
    assert "interpreter shutdown ran" not in done.stderr
    failed = subprocess.run(
        [sys.executable, "-c", code], cwd=hproject, input="raise ValueError('no')\n",
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert failed.returncode == 1 and "ValueError" in failed.stderr, describe(failed)
