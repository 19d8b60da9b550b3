"""`tether demo` end to end: every step passes and nothing is left behind."""

from __future__ import annotations

import pytest

from tests.harness import env as harness


@pytest.mark.integration
def test_demo_runs_every_step_and_leaves_ssh_config_byte_identical(test_env: object) -> None:
    from tether.hosts.sshconfig import config_path

    path = config_path()  # the harness's fake home
    before = path.read_bytes() if path.exists() else None
    done = harness.run_tether("demo", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("tether push", "tether watch", "tether wait train", "tether pull",
                 "tether send", "tether status", "sandbox down"):  # fmt: skip
        assert step in done.stdout, step
    assert "exited 0" in done.stdout and "4.5" in done.stdout
    after = path.read_bytes() if path.exists() else None
    assert after == before
