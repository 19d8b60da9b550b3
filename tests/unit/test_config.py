"""config: strict parsing of tether.toml / [tool.tether], target picking, finding the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.config import (
    Config,
    Mapping,
    SyncRules,
    Target,
    find_config,
    load,
    parse_file,
)
from tether.errors import ConfigError, UsageError

GOOD = """
[targets.gpu]
host = "kky-p3"
path = "~/work/myproj"
python = "python3.11"
default = true
scheduler = "slurm"

[targets.gpu.slurm]
partition = "gpu"
gres = "gpu:1"
cpus = 8

[[targets.gpu.mappings]]
local = "../shared-lib"
remote = "~/shared-lib"

[[targets.gpu.mappings]]
local = "vendor/other"
remote = "/opt/other"

[targets.cpu]
host = "user@box"
path = "/srv/proj"

[sync]
exclude = ["data/", "*.ckpt"]
include = ["data/small.csv"]
results = ["outputs/", "runs/"]

[jobs]
notify = "notify-send tether"
"""

ONE_TARGET = """
[targets.box]
host = "box"
path = "~/p"
"""


def write(directory: Path, text: str, name: str = "tether.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / name
    file.write_text(text, encoding="utf-8")
    return file


def config_of(tmp_path: Path, text: str) -> Config:
    return parse_file(write(tmp_path, text))


# --------------------------------------------------------------------------- good files


def test_good_file_gives_every_value_typed(tmp_path: Path) -> None:
    config = config_of(tmp_path / "proj", GOOD)
    root = (tmp_path / "proj").resolve()
    assert config.root == root
    assert config.file == tmp_path / "proj" / "tether.toml"
    assert list(config.targets) == ["gpu", "cpu"]
    assert config.targets["gpu"] == Target(
        name="gpu",
        host="kky-p3",
        path="~/work/myproj",
        python="python3.11",
        default=True,
        scheduler="slurm",
        slurm={"partition": "gpu", "gres": "gpu:1", "cpus": 8},
        mappings=(
            Mapping((tmp_path / "shared-lib").resolve(), "~/shared-lib"),
            Mapping(root / "vendor" / "other", "/opt/other"),
        ),
    )
    assert config.sync == SyncRules(
        exclude=("data/", "*.ckpt"), include=("data/small.csv",), results=("outputs/", "runs/")
    )
    assert config.notify == "notify-send tether"


def test_omitted_values_take_their_defaults(tmp_path: Path) -> None:
    config = config_of(tmp_path, ONE_TARGET)
    assert config.targets["box"] == Target(name="box", host="box", path="~/p")
    target = config.targets["box"]
    assert (target.python, target.default, target.scheduler) == ("python3", False, "tmux")
    assert target.slurm == {} and target.mappings == ()
    assert config.sync == SyncRules()
    assert config.notify is None


def test_pyproject_tool_tether_table_is_read(tmp_path: Path) -> None:
    text = '[project]\nname = "x"\n\n[tool.tether.targets.box]\nhost = "box"\npath = "~/p"\n'
    text += '\n[tool.tether.sync]\nresults = ["runs/"]\n\n[tool.other]\nkey = 1\n'
    config = parse_file(write(tmp_path, text, "pyproject.toml"))
    assert config.targets["box"].host == "box"
    assert config.sync.results == ("runs/",)
    assert config.file.name == "pyproject.toml"


def test_pyproject_errors_name_the_tool_tether_key(tmp_path: Path) -> None:
    text = '[tool.tether.targets.box]\nhost = "box"\npath = "~/p"\ndefault = "yes"\n'
    file = write(tmp_path, text, "pyproject.toml")
    with pytest.raises(ConfigError) as caught:
        parse_file(file)
    assert caught.value.key == "tool.tether.targets.box.default"
    assert str(file) in str(caught.value)
    assert "tool.tether.targets.box.default" in str(caught.value)


def test_pyproject_without_tool_tether_says_targets_are_missing(tmp_path: Path) -> None:
    file = write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml")
    with pytest.raises(ConfigError) as caught:
        parse_file(file)
    assert caught.value.key == "tool.tether.targets"


@pytest.mark.parametrize(
    "text",
    ["[tool]\ntether = 3\n", 'tool = "tether"\n', "[tool]\ntether = []\n"],
    ids=["tool-tether-not-a-table", "tool-not-a-table", "tool-tether-an-array"],
)
def test_pyproject_with_a_malformed_tool_table_is_a_config_error(tmp_path: Path, text: str) -> None:
    file = write(tmp_path, text, "pyproject.toml")
    with pytest.raises(ConfigError) as caught:
        parse_file(file)
    assert str(file) in str(caught.value)
    assert caught.value.key.startswith("tool")


# --------------------------------------------------------------------------- bad files

TARGET = '[targets.gpu]\nhost = "h"\npath = "~/p"\n'


def mapping(local: str | None, remote: str | None, extra: str = "") -> str:
    """One [[targets.gpu.mappings]] table."""
    text = "[[targets.gpu.mappings]]\n"
    text += f'local = "{local}"\n' if local is not None else ""
    text += f'remote = "{remote}"\n' if remote is not None else ""
    return text + extra


M0, M1 = "targets.gpu.mappings[0]", "targets.gpu.mappings[1]"

BAD = [
    ("unknown-top-key", 'bogus = 1\n' + TARGET, "bogus"),
    ("unknown-target-key", TARGET + 'hots = "x"\n', "targets.gpu.hots"),
    ("unknown-sync-key", TARGET + '[sync]\nexclud = []\n', "sync.exclud"),
    ("unknown-jobs-key", TARGET + '[jobs]\nnotfy = "x"\n', "jobs.notfy"),
    ("unknown-slurm-key", TARGET + '[targets.gpu.slurm]\ngpus = 2\n', "targets.gpu.slurm.gpus"),
    ("unknown-mapping-key", TARGET + mapping("a", "/r", 'lokal = "b"\n'), f"{M0}.lokal"),
    ("default-string-yes", TARGET + 'default = "yes"\n', "targets.gpu.default"),
    ("default-integer", TARGET + "default = 1\n", "targets.gpu.default"),
    ("path-integer", '[targets.gpu]\nhost = "h"\npath = 3\n', "targets.gpu.path"),
    ("path-empty", '[targets.gpu]\nhost = "h"\npath = "  "\n', "targets.gpu.path"),
    ("path-missing", '[targets.gpu]\nhost = "h"\n', "targets.gpu.path"),
    ("host-missing", '[targets.gpu]\npath = "~/p"\n', "targets.gpu.host"),
    ("host-empty", '[targets.gpu]\nhost = ""\npath = "~/p"\n', "targets.gpu.host"),
    ("host-array", '[targets.gpu]\nhost = ["h"]\npath = "~/p"\n', "targets.gpu.host"),
    ("python-integer", TARGET + "python = 3\n", "targets.gpu.python"),
    ("scheduler-unknown", TARGET + 'scheduler = "pbs"\n', "targets.gpu.scheduler"),
    ("scheduler-not-a-string", TARGET + "scheduler = true\n", "targets.gpu.scheduler"),
    ("slurm-not-a-table", TARGET + 'slurm = "gpu"\n', "targets.gpu.slurm"),
    ("no-targets-at-all", '[sync]\nexclude = []\n', "targets"),
    ("empty-targets-table", "[targets]\n", "targets"),
    ("targets-not-a-table", "targets = 3\n", "targets"),
    ("target-not-a-table", '[targets]\ngpu = "h"\n', "targets.gpu"),
    ("mappings-not-an-array", TARGET + 'mappings = "x"\n', "targets.gpu.mappings"),
    ("mapping-not-a-table", TARGET + "mappings = [1]\n", M0),
    ("mapping-without-remote", TARGET + mapping("a", None), f"{M0}.remote"),
    ("mapping-without-local", TARGET + mapping(None, "/r"), f"{M0}.local"),
    ("sync-not-a-table", 'sync = ["x"]\n' + TARGET, "sync"),
    ("sync-exclude-a-string", TARGET + '[sync]\nexclude = "data/"\n', "sync.exclude"),
    ("sync-results-with-a-number", TARGET + '[sync]\nresults = ["runs/", 1]\n', "sync.results"),
    ("jobs-notify-integer", TARGET + "[jobs]\nnotify = 3\n", "jobs.notify"),
    ("mapping-inside-target-path", TARGET + mapping("a", "~/p/lib"), f"{M0}.remote"),
    ("mapping-is-target-path", TARGET + mapping("a", "~/p/"), f"{M0}.remote"),
    ("mapping-holds-target-path", TARGET + mapping("a", "~"), f"{M0}.remote"),
    ("mappings-same-remote", TARGET + mapping("a", "/r") + mapping("b", "/r/"), f"{M1}.remote"),
    ("mappings-nested", TARGET + mapping("a", "/r/sub") + mapping("b", "/r"), f"{M1}.remote"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "key"), [(t, k) for _, t, k in BAD], ids=[i for i, _, _ in BAD])
def test_bad_value_is_a_config_error_naming_file_and_key(
    tmp_path: Path, text: str, key: str
) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        parse_file(file)
    error = caught.value
    assert (error.file, error.key) == (str(file), key)
    assert str(error).startswith(f"{file}: {key}, ")
    assert error.exit_code == 1


def test_wrong_type_message_says_what_was_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must be true or false, not a string 'yes'"):
        config_of(tmp_path, TARGET + 'default = "yes"\n')
    with pytest.raises(ConfigError, match=r"must be a string, not an integer"):
        config_of(tmp_path, '[targets.gpu]\nhost = "h"\npath = 3\n')


def test_unknown_key_message_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key.*expected one of: exclude, include, results"
    ):
        config_of(tmp_path, TARGET + "[sync]\nexclud = []\n")


def test_mappings_that_do_not_overlap_are_fine(tmp_path: Path) -> None:
    config = config_of(tmp_path, TARGET + mapping("a", "~/pkg") + mapping("b", "~/pkg2"))
    assert [m.remote for m in config.targets["gpu"].mappings] == ["~/pkg", "~/pkg2"]


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    file = write(tmp_path, '[targets.gpu\nhost = "h"\n')
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        parse_file(file)
    assert caught.value.file == str(file)
    assert str(caught.value).startswith(str(file))


def test_duplicate_key_is_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_of(tmp_path, TARGET + 'host = "again"\n')


def test_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    file = tmp_path / "tether.toml"
    file.write_bytes(b'[targets.gpu]\nhost = "\xff"\npath = "~/p"\n')
    with pytest.raises(ConfigError, match="UTF-8") as caught:
        parse_file(file)
    assert caught.value.file == str(file)


# --------------------------------------------------------------------------- picking targets

THREE = """
[targets.a]
host = "ha"
path = "~/p"
default = true

