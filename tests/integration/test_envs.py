"""Remote envs (issue #24) against a sandbox whose python is the Debian system python
(PEP 668: pip may not install into it): `env sync` builds a venv from the project's
requirements.txt (+ ipykernel) under ~/.cache/tether/envs/<digest>; jobs and the kernel
run in it; a changed spec builds a new env while earlier jobs keep theirs; a broken
requirement is one line and changes nothing jobs use; a cut build leaves no env."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import tomllib

from tests.harness import env as harness
from tests.harness.env import write_config
from tests.integration.conftest import describe, one_error_line
from tests.integration.test_jobs import wait_job

pytestmark = pytest.mark.integration

Cli = Callable[..., subprocess.CompletedProcess[str]]
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGE = "tabulate"  # small, pure Python, and not in Debian's python3 here
OLD, NEW = "0.9.0", "0.8.10"
PRINT_VERSION = f"import sys, {PACKAGE}; print({PACKAGE}.__version__, sys.prefix)"


def system_python_lacks_the_package() -> bool:
    done = subprocess.run([SYSTEM_PYTHON, "-c", f"import {PACKAGE}"], capture_output=True)
    return done.returncode != 0


@pytest.fixture
def env_project(
    sandbox: Any, project: Path, tmux_socket: str, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The project with requirements.txt pinning PACKAGE==OLD, targeting the sandbox with
    the system python (the remote dir is unique); returns the sandbox's home."""
    assert system_python_lacks_the_package(), f"{SYSTEM_PYTHON} already has {PACKAGE}"
    monkeypatch.chdir(project)
    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    (project / "requirements.txt").write_text(f"{PACKAGE}=={OLD}\n")
    remote = f"~/envs-{uuid.uuid4().hex[:8]}"
    write_config(
        project / "tether.toml",
        f'[targets.box]\nhost = "{sandbox.name}"\npath = "{remote}"\n'
        f'python = "{SYSTEM_PYTHON}"\ndefault = true\n',
    )
    return Path(sandbox.home)


def envs_of(home: Path) -> dict[str, dict[str, Any]]:
    """Complete envs on the sandbox: digest -> their tether-env.json."""
    top = home / ".cache" / "tether" / "envs"
    found = {}
    for meta in top.glob("*/tether-env.json"):
        found[meta.parent.name] = json.loads(meta.read_text())
    return found


def leftovers(home: Path) -> list[str]:
    top = home / ".cache" / "tether" / "envs"
    return sorted(p.name for p in top.glob(".tmp-*")) if top.is_dir() else []


def record_of(home: Path, name: str) -> dict[str, Any]:
    """The newest job record called name (other tests' jobs share the sandbox's home)."""
    found = (home / ".local" / "share" / "tether" / "jobs").glob(f"*-{name}.json")
    path = max(found, key=lambda p: p.stat().st_mtime_ns)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def log_of(cli: Cli, name: str) -> str:
    done = cli("logs", name)
    assert done.returncode == 0, describe(done)
    return done.stdout


def test_env_sync_then_a_job_and_the_console_import_the_package(
    env_project: Path, tether_cli: Cli
) -> None:
    home = env_project
    done = tether_cli("env", "sync", timeout=600)
    assert done.returncode == 0, describe(done)
    assert f"{PACKAGE}=={OLD}" in done.stdout, describe(done)
    # The host's env of this spec (other tests' specs may pin the same package).
    listed = tether_cli("env", "status", "--json")
    assert listed.returncode == 0, describe(listed)
    [row] = json.loads(listed.stdout)
    digest = row["env_digest"]
    assert row["built"] and f"{PACKAGE}=={OLD}" in envs_of(home)[digest]["packages"], row
    again = tether_cli("env", "sync")
    assert again.returncode == 0 and "up to date" in again.stdout, describe(again)
    status = tether_cli("status", "--json")
    assert status.returncode == 0, describe(status)
    shown_env = {"spec": "requirements.txt", "digest": digest, "built": True}
    assert json.loads(status.stdout)[0]["env"] == dict(shown_env, python_version=ANY)
    started = tether_cli("run", "--name", "imp", "--", "python", "-c", PRINT_VERSION)
    assert started.returncode == 0, describe(started)
    assert "building" not in started.stderr, "run rebuilt an env that was there"
    assert wait_job(tether_cli, "imp")["exit_code"] == 0, log_of(tether_cli, "imp")
    env_dir = home / ".cache" / "tether" / "envs" / digest
    assert log_of(tether_cli, "imp").split() == [OLD, str(env_dir)]
    shown = tether_cli("show", "imp", "--json")
    assert shown.returncode == 0, describe(shown)
    record = json.loads(shown.stdout)
    assert (record["env_digest"], record["python_path"]) == (digest, f"{env_dir}/bin/python")
    assert f"{PACKAGE}=={OLD}" in record["packages"]
    text = tether_cli("show", "imp").stdout
    assert f"{digest} ({env_dir})" in text
    try:
        sent = tether_cli("send", input=f"import {PACKAGE}\nprint({PACKAGE}.__version__)\n")
        assert sent.returncode == 0, describe(sent)
        assert sent.stdout.strip() == OLD
    finally:
        tether_cli("kernel", "stop")


