"""Pull: bring remote paths (by default the results) here; never delete, never clobber.

Files are written here by the agent's own writer (tether.agent.writer: temp name, check
against what the plan saw, rename; through directory handles, never through a symlink),
with the permission bits of the remote file minus the local umask (DESIGN.md 5, 3 and 10).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from tether import invocation
from tether.agent import fsops
from tether.agent.modes import safe_mode
from tether.agent.wire import ErrorKind, Op, Read
from tether.agent.writer import Writer
from tether.core.ignore import PatternSet
from tether.core.manifest import DIR, FILE, LINK, Entry, Manifest
from tether.core.plan import Conflict, Plan, Upload, plan_pull
from tether.sync.local import entry_for
from tether.sync.session import (
    CHUNK,
    Pair,
    Progress,
    Report,
    digest_cache,
    fill_remote_digests,
    remote_manifest,
    under,
)
from tether.sync.state import Base
from tether.transport.channel import AgentChannel, refusal


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
    skip = [".git", ".tether"]
    only_paths = None if globs else plain
    remote, _ = await remote_manifest(channel, pair.remote_root, base, skip=skip, only=only_paths)
    # Planned with the modes the files get here (see writer.Writer): a mode the umask
    # masks is then not a change, and the base records what was written.
    umask = invocation.umask()
    remote = {
        p: _masked(e, umask)
        for p, e in remote.items()
        if not globs or under(p, plain) or globs.match(p)
    }
    local = _local_entries(pair.local_root, remote, digest_cache(project_root, pair))
    await fill_remote_digests(channel, pair.remote_root, remote, set(local))
    plan = plan_pull(remote, local, base.entries, force)
    report = Report(pair.target, pair.remote_root, plan, conflicts=list(plan.conflicts))
    if dry_run:
        return report
    try:
        for path in plan.same:
            base.record(path, remote[path], remote[path], local[path])
        writer = Writer(umask=umask, durable=True)
        try:
            await _execute_pull(channel, pair, plan, base, report, progress, writer)
        finally:
            writer.close()
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


def _local_entries(root: Path, remote: Manifest, cache: fsops.DigestCache) -> Manifest:
    """The local entries at the remote manifest's paths, files with digests."""
    local: Manifest = {}
    for path in remote:
        full = os.path.join(root, path)
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            continue
        entry = entry_for(full, st)
        local[path] = entry.with_digest(cache.get(full, st, True)) if entry.kind == FILE else entry
    cache.save()
    return local


async def _execute_pull(
    channel: AgentChannel,
    pair: Pair,
    plan: Plan,
    base: Base,
    report: Report,
    progress: Progress | None,
    writer: Writer,
) -> None:
    """Write the plan's uploads here with the agent's own writer (temp name, check against
    `expect`, rename; through directory handles, never through a symlink)."""
    root = str(pair.local_root)
    ordered = sorted(plan.uploads, key=lambda up: (up.entry.kind != DIR, up.path.count("/")))
    for upload in ordered:
        entry = upload.entry
        header: dict[str, Any] = {
            "path": upload.path,
            "kind": entry.kind,
            "expect": upload.expect.to_json() if upload.expect else None,
            "backup": upload.backup,
        }
        if entry.kind != FILE:
            if entry.kind == LINK:
                header["target"] = entry.target or ""
            written = _write(writer, root, upload.path, header, b"", report)
            if written is not None:
                _note_backup(written, report)
                base.record(upload.path, entry, entry, entry)
            continue
        got = await _download(channel, pair, upload, header, writer, report)
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


def _write(
    writer: Writer, root: str, path: str, header: dict[str, Any], data: bytes, report: Report
) -> dict[str, Any] | None:
    """writer.put(); None when refused: a local change is a conflict, anything else an
    error of the report (a symlinked directory on the way: one line, never a traceback)."""
    try:
        return writer.put(root, header, data)
    except fsops.OpError as error:
        if error.kind is ErrorKind.CHANGED:
            report.conflicts.append(Conflict(path, "changed locally during the pull"))
        else:
            report.errors.append(str(error))
        return None


async def _download(
    channel: AgentChannel,
    pair: Pair,
    upload: Upload,
    header: dict[str, Any],
    writer: Writer,
    report: Report,
) -> tuple[dict[str, Any], str, Entry] | None:
    """Read a remote file in chunks into the writer; (its answer, sha256 hex, the remote
    stat) or None when refused or when the remote file changed while it was read."""
    entry, path, root = upload.entry, upload.path, str(pair.local_root)
    offsets = list(range(0, max(entry.size, 1), CHUNK))
    futures = [channel.submit(Read(pair.remote_root, path, o, CHUNK)) for o in offsets]
    await channel.flush()
    digest = hashlib.sha256()
    header = dict(header, mode=entry.mode, mtime_ns=entry.mtime_ns)
    try:
        for index, future in enumerate(futures):
            answer, data = await future
            refused = refusal(channel.host, Op.READ, answer)
            if refused is not None:
                report.errors.append(refused.what)
                return None
            raw = answer["entry"]
            stat_entry = Entry.from_json(raw) if isinstance(raw, dict) else None
            last = index == len(futures) - 1
            if last and (
                stat_entry is None or not stat_entry.same_stat(entry.size, entry.mtime_ns)
            ):
                report.conflicts.append(Conflict(path, "changed on the remote during the pull"))
                return None
            digest.update(data)
            fields = dict(header, offset=offsets[index], last=last)
            written = _write(writer, root, path, fields, data, report)
            if written is None:
                return None
            if last:
                assert stat_entry is not None
                return written, digest.hexdigest(), stat_entry
    finally:
        writer.discard_path(root, path)  # a write left unfinished: its temp file goes
    return None
