"""The daemon side of a push, in this process, against a local agent: where memory goes.

push_pair with the sync daemon's kept scans (KeptScans) and a kept channel to an agent run
as a local subprocess (no ssh), as the daemon drives it: a first push of --tree (a git
project, e.g. bench/memory.py's --tree) into --remote, then no-op pushes and a one-file
push. Under --trace DIR both this process and the agent run agent/memtrace.py's tracer (a
tracemalloc snapshot at each step's peak, `local-*` and `agent-*`); the traced memory
(current and peak) and VmHWM/VmRSS of both are printed per step, then the top sites of
each peak (bench/memory.py's show_traces).

    .venv/bin/python bench/memory_local.py --tree /tmp/tether-mem-tree10k
        --remote /tmp/mem-remote [--trace DIR] [--top 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: F401  (puts src/ on the path)
import memory


def mb(pid: int, field: str) -> str:
    value = memory.status_mb(pid, field)
    return "-" if value is None else f"{value:6.1f}"


def stages() -> None:
    """Trace this process (1 frame) and wrap the stages of push_pair: each prints the traced
    memory when it starts, what it leaves held, and its own peak above its start."""
    import functools
    import inspect

    from tether.core import plan
    from tether.sync import endpoint, incremental, lanes, session, state

    if not tracemalloc.is_tracing():
        tracemalloc.start(1)

    def wrap(owner: object, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def report(start: int) -> None:
            now, peak = tracemalloc.get_traced_memory()
            print(
                f"    {label:<22} at {start / 1e6:6.1f} MB  held +{(now - start) / 1e6:6.1f}"
                f"  peak +{(peak - start) / 1e6:6.1f}",
                flush=True,
            )

        if inspect.iscoroutinefunction(inner):

            @functools.wraps(inner)
            async def awrapped(*a: object, **k: object) -> object:
                start = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                try:
                    return await inner(*a, **k)
                finally:
                    report(start)

            setattr(owner, name, awrapped)
        else:

            @functools.wraps(inner)
            def wrapped(*a: object, **k: object) -> object:
                start = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                try:
                    return inner(*a, **k)
                finally:
                    report(start)

            setattr(owner, name, wrapped)

    wrap(endpoint.RemoteEndpoint, "scan", "remote scan")
    wrap(endpoint.LocalEndpoint, "scan", "local scan")
    wrap(endpoint.RemoteEndpoint, "digests", "remote digests")
    wrap(session, "plan_push", "plan")
    wrap(session, "_execute_push", "execute (lanes)")
    wrap(incremental, "record_plan", "record plan")
    wrap(state.Base, "save", "base save")
    wrap(state.Base, "load", "base load")
    del plan, lanes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", type=Path, required=True)
    parser.add_argument("--remote", type=Path, required=True)
    parser.add_argument("--trace", type=Path, default=None)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument(
        "--stages", action="store_true", help="per stage of each push: traced MB held and peak"
    )
    args = parser.parse_args(argv)
    trace: Path | None = args.trace.resolve() if args.trace else None
    if trace is not None:
        shutil.rmtree(trace, ignore_errors=True)
        os.environ["TETHER_TRACEMALLOC"] = str(trace)
    shutil.rmtree(args.remote, ignore_errors=True)
    shutil.rmtree(args.tree / ".tether", ignore_errors=True)

    from tether.sync.kept import KeptScans
    from tether.sync.local import Scope
    from tether.sync.session import Pair, push_pair
    from tether.transport.channel import AgentChannel
    from tether.transport.local import LocalTransport

    tracer = None
    if trace is not None:  # (main before the memtrace hook: --stages only)
        from tether.agent import memtrace

        tracer = memtrace.start("local", str(trace))
    if args.stages:
        stages()
    pair = Pair("t", args.tree, str(args.remote), Scope.of((), (), ()))
    sources = sorted(str(p) for p in args.tree.rglob("*.py") if ".git" not in p.parts)

    async def body() -> None:
        channel = await AgentChannel.open(LocalTransport(), "python3", kept=True)
        scans = KeptScans()
        try:
            agent = int((await channel.ready())["pid"])
            steps = ["first push", "no-op push 1", "no-op push 2", "one file"]
            for step in steps:
                if step == "one file":
                    with open(sources[len(sources) // 2], "a", encoding="utf-8") as handle:
                        handle.write("# edited\n")
                if tracer is not None:
                    tracer.next_phase()
                    tracemalloc.reset_peak()
                started = time.monotonic()
                report = await push_pair(channel, pair, args.tree, scans=scans)
                seconds = time.monotonic() - started
                assert not report.conflicts and not report.errors, report
                traced = ""
                if tracer is not None:
                    now, peak = tracemalloc.get_traced_memory()
                    end = f"local-{os.getpid()}-{steps.index(step)}-end.snap"
                    tracemalloc.take_snapshot().dump(str(trace / end))
                    traced = f"traced now {now / 1e6:6.1f} peak {peak / 1e6:6.1f} MB  "
                me = os.getpid()
                print(
                    f"{step:<13} {seconds:6.2f} s  {traced}here HWM {mb(me, 'VmHWM')} "
                    f"RSS {mb(me, 'VmRSS')}  agent HWM {mb(agent, 'VmHWM')} "
                    f"RSS {mb(agent, 'VmRSS')}  load {memory.load()}",
                    flush=True,
                )
        finally:
            await channel.close()

    asyncio.run(body())
    if trace is not None:
        if tracer is not None:
            tracer.next_phase()
        time.sleep(1.0)
        memory.show_traces(trace, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
