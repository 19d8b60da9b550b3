"""`tether send`: a keypress's `print(1)` from process start to output, next to plain ssh.

`tether send` (the whole command, a subprocess, as an editor's key binding runs it)
feeds `print(1)` on stdin to the target's kernel on a sandbox sshd whose `python` is
this interpreter (it has ipykernel), at 0 ms added RTT (direct) and at 50 ms RTT
(latency proxy, 25 ms each way). Warm: the kernel and the per-target send helper are
already started and tether.toml has not changed for a few seconds (median of 10).
Beside it, `ssh ALIAS python3 -c 'print(1)'` over the same warm ControlMaster. Also the
cold first send (kernel start, forwards, helper). The goal (issue #26): one round trip
+ 40 ms. PASS/MISS is printed, never asserted.
A second table: the execute round trip of `print(1)` from a Jupyter client on the
kernel's local connection file (as a notebook's), with `%autoreload 2` on and off, after
LOADED_TARGET modules were imported in the kernel (#25: <= 2 ms of autoreload per execute).

    .venv/bin/python bench/send.py [--small] [--runs N] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

if TYPE_CHECKING:
    from tether.hosts.sandbox import Sandbox

RTTS_MS = (0, 50)
RUNS = 10
SANDBOX = "bench-send"
GOAL_EXTRA_MS = 40
CODE = "print(1)\n"
MEASURES: list[common.Measure] = []  # what bench_rtt measured, for the JSON beside results
LOADED_TARGET = 1000
LOAD_MODULES = f"""\
import importlib, pkgutil, sys
import pygments.lexers, pygments.styles
for package in (pygments.lexers, pygments.styles):
    for found in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if len(sys.modules) >= {LOADED_TARGET}:
            break
        try:
            importlib.import_module(found.name)
        except Exception:
            pass
