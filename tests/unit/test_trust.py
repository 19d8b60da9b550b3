"""tether.trust: what is recorded, what asks again, where the record lives."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tether import config as config_module
from tether import trust

BASE = '[targets.a]\nhost = "h"\npath = "~/p"\n'


def project(tmp_path: Path, text: str = BASE) -> config_module.Config:
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "tether.toml").write_text(text)
    return config_module.load(root, trusted=False)


def test_every_decisive_value_is_recorded_and_none_other(tmp_path: Path) -> None:
    text = BASE + 'scheduler = "slurm"\n[targets.a.slurm]\npartition = "p"\n'
    text += '[[targets.a.mappings]]\nlocal = "../lib"\nremote = "~/lib"\n'
    text += '[sync]\ninclude = [".env"]\nresults = ["out/"]\nexclude = ["data/"]\n'
    text += '[jobs]\nnotify = "curl x"\n'
    values = trust.decisive(project(tmp_path, text))
    assert set(values) == {
        "targets.a.host", "targets.a.path", "targets.a.python", "targets.a.scheduler",
        "targets.a.slurm.partition", "targets.a.mappings[0]", "sync.include", "jobs.notify",
    }  # fmt: skip
    assert values["targets.a.mappings[0]"] == f"{(tmp_path / 'lib').resolve()} -> ~/lib"


def test_untrusted_then_trusted_then_changed(tmp_path: Path) -> None:
    config = project(tmp_path)
    with pytest.raises(trust.UntrustedError, match="not trusted yet"):
        trust.require(config)
    trust.record(config)
    trust.require(config)
    assert config_module.load(config.root).targets["a"].host == "h"
    changed = project(tmp_path, BASE.replace('"h"', '"h2"'))
    with pytest.raises(trust.UntrustedError) as raised:
        trust.require(changed)
    assert "targets.a.host is now 'h2' (was 'h')" in raised.value.line()
    # Values that decide nothing (results, exclude) change freely.
    trust.require(project(tmp_path, BASE + '[sync]\nresults = ["x/"]\n'))


def test_the_record_is_private_and_a_tampered_one_trusts_nothing(tmp_path: Path) -> None:
    config = project(tmp_path)
    trust.record(config)
    store = Path(os.environ["XDG_STATE_HOME"]) / "tether" / "trust"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    data = json.loads(store.read_text())
    data[str(config.file.resolve())]["values"]["targets.a.host"] = "evil"
    store.write_text(json.dumps(data))
    assert trust.changes(config) == []  # the digest no longer matches: never trusted


def test_trust_is_per_config_file(tmp_path: Path) -> None:
    trust.record(project(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    (other / "tether.toml").write_text(BASE)
    with pytest.raises(trust.UntrustedError):
        trust.require(config_module.load(other, trusted=False))


def test_the_env_spec_values_decide_and_a_changed_index_asks_again(tmp_path: Path) -> None:
    text = BASE + '[env]\npython = "3.11"\nrequirements = ["req/base.txt"]\n'
    text += 'extras = ["gpu"]\nindex_url = "https://pypi.org/simple"\n'
    config = project(tmp_path, text)
    values = trust.decisive(config)
    assert values["env.requirements"] == "req/base.txt"
    assert (values["env.python"], values["env.extras"]) == ("3.11", "gpu")
    assert any("req/base.txt" in line for line in trust.summary(config))
    trust.record(config)
    changed = project(tmp_path, text.replace("pypi.org", "evil.example"))
    with pytest.raises(trust.UntrustedError) as raised:
        trust.require(changed)
    assert "env.index_url is now 'https://evil.example/simple'" in raised.value.line()
