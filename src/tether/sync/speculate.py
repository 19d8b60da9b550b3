"""Speculative uploads: a small edit goes out in the same round trip as the remote scan.

A push costs two round trips: scan the remote, then write what the plan says. For the
everyday push — a few source files edited since the last one — the plan is known before
the scan answers, if the remote is still what tether left there: update each edited file,
expecting the remote stat the base recorded. `start` sends those writes right behind the
scan request; the agent answers requests in order, so the scan sees the remote as it was
before them. Each speculative write is checked by the agent against its expectation like
any planned write (temp file, check, rename), and once the plan is made from the scan:

- an upload the plan makes identically is not sent again: the speculative answer is its;
- any other speculative write met a remote that had changed and was refused (nothing
  written): the plan alone decides that path. Should one have landed all the same (the
  remote put back exactly as recorded between the scan and the write), it is recorded as
  this push's write and the plan leaves the path alone.

Only pushes with nothing pending from an earlier cut speculate, and only for at most
MAX_FILES files under one chunk each that tether pushed before; their pending record is
saved before they leave, so a cut at any moment is settled by the next push as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from tether.core.manifest import FILE, Entry, Manifest
from tether.core.plan import Plan, Upload
from tether.sync import lanes
from tether.sync.endpoint import Endpoint, LocalEndpoint
from tether.sync.state import Base

MAX_FILES = 32
# (answer header, action, path, entry sent) -> None: how the push settles an answer.
Settle = Callable[[dict[str, Any], str, str, Entry], None]


def candidates(local: Manifest, base: Base, paths: Collection[str] | None = None) -> list[Upload]:
    """The updates a push makes if the remote is as recorded: small files edited here
    (among `paths` when given: every other local path is the base's, incremental.py)."""
    if base.pending:
        return []
    found: list[Upload] = []
    entries, stats = base.entries, base.remote_stat
    items = local.items() if paths is None else ((p, local[p]) for p in sorted(paths) if p in local)
    for path, entry in items:
        if entry.kind != FILE or entry.size >= lanes.CHUNK:
            continue
        known = entries.get(path)
        if known is None or known is entry or known.kind != FILE or entry.same_content(known):
            continue
        stat = stats.get(path)
        if stat is None:
            continue
        found.append(Upload(path, entry, Entry(FILE, stat[0], stat[1], known.mode, known.digest)))
        if len(found) > MAX_FILES:
            return []  # a big change: one round trip more is nothing beside it
    return found


@dataclass
class Speculation:
    """Speculative uploads in flight on one channel, and their answers as they come."""

    lane: lanes.Lane
    sent: dict[str, Upload]
    answers: dict[str, tuple[dict[str, Any], str, Entry]] = field(default_factory=dict)

    async def finish(self, plan: Plan, base: Base, settle: Settle) -> tuple[Plan, set[str]]:
        """Take every speculative answer; the plan left to execute, and the paths whose
        speculative write landed outside the plan (the plan's word on them is void)."""
        await self.lane.settle()
        planned = {upload.path: upload for upload in plan.uploads}
        covered: set[str] = set()
        landed_outside: set[str] = set()
        for path, item in self.sent.items():
            header, action, entry = self.answers[path]
            if _same(planned.get(path), item):
                covered.add(path)
                settle(header, action, path, entry)
            elif header.get("ok", True):
                covered.add(path)
                landed_outside.add(path)
                settle(header, action, path, entry)
            else:
                base.settle_upload(path)  # refused, nothing written: the plan decides
        rest = Plan(
            uploads=[u for u in plan.uploads if u.path not in covered],
            deletes=[d for d in plan.deletes if d.path not in landed_outside],
            conflicts=[c for c in plan.conflicts if c.path not in landed_outside],
            same=plan.same,
        )
        return rest, landed_outside


def _same(planned: Upload | None, sent: Upload) -> bool:
    """Whether the plan makes exactly the write that was sent (same bytes, same check)."""
    if planned is None or planned.expect is None or sent.expect is None:
        return False
    return (
        planned.entry == sent.entry
        and not planned.backup
        and planned.expect.kind == FILE
        and (planned.expect.size, planned.expect.mtime_ns)
        == (sent.expect.size, sent.expect.mtime_ns)
    )


async def start(
    source: LocalEndpoint,
    dest: Endpoint,
    local: Manifest,
    base: Base,
    paths: Collection[str] | None = None,
) -> Speculation | None:
    """Send the speculative uploads (pending record saved first); None if there are none."""
    items = candidates(local, base, paths)
    if not items:
        return None
    answers: dict[str, tuple[dict[str, Any], str, Entry]] = {}

    def keep(header: dict[str, Any], action: str, path: str, entry: Entry, _: Any) -> None:
        answers[path] = (header, action, entry)

    lane = lanes.Lane(dest, keep, None)
    base.expect_uploads({item.path: item.entry.digest or "" for item in items})
    for item in items:
        lanes.upload_small(lane, source, item)
    sent_paths = {request.path for request in lane.inflight}
    for item in items:
        if item.path not in sent_paths:
            base.settle_upload(item.path)  # vanished or grown since the scan: not sent
    if not sent_paths:
        return None
    await dest.flush()
    sent = {item.path: item for item in items if item.path in sent_paths}
    return Speculation(lane, sent, answers)