print(len(sys.modules))
"""


def send(root: Path) -> None:
    """One `tether send` of CODE on stdin; raise unless it printed 1."""
    done = subprocess.run(
        [common.tether_bin(), "send"],
        cwd=root,
        input=CODE,
        capture_output=True,
        text=True,
        timeout=common.SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0 or done.stdout.strip() != "1":
        raise RuntimeError(f"tether send exited {done.returncode}: {done.stdout}{done.stderr}")


def settle(root: Path) -> None:
    """Wait until the project's config and trust records are older than the send cache's
    racy window: sends right after `tether.toml` changed load it (as after a user's edit),
    the everyday send finds the helper without it (tether.kernel.sendcache)."""
    import time

    from tether.kernel.sendcache import RACY_NS
    from tether.paths import trust_store

    stats = [(root / "tether.toml").stat(), Path(trust_store()).stat()]
    newest = max(max(st.st_mtime_ns, st.st_ctime_ns) for st in stats)
    deadline = time.monotonic() + RACY_NS / 1e9 + 2.0
    while time.time_ns() < newest + RACY_NS + 50_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)


def project(root: Path, alias: str, remote: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / ".gitignore").write_text(".tether/\n")
    (root / "README.md").write_text("# send bench\n")
    common.write_config(
        root / "tether.toml",
        f"[targets.box]\nhost = {json.dumps(alias)}\npath = {json.dumps(remote)}\n"
        f"python = {json.dumps(sys.executable)}\ndefault = true\n",
    )
    common.git_init(root)


def bench_rtt(box: Sandbox, rtt_ms: int, runs: int) -> tuple[list[str], float]:
    """The table row for one RTT, and the cold first send's seconds."""
    home = Path(box.home)
    with common.rtt_alias(box, rtt_ms) as alias:
        root = home.parent / f"send-local-{rtt_ms}"
        common.remove(root)
        project(root, alias, f"~/send-{rtt_ms}")
        common.start_master(alias)
        try:
            cold = common.timed(lambda: send(root))
            settle(root)
            send(root)  # the helper answers from here on, found without the config
            ssh = ["ssh", *common.master_options(), alias, "python3 -c 'print(1)'"]
            timings = common.side_by_side(
                runs, {"send": lambda: send(root), "ssh": lambda: common.run(ssh)}
            )
        finally:
            common.run([common.tether_bin(), "kernel", "stop"], cwd=root)
    tether, plain = timings["send"], timings["ssh"]
    goal = rtt_ms / 1000 + GOAL_EXTRA_MS / 1000
    MEASURES.append(
        common.Measure("send", rtt_ms, tether.median, plain.median, "ssh host python3 -c",
                       f"<= {goal * 1000:.0f} ms", common.verdict(tether.median <= goal), runs)
    )  # fmt: skip
    MEASURES.append(common.Measure("cold send", rtt_ms, cold, None, "", "", "", 1))
    row = [
        f"{rtt_ms} ms",
        f"{tether.median * 1000:.0f}",
        f"{(tether.median - rtt_ms / 1000) * 1000:.0f}",
        f"{plain.median * 1000:.0f}",
        common.ratio(tether.median, plain.median),
        f"<= {goal * 1000:.0f}",
        MEASURES[-2].verdict,
        f"{cold * 1000:.0f}",
        f"{tether.spread()} / {plain.spread()}",
    ]
    return row, cold


def bench_autoreload(box: Sandbox, runs: int) -> list[list[str]]:
    """Rows: a client's execute round trip with autoreload on and off (0 ms RTT)."""
    from jupyter_client.blocking.client import BlockingKernelClient

    from tether import config
    from tether.kernel import names

    root = Path(box.home).parent / "send-autoreload"
    common.remove(root)
    project(root, box.name, "~/send-autoreload")
    common.start_master(box.name)
    try:
        send(root)
        target = config.load(root).one(None)
        path = names.local_file(target, names.kernel_name(target, None))
        client = BlockingKernelClient(connection_file=str(path))
        client.load_connection_file()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            loaded: list[str] = []

            def keep(message: dict[str, object]) -> None:
                if message.get("msg_type") == "stream":
                    loaded.append(str(message["content"]["text"]).strip())  # type: ignore[index]

            client.execute_interactive(LOAD_MODULES, output_hook=keep, timeout=600)

            def execute() -> None:
                client.execute_interactive(CODE, output_hook=lambda m: None, timeout=60)

            rows = []
            for mode in ("2", "0"):
                client.execute_interactive(f"%autoreload {mode}", timeout=60)
                timing = common.side_by_side(runs, {"execute": execute})["execute"]
                rows.append(
                    [
                        "on (%autoreload 2)" if mode == "2" else "off (%autoreload 0)",
                        "".join(loaded[-1:]),
                        f"{timing.median * 1000:.1f}",
                        timing.spread(),
                    ]
                )
            client.execute_interactive("%autoreload 2", timeout=60)
        finally:
            client.stop_channels()
    finally:
        common.run([common.tether_bin(), "kernel", "stop"], cwd=root)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = common.arguments(__doc__ or "", argv)
    runs = args.runs or (5 if args.small else RUNS)
    table = common.Table(
        "tether send: print(1) from process start to output, vs ssh python3 -c",
        [
            "RTT",
            "send ms",
            "send - RTT ms",
            "ssh ms",
            "send/ssh",
            "goal ms",
            "",
            "cold send ms",
            "spread s",
        ],
    )
    with common.isolated(), common.sandbox(SANDBOX) as box:
        for rtt_ms in RTTS_MS:
            row, _ = bench_rtt(box, rtt_ms, runs)
            table.rows.append(row)
    table.notes += [
        f"median of {runs}, interleaved; warm = kernel and send helper started; "
        "50 ms = 25 ms each way (proxy)",
        f"goal (issue #26): RTT + {GOAL_EXTRA_MS} ms; ssh = `ssh ALIAS python3 -c "
        "'print(1)'` over tether's warm ControlMaster; cold = first send (kernel start, "
        "forwards, helper)",
    ]
    reload_table = common.Table(
        "execute round trip of print(1) from a Jupyter client: autoreload on and off",
        ["autoreload", "modules loaded", "execute ms", "spread s"],
    )
    with common.isolated(), common.sandbox(SANDBOX) as box:
        reload_table.rows += bench_autoreload(box, runs * 3)
    reload_table.notes += [
        f"median of {runs * 3}; the client reads the kernel's local connection file (ipc "
        "over tether's forwards, 0 ms added RTT), as a notebook's kernel proxy does",
    ]
    common.report(
        [table, reload_table],
        args.results,
        "bench/send.py",
        MEASURES,
        "send",
        common.variant_of(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