[targets.b]
host = "hb"
path = "~/p"

[targets.c]
host = "hc"
path = "~/p"
default = true
"""


def names(targets: list[Target]) -> list[str]:
    return [target.name for target in targets]


def test_pick_without_names_gives_every_default_target_in_file_order(tmp_path: Path) -> None:
    assert names(config_of(tmp_path, THREE).pick()) == ["a", "c"]


def test_pick_by_name_keeps_the_order_given_and_drops_repeats(tmp_path: Path) -> None:
    config = config_of(tmp_path, THREE)
    assert names(config.pick(["b"])) == ["b"]
    assert names(config.pick(["c", "b", "c"])) == ["c", "b"]


def test_pick_of_an_unknown_name_is_a_usage_error_listing_the_known_ones(tmp_path: Path) -> None:
    config = config_of(tmp_path, THREE)
    with pytest.raises(UsageError, match=r"unknown target 'nope'.*defines: a, b, c") as caught:
        config.pick(["a", "nope"])
    assert caught.value.exit_code == 2


def test_single_target_without_default_is_picked(tmp_path: Path) -> None:
    config = config_of(tmp_path, ONE_TARGET)
    assert names(config.pick()) == ["box"]
    assert config.one(None).name == "box"


def test_several_targets_and_no_default_is_a_usage_error(tmp_path: Path) -> None:
    config = config_of(tmp_path, TARGET + '[targets.cpu]\nhost = "c"\npath = "~/p"\n')
    with pytest.raises(UsageError, match="no default target"):
        config.pick()
    assert names(config.pick(["cpu"])) == ["cpu"]


def test_one_is_the_primary_else_the_first_default(tmp_path: Path) -> None:
    config = config_of(tmp_path, THREE)
    assert config.one(None).name == "a"  # several defaults: the first one, in file order
    assert config.one("b").name == "b"
    with pytest.raises(UsageError, match="unknown target"):
        config.one("zzz")
    primary = config_of(tmp_path, THREE.replace('host = "hb"', 'host = "hb"\nprimary = true'))
    assert primary.one(None).name == "b"  # even though b is not a default
    assert names(primary.pick()) == ["a", "c"]  # push & co still use the defaults
    two = THREE.replace('host = "hb"', 'host = "hb"\nprimary = true')
    two = two.replace('host = "hc"', 'host = "hc"\nprimary = true')
    with pytest.raises(ConfigError, match=r"targets\.c\.primary"):
        config_of(tmp_path, two)


# --------------------------------------------------------------------------- finding the file


def test_find_config_searches_upward_from_a_subdirectory(tmp_path: Path) -> None:
    file = write(tmp_path / "proj", ONE_TARGET)
    deep = tmp_path / "proj" / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_config(deep) == file.resolve()
    assert load(deep, trusted=False).targets["box"].host == "box"


def test_find_config_takes_the_nearest_file(tmp_path: Path) -> None:
    write(tmp_path / "outer", ONE_TARGET)
    inner = write(tmp_path / "outer" / "inner", ONE_TARGET)
    assert find_config(tmp_path / "outer" / "inner") == inner.resolve()


def test_find_config_prefers_tether_toml_to_pyproject_in_the_same_directory(
    tmp_path: Path,
) -> None:
    tether = write(tmp_path, ONE_TARGET)
    write(tmp_path, '[tool.tether.targets.x]\nhost = "x"\npath = "~/x"\n', "pyproject.toml")
    assert find_config(tmp_path) == tether.resolve()


def test_find_config_takes_a_pyproject_with_tool_tether(tmp_path: Path) -> None:
    text = '[tool.tether.targets.x]\nhost = "x"\npath = "~/x"\n'
    pyproject = write(tmp_path / "proj", text, "pyproject.toml")
    (tmp_path / "proj" / "sub").mkdir()
    assert find_config(tmp_path / "proj" / "sub") == pyproject.resolve()


def test_find_config_skips_a_pyproject_without_tool_tether(tmp_path: Path) -> None:
    tether = write(tmp_path, ONE_TARGET)
    write(tmp_path / "sub", '[project]\nname = "sub"\n', "pyproject.toml")
    assert find_config(tmp_path / "sub") == tether.resolve()


def test_find_config_defaults_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = write(tmp_path, ONE_TARGET)
    monkeypatch.chdir(tmp_path)
    assert find_config() == file.resolve()


def test_no_config_anywhere_is_none_and_load_says_what_to_run(tmp_path: Path) -> None:
    empty = tmp_path / "nothing" / "here"
    empty.mkdir(parents=True)
    assert find_config(empty) is None
    with pytest.raises(ConfigError, match=r"tether init"):
        load(empty)


ENV_BASE = '[targets.a]\nhost = "h"\npath = "~/p"\n'


def test_the_env_table_is_parsed_strictly(tmp_path: Path) -> None:
    text = ENV_BASE + '[env]\npython = "3.11"\nrequirements = ["requirements/base.txt"]\n'
    text += 'extras = ["gpu"]\nindex_url = "https://example.org/simple"\n'
    env = parse_file(write(tmp_path, text)).env
    assert env is not None
    assert (env.python, env.extras) == ("3.11", ("gpu",))
    assert env.requirements == ("requirements/base.txt",)
    assert env.index_url == "https://example.org/simple"
    assert parse_file(write(tmp_path, ENV_BASE)).env is None


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('lock = "uv.lock"', "env.lock"),
        ('python = "three"', "env.python"),
        ('python = "python3; rm -rf ~"', "env.python"),
        ('requirements = "requirements.txt"', "env.requirements"),
        ('requirements = ["../outside.txt"]', "env.requirements"),
        ('index_url = "ftp://x"', "env.index_url"),
    ],
)
def test_a_bad_env_key_names_it(tmp_path: Path, table: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_file(write(tmp_path, ENV_BASE + "[env]\n" + table + "\n"))
    assert raised.value.key == key
