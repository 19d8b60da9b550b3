"""plan_push and plan_pull on hand-made manifests: one edge case per test."""

from __future__ import annotations

import hashlib

from tether.core.manifest import DIR, FILE, LINK, Entry, Manifest
from tether.core.plan import Conflict, Delete, Plan, Upload, plan_pull, plan_push


def file(content: str, executable: bool = False, mtime: int = 1) -> Entry:
    digest = hashlib.sha256(content.encode()).hexdigest()
    return Entry(FILE, len(content), mtime, 0o755 if executable else 0o644, digest)


def folder(mtime: int = 1) -> Entry:
    return Entry(DIR, 0, mtime, 0o755)


def link(target: str, mtime: int = 1) -> Entry:
    return Entry(LINK, 0, mtime, 0o777, None, target)


def conflicts(plan: Plan) -> list[str]:
    return [conflict.path for conflict in plan.conflicts]


def not_results(path: str) -> bool:
    return path != "results" and not path.startswith("results/")


# --------------------------------------------------------------------------- push


def test_new_local_file_is_uploaded_expecting_nothing_there() -> None:
    local = {"a": file("x")}
    assert plan_push(local, {}, {}) == Plan(uploads=[Upload("a", local["a"], None)])


def test_identical_content_is_same_whatever_the_mtimes() -> None:
    plan = plan_push({"a": file("x", mtime=1)}, {"a": file("x", mtime=99)}, {})
    assert plan == Plan(same=["a"])
    assert plan.empty


def test_local_edit_of_an_unchanged_pushed_file_updates_it() -> None:
    remote = {"a": file("old", mtime=5)}
    local = {"a": file("new")}
    plan = plan_push(local, remote, {"a": file("old")})
    assert plan == Plan(uploads=[Upload("a", local["a"], remote["a"])])


def test_exec_bit_change_alone_is_an_update() -> None:
    local = {"run.sh": file("echo", executable=True)}
    remote = {"run.sh": file("echo", mtime=7)}
    plan = plan_push(local, remote, {"run.sh": file("echo")})
    assert plan.uploads == [Upload("run.sh", local["run.sh"], remote["run.sh"])]


def test_other_mode_bits_are_not_a_change() -> None:
    local = {"a": Entry(FILE, 1, 1, 0o600, file("x").digest)}
    assert plan_push(local, {"a": file("x")}, {}) == Plan(same=["a"])


def test_symlink_target_change_is_an_update() -> None:
    local = {"cur": link("v2")}
    remote = {"cur": link("v1", mtime=3)}
    plan = plan_push(local, remote, {"cur": link("v1")})
    assert plan.uploads == [Upload("cur", local["cur"], remote["cur"])]


def test_symlink_with_the_same_target_is_same() -> None:
    assert plan_push({"cur": link("v1")}, {"cur": link("v1", mtime=9)}, {}).same == ["cur"]


def test_local_delete_of_an_unchanged_pushed_file_deletes_it() -> None:
    remote = {"a": file("x", mtime=4)}
    plan = plan_push({}, remote, {"a": file("x")})
    assert plan == Plan(deletes=[Delete("a", remote["a"])])


def test_local_delete_of_a_remotely_changed_file_is_a_conflict() -> None:
    plan = plan_push({}, {"a": file("changed there")}, {"a": file("x")})
    assert plan.deletes == []
    assert conflicts(plan) == ["a"]


def test_forced_delete_of_a_remotely_changed_file_keeps_a_backup() -> None:
    remote = {"a": file("changed there")}
    plan = plan_push({}, remote, {"a": file("x")}, force=True)
    assert plan == Plan(deletes=[Delete("a", remote["a"], backup=True)])


def test_local_delete_of_a_file_already_gone_on_the_remote_does_nothing() -> None:
    assert plan_push({}, {}, {"a": file("x")}) == Plan()


def test_deletes_go_deepest_first() -> None:
    remote: Manifest = {"d": folder(), "d/e": folder(), "d/e/f": file("1"), "g": file("2")}
    base = dict(remote)
    plan = plan_push({}, remote, base)
    assert [delete.path for delete in plan.deletes] == ["d/e/f", "d/e", "d", "g"]


def test_never_pushed_remote_file_with_the_same_content_is_same() -> None:
    assert plan_push({"a": file("x")}, {"a": file("x", mtime=50)}, {}) == Plan(same=["a"])


