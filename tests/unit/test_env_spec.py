"""tether.envs.spec: which files make the env spec, what its digest covers, differences."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.config import load
from tether.envs.spec import EnvSpec, differences, find
from tether.errors import ConfigError

BASE = '[targets.a]\nhost = "h"\npath = "~/p"\n'
PYPROJECT = '[project]\nname = "x"\ndependencies = ["tabulate==0.9.0"]\n'
PYPROJECT += '[project.optional-dependencies]\ngpu = ["iniconfig>=2"]\n'
LOCK = (
    'version = 1\n[[package]]\nname = "x"\nversion = "0.1"\nsource = { editable = "." }\n'
    '[[package]]\nname = "Tabulate"\nversion = "0.9.0"\n'
    'source = { registry = "https://pypi.org/simple" }\n'
)


def spec_of(root: Path, toml: str = BASE, **files: str) -> EnvSpec | None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tether.toml").write_text(toml)
    for name, text in files.items():
        path = root / name.replace("__", "/").replace("_txt", ".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return find(load(root, trusted=False))


def test_no_spec_files_and_no_env_table_mean_no_spec(tmp_path: Path) -> None:
    assert spec_of(tmp_path) is None
    assert spec_of(tmp_path / "p", **{"pyproject.toml": '[project]\nname = "x"\n'}) is None


def test_a_plain_requirements_txt_and_what_it_includes(tmp_path: Path) -> None:
    spec = spec_of(
        tmp_path,
        requirements_txt="-r req/base.txt\nsix==1.16.0  # pinned\n",
        req__base_txt="-c constraints.txt\nTabulate[widechars]==0.9.0 ; python_version > '3'\n",
        req__constraints_txt="numpy<3\n",
    )
    assert spec is not None
    assert (spec.kind, spec.main) == ("requirements", ("requirements.txt",))
    assert set(spec.files) == {"requirements.txt", "req/base.txt", "req/constraints.txt"}
    assert spec.pins == {"six": "1.16.0", "tabulate": "0.9.0"}


def test_the_order_env_requirements_then_uv_lock_then_pyproject_then_requirements(
    tmp_path: Path,
) -> None:
    files = {"pyproject.toml": PYPROJECT, "uv.lock": LOCK, "requirements_txt": "six\n"}
    chosen = spec_of(tmp_path / "a", BASE + '[env]\nrequirements = ["dev.txt"]\n',
                     dev_txt="pytest\n", **files)  # fmt: skip
    assert chosen is not None and (chosen.kind, chosen.main) == ("requirements", ("dev.txt",))
    locked = spec_of(tmp_path / "b", **files)
    assert locked is not None and locked.kind == "uv.lock"
    assert set(locked.files) == {"pyproject.toml", "uv.lock"}
    assert locked.pins == {"tabulate": "0.9.0"}  # the project itself is not a pin
    del files["uv.lock"]
    project = spec_of(tmp_path / "c", BASE + '[env]\nextras = ["gpu"]\n', **files)
    assert project is not None and project.kind == "pyproject"
    assert list(project.files.values()) == ["tabulate==0.9.0\niniconfig>=2\n"]
    del files["pyproject.toml"]
    plain = spec_of(tmp_path / "d", **files)
    assert plain is not None and plain.kind == "requirements"
    alone = spec_of(tmp_path / "e", BASE + '[env]\npython = "3.11"\n')
    assert alone is not None and (alone.kind, alone.python) == ("none", "3.11")


def test_the_digest_follows_the_bytes_and_the_options_only(tmp_path: Path) -> None:
    one = spec_of(tmp_path / "a", requirements_txt="six==1.16.0\n", train_py="x = 1\n")
    two = spec_of(tmp_path / "b", requirements_txt="six==1.16.0\n", train_py="x = 2\n")
    three = spec_of(tmp_path / "c", requirements_txt="six==1.17.0\n")
    indexed = spec_of(tmp_path / "d", BASE + '[env]\nindex_url = "https://example.org/simple"\n',
                      requirements_txt="six==1.16.0\n")  # fmt: skip
    assert one is not None and two is not None and three is not None and indexed is not None
    assert one.digest == two.digest
    assert len({one.digest, three.digest, indexed.digest}) == 3
    assert "files" not in one.wire(False) and one.wire(True)["files"] == one.files


def test_a_missing_requirements_file_or_extra_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        spec_of(tmp_path / "a", BASE + '[env]\nrequirements = ["nope.txt"]\n')
    assert raised.value.key == "env.requirements" and "nope.txt is missing" in raised.value.line()
    with pytest.raises(ConfigError) as raised:
        spec_of(tmp_path / "b", BASE + '[env]\nextras = ["tpu"]\n', **{"pyproject.toml": PYPROJECT})
    assert raised.value.key == "env.extras"


def test_differences_name_what_a_build_of_the_spec_would_change() -> None:
    pins = {"six": "1.17.0", "tabulate": "0.9.0", "iniconfig": "2.0.0"}
    have = ["Six==1.16.0", "tabulate==0.9.0", "ipykernel==7.0.0"]
    assert differences(pins, have) == ["iniconfig: missing -> 2.0.0", "six: 1.16.0 -> 1.17.0"]
    assert differences(pins, None)[0] == "iniconfig: missing -> 2.0.0"
