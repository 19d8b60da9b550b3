"""Offline env builds: the host's interpreter as pip download's options, what the client
accepts of that description, and the agent's wheel store (chunks, sha256, damage refused)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tether.agent import envwheels
from tether.agent.fsops import OpError
from tether.envs.offline import OfflineError, pip_options

CPYTHON_311 = {
    "version": [3, 11, 2], "impl": "cpython", "soabi": "cpython-311-x86_64-linux-gnu",
    "machine": "x86_64", "libc": ["glibc", "2.36"], "platform": "linux-x86_64",
}  # fmt: skip


def test_a_glibc_host_accepts_every_older_manylinux_and_the_legacy_names() -> None:
    tags = envwheels.linux_platforms("x86_64", "glibc", "2.36")
    assert tags[0] == "manylinux_2_36_x86_64" and tags[-1] == "linux_x86_64"
    for tag in ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"):
        assert tag in tags
    assert "manylinux_2_37_x86_64" not in tags
    arm = envwheels.linux_platforms("aarch64", "glibc", "2.31")
    assert "manylinux2014_aarch64" in arm and "manylinux_2_16_aarch64" not in arm
    assert envwheels.linux_platforms("x86_64", "", "")[0].startswith("musllinux_1_2")


def test_pip_target_names_the_interpreters_version_implementation_and_abi() -> None:
    target = envwheels.pip_target(CPYTHON_311)
    assert target["python_version"] == "3.11" and target["implementation"] == "cp"
    assert target["abis"] == ["cp311", "abi3", "none"]
    free_threaded = dict(CPYTHON_311, version=[3, 13, 0], soabi="cpython-313t-x86_64-linux-gnu")
    assert envwheels.pip_target(free_threaded)["abis"][0] == "cp313t"


def test_describe_runs_the_interpreter_and_says_whether_uv_is_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setenv("HOME", str(tmp_path))
    found = envwheels.describe(sys.executable)
    assert found["python_version"] == "{}.{}".format(*sys.version_info[:2])
    assert found["uv"] is False
    with pytest.raises(OpError, match="does not start"):
        envwheels.describe(str(tmp_path / "no-python"))


def test_the_client_refuses_a_description_that_could_become_an_option() -> None:
    good = envwheels.pip_target(CPYTHON_311)
    options = pip_options(good, "box")
    assert options[:3] == ["--only-binary=:all:", "--python-version", "3.11"]
    assert options.count("--platform") == len(good["platforms"])
    for bad in (
        dict(good, platforms=["--index-url=http://evil/"]),
        dict(good, python_version="3.11 --pre"),
        dict(good, abis="cp311"),
        dict(good, platforms=[]),
        "nonsense",
    ):
        with pytest.raises(OfflineError):
            pip_options(bad, "box")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def put(data: bytes, name: str = "demo-1.0-py3-none-any.whl", chunk: int = 3) -> Any:
    digest = hashlib.sha256(data).hexdigest()
    answers = []
    for offset in range(0, max(len(data), 1), chunk):
        header = {"name": name, "sha256": digest, "size": len(data), "offset": offset}
        answers.append(envwheels.env_wheel_put(header, data[offset : offset + chunk])[0])
    return digest, answers


def test_a_wheel_arrives_in_chunks_and_is_then_listed_as_present(home: Path) -> None:
    digest, answers = put(b"0123456789")
    assert [a["done"] for a in answers] == [False, False, False, True]
    wheel = Path(envwheels.wheels_dir()) / "demo-1.0-py3-none-any.whl"
    assert wheel.read_bytes() == b"0123456789"
    asked = {"wheels": [{"name": wheel.name, "sha256": digest}]}
    assert envwheels.env_wheels(asked, b"")[0]["missing"] == []
    asked = {"wheels": [{"name": wheel.name, "sha256": "0" * 64}]}
    assert envwheels.env_wheels(asked, b"")[0]["missing"] == [wheel.name]
    assert not [n for n in os.listdir(envwheels.wheels_dir()) if n.startswith(".part")]


def test_a_damaged_wheel_or_a_bad_name_is_refused(home: Path) -> None:
    header = {"name": "x-1-py3-none-any.whl", "sha256": "1" * 64, "size": 3, "offset": 0}
    with pytest.raises(OpError, match="damaged"):
        envwheels.env_wheel_put(header, b"abc")
    assert set(os.listdir(envwheels.wheels_dir())) <= {".sha256"}  # no wheel, no part file
    for name in ("../evil.whl", ".hidden.whl", "x/y.whl", "notawheel.txt"):
        with pytest.raises(OpError):
            envwheels.env_wheel_put(dict(header, name=name), b"abc")
