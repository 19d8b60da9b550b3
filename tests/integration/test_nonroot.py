"""tether as a normal user: a sandbox it starts, ptys, its runtime dir, a PEP 668 python.

The suite runs as root in CI, which hides what users hit: an unprivileged sshd cannot give
a pty to the `tty` group where devpts has no `gid=5` (then `tether shell` and `tether
attach` died with "chown(/dev/pts/N) failed"), the runtime dir is /tmp/tether-<uid>, and
pip refuses a system python. These tests run the installed CLI as a throwaway user
(tests/harness/nonroot.py), skipped with the reason where the suite is not root.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.harness import ptys
from tests.harness.nonroot import SYSTEM_PYTHON, NonRootUser

pytestmark = pytest.mark.integration

JOB = "import time\nprint('JOB-SAYS-' + str(6 * 7), flush=True)\ntime.sleep(600)\n"


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def make_project(user: NonRootUser, name: str) -> Path:
    """A committed git repository in the user's home, owned by the user."""
    root = user.home / name
    ok(user.run(["mkdir", "-p", str(root / "pkg")]))
    for rel, text in {"train.py": "print('train')\n", "pkg/__init__.py": ""}.items():
        ok(user.run(["sh", "-c", 'cat > "$1"', "sh", str(root / rel)], input=text))
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                 ["git", "commit", "-q", "-m", "initial"]):  # fmt: skip
        ok(user.run(argv, cwd=root))
    return root


def externally_managed(python: str) -> bool:
    """Whether PYTHON carries PEP 668's marker (pip refuses to install into it)."""
    probe = (
        "import os, sysconfig; "
        "print(os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))"
    )
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30)
    return done.stdout.strip() == "True"


def master_pid(user: NonRootUser, host: str) -> int:
    """The pid of tether's ControlMaster for host, as `ssh -O check` reports it."""
    path = f"ControlPath={user.runtime_dir}/%C-%n"
    done = user.run(["ssh", "-o", path, "-O", "check", "--", host])
    found = re.search(r"Master running \(pid=(\d+)\)", done.stderr)
    assert done.returncode == 0 and found, f"no master for {host}: {done.stderr}"
    return int(found.group(1))


def test_a_normal_users_sandbox_gives_shell_and_attach_a_pty(nonroot_user: NonRootUser) -> None:
    """up -> init -> push (runtime dir 0700) -> shell and attach under a pty, the shared
    master untouched -> a PEP 668 python in one line -> down leaves no process."""
    user = nonroot_user
    box = f"nr{uuid.uuid4().hex[:6]}"
    tether = str(user.venv / "bin" / "tether")
    ok(user.tether("sandbox", "up", box))
    on_ptys: list[ptys.PtyProcess] = []
    try:
        project = make_project(user, f"proj-{box}")
        ok(user.tether("init", "--host", box, "--path", "~/proj", "--python", "/usr/bin/python3",
                       cwd=project))  # fmt: skip
        ok(user.tether("push", cwd=project))
        (info,) = [b for b in json.loads(ok(user.tether("sandbox", "ls", "--json")).stdout)
                   if b["name"] == box]  # fmt: skip
        remote = Path(info["home"]) / "proj"
        assert (remote / "train.py").read_text() == "print('train')\n"

        # No XDG_RUNTIME_DIR: the runtime dir is /tmp/tether-<uid>, the user's alone, and
        # the master's control socket lives there.
        st = os.lstat(user.runtime_dir)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == user.uid, st
        assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
        master = master_pid(user, box)

        shell = user.pty_spawn([tether, "shell"], cwd=project)
        on_ptys.append(shell)
        shell.send(b"echo WHERE=$(pwd); tty; exit 7\n")
        code = shell.wait()
        assert master_pid(user, box) == master  # its own connection: the master lives on
        assert code == 7, shell.text()  # sshd gave the session a pty (no chown failure)
        assert f"WHERE={remote}" in shell.text(), shell.text()
        assert re.search(r"/dev/pts/\d+", shell.text()), shell.text()

        ok(user.tether("run", "--name", "talk", "--", "python3", "-c", JOB, cwd=project))
        attach = user.pty_spawn([tether, "attach", "talk"], cwd=project)
        on_ptys.append(attach)
        attach.expect(b"JOB-SAYS-42")  # tmux's screen of the job's session
        ptys.tmux_detach(attach)
        assert attach.wait() == 0, attach.text()
        assert master_pid(user, box) == master
        jobs = json.loads(ok(user.tether("jobs", "--json", cwd=project)).stdout)
        assert [job["state"] for job in jobs if job["name"] == "talk"] == ["running"], jobs
        ok(user.tether("kill", "talk", "--grace", "1", cwd=project))

        if externally_managed(SYSTEM_PYTHON):  # Debian 12, Ubuntu 23.04+
            install = user.tether("kernel", "install", "--yes", cwd=project)
            assert install.returncode == 1, install.stdout + install.stderr
            (line,) = install.stderr.splitlines()
            assert line.startswith("tether: error: ") and "PEP 668" in line, line
    finally:
        for process in on_ptys:
            process.close()
        down = user.tether("sandbox", "down", box)
    ok(down)
    left = [cmd for _, cmd in user.processes() if "tether.cli.daemon" not in cmd]
    assert left == [], left  # the sync daemon is the user's, not the sandbox's
