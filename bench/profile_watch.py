"""Where one save's time goes under `tether watch`: perf_counter_ns stamps along its path.

bench/watch.py's project (500 small files, a git repository) is watched by a child
process that runs `tether watch` (tether.cli.app.main, as the console script does) with
wrappers that stamp each step of a batch with time.perf_counter_ns (CLOCK_MONOTONIC, the
same clock in every process here): the inotify read, the burst handed on after the quiet
window, the batch taken, the event filter (and its `git check-ignore`), push_pair's base
load, local scan, plan, the Put handed to ssh, the answer read back and settled, the
base saved. This process writes the file and watches the remote directory (the sandbox's
home, on this disk) with its own inotify: the agent's temp file appearing and its rename
(the new content visible) are stamped here. Each step's median over the samples is
printed as a table, at 0 ms added RTT (--rtt to change).

    .venv/bin/python bench/profile_watch.py [--runs 20] [--rtt 0] [--files 500]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import select
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import watch

SANDBOX = "bench-profile-watch"
IN_CREATE, IN_MOVED_TO = 0x100, 0x80
EVENT = struct.Struct("iIII")
# (stamp, shown as): each step's time from the write, in the order a save passes them.
STEPS = [
    ("write", "file written here (this process)"),
    ("read", "inotify event read (watch's loop)"),
    ("dispatch", "burst handed on (after the quiet window)"),
    ("taken", "batch taken by the target's task"),
    ("filter", "event filter starts (thread)"),
    ("ignore_start", "git check-ignore starts"),
    ("ignore_end", "git check-ignore done"),
    ("filter_end", "event filter done"),
    ("push", "push_pair starts (back on the loop)"),
    ("base_end", "base loaded"),
    ("scan_end", "local scan done (stat + digest)"),
    ("plan_end", "plan done"),
    ("pending", "pending uploads saved (file beside the base)"),
    ("lanes", "lanes start (file read, hashed, framed)"),
    ("submit", "Put handed to ssh (stdin)"),
    ("temp", "agent's temp file created (remote dir)"),
    ("visible", "renamed: new content visible on the remote"),
    ("answer", "answer read back (channel)"),
    ("settled", "answer settled"),
    ("saved", "base saved"),
    ("done", "batch accounted (status line)"),
]


# ---------------------------------------------------------------------- child


def child(stamps_file: str) -> int:
    """Run `tether watch` here with every step stamped; stamps written at exit."""
    from tether.agent import inotify
    from tether.cli import app
    from tether.sync import events, filewatch, lanes, session, state
    from tether.sync import watch as watch_module
    from tether.sync.endpoint import LocalEndpoint
    from tether.transport.channel import AgentChannel

    stamps: list[tuple[str, int]] = []
    now = time.perf_counter_ns

    def mark(name: str) -> None:
        stamps.append((name, now()))

    def around(owner: Any, attr: str, start: str | None, end: str | None) -> None:
        original = getattr(owner, attr)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if start:
                mark(start)
            try:
                return original(*args, **kwargs)
            finally:
                if end:
                    mark(end)

        setattr(owner, attr, wrapped)

    def around_async(owner: Any, attr: str, start: str | None, end: str | None) -> None:
        original = getattr(owner, attr)

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            if start:
                mark(start)
            try:
                return await original(*args, **kwargs)
            finally:
                if end:
                    mark(end)

        setattr(owner, attr, wrapped)

    drain = inotify.Watcher.drain

    def stamped_drain(self: Any, tree: Any, when: float) -> None:
        started = now()
        before = len(getattr(tree, "paths", ()))
        drain(self, tree, when)
        if len(getattr(tree, "paths", ())) > before:
            stamps.append(("read", started))

    inotify.Watcher.drain = stamped_drain  # type: ignore[method-assign]
    watch_paths = filewatch.watch_paths

    async def stamped_watch_paths(roots: Any, dispatch: Any, stop: Any) -> None:
        def stamped_dispatch(paths: list[str], everything: bool) -> None:
            mark("dispatch")
            dispatch(paths, everything)

        await watch_paths(roots, stamped_dispatch, stop)

    watch_module.watch_paths = stamped_watch_paths  # type: ignore[assignment]
    around_async(watch_module.TargetWatcher, "_push_batch", "taken", None)
    around(watch_module.TargetWatcher, "_account", None, "done")
    around(events.EventFilter, "select", "filter", "filter_end")
    git_ignored = events.git_ignored

    def stamped_git_ignored(root: Any, rels: list[str]) -> set[str]:
        if not rels:
            return git_ignored(root, rels)
        mark("ignore_start")
        try:
            return git_ignored(root, rels)
        finally:
            mark("ignore_end")

    events.git_ignored = stamped_git_ignored
    around_async(watch_module, "push_pair", "push", None)
    around(session.Pair, "base", None, "base_end")
    around_async(LocalEndpoint, "scan", None, "scan_end")
    around(session, "plan_push", None, "plan_end")
    around(AgentChannel, "submit", None, "submit")
    around(AgentChannel, "_deliver", None, "answer")
    around(session, "_settle_one", None, "settled")
    around(state.Base, "save", None, "saved")
    around(state.Base, "_save_pending", None, "pending")
    around_async(lanes, "run", "lanes", None)

    def write_stamps() -> None:
        with open(stamps_file, "w", encoding="utf-8") as handle:
            handle.writelines(f"{name} {stamp}\n" for name, stamp in stamps)

    try:
        return app.main(["watch"])
    finally:
        write_stamps()


# ---------------------------------------------------------------------- parent


class RemoteDir:
    """inotify on one remote directory (on this disk): when a temp file appears, when the
    final name is renamed in (the stamps taken as the events are read)."""

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if (
            self.fd < 0
            or libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_CREATE | IN_MOVED_TO) < 0
        ):
            raise OSError(ctypes.get_errno(), "inotify")
        self.seen: list[tuple[int, int, str]] = []  # (stamp, mask, name)
        self.renamed = threading.Event()  # set at each rename into the directory
        self.stopping = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            stamp = time.perf_counter_ns()
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                continue
            offset = 0
            while offset + EVENT.size <= len(data):
                _, mask, _, length = EVENT.unpack_from(data, offset)
                offset += EVENT.size
                name = os.fsdecode(data[offset : offset + length].rstrip(b"\0"))
                offset += length
                self.seen.append((stamp, mask, name))
                if mask & IN_MOVED_TO:
                    self.renamed.set()

    def close(self) -> None:
        self.stopping = True
        self.thread.join(2)
        os.close(self.fd)


def sample_steps(
    writes: list[int],
    remote: list[tuple[int, int, str]],
    child_stamps: list[tuple[str, int]],
    name: str,
) -> list[dict[str, int]]:
    """Each sample's first stamp of every step, in ns after its write."""
    found: list[dict[str, int]] = []
    for index, written in enumerate(writes):
        end = writes[index + 1] if index + 1 < len(writes) else 1 << 62
        steps: dict[str, int] = {"write": 0}
        for step, stamp in child_stamps:
            if written <= stamp < end and step not in steps:
                steps[step] = stamp - written
        for stamp, mask, seen in remote:
            if not written <= stamp < end:
                continue
            if mask & IN_CREATE and seen.startswith("." + name) and "temp" not in steps:
                steps["temp"] = stamp - written
            if mask & IN_MOVED_TO and seen == name and "visible" not in steps:
                steps["visible"] = stamp - written
        found.append(steps)
    return found


