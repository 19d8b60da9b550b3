"""The send fast path's kept answers (tether.kernel.sendcache) on real files: found only
while every file the answer came from is as it was, never for a file changed just now."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tether.kernel import sendcache
from tether.paths import trust_store


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project dir with a tether.toml, and a runtime and state dir of its own."""
    monkeypatch.setenv("TETHER_RUNTIME_DIR", str(tmp_path / "rt"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "tether.toml").write_text('[targets.box]\nhost = "box"\npath = "~/p"\n')
    Path(trust_store()).write_text("{}")
    return root


def keep(root: Path, on: str | None = None) -> None:
    """Keep an answer for root's config: its inputs the config, the store, requirements.txt."""
    config = str(root / "tether.toml")
    inputs = [config, trust_store(), str(root / "requirements.txt")]
    sendcache.remember(config, on, None, "/run/h.sock", str(root), inputs)


def test_a_kept_answer_is_found_from_any_directory_of_the_project_while_unchanged(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sendcache, "RACY_NS", 0)
    keep(project)
    assert sendcache.lookup(str(project / "src"), None, None) == ("/run/h.sock", str(project))
    assert sendcache.lookup(str(project), "other", None) is None  # another --on
    (project / "train.py").write_text("x = 1\n")  # not an input
    assert sendcache.lookup(str(project), None, None) is not None


def test_a_config_rewritten_at_the_same_size_and_mtime_is_noticed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sendcache, "RACY_NS", 0)
    keep(project)
    config = project / "tether.toml"
    st = config.stat()
    with open(config, "r+b") as handle:
        handle.write(config.read_bytes().replace(b'"box"', b'"evl"'))
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (config.stat().st_size, config.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert sendcache.lookup(str(project), None, None) is None


@pytest.mark.parametrize("change", ["store", "appears", "nearer", "state_home"])
def test_any_change_of_what_the_answer_came_from_misses(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, change: str
) -> None:
    monkeypatch.setattr(sendcache, "RACY_NS", 0)
    keep(project)
    if change == "store":  # `tether trust`, or a record withdrawn
        Path(trust_store()).write_text('{"x": 1}')
    elif change == "appears":  # an env spec file the trust check would now read
        (project / "requirements.txt").write_text("--index-url https://example.invalid\n")
    elif change == "nearer":  # a tether.toml between here and the kept one governs src/
        (project / "src" / "tether.toml").write_text("")
    else:  # another state dir: another trust store
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state2"))
    assert sendcache.lookup(str(project / "src"), None, None) is None


def test_an_answer_whose_files_changed_just_now_is_not_kept(project: Path) -> None:
    keep(project)  # the config and the store were written within RACY_NS
    assert sendcache.lookup(str(project), None, None) is None


def test_the_cache_file_is_private_and_a_broken_one_is_a_miss(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sendcache, "RACY_NS", 0)
    keep(project)
    cache = Path(os.environ["TETHER_RUNTIME_DIR"]) / sendcache.FILE_NAME
    assert cache.stat().st_mode & 0o777 == 0o600
    cache.write_text("not json")
    assert sendcache.lookup(str(project), None, None) is None
    keep(project)  # rewritten whole
    assert sendcache.lookup(str(project), None, None) is not None
