"""A repeated scan on one agent answers only what changed, and means exactly a full scan.

Two real local agents: one keeps scanning the same tree (each answer a delta against its
previous one), the other scans afresh every time; after every edit both must give the same
manifest (RemoteEndpoint.scan, base digests reused and missing digests filled included).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

from tests.harness.local_agent import with_agent
from tether.core.manifest import FILE, Entry, Manifest
from tether.sync import state
from tether.sync.endpoint import RemoteEndpoint
from tether.sync.state import Base
from tether.transport.channel import AgentChannel, op_name
from tether.transport.local import LocalTransport

SKIP = [".git", ".tether", "outputs"]


def spy_scans(channel: AgentChannel) -> list[dict[str, Any]]:
    """Record the header of every scan answer the channel gets (its rows as they came: the
    endpoint takes them out of the answer as it reads them)."""
    answers: list[dict[str, Any]] = []

    def spy(call: Any) -> Any:
        async def recording(op: Any) -> Any:
            header, payload = await call(op)
            if op_name(op) == "scan":
                rows = list(header.get("rows", []))  # (a large answer's: an iterator)
                answers.append({**header, "rows": list(rows)})
                header = {**header, "rows": rows}
            return header, payload

        return recording

    channel.request = spy(channel.request)  # type: ignore[method-assign]
    channel.request_rows = spy(channel.request_rows)  # type: ignore[method-assign]
    return answers


async def remote_manifest(
    channel: AgentChannel, root: Path, base: Base, need: set[str], only: list[str] | None = None
) -> Manifest:
    """The remote tree as a push sees it: scanned, then the digests of `need` filled."""
    side = RemoteEndpoint(channel, str(root), SKIP)
    manifest = await side.scan(base, only)
    await side.digests(manifest, need)
    return manifest


async def full_scan(channel: AgentChannel, root: Path, base: Base, need: set[str]) -> Manifest:
    channel.scan_memo.clear()
    return await remote_manifest(channel, root, base, need)


async def delta_scan(channel: AgentChannel, root: Path, base: Base, need: set[str]) -> Manifest:
    return await remote_manifest(channel, root, base, need)


def mutate(root: Path, rng: random.Random, step: int) -> str:
    """One random edit of the tree; returns what it did."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    dirs = sorted(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())
    action = rng.choice(
        ["create", "create", "edit", "same-size-same-mtime", "delete", "mkdir", "rmtree",
         "symlink", "chmod", "rename", "skipped", "file-to-dir"]
    )  # fmt: skip
    if action == "create" or not files:
        folder = rng.choice([root, *dirs])
        path = folder / f"new{step}.txt"
        path.write_text("x" * rng.randrange(0, 50))
        return f"create {path}"
    victim = rng.choice(files)
    if action == "edit":
        victim.write_bytes(victim.read_bytes() + b"more")
    elif action == "same-size-same-mtime":
        before = victim.stat()
        data = victim.read_bytes()
        victim.write_bytes(bytes(255 - b for b in data))
        os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif action == "delete":
        victim.unlink()
    elif action == "mkdir":
        (victim.parent / f"dir{step}" / "sub").mkdir(parents=True)
        (victim.parent / f"dir{step}" / "sub" / "f").write_text("in a new dir")
    elif action == "rmtree" and dirs:
        doomed = rng.choice(dirs)
        for path in sorted(doomed.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        doomed.rmdir()
    elif action == "symlink":
        victim.unlink()
        victim.symlink_to(f"target-{step}")
    elif action == "chmod":
        victim.chmod(0o755 if victim.stat().st_mode & 0o100 == 0 else 0o644)
    elif action == "rename":
        victim.rename(victim.with_name(f"renamed{step}"))
    elif action == "skipped":
        (root / "outputs").mkdir(exist_ok=True)
        (root / "outputs" / f"r{step}").write_text("result")
    elif action == "file-to-dir":
        victim.unlink()
        victim.mkdir()
        (victim / "inside").write_text("now a directory")
    return f"{action} {victim}"


def make_tree(root: Path) -> None:
    for index in range(40):
        path = root / f"d{index % 4}" / f"e{index % 3}" / f"f{index}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"print({index})\n" * (index % 5 + 1))
    (root / "link").symlink_to("d0")


def test_a_delta_scan_is_exactly_a_full_scan_across_edits(tmp_path: Path) -> None:
    root = tmp_path / "remote"
    root.mkdir()
    make_tree(root)
    rng = random.Random(20240607)

    async def body(steady: AgentChannel) -> None:
        answers = spy_scans(steady)
        fresh = await AgentChannel.open(LocalTransport(), "python3")
        try:
            base = Base(tmp_path / "base.json")
            first = await delta_scan(steady, root, base, set())
            # A base that knows some files (by stat): their digests are reused.
            for path, entry in list(first.items())[::3]:
                if entry.kind == FILE:
                    base.record(path, entry.with_digest("b" * 64), entry, entry)
            for step in range(60):
                what = mutate(root, rng, step)
                need = {p for p in first if rng.random() < 0.3}
                # The base moves too (pushes record and forget): digests reused follow it.
                for path, entry in list(first.items())[step % 5 :: 7]:
                    chance = rng.random()
                    if entry.kind == FILE and chance < 0.4:
                        base.record(path, entry.with_digest(f"{step:064d}"), entry, entry)
                    elif path in base.entries and chance < 0.7:  # only the remote stat moves
                        stat = entry if chance < 0.55 else Entry(FILE, 1, step)
                        base.record(path, base.entries[path], stat, None)
                    else:
                        base.forget(path)
                got = await delta_scan(steady, root, base, need)
                want = await full_scan(fresh, root, base, need)
                assert got == want, f"after step {step}: {what}"
                first = want
                assert answers[-1].get("since"), "the repeated scan was not a delta"
                assert len(answers[-1]["rows"]) < len(want), what
        finally:
            await fresh.close()

    with_agent(body)


def test_digests_cached_after_a_scan_reach_the_next_delta(tmp_path: Path) -> None:
    """A digest computed (and cached) by the agent changes the file's row: it is sent."""
    root = tmp_path / "remote"
    root.mkdir()
    make_tree(root)
    time.sleep(2.2)  # older than the agent's racy window: its digests are cached

    async def body(steady: AgentChannel) -> None:
        answers = spy_scans(steady)
        fresh = await AgentChannel.open(LocalTransport(), "python3")
        try:
            base = Base(tmp_path / "base.json")
            listed = await delta_scan(steady, root, base, set())
            assert all(entry.digest is None for entry in listed.values())
            need = {path for path, entry in listed.items() if entry.kind == FILE}
            filled = await delta_scan(steady, root, base, need)
            assert answers[-1]["since"] and answers[-1]["rows"] == []
            assert all(filled[path].digest for path in need)
            again = await delta_scan(steady, root, base, set())
            assert answers[-1]["since"]
            assert {row[0] for row in answers[-1]["rows"]} == need
            assert again == await full_scan(fresh, root, base, set())
            assert all(again[path].digest for path in need)
        finally:
            await fresh.close()

    with_agent(body)


def test_concurrent_and_interrupted_scans_fall_back_to_full_answers(tmp_path: Path) -> None:
    root = tmp_path / "remote"
    root.mkdir()
    make_tree(root)

    async def body(channel: AgentChannel) -> None:
        answers = spy_scans(channel)
        base = Base(tmp_path / "base.json")
        await delta_scan(channel, root, base, set())
        (root / "d0" / "late.txt").write_text("late")
        # Two scans sent with the same token: the agent answers the second in full.
        one, two = await asyncio.gather(
            delta_scan(channel, root, base, set()), delta_scan(channel, root, base, set())
        )
        assert one == two
        assert "d0/late.txt" in one
        assert sum(1 for answer in answers[-2:] if answer.get("since")) == 1
        # A token the agent does not hold (a lost answer): a full answer, still right.
        key = next(iter(channel.scan_memo))
        held = channel.scan_memo[key]
        channel.scan_memo[key] = ("not-a-token", *held[1:])
        (root / "d1" / "e1" / "f1.py").unlink()
        after = await delta_scan(channel, root, base, set())
        assert not answers[-1].get("since")
        assert "d1/e1/f1.py" not in after
        assert after == await full_scan(channel, root, base, set())

    with_agent(body)


def test_scans_of_other_roots_skips_or_subpaths_do_not_share_a_memo(tmp_path: Path) -> None:
    for name in ("a", "b"):
        make_tree(tmp_path / name)
    (tmp_path / "b" / "only-in-b").write_text("b")

    async def body(channel: AgentChannel) -> None:
        base = Base(tmp_path / "base.json")
        results: dict[str, Manifest] = {}
        for _ in range(2):
            for name in ("a", "b"):
                results[name] = await remote_manifest(channel, tmp_path / name, base, set())
            sub = await remote_manifest(channel, tmp_path / "a", base, set(), only=["d0"])
            assert set(sub) == {p for p in results["a"] if p == "d0" or p.startswith("d0/")}
        assert "only-in-b" in results["b"] and "only-in-b" not in results["a"]
        assert set(results["a"]) | {"only-in-b"} == set(results["b"])
        assert all(isinstance(entry, Entry) for entry in results["a"].values())

    with_agent(body)


def test_digests_taken_from_the_base_follow_what_the_last_push_recorded(tmp_path: Path) -> None:
    """A repeated scan patches the kept manifest with the agent's delta: a path whose base
    entry or remote stat a push recorded since (a new digest, a stat that moved, forgotten,
    learned again) takes its digest from the base anew though nothing changed there."""
    root = tmp_path / "remote"
    root.mkdir()
    make_tree(root)
    file = tmp_path / "state" / "push.json"
    other = tmp_path / "state" / "pull.json"

    def push_records(base: Base, path: str, step: int, scanned: Entry) -> None:
        """What one push records of path, by step."""
        entry = base.entries.get(path, scanned.with_digest("0" * 64))
        if step % 4 == 0:
            base.record(path, entry.with_digest(f"{step:064d}"), scanned, None)
        elif step % 4 == 1:
            base.record(path, entry, Entry(FILE, scanned.size + 1, scanned.mtime_ns), None)
        elif step % 4 == 2:
            base.forget(path)
        else:
            base.record(path, scanned.with_digest(f"{step:064d}"), scanned, scanned)

    async def body(steady: AgentChannel) -> None:
        answers = spy_scans(steady)
        fresh = await AgentChannel.open(LocalTransport(), "python3")
        try:
            base = Base(file)
            first = await delta_scan(steady, root, base, set())
            files = sorted(path for path, entry in first.items() if entry.kind == FILE)
            for path in files:
                base.record(path, first[path].with_digest("a" * 64), first[path], first[path])
            base.save()
            for step in range(12):
                base = Base.load(file)  # the next push's base: the copy of the file saved
                got = await delta_scan(steady, root, base, set())
                assert answers[-1].get("since") and answers[-1]["rows"] == []
                assert got == await full_scan(fresh, root, base, set()), f"step {step}"
                for path in files[step % 3 :: 5]:
                    push_records(base, path, step, first[path])
                base.save()
                if step == 5:
                    state._LOADED.clear()  # as after another process saved the file
                if step == 8:  # another base scans the same tree on the channel between
                    pulled = await delta_scan(steady, root, Base.load(other), set())
                    assert all(entry.digest is None for entry in pulled.values())
        finally:
            await fresh.close()

    with_agent(body)
