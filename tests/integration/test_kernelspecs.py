"""Kernelspecs belong to (project, target): two projects whose targets share a name each
get their own spec, listed by Jupyter, each running in its own project's remote dir
(real sshd sandbox, real ipykernel, real nbclient); `kernel spec ls` and `rm`; an
old-style spec (`tether-TARGET`) of the project is replaced by install; JupyterLab's
path: a real jupyter_server starts the spec's kernel over REST and runs a cell over its
websocket."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import env as harness
from tests.integration.test_console import kernel_pids, stop_helpers
from tests.integration.test_jupyter import install_spec, jupyter
from tests.integration.test_jupyter import jupyter_dir as jupyter_dir
from tether.hosts.processes import end_process

pytestmark = pytest.mark.integration

Cli = Callable[..., Any]


@pytest.fixture
def two_projects(
    sandbox: Any, tmp_path: Path, tether_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[tuple[Path, Path]]]:
    """Two projects (alpha, beta), each with a target named gpu1 on the same sandbox host
    and its own remote dir: [(local root, remote dir)]."""
    home = Path(sandbox.home)
    made = []
    for word in ("alpha", "beta"):
        root = harness.make_git_project(tmp_path / word)
        rel = f"kspec-{word}-{uuid.uuid4().hex[:8]}"
        monkeypatch.chdir(root)
        done = tether_cli(
            "init", "--host", sandbox.name, "--path", f"~/{rel}", "--target", "gpu1",
            "--python", sys.executable,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        made.append((root, home / rel))
    before = set(kernel_pids(home))
    try:
        yield made
    finally:
        for root, _ in made:
            monkeypatch.chdir(root)
            tether_cli("kernel", "stop")
        for pid in set(kernel_pids(home)) - before:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stop_helpers()


def remote_cwd(spec_name: str) -> str:
    """What os.getcwd() prints in a notebook run by nbclient with the kernelspec."""
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell("import os\nprint(os.getcwd())")]
    NotebookClient(book, kernel_name=spec_name, timeout=120, startup_timeout=120).execute()
    outputs = book.cells[0]["outputs"]
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream").strip()


def install_specs(
    projects: list[tuple[Path, Path]], tether_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """`kernel spec install` in each project; the spec names, in order."""
    names = []
    for root, _ in projects:
        monkeypatch.chdir(root)
        names.append(install_spec(tether_cli))
    return names


def test_two_projects_with_a_target_of_the_same_name_get_a_kernelspec_each(
    two_projects: list[tuple[Path, Path]],
    tether_cli: Cli,
    jupyter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = install_specs(two_projects, tether_cli, monkeypatch)
    assert names[0] != names[1], names
    listed = jupyter("kernelspec", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    specs = json.loads(listed.stdout)["kernelspecs"]
    for name, (root, _) in zip(names, two_projects, strict=True):
        assert name in specs, sorted(specs)
        assert specs[name]["spec"]["display_name"] == f"tether: gpu1 ({root.name})"
    monkeypatch.chdir(two_projects[0][0].parent)  # nbclient runs from anywhere
    for name, (_, remote_dir) in zip(names, two_projects, strict=True):
        assert remote_cwd(name) == str(remote_dir)


def test_spec_ls_lists_and_spec_rm_removes_only_this_projects_spec(
    two_projects: list[tuple[Path, Path]],
    tether_cli: Cli,
    jupyter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = install_specs(two_projects, tether_cli, monkeypatch)
    listed = tether_cli("kernel", "spec", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(names) <= set(rows), rows
    assert rows[names[1]]["project"] == str(two_projects[1][0])
    assert rows[names[1]]["target"] == "gpu1"
    assert names[0] in tether_cli("kernel", "spec", "ls").stdout
    removed = tether_cli("kernel", "spec", "rm")  # in beta
    assert removed.returncode == 0, removed.stderr
    assert names[1] in removed.stdout
    specs = json.loads(jupyter("kernelspec", "list", "--json").stdout)["kernelspecs"]
    assert names[0] in specs and names[1] not in specs
    again = tether_cli("kernel", "spec", "rm", names[1])
    assert again.returncode == 1 and again.stderr.startswith("tether: error: "), again.stderr


def test_install_replaces_the_projects_old_style_kernelspec(
    two_projects: list[tuple[Path, Path]],
    tether_cli: Cli,
    jupyter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = two_projects[0][0]
    monkeypatch.chdir(root)
    old = jupyter_dir / "kernels" / "tether-gpu1"  # as tether wrote it before names had a tag
    old.mkdir(parents=True)
    argv = [sys.executable, "-m", "tether.kernel.proxy", "--project", str(root), "--on", "gpu1"]
    (old / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [*argv, "{connection_file}"],
                "display_name": f"tether: gpu1 ({root.name})",
                "language": "python",
                "metadata": {"tether": {"project": str(root), "target": "gpu1", "kernel": ""}},
            }
        )
    )
    other = jupyter_dir / "kernels" / "tether-gpu1-scratch"  # another project's: kept
    other.mkdir()
    (other / "kernel.json").write_text(
        json.dumps({"argv": ["x"], "display_name": "x", "language": "python",
                    "metadata": {"tether": {"project": "/elsewhere", "target": "gpu1"}}})
    )  # fmt: skip
    done = tether_cli("kernel", "spec", "install")
    assert done.returncode == 0, done.stderr
    assert "tether-gpu1" in done.stdout  # says what it removed
    assert not old.exists()
    assert other.exists()


@contextlib.contextmanager
def jupyter_server(root: Path) -> Iterator[tuple[str, str]]:
    """A real jupyter_server on 127.0.0.1 with a token: (base url, token); ended by pid."""
    import subprocess
    import time

    runtime = root / "jupyter-runtime"
    token = uuid.uuid4().hex
    log_path = root / "jupyter-server.log"
    log = log_path.open("w")
    as_root = ["--allow-root"] if os.geteuid() == 0 else []  # the suite may run as root
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0", f"--IdentityProvider.token={token}",
            "--ServerApp.open_browser=False", f"--ServerApp.root_dir={root}", *as_root,
        ],
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)},
        stdout=log,
        stderr=log,
    )  # fmt: skip
    try:
        info = runtime / f"jpserver-{process.pid}.json"
        deadline = time.monotonic() + 60
        while not info.exists():
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "jupyter_server did not start"
            time.sleep(0.1)
        time.sleep(0.2)  # written whole by now (it is small)
        yield str(json.loads(info.read_text())["url"]).rstrip("/"), token
    finally:
        end_process(process, grace_s=30)
        log.close()


def rest(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"token {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=120) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def run_cell_over_websocket(url: str, token: str, kernel_id: str, code: str) -> str:
    """Execute code as JupyterLab does (an execute_request on the kernel's websocket);
    what it printed, once its reply and idle status came (bounded)."""
    import time

    import websocket

    ws_url = url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
    sock = websocket.create_connection(
        ws_url, header=[f"Authorization: token {token}"], timeout=120
    )
    try:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "t",
                  "session": uuid.uuid4().hex, "version": "5.3", "date": ""}  # fmt: skip
        content = {"code": code, "silent": False, "store_history": True,
                   "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}  # fmt: skip
        sock.send(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                              "content": content, "channel": "shell", "buffers": []}))  # fmt: skip
        printed, replied, idle = [], False, False
        deadline = time.monotonic() + 120
        while not (replied and idle):
            assert time.monotonic() < deadline, "no reply over the websocket"
            message = json.loads(sock.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            if kind == "stream":
                printed.append(message["content"]["text"])
            elif kind == "execute_reply":
                assert message["content"]["status"] == "ok", message["content"]
                replied = True
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                idle = True
        return "".join(printed)
    finally:
        sock.close()


def test_a_jupyter_server_runs_a_cell_in_the_remote_kernel_over_its_websocket(
    two_projects: list[tuple[Path, Path]],
    tether_cli: Cli,
    jupyter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    root, remote_dir = two_projects[0]
    monkeypatch.chdir(root)
    name = install_spec(tether_cli)
    with jupyter_server(tmp_path) as (url, token):
        specs = rest("GET", f"{url}/api/kernelspecs", token)["kernelspecs"]
        assert name in specs, sorted(specs)  # the launcher lists it
        kernel = rest("POST", f"{url}/api/kernels", token, {"name": name})
        code = "import os\nlab_value = 6 * 7\nprint(os.getcwd())"
        assert run_cell_over_websocket(url, token, kernel["id"], code).strip() == str(remote_dir)
        rest("DELETE", f"{url}/api/kernels/{kernel['id']}", token)  # "shut down" in Lab
    sent = tether_cli("send", input="print(lab_value)")  # the kernel stayed, state and all
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "42"
