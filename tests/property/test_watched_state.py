"""The watched-state model (agent/watched.py) against a simulated tree and watcher.

Random file operations (create, modify, delete, rename of files and directories, mkdir,
rmdir, a directory created and filled before its watch exists), random event losses (an
overflowed queue, a watch limit reached, a watcher restart) and random pauses: after every
refresh the model's entries, and the previous answer with its delta applied, equal a fresh
full scan, or the model said it is unsure (and the owner scanned in full). The suite is
checked to catch broken models (a property suite that can fail).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from tether.agent.watched import WatchedTree, under

NAMES = ["a", "b", "a b", "a.b", "c"]
BOUND_S = 0.25  # each step takes 0.5 s: a heartbeat from a step before is too old


@dataclass
class World:
    """A tree ({path: (kind, version)}), the watcher's watches and the kernel's queue."""

    nodes: dict[str, tuple[str, int]] = field(default_factory=dict)
    watched: set[str] = field(default_factory=lambda: {""})  # directories with a watch
    queue: list[str] = field(default_factory=list)
    overflowed: bool = False
    stalled: bool = False  # the watcher stopped reading (no events, no heartbeats)
    clock: int = 0
    now: float = 0.0

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def scan(self) -> dict[str, Any]:
        return dict(self.nodes)

    def restat(self, path: str, deep: bool) -> dict[str, Any]:
        return {p: v for p, v in self.nodes.items() if p == path or (deep and under(p, path))}

    def event(self, path: str) -> None:
        """The kernel reports path's change if its directory has a watch (else it is lost:
        the race of a directory filled before its watch exists)."""
        if path.rpartition("/")[0] in self.watched and not self.stalled:
            self.queue.append(path)

    def bump(self, directory: str) -> None:
        if directory:
            # Its mtime changes with no event of its own: only its entries' events say so.
            self.nodes[directory] = ("dir", self.tick())

    def dirs(self) -> list[str]:
        return ["", *sorted(p for p, v in self.nodes.items() if v[0] == "dir")]

    def apply(self, op: str, a: int, b: int, name: int) -> None:
        dirs = self.dirs()
        files = sorted(p for p, v in self.nodes.items() if v[0] == "file")
        parent = dirs[a % len(dirs)]
        new = (parent + "/" if parent else "") + NAMES[name % len(NAMES)]
        if op in ("create", "mkdir", "mkfill") and new not in self.nodes:
            self.nodes[new] = ("file" if op == "create" else "dir", self.tick())
            self.event(new)
            self.bump(parent)
            if op == "mkfill":  # filled before the watcher adds a watch on it
                for child in ("x", "y"):
                    self.nodes[f"{new}/{child}"] = ("file", self.tick())
                    self.event(f"{new}/{child}")
                self.nodes[f"{new}/sub"] = ("dir", self.tick())
                self.nodes[f"{new}/sub/z"] = ("file", self.tick())
        elif op == "modify" and files:
            path = files[a % len(files)]
            self.nodes[path] = ("file", self.tick())
            self.event(path)
        elif op == "delete" and files:
            path = files[a % len(files)]
            del self.nodes[path]
            self.event(path)
            self.bump(path.rpartition("/")[0])
        elif op == "rmdir" and len(dirs) > 1:
            path = dirs[1:][a % (len(dirs) - 1)]
            if not any(p != path and under(p, path) for p in self.nodes):
                del self.nodes[path]
                self.watched.discard(path)
                self.event(path)
                self.bump(path.rpartition("/")[0])
        elif op == "rename":
            self.rename(sorted(self.nodes)[a % len(self.nodes)] if self.nodes else "", new)

    def rename(self, source: str, target: str) -> None:
        """rename(2) within the tree: over a file, or a directory to a new name."""
        if not source or under(target, source) or source == target:
            return
        if target in self.nodes and (
            self.nodes[target][0] == "dir" or self.nodes[source][0] == "dir"
        ):
            return
        moved = {p: v for p, v in self.nodes.items() if under(p, source)}
        for path in moved:
            del self.nodes[path]
        for path, value in moved.items():
            self.nodes[target + path[len(source) :]] = value
        self.watched = {
            target + w[len(source) :] if w and under(w, source) else w for w in self.watched
        }
        self.event(source)
        self.event(target)
        self.bump(source.rpartition("/")[0])
        self.bump(target.rpartition("/")[0])

    def drain(self, tree: WatchedTree) -> None:
        """The watcher reads the queue: watches on new directories (and what they hold,
        recursively), each event to the model, then a heartbeat."""
        if self.stalled:
            return
        for path in self.queue:
            tree.changed(path)
        self.queue.clear()
        if self.overflowed:
            tree.unsure("event queue overflowed")
            self.overflowed = False
        self.watched |= set(self.dirs())
        tree.heartbeat(self.now)

    def restart(self) -> None:
        """The watcher starts again before the full scan: every directory watched."""
        self.stalled = False
        self.overflowed = False
        self.queue.clear()
        self.watched = set(self.dirs())


Step = tuple[str, int, int, int]
OPS = ["create", "modify", "delete", "rename", "mkdir", "rmdir", "mkfill", "overflow",
       "stall", "refresh", "refresh"]  # fmt: skip
steps_strategy = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 50), st.integers(0, 50), st.integers(0, 9)),
    max_size=60,
)


def run(steps: list[Step], make: Callable[[], WatchedTree] = lambda: WatchedTree(BOUND_S)) -> None:
    world = World()
    tree = make()
    tree.reset(world.scan(), world.now)
    answer = world.scan()  # what the client holds: the previous answer
    for op, a, b, name in [*steps, ("refresh", 0, 0, 0)]:
        world.now += 0.5
        if op == "overflow":  # events lost, and the kernel says so
            world.queue.clear()
            world.overflowed = True
        elif op == "stall":
            world.stalled = True
        elif op == "refresh":
            world.drain(tree)
            delta = tree.refresh(world.now, world.restat)
            if delta is None:
                world.restart()
                tree.reset(world.scan(), world.now)
                answer = world.scan()
                continue
            changed, gone = delta
            answer.update(changed)
            for path in gone:
                answer.pop(path, None)
            truth = world.scan()
            assert tree.entries == truth, "the model's entries differ from a full scan"
            assert answer == truth, "the previous answer and the delta differ from a full scan"
        else:
            world.apply(op, a, b, name)


PROPERTY = settings(max_examples=400, deadline=None)


@PROPERTY
@given(steps_strategy)
def test_watched_state_equals_a_full_scan_or_says_it_is_unsure(steps: list[Step]) -> None:
    run(steps)


def test_a_directory_filled_before_its_watch_is_scanned_whole() -> None:
    run([("mkfill", 0, 0, 0), ("refresh", 0, 0, 0), ("modify", 0, 0, 0)])


def test_no_heartbeat_within_the_bound_makes_it_unsure() -> None:
    tree = WatchedTree(BOUND_S)
    tree.reset({"f": 1}, 0.0)
    assert tree.refresh(BOUND_S + 1, lambda path, deep: {}) is None
    assert tree.why is not None and "heartbeat" in tree.why


# ----------------------------------------------------------------- broken models


class NoParent(WatchedTree):
    """Forgets that a directory's own entry changes with what it holds."""

    def changed(self, path: str) -> None:
        if self.why is None:
            self.deep.add(path)