def test_never_pushed_remote_file_with_other_content_is_a_conflict() -> None:
    plan = plan_push({"a": file("mine")}, {"a": file("theirs")}, {})
    assert plan.uploads == []
    assert plan.conflicts == [
        Conflict("a", "exists on the remote with other content and was never pushed")
    ]


def test_forced_push_over_a_never_pushed_remote_file_keeps_a_backup() -> None:
    local, remote = {"a": file("mine")}, {"a": file("theirs")}
    plan = plan_push(local, remote, {}, force=True)
    assert plan == Plan(uploads=[Upload("a", local["a"], remote["a"], backup=True)])


def test_remote_change_since_the_last_push_is_a_conflict() -> None:
    plan = plan_push({"a": file("mine v2")}, {"a": file("theirs")}, {"a": file("mine v1")})
    assert plan.uploads == []
    assert conflicts(plan) == ["a"]


def test_forced_push_over_a_remote_change_keeps_a_backup() -> None:
    local, remote = {"a": file("mine v2")}, {"a": file("theirs")}
    plan = plan_push(local, remote, {"a": file("mine v1")}, force=True)
    assert plan.uploads == [Upload("a", local["a"], remote["a"], backup=True)]


def test_remote_exec_bit_change_since_the_last_push_is_a_conflict() -> None:
    plan = plan_push({"a": file("v2")}, {"a": file("v1", executable=True)}, {"a": file("v1")})
    assert conflicts(plan) == ["a"]


def test_remote_file_without_a_digest_is_never_taken_as_same() -> None:
    remote = {"a": Entry(FILE, 1, 1, 0o644)}
    assert conflicts(plan_push({"a": file("x")}, remote, {})) == ["a"]
    assert plan_push({}, remote, {"a": file("x")}).deletes == []


def test_local_file_where_the_remote_has_a_directory_it_made_itself_is_a_conflict() -> None:
    remote = {"a": folder(), "a/out": file("result")}
    for force in (False, True):
        plan = plan_push({"a": file("x")}, remote, {}, force=force)
        assert plan.uploads == [] and plan.deletes == []
        assert conflicts(plan) == ["a"]


def test_local_file_replacing_a_pushed_directory_deletes_its_contents_then_replaces_it() -> None:
    remote: Manifest = {"a": folder(), "a/b": file("1")}
    local = {"a": file("now a file")}
    plan = plan_push(local, remote, dict(remote))
    assert plan.conflicts == []
    assert plan.deletes == [Delete("a/b", remote["a/b"])]
    assert plan.uploads == [Upload("a", local["a"], remote["a"])]


def test_local_file_replacing_a_pushed_directory_that_holds_remote_files_is_a_conflict() -> None:
    """A job wrote a checkpoint into a directory tether made; the user then replaced the
    directory by a file locally. The agent can never replace a non-empty directory, so an
    upload here fails on every push: this must be a conflict, like any remote-made content."""
    remote: Manifest = {"a": folder(), "a/b": file("1"), "a/w.ckpt": file("weights")}
    base: Manifest = {"a": folder(), "a/b": file("1")}
    plan = plan_push({"a": file("now a file")}, remote, base, synced=lambda p: "ckpt" not in p)
    assert [upload.path for upload in plan.uploads] == []
    assert conflicts(plan) == ["a"]


def test_local_directory_replacing_a_pushed_file_replaces_it() -> None:
    remote = {"a": file("1", mtime=3)}
    local: Manifest = {"a": folder(), "a/b": file("2")}
    plan = plan_push(local, remote, {"a": file("1")})
    assert plan == Plan(
        uploads=[Upload("a", local["a"], remote["a"]), Upload("a/b", local["a/b"], None)]
    )


def test_local_directory_where_the_remote_has_a_never_pushed_file_is_a_conflict() -> None:
    plan = plan_push({"a": folder(), "a/b": file("2")}, {"a": file("theirs")}, {})
    assert conflicts(plan) == ["a"]


def test_directories_on_both_sides_are_same() -> None:
    assert plan_push({"d": folder(1)}, {"d": folder(2)}, {}) == Plan(same=["d"])


def test_pushed_directory_deleted_locally_is_deleted_whatever_its_mtime() -> None:
    plan = plan_push({}, {"d": folder(5)}, {"d": folder(1)})
    assert plan == Plan(deletes=[Delete("d", folder(5))])