def test_a_changed_spec_builds_a_new_env_and_an_earlier_job_keeps_its_own(
    env_project: Path, project: Path, tether_cli: Cli
) -> None:
    home = env_project
    gate = home / f"go-{uuid.uuid4().hex[:6]}"
    waiter = f"while [ ! -e {gate} ]; do sleep 0.1; done; exec python -c '{PRINT_VERSION}'"
    first = tether_cli("run", "--name", "early", "--", "sh", "-c", waiter, timeout=600)
    assert first.returncode == 0, describe(first)  # run built the env first
    (project / "requirements.txt").write_text(f"{PACKAGE}=={NEW}\n")
    status = tether_cli("env", "status")
    assert status.returncode == 0, describe(status)
    assert f"{PACKAGE}: {OLD} -> {NEW}" in status.stdout, describe(status)
    assert "not built" in status.stdout
    later = tether_cli("run", "--name", "late", "--", "python", "-c", PRINT_VERSION, timeout=600)
    assert later.returncode == 0, describe(later)
    assert wait_job(tether_cli, "late")["exit_code"] == 0, log_of(tether_cli, "late")
    assert log_of(tether_cli, "late").split()[0] == NEW
    gate.touch()
    assert wait_job(tether_cli, "early")["exit_code"] == 0, log_of(tether_cli, "early")
    assert log_of(tether_cli, "early").split()[0] == OLD
    early, late = record_of(home, "early")["env_digest"], record_of(home, "late")["env_digest"]
    assert early != late and {early, late} <= set(envs_of(home))
    again = tether_cli("restart", "early")  # same code, same env
    assert again.returncode == 0, describe(again)
    assert wait_job(tether_cli, "early-2")["exit_code"] == 0, log_of(tether_cli, "early-2")
    assert log_of(tether_cli, "early-2").split()[0] == OLD
    assert record_of(home, "early-2")["env_digest"] == early
    pruned = tether_cli("env", "prune")
    assert pruned.returncode == 0, describe(pruned)
    assert {early, late} <= set(envs_of(home)), "prune removed an env a job record names"


