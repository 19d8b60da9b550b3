"""`tether demo`: the tour on a throwaway sandbox, narrated, leaving nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tether.errors import TetherError

T = TypeVar("T")

TRAIN = '''"""A tiny stand-in for a training script: writes metrics under outputs/."""
import json, os, sys
from model import predict

lr = float(sys.argv[1]) if len(sys.argv) > 1 else 0.1
loss = sum((predict(x, lr) - 2 * x) ** 2 for x in range(10))
os.makedirs("outputs", exist_ok=True)
with open("outputs/metrics.json", "w") as f:
    json.dump({"lr": lr, "loss": loss}, f)
print(f"lr={lr} loss={loss:.3f}")
'''
MODEL = "def predict(x, lr):\n    return x * (1 + lr)\n"


class Narrator:
    """One line per step with its timing."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.count = 0

    def step(self, title: str, action: Callable[[], T]) -> T:
        self.count += 1
        started = time.monotonic()
        result = action()
        elapsed = (time.monotonic() - started) * 1000
        self.say(f"[bold]{self.count:>2}.[/bold] {title} [dim]({elapsed:.0f} ms)[/dim]")
        return result


def run_demo(say: Callable[[str], None]) -> None:
    """Run the tour; raise TetherError if any step fails. Cleans up in every case."""
    from tether.config import load
    from tether.hosts import sandbox, sshconfig
    from tether.hosts.check import check_host
    from tether.project import init_project
    from tether.sync.runner import sync

    name = f"tether-demo-{os.getpid()}"
    config_file = sshconfig.config_path()
    before = config_file.read_bytes() if config_file.exists() else None
    side_files = [config_file.parent, *(config_file.with_name(n) for n in _SIDE_FILES)]
    existed = {path: path.exists() for path in side_files}
    workdir = Path(tempfile.mkdtemp(prefix="tether-demo-"))
    project = workdir / "proj"
    narrator = Narrator(say)
    up = False
    cwd = Path.cwd()
    try:
        narrator.step(f"sandbox up {name}: a real sshd on 127.0.0.1", lambda: sandbox.up(name))
        up = True
        narrator.step(
            "plain `ssh` reaches it through the stanza tether wrote", lambda: _ssh(name, ["true"])
        )
        narrator.step("create a small ML project (git repo)", lambda: _make_project(project))
        os.chdir(project)
        narrator.step(
            f"tether init --host {name} --path ~/proj",
            lambda: init_project(project, name, "~/proj", "demo", "python3", False),
        )
        config = load(project)
        targets = config.pick([])
        reports = narrator.step(
            "tether push (first push)",
            lambda: asyncio.run(sync(config, targets, "push", None, False, False)),
        )
        say(f"    {reports[0].created} files sent")
        (project / "model.py").write_text(MODEL.replace("1 + lr", "2 - lr"))
        reports = narrator.step(
            "edit model.py, tether push again (one file)",
            lambda: asyncio.run(sync(config, targets, "push", None, False, False)),
        )
        say(f"    {reports[0].updated} updated")
        output = narrator.step(
            "run train.py on the remote (over the same ControlMaster)",
            lambda: _ssh(name, ["cd proj && python3 train.py 0.5"], raw=True),
        )
        say(f"    remote says: {output.strip()}")
        narrator.step(
            "tether pull (results: outputs/)",
            lambda: asyncio.run(sync(config, targets, "pull", None, False, False)),
        )
        metrics = (project / "outputs" / "metrics.json").read_text()
        say(f"    outputs/metrics.json here: {metrics}")
        report = narrator.step("tether host check", lambda: asyncio.run(check_host(name)))
        probe = report.probe
        say(
            f"    rtt {report.rtt_ms:.1f} ms, python {probe.get('python')}, "
            f"tmux {probe.get('tmux') or 'missing'}, GPUs {len(probe.get('gpus') or [])}"
        )
    finally:
        os.chdir(cwd)
        if up:
            narrator.step(f"sandbox down {name}", lambda: sandbox.down(name))
        shutil.rmtree(workdir, ignore_errors=True)
        _remove_created(existed)
    after = config_file.read_bytes() if config_file.exists() else None
    if after != before:
        raise TetherError("~/.ssh/config differs after the demo", "this is a bug in tether")
    say("~/.ssh/config is byte-identical to before; no process or port left behind.")


_SIDE_FILES = ("config.tether.bak", "config.tether.lock")


def _remove_created(existed: dict[Path, bool]) -> None:
    """Remove ~/.ssh side files (backup, lock) and ~/.ssh itself if the demo created them."""
    for path in sorted(existed, key=lambda p: -len(str(p))):
        if existed[path] or not path.exists():
            continue
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()
        else:
            path.unlink()


def _make_project(project: Path) -> None:
    project.mkdir(parents=True)
    (project / "train.py").write_text(TRAIN)
    (project / "model.py").write_text(MODEL)
    (project / "README.md").write_text("# demo project\n")
    (project / ".gitignore").write_text("outputs/\n__pycache__/\n")
    data = project / "data"
    data.mkdir()
    for index in range(20):
        (data / f"shard-{index:02d}.csv").write_text(
            "".join(f"{i},{i * 2}\n" for i in range(index * 50))
        )
    git = ["git", "-C", str(project)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run(
        [
            *git,
            "-c",
            "user.name=demo",
            "-c",
            "user.email=demo@example.invalid",
            "commit",
            "-qm",
            "init",
        ],
        check=True,
    )


def _ssh(host: str, argv: list[str], raw: bool = False) -> str:
    from tether.transport.ssh import SshTransport

    transport = SshTransport(host)
    # raw: a fixed demo command line (no user text), run by the remote shell as written.
    command = [*transport.argv(None), "--", argv[0]] if raw else transport.argv(argv)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise TetherError(
            f"ssh {host} failed",
            done.stderr.strip().splitlines()[-1:][0]
            if done.stderr.strip()
            else f"exit {done.returncode}",
        )
    return done.stdout
