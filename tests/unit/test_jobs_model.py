"""Pure parts of jobs: tmux argv, state derivation, exit codes, names, --gpus."""

from __future__ import annotations

import random
import shlex

import pytest

from tether.agent import jobs as agent_jobs
from tether.errors import UsageError
from tether.jobs.model import JobRecord, derive_state, exit_status, generate_name, parse_gpus
from tether.jobs.tmux import attach_argv, valid_name


def test_new_session_argv_passes_words_as_a_list_on_tmux3() -> None:
    command = ["python3", "-c", "code; $(x)", "it's"]
    argv = agent_jobs.new_session_argv("sock", "lr", command, 3)
    assert argv == ["tmux", "-L", "sock", "new-session", "-d", "-s", "tether-lr", "--", *command]


def test_old_tmux_gets_one_quoted_shell_word() -> None:
    command = ["python3", "-c", "code; $(x)", "it's", ""]
    argv = agent_jobs.new_session_argv("sock", "lr", command, 2)
    assert shlex.split(argv[-1]) == command


def test_wrapper_command_keeps_values_out_of_the_code() -> None:
    argv = agent_jobs.wrapper_command("/usr/bin/python3", "/a b/agent.pyz", "/x/'j'.json")
    assert argv[:2] == ["/usr/bin/python3", "-c"]
    assert argv[3:] == ["/a b/agent.pyz", "/x/'j'.json"]
    assert "agent.pyz" not in argv[2]


def test_attach_and_list_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_TMUX_SOCKET", raising=False)
    assert attach_argv("lr") == ["tmux", "-L", "tether", "attach-session", "-t", "tether-lr"]
    monkeypatch.setenv("TETHER_TMUX_SOCKET", "t-1")
    assert attach_argv("lr")[2] == "t-1"
    assert agent_jobs.list_sessions_argv("s")[:3] == ["tmux", "-L", "s"]


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [(0, (0, None)), (3, (3, None)), (-9, (137, "signal 9")), (-2, (130, "signal 2"))],
)
def test_exit_status(returncode: int, expected: tuple[int, str | None]) -> None:
    assert exit_status(returncode) == expected


def test_derive_state() -> None:
    now = 1000.0
    ended = {"ended": 990.0, "exit_code": 1, "started": 900.0}
    assert derive_state(ended, False, now) == "exited"
    assert derive_state({"ended": 990.0, "exit_code": None}, False, now) == "cancelled"
    assert derive_state({"started": 900.0, "ended": None}, True, now) == "running"
    assert derive_state({"started": 900.0, "ended": None}, False, now) == "lost"
    assert derive_state({"started": None, "created": 999.0}, False, now) == "running"
    assert derive_state({"started": None, "created": 100.0}, False, now) == "lost"
    assert derive_state({"state": "queued"}, True, now) == "queued"
    assert derive_state({"state": "queued", "created": 999.0}, False, now) == "queued"
    # A queued job whose tmux session (its waiting wrapper) is gone will never start.
    assert derive_state({"state": "queued", "created": 100.0}, False, now) == "lost"
    assert derive_state({"state": "cancelled", "ended": None}, False, now) == "cancelled"


def test_tmux_major() -> None:
    assert agent_jobs.tmux_major("tmux 3.3a") == 3
    assert agent_jobs.tmux_major("tmux 2.9") == 2
    assert agent_jobs.tmux_major("") == 3


def test_generated_names_are_short_valid_and_avoid_taken() -> None:
    rng = random.Random(7)
    first = generate_name(rng=random.Random(7))
    name = generate_name({first}, rng)
    assert name != first
    for _ in range(200):
        made = generate_name()
        assert valid_name(made) and len(made) <= 24 and made.count("-") == 2


@pytest.mark.parametrize("name", ["", "../x", "a.b", "a:b", "-x", "a b", "x" * 65, "é"])
def test_bad_names(name: str) -> None:
    assert not valid_name(name)


def test_parse_gpus() -> None:
    assert parse_gpus(None) == (None, 0)
    assert parse_gpus("0,1") == ("0,1", 0)
    assert parse_gpus("3,") == ("3", 0)
    assert parse_gpus("2") == (None, 2)
    for bad in ("a,b", "0", "-1", "x", ",", "1.5"):
        with pytest.raises(UsageError):
            parse_gpus(bad)


def test_record_json_shape() -> None:
    data = {"name": "n", "state": "exited", "exit_code": 0, "started": 1.0, "ended": 2.0}
    record = JobRecord.from_agent("box", "host", data)
    shaped = record.to_json()
    for key in ("name", "target", "host", "state", "exit_code", "reason", "started", "ended"):
        assert key in shaped
    assert shaped["target"] == "box" and record.state_text() == "exited 0"
    assert record.duration() == 1.0
