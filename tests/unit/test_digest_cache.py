"""The digest cache (both sides): a cached digest never outlives the bytes it describes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tether.agent import fsops
from tether.sync.local import Scope, fill_local_digests, scan_local


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files count as settled at once (the racy window is tested on its own)."""
    monkeypatch.setattr(fsops, "RACY_NS", -(10**12))


def test_an_in_place_edit_that_keeps_size_and_mtime_is_not_served_from_the_cache(
    tmp_path: Path, settled: None
) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"one")
    cache = fsops.DigestCache(str(tmp_path / "cache"), str(tmp_path))
    assert cache.get(str(file), os.lstat(file), True) == sha(b"one")
    before = os.lstat(file)
    with open(file, "r+b") as handle:  # same inode, same size
        handle.write(b"two")
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.lstat(file)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert cache.get(str(file), after, True) == sha(b"two")
    cache.save()
    again = fsops.DigestCache(str(tmp_path / "cache"), str(tmp_path))
    assert again.get(str(file), os.lstat(file), False) == sha(b"two")


def test_a_digest_is_not_cached_under_a_stat_the_bytes_no_longer_have(
    tmp_path: Path, settled: None
) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"old")
    stale = os.lstat(file)
    file.write_bytes(b"newer bytes")
    cache = fsops.DigestCache(str(tmp_path / "cache"), str(tmp_path))
    assert cache.get(str(file), stale, True) == sha(b"newer bytes")
    assert cache.count() == 0
    assert cache.get(str(file), os.lstat(file), True) == sha(b"newer bytes")
    assert cache.count() == 1 and cache.known(os.lstat(file)) == sha(b"newer bytes")


def test_a_file_written_just_now_is_hashed_but_not_cached(tmp_path: Path) -> None:
    """Another write within the same timestamp tick could keep every stat field."""
    file = tmp_path / "f"
    file.write_bytes(b"fresh")
    cache = fsops.DigestCache(str(tmp_path / "cache"), str(tmp_path))
    assert cache.get(str(file), os.lstat(file), True) == sha(b"fresh")
    assert cache.count() == 0
    assert cache.get(str(file), os.lstat(file), False) is None


def test_local_digests_describe_the_scanned_bytes(tmp_path: Path, settled: None) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name * 3)
    scope = Scope.of((), (), ())
    cache = fsops.DigestCache(str(tmp_path / ".tether"), str(tmp_path))
    first = fill_local_digests(tmp_path, scan_local(tmp_path, scope), cache)
    assert {path: entry.digest for path, entry in first.items()} == {
        name: sha(name.encode() * 3) for name in ("a", "b", "c")
    }
    (tmp_path / "b").write_text("changed")
    (tmp_path / "d").write_text("new")
    scanned = scan_local(tmp_path, scope)
    # Gone between the scan and the digests: a file known to the cache keeps the digest of
    # the bytes it had when scanned; one never hashed drops out (nothing to hash).
    (tmp_path / "c").unlink()
    (tmp_path / "d").unlink()
    second = fill_local_digests(tmp_path, scanned, cache)
    assert second["a"].digest == sha(b"aaa")
    assert second["b"].digest == sha(b"changed")
    assert second["b"].size == len("changed")
    assert second["c"].digest == sha(b"ccc")
    assert "d" not in second


def test_repeated_scans_see_an_edit_that_keeps_size_and_mtime(
    tmp_path: Path, settled: None
) -> None:
    """A process that scans again (the sync daemon) reuses a file's Entry only for the
    very same lstat, ctime included."""
    file = tmp_path / "f"
    file.write_bytes(b"one")
    scope = Scope.of((), (), ())
    cache = fsops.DigestCache(str(tmp_path / ".tether"), str(tmp_path))
    for _ in range(2):
        scanned = fill_local_digests(tmp_path, scan_local(tmp_path, scope), cache)
        assert scanned["f"].digest == sha(b"one")
    before = os.lstat(file)
    with open(file, "r+b") as handle:
        handle.write(b"two")
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    for _ in range(2):
        scanned = fill_local_digests(tmp_path, scan_local(tmp_path, scope), cache)
        assert scanned["f"].digest == sha(b"two")
        assert scanned["f"].mtime_ns == before.st_mtime_ns


def test_a_cache_of_the_older_json_form_is_read_and_rewritten(tmp_path: Path) -> None:
    """Version 2 ({"ino:size:mtime:ctime": hex}) still serves its digests; the first save
    writes the compact form and removes it."""
    files = [tmp_path / name for name in ("a", "b")]
    for file in files:
        file.write_bytes(file.name.encode())
    fake = ["1" * 64, "2" * 64]  # not the bytes' digests: served only from the cache
    cache_dir = tmp_path / "cache"
    probe = fsops.DigestCache(str(cache_dir), str(tmp_path))
    old = cache_dir / os.path.basename(probe.file).replace("digests-3-", "digests-2-")
    old = old.with_suffix(".json")
    cache_dir.mkdir()
    rows = {fsops.stat_key(os.lstat(f)): digest for f, digest in zip(files, fake, strict=True)}
    rows["not:a:key"] = "3" * 64
    rows["1:2:3:4"] = "not hex"
    old.write_text(json.dumps(rows))
    cache = fsops.DigestCache(str(cache_dir), str(tmp_path))
    assert [cache.known(os.lstat(f)) for f in files] == fake
    cache.save()
    assert not old.exists()
    assert [p.name for p in cache_dir.iterdir()] == [os.path.basename(probe.file)]
    again = fsops.DigestCache(str(cache_dir), str(tmp_path))
    assert again.count() == 2
    assert [again.get(str(f), os.lstat(f), True) for f in files] == fake


def test_a_kept_cache_is_read_once_and_serves_only_the_file_it_came_from(
    tmp_path: Path, settled: None
) -> None:
    """keep=True (the sync daemon's): the records this process read or saved serve the next
    cache of the same file while that file is unchanged, never the changes of another."""
    files = [tmp_path / name for name in ("a", "b")]
    for file in files:
        file.write_bytes(file.name.encode())
    cache_dir = str(tmp_path / "cache")
    first = fsops.DigestCache(cache_dir, str(tmp_path), keep=True)
    assert first.get(str(files[0]), os.lstat(files[0]), True) == sha(b"a")
    first.save()
    second = fsops.DigestCache(cache_dir, str(tmp_path), keep=True)
    assert second.data is first.data  # not read again
    assert second.get(str(files[1]), os.lstat(files[1]), True) == sha(b"b")
    assert second.data is not first.data and first.count() == 1  # changed: its own
    third = fsops.DigestCache(cache_dir, str(tmp_path), keep=True)
    assert third.count() == 1 and third.known(os.lstat(files[1])) is None  # b not saved
    # Another process saves the cache (temp + rename): read again.
    other = fsops.DigestCache(cache_dir, str(tmp_path))
    assert other.get(str(files[1]), os.lstat(files[1]), True) == sha(b"b")
    other.save()
    again = fsops.DigestCache(cache_dir, str(tmp_path), keep=True)
    assert again.count() == 2 and again.known(os.lstat(files[1])) == sha(b"b")