def test_pushed_file_deleted_locally_but_a_directory_on_the_remote_is_a_conflict() -> None:
    remote: Manifest = {"d": folder(), "d/x": file("theirs")}
    plan = plan_push({}, remote, {"d": file("mine")})
    assert plan.deletes == [] and conflicts(plan) == ["d"]
    forced = plan_push({}, remote, {"d": file("mine")}, force=True)
    assert forced.deletes == [Delete("d", remote["d"], backup=True)]


def test_paths_sync_does_not_own_are_never_deleted() -> None:
    remote = {"results": folder(), "results/x": file("1"), "a": file("2")}
    base = dict(remote)
    plan = plan_push({}, remote, base, synced=not_results)
    assert [delete.path for delete in plan.deletes] == ["a"]
    assert plan.conflicts == []


def test_remote_files_never_pushed_and_not_local_are_left_alone() -> None:
    remote = {"log.txt": file("job output"), "d": folder(), "d/x": file("1")}
    assert plan_push({}, remote, {}) == Plan()


def test_plan_is_empty_when_it_only_has_conflicts_or_same() -> None:
    assert Plan(conflicts=[Conflict("a", "why")], same=["b"]).empty
    assert not Plan(deletes=[Delete("a", file("x"))]).empty
    assert not Plan(uploads=[Upload("a", file("x"), None)]).empty


def test_push_plans_are_sorted_and_independent_of_manifest_order() -> None:
    local = {name: file(name) for name in ["b", "a", "c d", "-n", "$(x)", "é"]}
    backwards = dict(reversed(list(local.items())))
    plan = plan_push(local, {}, {})
    assert plan == plan_push(backwards, {}, {})
    assert [upload.path for upload in plan.uploads] == sorted(local)


# --------------------------------------------------------------------------- pull


def test_pull_creates_missing_local_files() -> None:
    remote = {"results": folder(), "results/a": file("1")}
    plan = plan_pull(remote, {}, {})
    assert plan == Plan(uploads=[Upload(p, remote[p], None) for p in ["results", "results/a"]])


def test_pull_never_deletes_local_files() -> None:
    plan = plan_pull({}, {"results/a": file("1")}, {"results/a": file("1")})
    assert plan == Plan()


def test_pull_of_identical_content_is_same() -> None:
    assert plan_pull({"r": file("1", mtime=3)}, {"r": file("1")}, {}) == Plan(same=["r"])


def test_pull_overwrites_a_local_file_unchanged_since_the_last_pull() -> None:
    remote, local = {"r": file("v2")}, {"r": file("v1", mtime=8)}
    plan = plan_pull(remote, local, {"r": file("v1")})
    assert plan == Plan(uploads=[Upload("r", remote["r"], local["r"])])


def test_pull_keeps_a_local_change_when_the_remote_did_not_change() -> None:
    assert plan_pull({"r": file("v1")}, {"r": file("mine")}, {"r": file("v1")}) == Plan()


def test_pull_reports_a_local_change_when_the_remote_changed_too() -> None:
    plan = plan_pull({"r": file("v2")}, {"r": file("mine")}, {"r": file("v1")})
    assert plan.uploads == []
    assert plan.conflicts == [Conflict("r", "changed locally since the last pull")]


def test_forced_pull_over_a_local_change_keeps_a_backup() -> None:
    remote, local = {"r": file("v2")}, {"r": file("mine")}
    plan = plan_pull(remote, local, {"r": file("v1")}, force=True)
    assert plan == Plan(uploads=[Upload("r", remote["r"], local["r"], backup=True)])


def test_pull_over_a_local_file_never_pulled_is_a_conflict() -> None:
    assert conflicts(plan_pull({"r": file("theirs")}, {"r": file("mine")}, {})) == ["r"]


def test_pull_of_a_directory_over_a_local_file_is_a_conflict_even_forced() -> None:
    for force in (False, True):
        plan = plan_pull({"r": folder()}, {"r": file("mine")}, {}, force=force)
        assert plan.uploads == [] and conflicts(plan) == ["r"]


def test_pull_of_a_file_over_a_local_directory_is_a_conflict_even_forced() -> None:
    for force in (False, True):
        plan = plan_pull({"r": file("1")}, {"r": folder()}, {"r": file("0")}, force=force)
        assert plan.uploads == [] and conflicts(plan) == ["r"]


def test_pull_never_plans_deletes() -> None:
    remote = {"r": file("1"), "s": file("2")}
    local = {"r": file("0"), "s": file("2"), "t": file("3")}
    assert plan_pull(remote, local, {"r": file("0"), "t": file("3")}).deletes == []
