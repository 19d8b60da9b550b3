"""`tether demo`: the tour on a throwaway sandbox, narrated, leaving nothing behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tether import invocation
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
    from tether.hosts import sandbox, sshconfig

    name = f"tether-demo-{os.getpid()}"
    second = f"tether-demo2-{os.getpid()}"
    config_file = sshconfig.config_path()
    before = config_file.read_bytes() if config_file.exists() else None
    side_files = [config_file.parent, *(config_file.with_name(n) for n in _SIDE_FILES)]
    existed = {path: path.exists() for path in side_files}
    workdir = Path(tempfile.mkdtemp(prefix="tether-demo-"))
    project = workdir / "proj"
    narrator = Narrator(say)
    up = False
    up_second = False
    from tether.cli import daemon

    daemons = set(daemon.running())
    try:
        box = narrator.step(
            f"sandbox up {name}: a real sshd on 127.0.0.1", lambda: sandbox.up(name)
        )
        up = True
        narrator.step(
            "plain `ssh` reaches it through the stanza tether wrote", lambda: _ssh(name, ["true"])
        )
        narrator.step("create a small ML project (git repo)", lambda: _make_project(project))
        # The sandbox runs on this machine: its "remote" python can be ours (has ipykernel).
        tour = _Tour(project, name, narrator, say)
        tour.cli("init", "--host", name, "--path", "~/proj", "--target", "demo",
                 "--python", sys.executable)  # fmt: skip
        tour.cli("push", show=True)
        narrator.step(f"sandbox up {second}: a second remote", lambda: sandbox.up(second))
        up_second = True
        tour.cli("target", "add", "gpu2", "--host", second, "--path", "~/proj",
                 "--python", sys.executable)  # fmt: skip
        tour.cli("push", show=True)
        tour.watch_edit()
        tour.cli("run", "--on", "demo", "--name", "train", "--no-push", "--",
                 "python", "train.py", "0.5")  # fmt: skip
        tour.cli("wait", "train", show=True)
        tour.cli("logs", "train", show=True)
        tour.cli("jobs", show=True)
        tour.cli("pull", show=True)
        say(f"    outputs/metrics.json here: {(project / 'outputs' / 'metrics.json').read_text()}")
        tour.cli("send", stdin="from model import predict\nprint(predict(3, 0.5))\n", show=True)
        tour.cli("kernel", "stop")
        tour.cli("status", show=True)
    finally:
        daemon.stop_all(keep=daemons)  # the sync daemon our pushes started (none is left)
        if up_second:
            narrator.step(f"sandbox down {second}", lambda: sandbox.down(second))
        if up:
            narrator.step(f"sandbox down {name}", lambda: sandbox.down(name))
        shutil.rmtree(workdir, ignore_errors=True)
        _remove_created(existed)
    after = config_file.read_bytes() if config_file.exists() else None
    if after != before:
        raise TetherError("~/.ssh/config differs after the demo", "this is a bug in tether")
    if up and _left_behind(box.pid, box.port):
        raise TetherError("the demo's sshd is still running", "this is a bug in tether")
    say("~/.ssh/config is byte-identical to before; no process or port left behind.")


def _left_behind(pid: int, port: int) -> bool:
    """Whether the sandbox's sshd still runs or its port still accepts connections."""
    import socket

    from tether.hosts.processes import alive

    with socket.socket() as probe:
        probe.settimeout(1)
        listening = probe.connect_ex(("127.0.0.1", port)) == 0
    return listening or alive(pid)


class _Tour:
    """Runs real `tether` commands in the demo project, one narrated step each."""

    def __init__(
        self, project: Path, host: str, narrator: Narrator, say: Callable[[str], None]
    ) -> None:
        self.project = project
        self.host = host
        self.narrator = narrator
        self.say = say

    def cli(self, *args: str, stdin: str | None = None, show: bool = False) -> str:
        argv = [sys.executable, "-m", "tether", *args]
        env = dict(
            invocation.environ(), COLUMNS=str(max(60, shutil.get_terminal_size().columns - 4))
        )
        done = self.narrator.step(
            "tether " + " ".join(args),
            lambda: subprocess.run(
                argv,
                cwd=self.project,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            ),
        )
        if done.returncode != 0:
            output = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise TetherError(f"demo step `tether {' '.join(args)}` failed", " / ".join(output))
        if show:
            for line in done.stdout.strip().splitlines()[:12]:
                self.say(f"    {line}")
        return done.stdout

    def watch_edit(self) -> None:
        """Start `tether watch`, save an edit, and time until it is on the remote."""
        from tether.hosts.processes import end_process

        watch = subprocess.Popen(
            [sys.executable, "-m", "tether", "watch"],
            cwd=self.project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=invocation.spawn_env(),
        )
        try:
            time.sleep(1.0)
            edited = MODEL.replace("1 + lr", "2 - lr")
            self.narrator.step(
                "tether watch: save model.py, wait until the remote has it",
                lambda: self._until_remote("model.py", edited),
            )
        finally:
            end_process(watch, signal.SIGINT, grace_s=15)

    def _until_remote(self, path: str, content: str) -> None:
        (self.project / path).write_text(content)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _ssh(self.host, ["cat", f"proj/{path}"]) == content:
                return
            time.sleep(0.05)
        raise TetherError("watch did not carry the edit over within 15 s")


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
    subprocess.run([*git, "init", "-q"], check=True, env=invocation.spawn_env())
    subprocess.run([*git, "add", "."], check=True, env=invocation.spawn_env())
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
        env=invocation.spawn_env(),
    )


def _ssh(host: str, argv: list[str], raw: bool = False) -> str:
    from tether.transport.ssh import SshTransport

    transport = SshTransport(host)
    # raw: a fixed demo command line (no user text), run by the remote shell as written.
    command = [*transport.argv(None), "--", argv[0]] if raw else transport.argv(argv)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=invocation.spawn_env()
    )
    if done.returncode != 0:
        raise TetherError(
            f"ssh {host} failed",
            done.stderr.strip().splitlines()[-1:][0]
            if done.stderr.strip()
            else f"exit {done.returncode}",
        )
    return done.stdout