def table(samples: list[dict[str, int]], rtt_ms: int, load: str) -> str:
    """One row per step, in the order of their medians (a version may reorder steps)."""
    lines = [
        f"### {rtt_ms} ms added RTT: median of {len(samples)} saves (load {load})",
        "",
        "| step | median ms after the write | median ms since the row before | min-max ms |",
        "|---|---|---|---|",
    ]
    medians = {
        step: statistics.median(s[step] / 1e6 for s in samples if step in s)
        for step, _ in STEPS
        if any(step in s for s in samples)
    }
    shown = dict(STEPS)
    previous: str | None = None
    for step in sorted(medians, key=lambda name: (medians[name], list(shown).index(name))):
        values = [s[step] / 1e6 for s in samples if step in s]
        gaps = [
            (s[step] - s[previous]) / 1e6
            for s in samples
            if previous is not None and step in s and previous in s
        ]
        gap = f"{statistics.median(gaps):.1f}" if gaps else ""
        lines.append(
            f"| {shown[step]} | {medians[step]:.1f} | {gap} | {min(values):.1f}-{max(values):.1f} |"
        )
        previous = step
    return "\n".join(lines)


def profile(rtt_ms: int, files: int, runs: int) -> str:
    with common.isolated(), common.sandbox(SANDBOX) as box:
        home = Path(box.home)
        with common.rtt_alias(box, rtt_ms) as alias:
            root = home.parent / f"profile-watch-{rtt_ms}"
            common.remove(root)
            tree = watch.project(root, files, alias, f"~/profile-watch-{rtt_ms}")
            source = tree.sources[len(tree.sources) // 2]
            target = home / f"profile-watch-{rtt_ms}" / source
            common.start_master(alias)
            stamps_file = root.parent / f"profile-watch-{rtt_ms}.stamps"
            process = subprocess.Popen(
                [sys.executable, __file__, "--child", str(stamps_file)],
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            lines: list[str] = []
            reader = threading.Thread(
                target=lambda: lines.extend(process.stderr or []), daemon=True
            )
            reader.start()
            deadline = time.monotonic() + 120
            while not any(": watching" in line for line in lines):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError("watch did not start:\n" + "".join(lines))
                time.sleep(0.01)
            remote_dir = RemoteDir(target.parent)
            writes: list[int] = []
            try:
                for index in range(runs):
                    data = f"# profile sample {index} {time.time_ns()}\n".encode()
                    remote_dir.renamed.clear()
                    writes.append(time.perf_counter_ns())
                    (root / source).write_bytes(data)
                    # This process sleeps until a rename (no polling beside the watch).
                    remote_dir.renamed.wait(30)
                    watch.wait_for(target, data)
                    time.sleep(0.3)
            finally:
                remote_dir.close()
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
                reader.join(5)
            load = " ".join(f"{value:.2f}" for value in os.getloadavg())
            child_stamps = [
                (name, int(stamp))
                for name, stamp in (line.split() for line in stamps_file.read_text().splitlines())
            ]
    samples = sample_steps(writes, remote_dir.seen, child_stamps, Path(source).name)
    return table(samples, rtt_ms, load)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rtt", type=int, action="append", default=None)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(args.child)
    for rtt_ms in args.rtt or [0]:
        print(profile(rtt_ms, args.files, args.runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