def test_a_broken_requirement_is_one_line_and_the_previous_env_keeps_working(
    env_project: Path, project: Path, tether_cli: Cli
) -> None:
    home = env_project
    done = tether_cli("env", "sync", timeout=600)
    assert done.returncode == 0, describe(done)
    before = envs_of(home)
    broken = "tether-no-such-package-xyz"
    (project / "requirements.txt").write_text(f"{PACKAGE}=={OLD}\n{broken}==1.0\n")
    failed = tether_cli("env", "sync", timeout=600)
    assert failed.returncode == 1
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith("tether: error: building the env on box failed"), describe(failed)
    assert broken in line, describe(failed)
    assert "Traceback" not in failed.stderr
    assert envs_of(home) == before and leftovers(home) == []
    refused = tether_cli("run", "--no-env-sync", "--name", "nope", "--", "python", "-c", "1")
    assert refused.returncode == 1
    assert "not built" in one_error_line(refused)
    (project / "requirements.txt").write_text(f"{PACKAGE}=={OLD}\n")
    started = tether_cli(
        "run", "--no-env-sync", "--name", "back", "--", "python", "-c", PRINT_VERSION
    )
    assert started.returncode == 0, describe(started)
    assert wait_job(tether_cli, "back")["exit_code"] == 0
    assert log_of(tether_cli, "back").split()[0] == OLD


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A local TCP port that accepts connections and never answers (an index that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        for conn in held:
            conn.close()
        thread.join(timeout=5)


def test_a_build_cut_through_the_proxy_leaves_no_env_and_the_next_sync_builds_it(
    env_project: Path, project: Path, proxy: Any, proxy_alias: str, tether_cli: Cli
) -> None:
    home = env_project
    warm = tether_cli("env", "sync", timeout=600)  # tether's uv is there from now on
    assert warm.returncode == 0, describe(warm)
    # A spec of its own, built through the cutting proxy; the remote's pip.conf names an
    # extra index that never answers, so the build is certainly under way at the cut.
    (project / "requirements.txt").write_text(f"{PACKAGE}=={OLD}\niniconfig==2.0.0\n")
    config = (project / "tether.toml").read_text().splitlines()
    config[1] = f'host = "{proxy_alias}"'
    write_config(project / "tether.toml", "\n".join(config) + "\n")
    pip_conf = home / ".config" / "pip" / "pip.conf"
    pip_conf.parent.mkdir(parents=True, exist_ok=True)
    with black_hole() as port:
        pip_conf.write_text(f"[global]\nextra-index-url = http://127.0.0.1:{port}/simple\n")
        process = subprocess.Popen(
            harness.tether_argv("env", "sync"), cwd=project, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not leftovers(home) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert leftovers(home), "the build never started"
            time.sleep(1.0)  # uv is waiting for the index
            proxy.refuse(True)
            proxy.cut()
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 1, err
    assert "tether: error: lost the connection" in err, err
    deadline = time.monotonic() + 30
    while leftovers(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers(home) == [], "the cut build left its temporary tree"
    assert not [m for m in envs_of(home).values() if "iniconfig==2.0.0" in m["packages"]]
    pip_conf.unlink()
    proxy.refuse(False)
    again = tether_cli("env", "sync", timeout=600)
    assert again.returncode == 0, describe(again)
    assert [m for m in envs_of(home).values() if "iniconfig==2.0.0" in m["packages"]]


def test_pyproject_dependencies_then_a_uv_lock_make_the_env(
    env_project: Path, project: Path, tether_cli: Cli
) -> None:
    home = env_project
    (project / "requirements.txt").unlink()
    pyproject = '[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
    (project / "pyproject.toml").write_text(pyproject + 'dependencies = ["tabulate<0.9"]\n')
    done = tether_cli("env", "sync", timeout=600)
    assert done.returncode == 0, describe(done)
    assert "for pyproject.toml" in done.stdout and f"{PACKAGE}=={NEW}" in done.stdout, describe(
        done
    )
    # The same project locked by uv (tether's own, from the sandbox) at another version.
    (project / "pyproject.toml").write_text(pyproject + 'dependencies = ["tabulate"]\n')
    (uv,) = (home / ".cache" / "tether" / "uv").glob("*/uv")
    env = {**os.environ, "UV_SYSTEM_CERTS": "1", "UV_NATIVE_TLS": "1"}
    env["UV_CACHE_DIR"] = str(home / ".cache" / "tether" / "uv-cache")
    locked = subprocess.run([uv, "lock", "--quiet"], cwd=project, env=env, capture_output=True)
    assert locked.returncode == 0, locked.stderr
    lock = tomllib.loads((project / "uv.lock").read_text())
    (pinned,) = [p["version"] for p in lock["package"] if p["name"] == PACKAGE]
    assert pinned != NEW
    started = tether_cli(
        "run", "--name", "locked", "--", "python", "-c", PRINT_VERSION, timeout=600
    )
    assert started.returncode == 0, describe(started)
    assert wait_job(tether_cli, "locked")["exit_code"] == 0, log_of(tether_cli, "locked")
    assert log_of(tether_cli, "locked").split()[0] == pinned
    digest = record_of(home, "locked")["env_digest"]
    assert envs_of(home)[digest]["kind"] == "uv.lock"


@contextlib.contextmanager
def index_blocked(home: Path) -> Iterator[None]:
    """The sandbox user's pip and uv pointed at an index that refuses every connection (and
    no extra index or find-links): nothing can be installed there from the network."""
    dead = "http://127.0.0.1:9/simple"
    pip_conf = home / ".config" / "pip" / "pip.conf"
    uv_toml = home / ".config" / "uv" / "uv.toml"
    for path in (pip_conf, uv_toml):
        path.parent.mkdir(parents=True, exist_ok=True)
    pip_conf.write_text(f"[global]\nindex-url = {dead}\nextra-index-url =\nfind-links =\n")
    uv_toml.write_text(f'index-url = "{dead}"\n')
    try:
        yield
    finally:
        pip_conf.unlink()
        uv_toml.unlink()


@pytest.mark.parametrize("builder", ["auto", "pip"])
def test_offline_sync_builds_from_wheels_pushed_from_here_with_the_index_blocked(
    env_project: Path, project: Path, tether_cli: Cli, builder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto: uv (tether's, or unpacked from a pushed uv wheel); pip: venv + pip --no-index."""
    home = env_project
    monkeypatch.setenv("TETHER_ENV_BUILDER", builder)
    version = "1.0.0"  # tomli-w: small, pure Python, not in Debian's python3 here
    unique = f"# {uuid.uuid4().hex}\n"  # an env of its own per builder
    (project / "requirements.txt").write_text(f"tomli-w=={version}\n{unique}")
    with index_blocked(home):
        online = tether_cli("env", "sync", timeout=600)
        assert online.returncode == 1, describe(online)  # the block holds
        done = tether_cli("env", "sync", "--offline", timeout=600)
        assert done.returncode == 0, describe(done)
        assert f"tomli-w=={version}" in done.stdout or f"tomli_w=={version}" in done.stdout, (
            describe(done)
        )
        assert "pushing" in done.stderr, describe(done)
        wheels = home / ".cache" / "tether" / "wheels"
        assert list(wheels.glob(f"tomli_w-{version}-*.whl")), sorted(
            p.name for p in wheels.iterdir()
        )
        assert list(wheels.glob("ipykernel-*.whl"))
        again = tether_cli("env", "sync", "--offline")
        assert again.returncode == 0 and "up to date" in again.stdout, describe(again)
        name = f"offline-{builder}"  # job records of every test share the sandbox
        started = tether_cli("run", "--name", name, "--", "python", "-c", "import tomli_w")
        assert started.returncode == 0, describe(started)
        assert wait_job(tether_cli, name)["exit_code"] == 0, log_of(tether_cli, name)
        meta = envs_of(home)[record_of(home, name)["env_digest"]]
        assert f"tomli_w=={version}" in meta["packages"]
        assert meta["builder"] == ("pip" if builder == "pip" else "uv")


def test_host_check_and_status_report_the_targets_env_before_and_after_sync(
    env_project: Path, project: Path, sandbox: Any, tether_cli: Cli
) -> None:
    (project / "requirements.txt").write_text(f"{PACKAGE}=={OLD}\n# {uuid.uuid4().hex}\n")

    def reported() -> tuple[dict[str, Any], dict[str, Any], str]:
        checked = tether_cli("host", "check", sandbox.name, "--json")
        assert checked.returncode == 0, describe(checked)
        status = tether_cli("status", "--json")
        assert status.returncode == 0, describe(status)
        text = tether_cli("host", "check", sandbox.name).stdout + tether_cli("status").stdout
        return json.loads(checked.stdout)["env"], json.loads(status.stdout)[0]["env"], text

    before, status_before, text = reported()
    assert before["built"] is False and status_before["built"] is False
    assert before["digest"] == status_before["digest"] and "not built" in text
    done = tether_cli("env", "sync", timeout=600)
    assert done.returncode == 0, describe(done)
    after, status_after, text = reported()
    python = envs_of(env_project)[after["digest"]]["python_version"]
    expected = {"spec": "requirements.txt", "digest": before["digest"], "built": True}
    assert after == dict(expected, target="box", python_version=python)
    assert status_after == dict(expected, python_version=python)
    assert f"{before['digest']} for requirements.txt: built, python {python}" in text


def test_a_requirements_line_that_says_where_code_comes_from_waits_for_tether_trust(
    env_project: Path, project: Path, tether_cli: Cli
) -> None:
    home = env_project
    before = envs_of(home)
    dead = "http://127.0.0.1:9/simple"  # if tether acted on it, the installer would say so
    (project / "requirements.txt").write_text(f"{PACKAGE}=={OLD}\n--index-url {dead}\n")
    for argv in (("env", "sync"), ("run", "--name", "untrusted", "--", "python", "-c", "1")):
        refused = tether_cli(*argv, timeout=600)
        assert refused.returncode == 1, describe(refused)
        line = one_error_line(refused)
        assert f"requirements.txt now says `--index-url {dead}`" in line, describe(refused)
        assert "tether trust" in line and "building" not in refused.stderr
    assert envs_of(home) == before and leftovers(home) == []
    assert "untrusted" not in tether_cli("jobs").stdout
    shown = tether_cli("trust")
    assert shown.returncode == 0 and f"--index-url {dead}" in shown.stdout, describe(shown)
    (project / "requirements.txt").write_text(f"{PACKAGE}=={NEW}\n--index-url {dead}\n")
    status = tether_cli("env", "status")  # a bumped pin is no new decision: no new trust
    assert status.returncode == 0, describe(status)
    acted = tether_cli("env", "sync", timeout=600)  # trusted: the installer uses that index
    assert acted.returncode == 1, describe(acted)
    last = acted.stderr.strip().splitlines()[-1]
    assert last.startswith("tether: error: building the env on box failed"), describe(acted)
