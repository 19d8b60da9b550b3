"""The job wrapper, run inside the job's tmux pane (see jobs.WRAP_CODE).

It waits its turn in the host's GPU queue when the job is queued, then starts argv
exactly (no shell) in the snapshot, tees its output to a durable log and records start,
pid, end and the real exit code in the job record (temp + rename, never half-written).
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable, ContextManager, Dict, Iterator, Optional, Tuple

from . import deps, start
from . import gpus as gpu_queue
from .gpus import key_of
from .jobs import place
from .jobstore import (
    START_GRACE_S,
    all_records,
    exit_status,
    kill_marker,
    process_stamp,
    read_record,
    scoped_reader,
    write_json,
)

DEPS_POLL_S = 0.5


def wrap_main(spec_path: str) -> int:
    """Run the job described by the record at spec_path and record how it ended."""
    with open(spec_path, encoding="utf-8") as handle:
        record = json.load(handle)
    name = record["name"]
    key = key_of(record)
    if record.get("state") == "queued" and record.get("after"):
        ready = wait_deps(spec_path, record)
        if ready is None:
            return _ended(spec_path, 0)
        record = ready
        if record.get("gpu_count") and not record.get("gpus"):
            place(spec_path, record, int(record["gpu_count"]))
    if record.get("state") == "queued":
        waited = wait_turn(spec_path, record)
        if waited is None:
            return _ended(spec_path, 0)
        record = waited
    env = start.job_env(record, dict(os.environ))
    env["TETHER_JOB"] = name
    if record.get("array_index") is not None:
        env["TETHER_ARRAY_INDEX"] = str(record["array_index"])
    env.setdefault("PYTHONUNBUFFERED", "1")
    if record.get("gpus"):
        env["CUDA_VISIBLE_DEVICES"] = str(record["gpus"])
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA's order = nvidia-smi's
    os.makedirs(os.path.dirname(record["log"]), mode=0o700, exist_ok=True)
    log = open(record["log"], "ab", buffering=0)  # noqa: SIM115 - closed at the end
    state: Dict[str, Any] = {"child": None}

    def forward(signum: int, frame: Any) -> None:
        child = state["child"]
        if child is not None:
            with contextlib.suppress(OSError):
                os.killpg(child.pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        child = subprocess.Popen(
            record["argv"],
            cwd=record["cwd"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=os.setpgrp,
        )
    except OSError as error:
        why = start.exec_failure(record["argv"][0], record["cwd"], env, error)
        log.write(("tether: cannot start %s: %s\n" % (record["argv"][0], why)).encode())
        record.update(
            started=time.time(),
            ended=time.time(),
            exit_code=127,
            reason="cannot start: %s" % why,
            state="exited",
        )
        write_json(spec_path, record)
        return _ended(spec_path, 127)
    state["child"] = child
    record.update(started=time.time(), pid=child.pid, state="running", **_wrapper_fields())
    write_json(spec_path, record)
    pane = getattr(sys.stdout, "buffer", None)
    assert child.stdout is not None
    fd = child.stdout.fileno()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        log.write(chunk)
        if pane is not None:
            try:
                pane.write(chunk)
                pane.flush()
            except (OSError, ValueError):
                pane = None
    while True:
        try:
            returncode = child.wait()
            break
        except InterruptedError:
            continue
    exit_code, reason = exit_status(returncode)
    if os.path.exists(kill_marker(key)):
        reason = "killed by tether kill"
        with contextlib.suppress(OSError):
            os.unlink(kill_marker(key))
    record.update(ended=time.time(), exit_code=exit_code, reason=reason, state="exited")
    write_json(spec_path, record)
    log.close()
    return _ended(spec_path, exit_code)


def _wrapper_fields() -> Dict[str, Any]:
    """This wrapper's pid and stamp, for its record: `tether jobs` tells from them whether
    the job's tmux session is up (jobstore.wrapper_alive)."""
    return {"wrapper_pid": os.getpid(), "wrapper_stamp": process_stamp(os.getpid())}


def _ended(spec_path: str, code: int) -> int:
    """Run the notify hook (if any) on the final record; its outcome never changes it."""
    with contextlib.suppress(Exception), open(spec_path, encoding="utf-8") as handle:
        deps.run_notify(json.load(handle))  # a broken hook must not break the wrapper
    return code


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
Step = Callable[[], Tuple[Optional[Dict[str, Any]], Optional[str]]]


def wait_deps(spec_path: str, record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Wait until every job in record["after"] exited 0.

    Returns the record (state `starting`) when they did, or None when the job was
    cancelled (a dependency failed, tether kill, or a signal) and recorded so.
    """
    after = [str(dep) for dep in record["after"]]
    read = scoped_reader(record.get("root")) if record.get("key") else read_record

    def step() -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        pending, reason = deps.verdict(after, read, time.time(), START_GRACE_S)
        if reason is not None:
            return None, reason
        if not pending:
            record.update(state="starting", reason=None, dequeued=time.time())
            write_json(spec_path, record)
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            return record, None
        if deps.after_reason(pending) != record.get("reason"):
            record["reason"] = deps.after_reason(pending)
            write_json(spec_path, record)
        return None, None

    return _wait(spec_path, record, step, DEPS_POLL_S, contextlib.nullcontext)


def wait_turn(spec_path: str, record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Wait in the host's FIFO until the job is at the head and its GPUs are free.

    Returns the record with its GPUs (state `starting`), or None when the job was cancelled
    (tether kill, or a signal such as tmux kill-session's SIGHUP) and recorded so.
    """
    name = key_of(record)
    count = int(record.get("gpu_count") or 1)

    def step() -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        with gpu_queue.locked():
            got = gpu_queue.claim(name, count, all_records(), time.time(), START_GRACE_S)
            if got is None:
                return None, None
            picked = ",".join(str(index) for index in got)
            record.update(
                gpus=picked,
                cuda_visible_devices=picked,
                state="starting",
                reason=None,
                dequeued=time.time(),
            )
            write_json(spec_path, record)
            gpu_queue.dequeue(name)
            return record, None

    @contextlib.contextmanager
    def leave_queue() -> Iterator[None]:
        with gpu_queue.locked():
            gpu_queue.dequeue(name)
            yield

    return _wait(spec_path, record, step, gpu_queue.POLL_S, leave_queue)


def _wait(
    spec_path: str,
    record: Dict[str, Any],
    step: Step,
    poll_s: float,
    leaving: Callable[[], ContextManager[None]],
) -> Optional[Dict[str, Any]]:
    """Poll step() (the record once ready, or why the job cannot run) until the job may
    start; tether kill (its marker) or a signal cancels it: recorded as cancelled within
    `leaving()`, None."""
    name = key_of(record)
    record.update(_wrapper_fields())
    write_json(spec_path, record)

    def stop(signum: int, frame: Any) -> None:
        raise _Stop("signal %d" % signum)

    for sig in SIGNALS:
        signal.signal(sig, stop)
    reason: Optional[str] = None
    try:
        while reason is None:
            if os.path.exists(kill_marker(name)):
                reason = "killed by tether kill"
                break
            ready, reason = step()
            if ready is not None:
                return ready
            if reason is None:
                time.sleep(poll_s)
    except _Stop as why:
        reason = str(why)
    with leaving():
        record.update(state="cancelled", ended=time.time(), exit_code=None, reason=reason)
        write_json(spec_path, record)
    with contextlib.suppress(OSError):
        os.unlink(kill_marker(name))
    return None


class _Stop(Exception):
    pass
