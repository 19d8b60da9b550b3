"""Slurm, pure parts: sbatch options, the batch script, parsing and state mapping."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tether.agent import slurm as agent_slurm
from tether.jobs.slurm import exit_from_slurm, map_state, sbatch_options, to_jobs


def test_sbatch_options_from_the_target_table_gpus_and_array() -> None:
    settings = {
        "partition": "gpu",
        "time": "04:00:00",
        "mem": "32G",
        "cpus": 8,
        "account": "lab",
        "qos": "high",
        "extra": "--constraint=a100 --exclusive",
    }
    assert sbatch_options("train", settings, gpus=2, array=4) == [
        "--job-name=train",
        "--partition=gpu",
        "--time=04:00:00",
        "--cpus-per-task=8",
        "--mem=32G",
        "--account=lab",
        "--qos=high",
        "--gres=gpu:2",
        "--array=0-3",
        "--constraint=a100",
        "--exclusive",
    ]
    assert sbatch_options("x", {}) == ["--job-name=x"]
    assert sbatch_options("x", {"gres": "gpu:a100"}, gpus=3)[-1] == "--gres=gpu:a100:3"
    assert sbatch_options("x", {"gres": "gpu:a100:1"}, gpus=2)[-1] == "--gres=gpu:a100:2"
    assert sbatch_options("x", {"gres": "gpu:1"})[-1] == "--gres=gpu:1"
    assert sbatch_options("x", {"extra": ["--exclusive", "a b"]})[-2:] == ["--exclusive", "a b"]


def test_sbatch_argv_adds_dependencies_and_kill_on_invalid_dep() -> None:
    argv = agent_slurm.sbatch_argv(["--job-name=e"], "/s.sh", "/o.out", "/snap", ["17", "18_2"])
    assert argv[:2] == ["sbatch", "--parsable"]
    assert "--dependency=afterok:17:18_2" in argv and "--kill-on-invalid-dep=yes" in argv
    assert argv[-1] == "/s.sh" and "--output=/o.out" in argv and "--chdir=/snap" in argv
    assert not any(
        "dependency" in word for word in agent_slurm.sbatch_argv([], "/s", "/o", "/c", [])
    )


def test_batch_script_runs_the_wrapper_for_the_job_or_array_task(tmp_path: Path) -> None:
    records = tmp_path / "rec ords"
    text = agent_slurm.batch_script("/usr/bin/python3", "/a/agent.pyz", str(records), "sw")
    assert text.startswith("#!/bin/sh\n")
    script = tmp_path / "s.sh"
    # Replace exec of python by printing the argv it would get.
    script.write_text(text.replace("exec /usr/bin/python3", "exec printf '%s\\n'"))
    plain = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True)
    lines = plain.stdout.splitlines()
    assert lines[0] == "-c" and "wrap_main" in lines[1]
    assert lines[2:] == ["/a/agent.pyz", f"{records}/sw.json"]
    env = {"SLURM_ARRAY_TASK_ID": "2", "PATH": "/usr/bin:/bin"}
    task = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env, check=True)
    assert task.stdout.splitlines()[-1] == f"{records}/sw-2.json"
    assert shlex.split(text.splitlines()[-1])[0] == "exec"


def test_parsers() -> None:
    queue = agent_slurm.parse_squeue(
        "17_0|RUNNING|None\n17_[1-2,4%2]|PENDING|Resources\n18|PENDING|Dependency\n"
    )
    assert queue == {
        "17_0": ("RUNNING", "None"),
        "17_1": ("PENDING", "Resources"),
        "17_2": ("PENDING", "Resources"),
        "17_4": ("PENDING", "Resources"),
        "18": ("PENDING", "Dependency"),
    }
    acct = agent_slurm.parse_sacct("5|CANCELLED by 0|0:15\n6|OUT_OF_MEMORY|0:125\n")
    assert acct == {"5": ("CANCELLED", "0:15"), "6": ("OUT_OF_MEMORY", "0:125")}
    line = (
        "JobId=1 JobName=wrap JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 Dependency=(null)"
    )
    fields = agent_slurm.parse_scontrol(line)
    assert (fields["JobState"], fields["Reason"], fields["ExitCode"]) == (
        "FAILED",
        "NonZeroExitCode",
        "3:0",
    )


def test_exit_from_slurm() -> None:
    assert [exit_from_slurm(c) for c in ("3:0", "0:15", "0:0", None, "x")] == [
        3,
        143,
        0,
        None,
        None,
    ]


def rec(
    started: bool = True, ended: bool = False, code: int | None = None, **slurm: Any
) -> dict[str, Any]:
    info = {"state": None, "reason": None, "exit": None, "oom": False, "killed": False}
    info.update(slurm)
    return {
        "name": "j",
        "started": 1.0 if started else None,
        "ended": 2.0 if ended else None,
        "exit_code": code,
        "reason": None,
        "slurm": info,
        "slurm_after": [],
    }


CASES = [
    ("pending", rec(False, state="PENDING", reason="Resources"), ("queued", None, "Resources")),
    ("pending, no reason", rec(False, state="PENDING", reason="None"), ("queued", None, None)),
    ("running", rec(state="RUNNING"), ("running", None, None)),
    (
        "exit 3, wrapper record",
        rec(ended=True, code=3, state="FAILED", reason="NonZeroExitCode", exit="3:0"),
        ("exited", 3, None),
    ),
    ("exit 0, Slurm forgot it", rec(ended=True, code=0), ("exited", 0, None)),
    ("exit 3, no Slurm record (no accounting)", rec(ended=True, code=3), ("exited", 3, None)),
    (
        "OOM, no cgroups: script SIGKILLed, no wrapper record",
        rec(state="FAILED", reason="JobLaunchFailure", exit="0:9"),
        ("exited", 137, "out of memory"),
    ),
    (
        "OOM, no cgroups, Slurm forgot it: text in the output file",
        rec(oom=True),
        ("exited", 137, "out of memory"),
    ),
    (
        "OOM with cgroups: OUT_OF_MEMORY, wrapper saw 137",
        rec(ended=True, code=137, state="OUT_OF_MEMORY", reason="OutOfMemory", exit="0:125"),
        ("exited", 137, "out of memory"),
    ),
    (
        "OOM via sacct ExitCode 0:125 though the wrapper saw 0",
        rec(ended=True, code=0, state="COMPLETED", exit="0:125"),
        ("exited", 137, "out of memory"),
    ),
    (
        "timeout",
        rec(state="TIMEOUT", reason="TimeLimit", exit="0:15"),
        ("exited", 143, "time limit"),
    ),
    (
        "timeout, wrapper recorded",
        rec(ended=True, code=143, state="TIMEOUT", exit="0:15"),
        ("exited", 143, "time limit"),
    ),
    (
        "dependency failed",
        rec(False, state="CANCELLED", reason="DependencyNeverSatisfied"),
        ("cancelled", None, "dependency never satisfied"),
    ),
    (
        "cancelled while queued",
        rec(False, state="CANCELLED", killed=True),
        ("cancelled", None, "killed by tether kill"),
    ),
    (
        "node failure before start",
        rec(False, state="NODE_FAIL"),
        ("cancelled", None, "node failure"),
    ),
    ("preempted while running", rec(state="PREEMPTED", exit="0:15"), ("exited", 143, "preempted")),
    (
        "gone without a record",
        rec(),
        ("lost", None, "Slurm no longer knows the job and tether has no exit record"),
    ),
]


@pytest.mark.parametrize(("case", "record", "want"), CASES, ids=[c[0] for c in CASES])
def test_map_state(case: str, record: dict[str, Any], want: tuple[Any, ...]) -> None:
    assert map_state(record) == want


def test_a_dependent_cancelled_by_slurm_names_the_failed_dependency() -> None:
    from tether.config import Target

    first = dict(rec(ended=True, code=3), name="train")
    second = dict(rec(False, state="CANCELLED", reason="DependencyNeverSatisfied"), name="eval")
    second["slurm_after"] = ["train"]
    queued = dict(rec(False, state="PENDING", reason="Dependency"), name="later")
    queued["slurm_after"] = ["eval"]
    target = Target(name="c", host="h", path="~/p", scheduler="slurm")
    jobs = {job.name: job for job in to_jobs(target, [first, second, queued])}
    assert (jobs["eval"].state, jobs["eval"].reason) == ("cancelled", "dependency train exited 3")
    assert (jobs["later"].state, jobs["later"].reason) == ("queued", "after eval")


def test_sbatch_missing_on_the_target_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether.agent.fsops import OpError
    from tether.config import Target
    from tether.errors import JobError
    from tether.jobs.launch import raise_job
    from tether.transport.channel import AgentError

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OpError) as caught:
        agent_slurm.slurm_submit({"name": "j", "argv": ["true"], "root": str(tmp_path)}, b"")
    assert caught.value.kind == "nosbatch"
    target = Target(name="cluster", host="login", path="~/p", scheduler="slurm")
    with pytest.raises(JobError) as error:
        raise_job(AgentError("login", "slurm_submit", "nosbatch", str(caught.value)), "j", target)
    line = error.value.line()
    assert line.startswith("cluster is a Slurm target but sbatch is not installed"), line
    assert "login" in line and "\n" not in line
