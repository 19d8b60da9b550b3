"""The agent's refusal of a job request as tether's error (jobs.launch.raise_job): what to do
comes from the one table (wire.TABLE), the line names the job and the target as the user
calls them, the exit code is the table's (2 for a usage kind)."""

from __future__ import annotations

import pytest

from tether.agent.wire import TABLE, ErrorKind
from tether.config import Target
from tether.errors import JobError, TetherError, UsageError
from tether.jobs.launch import JOB_KINDS, raise_job
from tether.transport.channel import AgentError

TARGET = Target(name="gpu", host="box.example", path="~/proj")
OWN_TODO = {ErrorKind.NOTMUX}  # the agent's own words say how; the line here replaces them


def refused(kind: ErrorKind, what: str = "the agent's words") -> TetherError:
    with pytest.raises(TetherError) as caught:
        raise_job(AgentError("box.example", "job_start", kind, what), "train", TARGET)
    return caught.value


@pytest.mark.parametrize("kind", sorted(JOB_KINDS))
def test_a_job_refusal_says_what_to_do_from_the_table(kind: ErrorKind) -> None:
    error = refused(kind)
    assert type(error) is (UsageError if TABLE[kind].usage else JobError)
    assert error.exit_code == (2 if TABLE[kind].usage else 1)
    if kind not in OWN_TODO:
        assert error.todo == TABLE[kind].todo
    assert "\n" not in error.line()


def test_the_line_names_the_job_and_the_target() -> None:
    assert refused(ErrorKind.EXISTS).line() == (
        "a job named 'train' already exists on gpu, "
        "pick another --name (or leave it out for a generated one)"
    )
    assert refused(ErrorKind.NOJOB).line() == "no job named 'train' on gpu, see `tether jobs`"
    assert refused(ErrorKind.NOPROJECT).what == "no project directory ~/proj on gpu"
    assert refused(ErrorKind.NOTMUX).line() == (
        "tmux is not installed on box.example, install it there (e.g. `sudo apt-get install tmux`)"
    )
    assert refused(ErrorKind.CYCLE, "a -> b -> a").line() == (
        "gpu: a -> b -> a, check the --after names"
    )
    nocommand = refused(ErrorKind.NOCOMMAND, "cannot start nope on box: not found")
    assert nocommand.what == "cannot start nope on box: not found"  # the agent names the host


def test_other_kinds_stay_the_agents_error() -> None:
    error = refused(ErrorKind.BADGPUS, "bad GPU count 'x'")
    assert isinstance(error, AgentError) and error.exit_code == 2
