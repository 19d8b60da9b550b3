"""The agent's env parts: pip's configuration read as pip would, the uv wheel for this
machine, installer failures in one line, and the build's atomicity, locking and pruning
(with a stand-in installer: `python -m venv --without-pip`)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tether.agent import envbuild, envs, uvget
from tether.agent.fsops import OpError

SPEC: dict[str, Any] = {
    "digest": "a" * 64, "kind": "requirements", "source": "requirements.txt",
    "main": ["requirements.txt"], "extras": [], "python": "", "index_url": "",
    "files": {"requirements.txt": "tabulate==0.9.0\n"},
}  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for variable in [v for v in os.environ if v.startswith(("PIP_", "UV_"))]:
        monkeypatch.delenv(variable)
    return tmp_path


def test_pip_settings_follow_pips_files_then_its_variables(home: Path) -> None:
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text(
        "[global]\nindex-url = https://mirror/simple\nextra-index-url = https://a https://b\n"
        "[install]\nfind-links = /wheels\ntrusted-host = mirror\n"
    )
    environ = {"PIP_EXTRA_INDEX_URL": "https://c"}
    settings = envbuild.pip_settings(environ)
    assert settings["index-url"] == ["https://mirror/simple"]
    assert settings["extra-index-url"] == ["https://c"]
    args = envbuild.uv_index_args(settings, environ, "")
    assert args == [
        "--index-url", "https://mirror/simple", "--extra-index-url", "https://c",
        "--find-links", "/wheels", "--allow-insecure-host", "mirror",
    ]  # fmt: skip
    assert envbuild.uv_index_args(settings, environ, "https://own")[:2] == [
        "--index-url",
        "https://own",
    ]
    assert "--index-url" not in envbuild.uv_index_args(settings, {"UV_INDEX_URL": "https://u"}, "")
    assert envbuild.index_of(settings, {}, "") == "https://mirror/simple"
    assert envbuild.index_of({}, {}, "") == envbuild.DEFAULT_INDEX


def test_the_uv_wheel_is_picked_for_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(uvget.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(uvget.platform, "libc_ver", lambda: ("glibc", "2.36"))
    assert uvget.platform_fits("manylinux_2_17_x86_64.manylinux2014_x86_64")
    assert not uvget.platform_fits("manylinux_2_17_aarch64.manylinux2014_aarch64")
    assert not uvget.platform_fits("manylinux_2_39_x86_64")
    assert not uvget.platform_fits("musllinux_1_1_x86_64")
    monkeypatch.setattr(uvget.platform, "libc_ver", lambda: ("", ""))
    assert uvget.platform_fits("musllinux_1_1_x86_64")


def test_the_newest_uv_on_an_html_index_is_fetched_and_checked(home: Path) -> None:
    import hashlib
    import io
    import zipfile

    index = home / "index" / "uv"
    index.mkdir(parents=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("uv-0.10.2.data/scripts/uv", b"#!/bin/sh\necho uv 0.10.2\n")
    data = buffer.getvalue()
    tags = "py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64"
    for version, body in (("0.9.0", b"old"), ("0.10.2", data)):
        (index / f"uv-{version}-{tags}.whl").write_bytes(body)
    digest = hashlib.sha256(data).hexdigest()
    (index / "index.html").write_text(
        f'<a href="uv-0.9.0-{tags}.whl">uv-0.9.0-{tags}.whl</a>\n'
        f'<a href="uv-0.10.2-{tags}.whl#sha256={digest}">uv-0.10.2-{tags}.whl</a>\n'
    )
    if not uvget.platform_fits(tags.split("-", 2)[2]):
        pytest.skip("the test's wheel is for x86_64 glibc Linux")
    said: list[str] = []
    binary = envbuild.get_uv({}, {}, f"file://{home / 'index'}", said.append)
    assert binary == str(home / ".cache" / "tether" / "uv" / "0.10.2" / "uv")
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "uv 0.10.2\n"
    assert envbuild.get_uv({}, {}, "file:///nowhere", said.append) == binary  # kept


def test_an_installer_failure_names_the_package_in_one_line() -> None:
    uv = [
        "  × No solution found when resolving dependencies:",
        "  ╰─▶ Because tether-nope was not found in the package registry and you require",
        "      tether-nope==1.0, we can conclude that your requirements are unsatisfiable.",
    ]
    assert envbuild.failing_package(uv) == "tether-nope"
    pip = [
        "ERROR: Could not find a version that satisfies the requirement six==99 (from -r r.txt)",
        "ERROR: No matching distribution found for six==99",
    ]
    assert envbuild.failing_package(pip) == "six==99"
    with pytest.raises(envbuild.BuildFailed) as raised:
        envbuild.check_run("uv pip install", (1, uv))
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("uv pip install failed on tether-nope: ")
    assert "╰" not in str(raised.value)


def fake_builder(made: list[str], fail: BaseException | None = None) -> Any:
    """Stands in for envbuild.build: a venv without pip, a script with an absolute #!."""

    def build(job: dict[str, Any], prefer: str) -> dict[str, Any]:
        made.append(job["target"])
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", job["target"]], check=True)
        script = Path(job["target"]) / "bin" / "tool"
        script.write_text(f"#!{job['target']}/bin/python\nprint('tool')\n")
        script.chmod(0o755)
        if fail is not None:
            raise fail
        return {"builder": "fake", "builder_version": None}

    return build


