"""A job's provenance on a real sandbox: untracked files, the interpreter, its packages; show.

The target's python is a venv made on the sandbox with a marker distribution (a
`*.dist-info/METADATA` only: nothing is installed from a registry).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.harness.env import write_config
from tests.integration.conftest import describe, one_error_line
from tests.integration.test_jobs import Cli, wait_job

pytestmark = pytest.mark.integration


def make_venv(where: Path) -> tuple[Path, Path]:
    """(python, site-packages) of a new venv without pip."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    done = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return python, Path(done.stdout.strip())


def add_dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def show(cli: Cli, name: str) -> dict[str, Any]:
    done = cli("show", name, "--json")
    assert done.returncode == 0, describe(done)
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout


def test_provenance_has_untracked_files_python_and_packages(
    sandbox: Any,
    project: Path,
    tmux_socket: str,
    tether_cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("TETHER_TMUX_SOCKET", tmux_socket)
    tag = uuid.uuid4().hex[:8]
    python, site = make_venv(Path(sandbox.home) / "venvs" / f"v-{tag}")
    add_dist(site, "tether-marker", "1.2.3")
    write_config(
        project / "tether.toml",
        f'[targets.box]\nhost = "{sandbox.name}"\npath = "~/prov-{tag}"\n'
        f'python = "{python}"\ndefault = true\n\n[sync]\nresults = ["outputs/"]\n',
    )
    (project / "helper.py").write_text("HELPER = 41\n")
    weights = os.urandom(100 * 1024)
    (project / "weights.bin").write_bytes(weights)
    (project / "pkg" / "model.py").write_text("def forward(x):\n    return 3 * x\n")
    index_before = git(project, "ls-files", "--stage")
    code = "import helper; print(helper.HELPER + 1)"
    done = tether_cli("run", "--name", "prov", "--", "python3", "-c", code)
    assert done.returncode == 0, describe(done)
    assert wait_job(tether_cli, "prov")["exit_code"] == 0
    assert tether_cli("logs", "prov").stdout == "42\n"
    info = show(tether_cli, "prov")
    assert git(project, "ls-files", "--stage") == index_before  # the user's index untouched
    assert "?? helper.py" in git(project, "status", "--porcelain")
    assert info["commit"] == git(project, "rev-parse", "HEAD").strip()
    assert info["argv"] == ["python3", "-c", code]
    assert (info["target"], info["host"]) == ("box", sandbox.name)
    diff = info["dirty_diff"]
    assert "pkg/model.py" in diff and "+    return 3 * x" in diff, diff
    assert "b/helper.py" in diff and "+HELPER = 41" in diff
    untracked = {entry["path"]: entry for entry in info["untracked"]}
    assert {"helper.py", "weights.bin"} <= set(untracked)
    assert untracked["helper.py"]["in_diff"] is True
    assert untracked["weights.bin"]["in_diff"] is False and "weights.bin" not in diff
    assert untracked["weights.bin"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert untracked["weights.bin"]["size"] == len(weights)
    assert info["python_path"] == str(python)
    version = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert info["python_version"] == version
    assert "tether-marker==1.2.3" in info["packages"]
    for key in ("started", "ended", "state", "exit_code", "reason", "cuda_visible_devices"):
        assert key in info, key
    text = tether_cli("show", "prov")
    assert text.returncode == 0, describe(text)
    for needle in ("prov", "helper.py", str(python), "tether-marker==1.2.3", "weights.bin"):
        assert needle in text.stdout, (needle, text.stdout)
    # A package installed since: the cached list is taken afresh.
    add_dist(site, "tether-second", "0.1")
    done = tether_cli("run", "--no-push", "--name", "prov2", "--", "python3", "-c", "pass")
    assert done.returncode == 0, describe(done)
    packages = show(tether_cli, "prov2")["packages"]
    assert {"tether-marker==1.2.3", "tether-second==0.1"} <= set(packages)
    missing = tether_cli("show", "nope")
    assert missing.returncode == 1
    assert "no job named 'nope'" in one_error_line(missing)
