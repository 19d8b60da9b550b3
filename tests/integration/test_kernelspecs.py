"""Kernelspecs belong to (project, target): two projects whose targets share a name each
get their own spec, listed by Jupyter, each running in its own project's remote dir
(real sshd sandbox, real ipykernel, real nbclient); `kernel spec ls` and `rm`; an
old-style spec (`tether-TARGET`) of the project is replaced by install."""

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


def test_two_projects_with_a_target_of_the_same_name_get_a_kernelspec_each(
    two_projects: list[tuple[Path, Path]],
    tether_cli: Cli,
    jupyter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = []
    for root, _ in two_projects:
        monkeypatch.chdir(root)
        names.append(install_spec(tether_cli))
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
    names = []
    for root, _ in two_projects:
        monkeypatch.chdir(root)
        names.append(install_spec(tether_cli))
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