class Shallow(WatchedTree):
    """Re-stats a created directory alone, not what it already holds."""

    def refresh(self, now: float, restat: Callable[[str, bool], dict[str, Any]]) -> Any:
        return super().refresh(now, lambda path, deep: restat(path, False))


class TrustsOverflow(WatchedTree):
    """Ignores an overflowed queue."""

    def unsure(self, why: str) -> None:
        if "overflow" not in why:
            super().unsure(why)


class NoBound(WatchedTree):
    """Trusts the watcher however long it has been silent."""

    def refresh(self, now: float, restat: Callable[[str, bool], dict[str, Any]]) -> Any:
        return super().refresh(min(now, self.heartbeat_at), restat)


def _fails(make: Callable[[], WatchedTree]) -> bool:
    def broken(steps: list[Step]) -> bool:
        try:
            run(steps, make)
        except AssertionError:
            return True
        return False

    find(
        steps_strategy,
        broken,
        settings=settings(max_examples=3000, database=None, deadline=None, phases=[Phase.generate]),
    )
    return True


def test_the_suite_catches_a_model_that_forgets_the_parent_directory() -> None:
    assert _fails(lambda: NoParent(BOUND_S))


def test_the_suite_catches_a_model_that_does_not_rescan_a_new_directory_whole() -> None:
    assert _fails(lambda: Shallow(BOUND_S))


def test_the_suite_catches_a_model_that_trusts_an_overflowed_queue() -> None:
    assert _fails(lambda: TrustsOverflow(BOUND_S))


def test_the_suite_catches_a_model_that_trusts_a_silent_watcher() -> None:
    assert _fails(lambda: NoBound(BOUND_S))