def quiet(line: str) -> None:
    pass


def test_a_build_lands_complete_frozen_and_once(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    monkeypatch.setattr(envbuild, "build", fake_builder(made))
    digest, meta, base = envs.resolve(SPEC)
    assert meta is None and base == sys.executable
    meta = envs.build(SPEC, digest, base, "auto", quiet, lambda: False)
    final = home / ".cache" / "tether" / "envs" / digest
    assert json.loads((final / envs.META).read_text()) == meta
    assert meta["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert (final / envs.SPEC_DIR / "requirements.txt").read_text() == "tabulate==0.9.0\n"
    assert (final / "bin" / "tool").read_text().startswith(f"#!{final}/bin/python\n")
    assert (
        subprocess.run([final / "bin" / "tool"], capture_output=True, text=True).stdout == "tool\n"
    )
    assert not stat.S_IMODE((final / "pyvenv.cfg").stat().st_mode) & 0o222
    assert envs.build(SPEC, digest, base, "auto", quiet, lambda: False) == meta
    assert len(made) == 1, "a built env was built again"
    fields = envs.for_job({"env_spec": SPEC})
    assert fields["path_prefix"] == [str(final / "bin")] and fields["env_digest"] == digest


@pytest.mark.parametrize(
    "failure", [envbuild.BuildFailed("pip install failed on six==99: no"), envbuild.Hangup()]
)
def test_a_failed_or_cut_build_leaves_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    made: list[str] = []
    monkeypatch.setattr(envbuild, "build", fake_builder(made, failure))
    digest, _, base = envs.resolve(SPEC)
    with pytest.raises(type(failure)):
        envs.build(SPEC, digest, base, "auto", quiet, lambda: False)
    top = home / ".cache" / "tether" / "envs"
    assert sorted(p.name for p in top.iterdir()) == [f".lock-{digest}"]
    with pytest.raises(OpError) as raised:
        envs.for_job({"env_spec": SPEC})
    assert raised.value.kind == "noenv"


def test_a_killed_builds_leftovers_go_with_the_next_build(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envbuild, "build", fake_builder([]))
    digest, _, base = envs.resolve(SPEC)
    left = home / ".cache" / "tether" / "envs" / f".tmp-{digest}-99999"
    (left / "bin").mkdir(parents=True)
    Path(f"{left}.spec").mkdir()
    envs.build(SPEC, digest, base, "auto", quiet, lambda: False)
    assert not left.exists() and not Path(f"{left}.spec").exists()


def test_prune_keeps_what_jobs_kernels_and_project_specs_use(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envbuild, "build", fake_builder([]))
    built = {}
    for name in ("job", "kernel", "spec", "unused"):
        spec = dict(SPEC, digest=name[0] * 64)
        digest, _, base = envs.resolve(spec)
        envs.build(spec, digest, base, "auto", quiet, lambda: False)
        built[name] = digest
    data = home / ".local" / "share" / "tether"
    (data / "jobs").mkdir(parents=True)
    (data / "jobs" / "j.json").write_text(json.dumps({"name": "j", "env_digest": built["job"]}))
    (data / "kernels" / "k").mkdir(parents=True)
    (data / "kernels" / "k" / "record.json").write_text(json.dumps({"env_digest": built["kernel"]}))
    envs.remember(str(home / "proj"), built["spec"])
    answer, _ = envs.env_prune({"dry_run": True}, b"")
    assert [env["digest"] for env in answer["removed"]] == [built["unused"]]
    assert (home / ".cache" / "tether" / "envs" / built["unused"]).is_dir()
    answer, _ = envs.env_prune({}, b"")
    assert not (home / ".cache" / "tether" / "envs" / built["unused"]).exists()
    assert {env["digest"] for env in answer["kept"]} == {
        built[n] for n in ("job", "kernel", "spec")
    }
