"""Test harness: one isolated fake HOME per session, real sshd sandboxes, a latency proxy.

Fixtures:
  sandbox         session: sandbox "tt-box1" up for the whole session (a Sandbox)
  sandbox2        session: a second sandbox "tt-box2", started on first use
  fresh_sandbox   function: factory `make(prefix="tt-f") -> Sandbox`, unique names, all
                  downed at the end of the test
  tmux_socket     function: a unique tmux socket name `tether-test-<hex>`; its server is
                  killed afterwards (locally and in every sandbox that is up)
  proxy           function: a started Proxy to tt-box1's sshd (tests/harness/proxy.py)
  proxy_alias     function: an ssh alias that reaches tt-box1 through `proxy`
  project         function: a small git repository (Path) with a few committed files
  tether_cli      function: run(*args) -> CompletedProcess, the CLI as a subprocess
  test_env        session: the TestEnv (fake home, runtime dir, passwd copy)
  nonroot_user    session: a throwaway normal user running this checkout's tether
                  (tests/harness/nonroot.py); skipped, with the reason, where the suite
                  does not run as root
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tests.harness import env as harness

if TYPE_CHECKING:
    from tests.harness.nonroot import NonRootUser
    from tests.harness.proxy import Proxy
    from tether.hosts.sandbox import Sandbox

_ENV: harness.TestEnv | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Isolate HOME, XDG dirs, the runtime dir and the passwd home before any test runs."""
    global _ENV
    config.addinivalue_line("markers", "integration: needs a real sshd sandbox")
    if _ENV is not None:
        return
    try:
        _ENV = harness.setup()
    except harness.IsolationError as error:
        pytest.exit(str(error), returncode=4)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if anything the harness started is still alive, or ~/.ssh changed."""
    if _ENV is None:
        return
    problems: list[str] = []
    from tests.harness import proxy as proxy_module

    for running in list(proxy_module.RUNNING):
        problems.append(f"proxy on port {running.port} was never stopped")
        running.stop()
    try:
        from tether.hosts import sandbox as sandbox_module

        for info in sandbox_module.ls():
            if info.state == "up":
                problems.append(f"sandbox {info.name} (sshd pid {info.pid}) is still up")
                try:
                    sandbox_module.down(info.name)
                except Exception as error:
                    problems.append(f"sandbox down {info.name} failed: {error}")
    except Exception as error:
        problems.append(f"could not list sandboxes: {error}")
    try:  # the sync daemon `tether push` starts lives on after the command (by design)
        from tether.cli import daemon

        daemon.stop_all()
    except Exception as error:
        problems.append(f"could not stop the sync daemon: {error}")
    left = harness.wait_for_leftovers(_ENV)
    for pid, cmdline in left:
        problems.append(f"process {pid} is still alive: {cmdline[:160]}")
    from tether.hosts.processes import terminate

    terminate([pid for pid, _ in left])  # exactly these pids (found by session_processes)
    changed = harness.real_ssh_changed(_ENV)
    if changed:
        problems.append(f"the REAL {_ENV.real_ssh_dir} changed during the tests: {changed}")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for line in problems:
            text = f"tether harness: leftover: {line}"
            if reporter is not None:
                reporter.write_line(text, red=True)
            else:
                sys.stderr.write(text + "\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the fake HOME."""
    global _ENV
    if _ENV is not None:
        harness.teardown(_ENV)
        _ENV = None


@pytest.fixture(scope="session")
def test_env() -> harness.TestEnv:
    """The session's isolated environment."""
    assert _ENV is not None
    return _ENV


@pytest.fixture(scope="session")
def nonroot_user() -> Iterator[NonRootUser]:
    """A throwaway normal user with tether installed, removed (with all its processes) at
    the end of the session; anything of it still running then fails the session."""
    from tests.harness import nonroot

    try:
        user = nonroot.create()
    except nonroot.NonRootUnavailable as why:
        pytest.skip(f"needs a throwaway non-root user: {why}")
    try:
        yield user
    finally:
        left = nonroot.destroy(user)
    if left:
        pytest.fail(f"processes of {user.name} were still running at the end: {left}")


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """Sandbox "tt-box1", up for the whole session and downed at its end."""
    with harness.sandbox_up("tt-box1") as box:
        yield box


@pytest.fixture(scope="session")
def sandbox2() -> Iterator[Sandbox]:
    """A second sandbox "tt-box2" (own home, own tmux), started on first use."""
    with harness.sandbox_up("tt-box2") as box:
        yield box


@pytest.fixture
def fresh_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Factory: make(prefix="tt-f") starts a sandbox with a unique name; all downed after."""
    from tether.hosts import sandbox as sandbox_module

    made: list[str] = []

    def make(prefix: str = "tt-f") -> Sandbox:
        name = f"{prefix}{uuid.uuid4().hex[:6]}"
        made.append(name)
        return sandbox_module.up(name)

    yield make
    errors = []
    for name in reversed(made):
        if sandbox_module.sandbox_dir(name).exists():
            try:
                sandbox_module.down(name)
            except Exception as error:
                errors.append(f"{name}: {error}")
    if errors:
        pytest.fail(f"fresh_sandbox teardown failed: {errors}")


@pytest.fixture
def tmux_socket() -> Iterator[str]:
    """A unique tmux socket name (`tmux -L NAME`); its servers are killed afterwards."""
    import os

    from tether.hosts import sandbox as sandbox_module

    name = f"tether-test-{uuid.uuid4().hex[:12]}"
    yield name
    argvs = [["tmux", "-L", name, "kill-server"]]
    for info in sandbox_module.ls():
        box_dir = sandbox_module.sandbox_dir(info.name)
        if info.state == "up" and box_dir.exists():
            box = sandbox_module.get(info.name)
            socket_path = box.tmux_tmpdir / f"tmux-{os.getuid()}" / name
            if socket_path.exists():
                argvs.append(["tmux", "-S", str(socket_path), "kill-server"])
    for argv in argvs:
        subprocess.run(argv, capture_output=True, timeout=10, check=False)


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[Proxy]:
    """A started latency/cut proxy in front of tt-box1's sshd (delay 0; set_delay to change)."""
    from tests.harness.proxy import Proxy

    with Proxy("127.0.0.1", sandbox.port) as started:
        yield started


@pytest.fixture
def proxy_alias(sandbox: Sandbox, proxy: Proxy) -> Iterator[str]:
    """An ssh alias (stanza in the fake ~/.ssh/config) that reaches tt-box1 via `proxy`."""
    from tests.harness.proxy import drop_alias, proxied_alias

    alias = proxied_alias(sandbox, proxy)
    try:
        yield alias
    finally:
        drop_alias(alias)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small git repository with a few committed files."""
    return harness.make_git_project(
        tmp_path / "proj",
        "import sys\nfrom pkg.model import forward\n\nprint(forward(int(sys.argv[1]) if "
        "len(sys.argv) > 1 else 21))\n",
    )


@pytest.fixture
def tether_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """run(*args, timeout=120, input=None): the tether CLI as a subprocess."""
    return harness.run_tether
