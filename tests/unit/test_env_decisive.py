"""Which lines of an env spec decide where code comes from (tether.envs.decisive), and how
trust treats them: an ordinary pinned package never asks again, a decisive line always does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether import config as config_module
from tether import trust
from tether.envs.decisive import lock_lines, ordinary, requirement_lines, tool_uv

ORDINARY = [
    "tabulate",
    "tabulate==0.9.0",
    "Tabulate >= 0.8, < 1.0",
    "requests[socks,security]~=2.31",
    'numpy==1.26.4 ; python_version < "3.13" and sys_platform == "linux"',
    "torch==2.3.0 --hash=sha256:" + "a" * 64 + " --hash=sha256:" + "b" * 64,
    "pkg===1.0+local",
    "name (>=1.0)",
]
DECISIVE = [
    "--index-url http://evil/simple",
    "-i http://evil/simple",
    "--extra-index-url=http://evil/simple",
    "-f http://evil/links",
    "--find-links ./wheels",
    "-e .",
    "-e git+https://evil/x.git#egg=x",
    "--editable ./lib",
    "./lib",
    "/abs/pkg",
    "lib/",
    "pkg.whl",
    "evil-1.0.tar.gz",
    "pkg @ https://evil/pkg-1.0.whl",
    "pkg@file:///tmp/x",
    "git+https://evil/x.git",
    "https://evil/pkg-1.0.tar.gz",
    "-r other.txt",
    "--requirement https://evil/reqs.txt",
    "-c constraints.txt",
    "--trusted-host evil",
    "pkg==1.0 --global-option=--evil",
    "pkg==1.0 --config-settings=x=y",
    "pkg==${VERSION}",
    "--pre",
]


@pytest.mark.parametrize("line", ORDINARY)
def test_an_ordinary_requirement_decides_nothing(line: str) -> None:
    assert ordinary(line), line


@pytest.mark.parametrize("line", DECISIVE)
def test_options_paths_urls_and_includes_are_decisive(line: str) -> None:
    assert not ordinary(line), line
    assert requirement_lines(f"# a comment\ntabulate==0.9\n{line}  # why\n") == [line]


def test_continuation_lines_are_joined_before_they_are_judged() -> None:
    text = (
        "tabulate==0.9 \\\n  --hash=sha256:" + "c" * 64 + "\nsafe==1 \\\n --index-url http://evil\n"
    )
    assert requirement_lines(text) == ["safe==1 --index-url http://evil"]


def test_a_lock_names_its_registries_but_pypi_and_every_other_source() -> None:
    def package(name: str, source: str) -> str:
        return f'[[package]]\nname = "{name}"\nversion = "1"\nsource = {{ {source} }}\n'

    lock = (
        package("proj", 'editable = "."')
        + package("a", 'registry = "https://pypi.org/simple"')
        + package("b", 'registry = "https://mirror/simple"')
        + package("c", 'git = "https://evil/c.git?rev=x"')
        + package("d", 'path = "../d"')
    )
    assert lock_lines(lock) == [
        "registry https://mirror/simple",
        "c from git https://evil/c.git?rev=x",
        "d from path ../d",
    ]
    hidden = '[[package]]\nname = "e"\nversion = "1"\n"\\u0073ource" = { git = "https://evil/e" }\n'
    table = '[[package]]\nname = "f"\nversion = "1"\n[package.source]\nurl = "https://evil/f"\n'
    assert lock_lines(lock + hidden) == [*lock_lines(lock), "e from git https://evil/e"]
    assert lock_lines(lock + table)[-1] == "f from url https://evil/f"
    assert tool_uv('[project]\nname = "p"\n') == []
    assert tool_uv('[tool.uv]\nindex-url = "http://evil"\n') == [
        '[tool.uv] {"index-url": "http://evil"}'
    ]


BASE = '[targets.a]\nhost = "h"\npath = "~/p"\n'


def project(tmp_path: Path, requirements: str) -> config_module.Config:
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "tether.toml").write_text(BASE)
    (root / "requirements.txt").write_text(requirements)
    return config_module.load(root, trusted=False)


def test_a_new_pinned_package_asks_nothing_but_a_decisive_line_asks_again(
    tmp_path: Path,
) -> None:
    trust.record(project(tmp_path, "tabulate==0.9.0\n"))
    trust.require(project(tmp_path, "tabulate==0.9.0\nrequests==2.31.0\n"))
    trust.require(project(tmp_path, "tabulate==0.8.10\n"))
    evil = project(tmp_path, "tabulate==0.9.0\n--extra-index-url http://evil/simple\n")
    with pytest.raises(trust.UntrustedError) as raised:
        trust.require(evil)
    line = raised.value.line()
    assert "requirements.txt says where packages come from in a way you have not trusted" in line
    assert "requirements.txt now says `--extra-index-url http://evil/simple`" in line
    assert any("--extra-index-url http://evil/simple" in text for text in trust.summary(evil))
    trust.record(evil)
    trust.require(project(tmp_path, "tabulate==0.9.0\n--extra-index-url http://evil/simple\nx\n"))


def test_init_trusts_the_config_it_wrote_not_the_requirements_it_found(tmp_path: Path) -> None:
    from tether.project import init_project

    root = tmp_path / "clone"
    root.mkdir()
    (root / "requirements.txt").write_text("-e git+https://evil/x.git#egg=x\n")
    init_project(root, "h", "~/p", None, "python3", False)
    with pytest.raises(trust.UntrustedError) as raised:
        config_module.load(root)
    assert "requirements.txt now says `-e git+https://evil/x.git#egg=x`" in raised.value.line()
    assert "tether.toml changed" not in raised.value.line()
    (root / "requirements.txt").write_text("tabulate\n")
    config_module.load(root)  # nothing decisive left: the config itself was trusted
