"""Invariants 1-4 of DESIGN.md section 5, proven on the pure planner against a model.

The model is a local tree, a remote tree and the per-target bases, plus an engine that
executes plans the way tether.sync.session and tether.agent.fsops do: deletes first (in plan
order, a delete only if the path is still what was scanned, a non-empty directory kept and
forgotten), then uploads (directories first, shallowest first), each only if the path still
holds `expect`, keeping the old content under `PATH.tether-conflict-N` when `backup`. The
base is recorded per completed operation, so a push cut at any point is modelled exactly.

Next to the trees the model keeps ghost state: every version written on the remote side
(a user editing, a job writing results) and on the local side, and every backup the engine
made. The checks compare what happened with what the invariants allow; each test below runs
the same random histories and asserts one family of checks, so a failure names the
invariant it breaks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from tether.core.manifest import DIR, FILE, LINK, Entry, Manifest, parents
from tether.core.plan import Delete, Plan, Upload, plan_pull, plan_push

Synced = Callable[[str], bool]
PushPlanner = Callable[[Manifest, Manifest, Manifest, Synced, bool], Plan]
PullPlanner = Callable[[Manifest, Manifest, Manifest, bool], Plan]

UNOWNED = "invariant 1: a file created on the remote was deleted or overwritten"
REMOTE_CHANGE = "invariant 2: a change made on the remote was silently overwritten"
PULL = "invariant 3: a pull deleted or clobbered a local file"
CONVERGE = "invariant 4: a clean push did not converge"
UNSYNCED = "results and ignored paths were touched"
PURE = "the planner is not pure, deterministic or well-formed"

NAMES = ["a", "b", "c d", "$(x)", "-n", "é"]
RESULTS = "results"
BACKUP_MARK = ".tether-conflict-"


def synced(path: str) -> bool:
    """What push owns: nothing under results/ and nothing named *.ckpt (or inside one)."""
    parts = path.split("/")
    return parts[0] != RESULTS and not any(part.endswith(".ckpt") for part in parts)


def pulled(path: str) -> bool:
    """The paths `tether pull` brings back in the model: the results directory."""
    return path == RESULTS or path.startswith(RESULTS + "/")


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Write:
    """Create or replace a file (or symlink) at path, the way a user or a job does."""

    side: str
    path: str
    content: str
    executable: bool = False
    link: bool = False


@dataclass(frozen=True)
class Edit:
    """Rewrite an existing file or symlink on one side (picked by index)."""

    side: str
    pick: int
    content: str
    executable: bool = False


@dataclass(frozen=True)
class Remove:
    """rm -rf an existing path on one side (picked by index)."""

    side: str
    pick: int


@dataclass(frozen=True)
class Rename:
    """mv a local path (file or whole directory) elsewhere: a delete plus a create."""

    pick: int
    to: str


@dataclass(frozen=True)
class Push:
    """A push; `race` is a remote-side change landing between the scan and the writes."""

    force: bool = False
    race: Write | Edit | Remove | None = None


@dataclass(frozen=True)
class Cut:
    """A push whose link drops after `keep` operations (possibly between backup and write)."""

    keep: int
    force: bool = False
    mid_backup: bool = False


@dataclass(frozen=True)
class Pull:
    """A pull of results/."""

    force: bool = False


Step = Write | Edit | Remove | Rename | Push | Cut | Pull


def _name(names: list[str]) -> st.SearchStrategy[str]:
    """Mostly the first name, so that paths on both sides collide often."""
    return st.one_of(st.just(names[0]), st.sampled_from(names))


def _path(first: list[str], hot: list[str]) -> st.SearchStrategy[str]:
    built = st.builds(
        lambda head, middle, tail: "/".join([head, *middle, *tail]),
        _name(first),
        st.lists(_name(NAMES), max_size=1),
        st.lists(_name([*NAMES, "w.ckpt"]), max_size=1),
    )
    return st.one_of(st.sampled_from(hot), built)


LOCAL_PATHS = _path([*NAMES, RESULTS], ["a", "b", "a/b", "results/a"])
REMOTE_PATHS = _path([RESULTS, *NAMES], ["a", "a/b", "results/a", "results/a", "a/w.ckpt"])
CONTENTS = st.sampled_from(["0", "1", "2"])
PICKS = st.integers(min_value=0, max_value=50)


def _side_steps(
    side: str, paths: st.SearchStrategy[str], writes: int, edits: int = 1
) -> list[st.SearchStrategy[Step]]:
    links = st.sampled_from([False, False, False, True])
    write = st.builds(Write, st.just(side), paths, CONTENTS, st.booleans(), links)
    return [
        *[write] * writes,
        *[st.builds(Edit, st.just(side), PICKS, CONTENTS, st.booleans())] * edits,
        st.builds(Remove, st.just(side), PICKS),
    ]


REMOTE_STEP: st.SearchStrategy[Write | Edit | Remove] = st.one_of(
    *_side_steps("remote", REMOTE_PATHS, writes=2, edits=2)
)
RESULT_WRITE: st.SearchStrategy[Step] = st.builds(
    Write,
    st.sampled_from(["local", "remote", "remote"]),
    st.sampled_from(["results/a", "results/a", "results/b/a", "results"]),
    CONTENTS,
    st.booleans(),
)
FORCE = st.sampled_from([False, False, False, True])
STEP: st.SearchStrategy[Step] = st.one_of(
    *_side_steps("local", LOCAL_PATHS, writes=3),
    st.builds(Rename, PICKS, LOCAL_PATHS),
    REMOTE_STEP,
    REMOTE_STEP,
    st.builds(Push, FORCE, st.one_of(st.none(), st.none(), st.none(), REMOTE_STEP)),
    st.builds(Push, FORCE),
    st.builds(Cut, PICKS, FORCE, st.booleans()),
    st.builds(Pull, FORCE),
    RESULT_WRITE,
    RESULT_WRITE,
)
STEPS = st.integers(min_value=1, max_value=30).flatmap(
    lambda size: st.lists(STEP, min_size=size, max_size=size)
)


# --------------------------------------------------------------------------- trees

Tree = dict[str, Entry]


def _digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def _file(content: str, executable: bool, clock: int) -> Entry:
    mode = 0o755 if executable else 0o644
    return Entry(FILE, len(content), clock, mode, _digest(content))


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _subtree(tree: Tree, top: str) -> list[str]:
    return sorted(path for path in tree if _under(path, top))


def _remove(tree: Tree, top: str) -> None:
    for path in _subtree(tree, top):
        del tree[path]


def _children(tree: Tree, top: str) -> bool:
    return any(path.startswith(top + "/") for path in tree)


def _parents_ok(tree: Tree, path: str) -> bool:
    """mkdir -p would work: no file or symlink (never followed) on the way."""
    return all(tree[p].kind == DIR for p in parents(path) if p in tree)


def _make_parents(tree: Tree, path: str, clock: int) -> None:
    for parent in parents(path):
        if parent in tree and tree[parent].kind != DIR:
            _remove(tree, parent)
        tree.setdefault(parent, Entry(DIR, 0, clock, 0o755))


def _still(current: Entry | None, expect: Entry | None) -> bool:
    """dirfd.still: still what the scan saw (None: must not exist)."""
    if current is None or expect is None:
        return current is None and expect is None
    if current.kind != expect.kind:
        return False
    if current.kind == DIR:
        return True
    if current.kind == LINK:
        return current.target == expect.target
    return (current.size, current.mtime_ns) == (expect.size, expect.mtime_ns)


def _backup_name(tree: Tree, path: str) -> str:
    number = 1
    while f"{path}{BACKUP_MARK}{number}" in tree:
        number += 1
    return f"{path}{BACKUP_MARK}{number}"


def _same(a: Entry | None, b: Entry | None) -> bool:
    return a is not None and a.same_content(b)


def _manifest(tree: Tree, keep: Callable[[str], bool]) -> Manifest:
    """What a scan reports: kept non-directories plus the directories above them."""
    result: Manifest = {}
    for path, entry in tree.items():
        if entry.kind != DIR and keep(path):
            result[path] = entry
            for parent in parents(path):
                result[parent] = tree[parent]
    return result


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Guard:
    """A version written by a user or job on one side, which sync must never lose."""

    entry: Entry
    pushed_before: bool


@dataclass
class World:
    """Both trees, both bases, the ghost state, and the violations seen so far."""

    push_planner: PushPlanner = plan_push
    pull_planner: PullPlanner = plan_pull
    local: Tree = field(default_factory=dict)
    remote: Tree = field(default_factory=dict)
    base: Manifest = field(default_factory=dict)
    pull_base: Manifest = field(default_factory=dict)
    clock: int = 0
    remote_guards: dict[str, Guard] = field(default_factory=dict)
    local_guards: dict[str, Guard] = field(default_factory=dict)
    remote_backups: list[tuple[str, Entry]] = field(default_factory=list)
    local_backups: list[tuple[str, Entry]] = field(default_factory=list)
    violations: list[tuple[str, str]] = field(default_factory=list)
    check_convergence: bool = True

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def fail(self, kind: str, message: str) -> None:
        self.violations.append((kind, message))

    def fresh(self) -> World:
        """An empty world with the same planners."""
        return World(self.push_planner, self.pull_planner)

    def clone(self) -> World:
        return World(
            self.push_planner,
            self.pull_planner,
            dict(self.local),
            dict(self.remote),
            dict(self.base),
            dict(self.pull_base),
            self.clock,
            dict(self.remote_guards),
            dict(self.local_guards),
            list(self.remote_backups),
            list(self.local_backups),
            [],
            False,
        )

    # ---- driving

    def run(self, steps: Iterable[Step]) -> World:
        for number, step in enumerate(steps):
            before = len(self.violations)
            self.apply(step)
            if self.check_convergence:
                self.check_clean_push_converges()
            for index in range(before, len(self.violations)):
                kind, message = self.violations[index]
                self.violations[index] = (kind, f"step {number} {step}: {message}")
        return self

    def apply(self, step: Step) -> None:
        if isinstance(step, (Write, Edit, Remove)):
            self.side_change(step)
        elif isinstance(step, Rename):
            self.rename(step)
        elif isinstance(step, Push):
            self.push(step.force, race=step.race)
        elif isinstance(step, Cut):
            self.push(step.force, keep=step.keep, mid_backup=step.mid_backup)
        else:
            self.pull(step.force)

    # ---- what users and jobs do

    def side_change(self, step: Write | Edit | Remove) -> None:
        tree = self.local if step.side == "local" else self.remote
        before = dict(tree)
        clock = self.tick()
        if isinstance(step, Write):
            entry = (
                Entry(LINK, 0, clock, 0o777, None, step.content)
                if step.link
                else _file(step.content, step.executable, clock)
            )
            _remove(tree, step.path)
            _make_parents(tree, step.path, clock)
            tree[step.path] = entry
        elif isinstance(step, Edit):
            files = sorted(path for path, entry in tree.items() if entry.kind != DIR)
            if files:
                tree[files[step.pick % len(files)]] = _file(step.content, step.executable, clock)
        elif tree:
            _remove(tree, sorted(tree)[step.pick % len(tree)])
        self.guard_changes(step.side, before, tree)

    def rename(self, step: Rename) -> None:
        if not self.local:
            return
        source = sorted(self.local)[step.pick % len(self.local)]
        if _under(step.to, source):
            return
        before = dict(self.local)
        moved = {step.to + path[len(source) :]: before[path] for path in _subtree(before, source)}
        _remove(self.local, source)
        _remove(self.local, step.to)
        _make_parents(self.local, step.to, self.tick())
        self.local.update(moved)
        self.guard_changes("local", before, self.local)

    def guard_changes(self, side: str, before: Tree, after: Tree) -> None:
        guards = self.local_guards if side == "local" else self.remote_guards
        bases = self.pull_base if side == "local" else self.base
        for path in set(before) | set(after):
            if before.get(path) == after.get(path):
                continue
            entry = after.get(path)
            if entry is None or entry.kind == DIR:
                guards.pop(path, None)
            else:
                guards[path] = Guard(entry, pushed_before=path in bases)

    # ---- push

    def push(
        self,
        force: bool,
        race: Write | Edit | Remove | None = None,
        keep: int | None = None,
        mid_backup: bool = False,
    ) -> Plan:
        local = _manifest(self.local, synced)
        remote = dict(self.remote)
        base = dict(self.base)
        local_tree = dict(self.local)

        def planner(here: Manifest, there: Manifest, last: Manifest) -> Plan:
            return self.push_planner(here, there, last, synced, force)

        plan = self.check_pure(planner, local, remote, base, "push")
        self.check_push_plan(plan, base, force)
        self.check_well_formed(plan, "push", source=local, target=remote, force=force)
        self.release_remote_guards(local, base)
        self.check_conflicts_reported(plan, local, base, force)
        if race is not None:
            self.side_change(race)
        remote_before = dict(self.remote)
        ops: list[Upload | Delete] = [*plan.deletes, *_upload_order(plan.uploads)]
        limit = len(ops) if keep is None else keep % (len(ops) + 1)
        for index, op in enumerate(ops):
            if index == limit:
                if mid_backup and isinstance(op, Upload) and op.backup:
                    self.put(self.remote, op, self.remote_backups, backup_only=True)
                break
            if isinstance(op, Delete):
                if self.delete(op):
                    self.base.pop(op.path, None)
            elif self.put(self.remote, op, self.remote_backups):
                self.base[op.path] = op.entry
        for path in plan.same:
            self.base[path] = local[path]
        for path in list(self.base):
            if path not in local and path not in remote and synced(path):
                del self.base[path]
        if self.local != local_tree:
            self.fail(PURE, "a push changed the local tree")
        self.check_unsynced_untouched(remote_before)
        self.check_remote_guards()
        return plan

    def put(
        self, tree: Tree, op: Upload, backups: list[tuple[str, Entry]], backup_only: bool = False
    ) -> bool:
        """writer.Writer.put / _mkdir (the agent, and pull here): True when it completed."""
        if not _parents_ok(tree, op.path):
            return False
        current = tree.get(op.path)
        if op.entry.kind == DIR and current is not None and current.kind == DIR:
            return True
        if current is not None and not _still(current, op.expect):
            return False
        if op.entry.kind != DIR and current is None and op.expect is not None:
            return False
        if current is not None and current.kind == DIR and _children(tree, op.path):
            return False
        if op.backup and current is not None and current.kind != DIR:
            name = _backup_name(tree, op.path)
            tree[name] = current
            backups.append((op.path, current))
        if backup_only:
            return False
        clock = self.tick()
        tree.pop(op.path, None)
        _make_parents(tree, op.path, clock)
        tree[op.path] = replace(op.entry, mtime_ns=clock)
        return True

    def delete(self, op: Delete) -> bool:
        """writer.delete: True when the base may forget the path (gone, deleted or kept)."""
        if not _parents_ok(self.remote, op.path):
            return False
        current = self.remote.get(op.path)
        if current is None:
            return True
        if not _still(current, op.expect):
            return False
        if op.backup:
            name = _backup_name(self.remote, op.path)
            for path in _subtree(self.remote, op.path):
                self.remote_backups.append((path, self.remote[path]))
                self.remote[name + path[len(op.path) :]] = self.remote.pop(path)
            return True
        if current.kind != DIR or not _children(self.remote, op.path):
            del self.remote[op.path]
        return True

    # ---- pull

    def pull(self, force: bool) -> Plan:
        remote = {path: entry for path, entry in self.remote.items() if pulled(path)}
        local = {path: entry for path, entry in self.local.items() if pulled(path)}
        base = dict(self.pull_base)

        def planner(here: Manifest, there: Manifest, last: Manifest) -> Plan:
            return self.pull_planner(there, here, last, force)

        plan = self.check_pure(planner, local, remote, base, "pull")
        self.check_well_formed(plan, "pull", source=remote, target=local, force=force)
        if plan.deletes:
            self.fail(PULL, f"a pull planned deletes {[d.path for d in plan.deletes]}")
        for path, guard in list(self.local_guards.items()):
            if _same(local.get(path), guard.entry) and (
                _same(guard.entry, base.get(path)) or _same(guard.entry, remote.get(path))
            ):
                del self.local_guards[path]
        self.check_local_changes_reported(plan, local, remote, base, force)
        before = dict(self.local)
        for path in plan.same:
            self.pull_base[path] = remote[path]
        for op in _upload_order(plan.uploads):
            if self.put(self.local, op, self.local_backups):
                self.pull_base[op.path] = op.entry
        lost = sorted(set(before) - set(self.local))
        if lost:
            self.fail(PULL, f"a pull deleted local paths {lost}")
        for path, guard in self.local_guards.items():
            if not _same(self.local.get(path), guard.entry) and not any(
                saved == path and _same(entry, guard.entry) for saved, entry in self.local_backups
            ):
                self.fail(PULL, f"a pull overwrote the local change to {path!r} without a backup")
        return plan

    # ---- checks

    def check_pure(
        self,
        planner: Callable[[Manifest, Manifest, Manifest], Plan],
        local: Manifest,
        remote: Manifest,
        base: Manifest,
        what: str,
    ) -> Plan:
        copies = (dict(local), dict(remote), dict(base))
        plan = planner(local, remote, base)
        if (local, remote, base) != copies:
            self.fail(PURE, f"{what} planner modified its inputs")
        shuffled = [dict(reversed(list(manifest.items()))) for manifest in copies]
        again = planner(*shuffled)
        if again != plan:
            self.fail(PURE, f"{what} planner gave two plans for the same inputs: {plan} {again}")
        return plan

    def check_push_plan(self, plan: Plan, base: Manifest, force: bool) -> None:
        ops: list[Upload | Delete] = [*plan.uploads, *plan.deletes]
        for op in ops:
            if not synced(op.path):
                self.fail(UNSYNCED, f"push planned {op} on a path sync does not own")
        for delete in plan.deletes:
            if delete.path not in base:
                self.fail(UNOWNED, f"push deletes {delete.path!r}, which it never pushed")

    def check_well_formed(
        self, plan: Plan, what: str, source: Manifest, target: Manifest, force: bool
    ) -> None:
        ops: list[Upload | Delete] = [*plan.uploads, *plan.deletes]
        for op in ops:
            if op.expect != target.get(op.path):
                self.fail(PURE, f"{what}: {op} expects something else than the scan saw")
            if op.backup and not force:
                self.fail(PURE, f"{what}: {op} asks for a backup without force")
        for upload in plan.uploads:
            if upload.entry != source.get(upload.path):
                self.fail(PURE, f"{what}: {upload} does not carry the source entry")
        listed = [up.path for up in plan.uploads] + [c.path for c in plan.conflicts] + plan.same
        if len(listed) != len(set(listed)):
            self.fail(PURE, f"{what}: a path is listed twice in {plan}")
        deleted = [delete.path for delete in plan.deletes]
        if len(deleted) != len(set(deleted)):
            self.fail(PURE, f"{what}: a path is deleted twice in {plan}")
        for index, path in enumerate(deleted):
            if any(path.startswith(later + "/") for later in deleted[:index]):
                self.fail(PURE, f"{what}: {path!r} is deleted after its parent")

    def release_remote_guards(self, local: Manifest, base: Manifest) -> None:
        """A remote version equal to what tether pushed, or to local, is no longer foreign."""
        for path in self.releasable(local, base):
            del self.remote_guards[path]

    def releasable(self, local: Manifest, base: Manifest) -> list[str]:
        return [
            path
            for path, guard in self.remote_guards.items()
            if _same(self.remote.get(path), guard.entry)
            and (_same(guard.entry, base.get(path)) or _same(guard.entry, local.get(path)))
        ]

    def check_conflicts_reported(
        self, plan: Plan, local: Manifest, base: Manifest, force: bool
    ) -> None:
        conflicts = {conflict.path for conflict in plan.conflicts}
        ops: list[Upload | Delete] = [*plan.uploads, *plan.deletes]
        backed_up = {op.path for op in ops if op.backup}
        for path, guard in self.remote_guards.items():
            if not synced(path) or not _same(self.remote.get(path), guard.entry):
                continue
            if path not in local and path not in base:
                continue
            kind = REMOTE_CHANGE if guard.pushed_before else UNOWNED
            if path not in conflicts and not (force and path in backed_up):
                self.fail(kind, f"push did not report the remote change to {path!r} ({plan})")

    def check_local_changes_reported(
        self, plan: Plan, local: Manifest, remote: Manifest, base: Manifest, force: bool
    ) -> None:
        conflicts = {conflict.path for conflict in plan.conflicts}
        backed_up = {op.path for op in plan.uploads if op.backup}
        for path, guard in self.local_guards.items():
            if path not in remote or not _same(local.get(path), guard.entry):
                continue
            if _same(remote[path], base.get(path)):
                continue
            if path not in conflicts and not (force and path in backed_up):
                self.fail(PULL, f"pull did not report the local change to {path!r} ({plan})")

    def check_remote_guards(self) -> None:
        for path, guard in self.remote_guards.items():
            if _same(self.remote.get(path), guard.entry):
                continue
            if any(saved == path and _same(e, guard.entry) for saved, e in self.remote_backups):
                continue
            kind = REMOTE_CHANGE if guard.pushed_before else UNOWNED
            self.fail(kind, f"remote {path!r} lost the version written there ({guard.entry})")

    def check_unsynced_untouched(self, before: Tree) -> None:
        for path, entry in before.items():
            if synced(path) or self.remote.get(path) == entry:
                continue
            if any(saved == path and e == entry for saved, e in self.remote_backups):
                continue
            self.fail(UNSYNCED, f"push changed {path!r}, which sync does not own")

    def foreign_guards(self) -> set[str]:
        """Synced remote paths still holding a version written there (not yet tether's)."""
        local = _manifest(self.local, synced)
        released = set(self.releasable(local, self.base))
        return {
            path
            for path, guard in self.remote_guards.items()
            if synced(path) and _same(self.remote.get(path), guard.entry) and path not in released
        }

    def check_clean_push_converges(self) -> None:
        """Unless a remote change blocks a path push wants, push twice: nothing left to do."""
        local = _manifest(self.local, synced)
        if any(path in local or path in self.base for path in self.foreign_guards()):
            return
        world = self.clone()
        world.push(force=False)
        remote = world.remote
        second = world.push_planner(local, dict(remote), dict(world.base), synced, False)
        guarded = world.foreign_guards()

        def theirs(path: str) -> bool:
            """Not tether's: results, backups, remote edits, directories it did not make."""
            if not synced(path) or BACKUP_MARK in path or path in guarded:
                return True
            return remote[path].kind == DIR and world.base.get(path, Entry(FILE)).kind != DIR

        def foreign(path: str) -> bool:
            """A remote path push must leave: not tether's, or a directory holding such."""
            if theirs(path):
                return True
            return remote[path].kind == DIR and any(
                theirs(other) for other in remote if other.startswith(path + "/")
            )

        if not second.empty:
            self.fail(CONVERGE, f"after a clean push the next one still plans {second}")
        for conflict in second.conflicts:
            if not (conflict.path in remote and foreign(conflict.path)):
                self.fail(CONVERGE, f"after a clean push, a conflict remains: {conflict}")
        for path, entry in local.items():
            if not _same(remote.get(path), entry) and not any(
                _under(path, c.path) for c in second.conflicts if c.path in remote
            ):
                self.fail(CONVERGE, f"after a clean push, {path!r} differs on the remote")
        for path in remote:
            if synced(path) and path not in local and not foreign(path):
                self.fail(CONVERGE, f"after a clean push, {path!r} is left on the remote")


def _upload_order(uploads: list[Upload]) -> list[Upload]:
    """session._execute_push: directories first, then by depth (stable)."""
    return sorted(uploads, key=lambda up: (up.entry.kind != DIR, up.path.count("/")))


def _violations(steps: list[Step], kind: str, world: World | None = None) -> list[str]:
    world = (world or World()).fresh().run(steps)
    return [message for found, message in world.violations if found == kind]


# --------------------------------------------------------------------------- properties

PROPERTY = settings(max_examples=300, deadline=None)


@PROPERTY
@given(STEPS)
def test_push_never_deletes_or_overwrites_remote_created_files(steps: list[Step]) -> None:
    assert _violations(steps, UNOWNED) == []


@PROPERTY
@given(STEPS)
def test_push_never_silently_overwrites_remote_changes(steps: list[Step]) -> None:
    assert _violations(steps, REMOTE_CHANGE) == []


@PROPERTY
@given(STEPS)
def test_pull_never_deletes_local_files_and_reports_local_changes(steps: list[Step]) -> None:
    assert _violations(steps, PULL) == []


@PROPERTY
@given(STEPS)
def test_clean_push_converges(steps: list[Step]) -> None:
    assert _violations(steps, CONVERGE) == []


@PROPERTY
@given(STEPS)
def test_results_and_ignored_paths_never_touched(steps: list[Step]) -> None:
    assert _violations(steps, UNSYNCED) == []


@PROPERTY
@given(STEPS)
def test_plan_is_pure_and_deterministic(steps: list[Step]) -> None:
    assert _violations(steps, PURE) == []


# --------------------------------------------------------------------------- the model bites


def _deletes_everything_not_local(
    local: Manifest, remote: Manifest, base: Manifest, owned: Synced, force: bool
) -> Plan:
    plan = plan_push(local, remote, base, owned, force)
    doomed = {delete.path for delete in plan.deletes}
    for path in sorted(set(remote) - set(local) - doomed, key=lambda p: -p.count("/")):
        if owned(path):
            plan.deletes.append(Delete(path, remote[path]))
    return plan


def _ignores_base(
    local: Manifest, remote: Manifest, base: Manifest, owned: Synced, force: bool
) -> Plan:
    """Overwrites whatever the remote holds at a pushed path (an rsync-like mirror)."""
    plan = plan_push(local, remote, base, owned, force)
    for conflict in plan.conflicts:
        if conflict.path in local:
            plan.uploads.append(Upload(conflict.path, local[conflict.path], remote[conflict.path]))
    plan.conflicts = []
    return plan


def _pushes_everything(
    local: Manifest, remote: Manifest, base: Manifest, owned: Synced, force: bool
) -> Plan:
    """Forgets to ask `synced` about paths that are not local (results, checkpoints)."""
    return plan_push(local, remote, base, lambda path: True, force)


def _never_deletes(
    local: Manifest, remote: Manifest, base: Manifest, owned: Synced, force: bool
) -> Plan:
    plan = plan_push(local, remote, base, owned, force)
    plan.deletes = []
    return plan


def _shared_state_planner() -> PushPlanner:
    calls: list[int] = []

    def planner(
        local: Manifest, remote: Manifest, base: Manifest, owned: Synced, force: bool
    ) -> Plan:
        calls.append(1)
        plan = plan_push(local, remote, base, owned, force)
        if len(calls) % 2 == 0:
            plan.uploads = plan.uploads[1:]
        return plan

    return planner


def _pull_clobbers(remote: Manifest, local: Manifest, base: Manifest, force: bool) -> Plan:
    plan = plan_pull(remote, local, base, force)
    plan.uploads += [Upload(c.path, remote[c.path], local.get(c.path)) for c in plan.conflicts]
    plan.conflicts = []
    return plan


@pytest.mark.parametrize(
    ("world", "kind"),
    [
        (World(push_planner=_deletes_everything_not_local), UNOWNED),
        (World(push_planner=_ignores_base), REMOTE_CHANGE),
        (World(push_planner=_never_deletes), CONVERGE),
        (World(pull_planner=_pull_clobbers), PULL),
    ],
    ids=["deletes-unowned", "ignores-base", "never-deletes", "pull-clobbers"],
)
def test_model_catches_a_broken_planner(world: World, kind: str) -> None:
    found = find(
        STEPS,
        lambda steps: bool(_violations(steps, kind, world)),
        settings=settings(max_examples=3000, database=None, deadline=None, phases=[Phase.generate]),
    )
    assert _violations(found, kind, world)


def test_model_catches_a_planner_that_deletes_unowned_files() -> None:
    steps: list[Step] = [Write("remote", "a", "0"), Write("local", "b", "1"), Push()]
    assert _violations(steps, UNOWNED) == []
    assert _violations(steps, UNOWNED, World(push_planner=_deletes_everything_not_local))


def test_model_catches_a_planner_that_touches_results() -> None:
    """A base that (wrongly) holds a results file: only `synced` keeps the push off it."""
    steps: list[Step] = [Write("remote", "results/a", "1"), Write("local", "b", "0"), Push()]

    def run(planner: PushPlanner) -> list[str]:
        world = World(push_planner=planner, check_convergence=False)
        world.base["results/a"] = Entry(FILE, 1, 0, 0o644, _digest("1"))
        world.run(steps)
        return [message for kind, message in world.violations if kind == UNSYNCED]

    assert run(plan_push) == []
    assert run(_pushes_everything)


def test_model_catches_a_planner_that_is_not_deterministic() -> None:
    steps: list[Step] = [Write("local", "a", "0"), Push()]
    assert _violations(steps, PURE) == []
    assert _violations(steps, PURE, World(push_planner=_shared_state_planner()))


def test_model_sees_a_cut_push_converge_on_the_next_push() -> None:
    steps: list[Step] = [Write("local", "a/b", "0"), Write("local", "c d", "1"), Cut(keep=1)]
    world = World().run(steps)
    assert "c d" not in world.remote
    assert world.violations == []
    world.push(force=False)
    assert {p: e.digest for p, e in world.remote.items() if e.kind == FILE} == {
        "a/b": _digest("0"),
        "c d": _digest("1"),
    }
