"""Pull: bring remote paths (by default the results) here; never delete, never clobber.

The remote is the source endpoint and this machine the destination (sync/endpoint.py):
files are read from the agent in chunks and written here by a LocalEndpoint, that is by
the agent's own writer (tether.agent.writer: temp name, check against what the plan saw,
rename; through directory handles, never through a symlink), with the permission bits of
the remote file minus the local umask (DESIGN.md 5, 3 and 10). Its refusals are settled
as a push settles the agent's (session.Report.refused).
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tether import invocation
from tether.agent.modes import safe_mode
from tether.agent.wire import Op, Put, Read
from tether.core.ignore import PatternSet
from tether.core.manifest import DIR, FILE, LINK, Entry
from tether.core.plan import Conflict, Plan, Upload, plan_pull
from tether.sync.endpoint import Answer, LocalEndpoint, RemoteEndpoint
from tether.sync.local import Scope
from tether.sync.session import CHUNK, Pair, Progress, Report, digest_cache, under
from tether.sync.state import Base
from tether.transport.channel import AgentChannel

RACED = "changed on the remote during the pull"
CHANGED_HERE = "changed locally during the pull"


async def pull_pair(
    channel: AgentChannel,
    pair: Pair,
    project_root: Path,
    only: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Bring remote paths (default: the results) here; never delete, never clobber."""
    started = time.monotonic()
    base = pair.base("pull", project_root)
    patterns = list(only) if only is not None else list(pair.results)
    plain = [p.strip("/") for p in patterns if not set("*?[!") & set(p)]
    globs = PatternSet([p for p in patterns if set("*?[!") & set(p)])
    if not globs and not plain:
        return Report(pair.target, pair.remote_root, Plan())
    source = RemoteEndpoint(channel, pair.remote_root, [".git", ".tether"])
    remote = await source.scan(base, None if globs else plain)
    # Planned with the modes the files get here (see writer.Writer): a mode the umask
    # masks is then not a change, and the base records what was written.
    umask = invocation.umask()
    remote = {
        p: _masked(e, umask)
        for p, e in remote.items()
        if not globs or under(p, plain) or globs.match(p)
    }
    cache = functools.partial(digest_cache, project_root, pair)
    dest = LocalEndpoint(pair.local_root, Scope.of((), (), ()), cache, umask, durable=True)
    local = await dest.stat(remote)
    await source.digests(remote, set(local))
    plan = plan_pull(remote, local, base.entries, force)
    report = Report(pair.target, pair.remote_root, plan, conflicts=list(plan.conflicts))
    if dry_run:
        return report
    try:
        for path in plan.same:
            base.record(path, remote[path], remote[path], local[path])
        try:
            await _execute_pull(source, dest, plan, base, report, progress)
        finally:
            dest.close()
    finally:
        base.save()
        report.seconds = time.monotonic() - started
    return report


def _masked(entry: Entry, umask: int) -> Entry:
    """entry with the mode a pull gives it here: its permission bits minus the umask."""
    mode = safe_mode(entry.mode) & ~umask
    if mode == entry.mode or entry.kind == LINK:
        return entry
    return Entry(entry.kind, entry.size, entry.mtime_ns, mode, entry.digest, entry.target)


async def _execute_pull(
    source: RemoteEndpoint,
    dest: LocalEndpoint,
    plan: Plan,
    base: Base,
    report: Report,
    progress: Progress | None,
) -> None:
    """Write the plan's uploads here, directories before what they hold."""
    ordered = sorted(plan.uploads, key=lambda up: (up.entry.kind != DIR, up.path.count("/")))
    for upload in ordered:
        entry = upload.entry
        put = Put(
            dest.root,
            upload.path,
            kind=entry.kind,
            expect=upload.expect.to_json() if upload.expect else None,
            backup=upload.backup,
        )
        if entry.kind != FILE:
            if entry.kind == LINK:
                put.target = entry.target or ""
            else:  # made like any new directory of the caller (the writer masks its umask)
                put.mode = 0o777
            answer, _ = await dest.submit(put)
            if not report.refused(dest, Op.PUT, answer, upload.path, CHANGED_HERE):
                _note_backup(answer, report)
                base.record(upload.path, entry, entry, entry)
            continue
        got = await _download(source, dest, upload, put, report)
        if got is None:
            continue
        answer, digest, remote_stat = got
        _note_backup(answer, report)
        here = Entry.from_json(answer["entry"])
        got_entry = Entry(FILE, here.size, remote_stat.mtime_ns, entry.mode, digest)
        base.record(upload.path, got_entry, remote_stat, Entry(FILE, here.size, here.mtime_ns))
        if upload.action == "update":  # a file that was here: push's rule (Upload.action)
            report.updated += 1
        else:
            report.created += 1
        report.bytes += here.size
        if progress is not None:
            progress(here.size)


def _note_backup(answer: dict[str, Any], report: Report) -> None:
    backup = answer.get("backup")
    if isinstance(backup, str):
        report.backups.append(backup)


async def _download(
    source: RemoteEndpoint, dest: LocalEndpoint, upload: Upload, put: Put, report: Report
) -> tuple[dict[str, Any], str, Entry] | None:
    """Read a remote file in chunks into dest; (its answer, sha256 hex, the remote stat)
    or None when refused or when the remote file changed while it was read."""
    entry, path = upload.entry, upload.path
    offsets = list(range(0, max(entry.size, 1), CHUNK))
    futures = [source.submit(Read(source.root, path, o, CHUNK)) for o in offsets]
    await source.flush()
    digest = hashlib.sha256()
    try:
        for index, future in enumerate(futures):
            answer, data = await future
            if report.refused(source, Op.READ, answer, path, RACED):
                return None
            raw = answer["entry"]
            stat_entry = Entry.from_json(raw) if isinstance(raw, dict) else None
            last = index == len(futures) - 1
            if last and (
                stat_entry is None or not stat_entry.same_stat(entry.size, entry.mtime_ns)
            ):
                report.conflicts.append(Conflict(path, RACED))
                return None
            digest.update(data)
            chunk = replace(
                put,
                mode=entry.mode,
                mtime_ns=entry.mtime_ns,
                offset=offsets[index],
                last=last,
                payload=data,
            )
            written: Answer = await dest.submit(chunk)
            if report.refused(dest, Op.PUT, written[0], path, CHANGED_HERE):
                return None
            if last:
                assert stat_entry is not None
                return written[0], digest.hexdigest(), stat_entry
    finally:
        dest.discard(path)  # a write left unfinished: its temp file goes
    return None
