"""The two sides of a sync behind one interface: this machine's tree and the agent's.

A push drives source `LocalEndpoint` -> destination `RemoteEndpoint`; a pull the other
way round. Both sides answer the same typed requests (agent/wire.py: Put, Delete, Read)
with the same answer frames, and both write with the one write-and-check, the agent's
Writer (agent/writer.py: temp name, check against what the plan saw, rename, backup):
the agent runs it on the remote, `LocalEndpoint` runs it here. So a refusal reads alike
from either side (transport.channel.refusal), and push and pull settle it alike.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Executor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from tether.agent import fsops, wire, writer
from tether.agent.protocol import ProtocolError
from tether.agent.wire import Digest, Scan, error_frame, scan_key, scans_to_forget
from tether.core.manifest import DIR, FILE, LINK, Entry, Manifest
from tether.errors import RemoteError
from tether.sync.local import Scope, entry_for, fill_local_digests, scan_local
from tether.sync.state import Base, Version
from tether.transport.channel import AgentChannel

if TYPE_CHECKING:
    from tether.sync.kept import KeptScans

Answer = tuple[dict[str, Any], bytes]
FileRequest = wire.Put | wire.PutBatch | wire.Delete | wire.Read


class Endpoint(Protocol):
    """One side of a sync: a root directory to scan, write (checked) and read."""

    host: str  # the side in messages ("local" here, the ssh host there)
    root: str

    async def scan(self, base: Base, only: list[str] | None) -> Manifest:
        """The synced entries under root (under `only`'s prefixes when given); a file's
        digest may come from `base` where its stat is still the one recorded there."""

    async def digests(self, manifest: Manifest, paths: Collection[str]) -> None:
        """Fill in the digests of the files at `paths` in manifest lacking one."""

    def submit(self, request: FileRequest) -> asyncio.Future[Answer]:
        """Start a request (pipelined where the side is far); its answer frame, refusals
        included (`ok` false, `kind` an ErrorKind: CHANGED when the check failed)."""

    async def flush(self) -> None:
        """Hand what was submitted to the side (back-pressure)."""

    async def ready(self) -> None:
        """Wait until the side answers at all."""

    def discard(self, path: str) -> None:
        """Give up a chunked write of path: its temp file goes."""

    def idle_helpers(self) -> list[Endpoint]:
        """More connections to this side, open and idle (for a transfer spread over lanes)."""

    async def open_helper(self) -> Endpoint | None:
        """One more connection to this side; None where there is none to have."""

    async def drop_helpers(self, every: bool = False) -> None:
        """Close the helpers that are busy or dead (with `every`: all)."""


class LocalEndpoint:
    """The tree under root on this machine, read and written by the agent's own code.

    Writes go through agent.writer (a pull's files: with the local `umask`, fsynced when
    `durable`); its refusals come back as the agent's error frames. Other OSErrors
    (a full disk here) are raised, as from any local write. `cache` makes the digest
    cache, read once it is needed; with `scans` (the sync daemon's) a whole-tree scan is
    the kept manifest, re-scanned where something changed.
    """

    host = "local"

    def __init__(
        self,
        root: Path,
        scope: Scope,
        cache: Callable[[], fsops.DigestCache],
        umask: int = 0,
        durable: bool = False,
        scans: KeptScans | None = None,
    ) -> None:
        self.path = root
        self.root = str(root)
        self.scope = scope
        self.make_cache = cache
        self.cache: fsops.DigestCache | None = None
        self.scans = scans
        # The kept scan's (tree, serial, paths changed or None) of the last scan, if kept.
        self.changes: tuple[object, int, set[str] | None] | None = None
        # A scan begun early (start_scan): its `only` and its result.
        self.early: tuple[list[str] | None, asyncio.Future[tuple[Manifest, Any]]] | None = None
        self.writer = writer.Writer(umask=umask, durable=durable, parents=0o777 & ~umask)

    def digest_cache(self) -> fsops.DigestCache:
        if self.cache is None:
            self.cache = self.make_cache()
        return self.cache

    async def scan(self, base: Base, only: list[str] | None) -> Manifest:
        early, self.early = self.early, None
        if early is not None and early[0] == only:
            found, self.changes = await early[1]
        else:
            found, self.changes = self._scan(only)
        return found

    def start_scan(self, only: list[str] | None, worker: Executor) -> None:
        """Begin the scan on `worker` now (a thread: the loop goes on opening the channel,
        which a cold push spends as long on as on the scan); scan() takes its result.
        One worker thread for all of a command's scans: they never run at once."""
        run = contextvars.copy_context().run  # the command's invocation (cwd, env)
        loop = asyncio.get_running_loop()
        self.early = (only, loop.run_in_executor(worker, run, self._scan, only))

    def _scan(self, only: list[str] | None) -> tuple[Manifest, Any]:
        """(the manifest, the kept scan's changes or None)."""

        def fresh() -> Manifest:
            found = scan_local(self.path, self.scope, only)
            return fill_local_digests(self.path, found, self.digest_cache())

        if self.scans is not None and only is None:
            found = self.scans.manifest(self.path, self.scope, fresh, self.digest_cache)
            return found, self.scans.last
        return fresh(), None

    async def stat(self, paths: Collection[str]) -> Manifest:
        """The entries at exactly these paths, files with digests, no rule applied."""
        cache = self.digest_cache()
        found: Manifest = {}
        for path in paths:
            full = os.path.join(self.root, path)
            try:
                st = os.lstat(full)
            except (FileNotFoundError, NotADirectoryError):
                continue
            entry = entry_for(full, st)
            found[path] = (
                entry.with_digest(cache.get(full, st, True)) if entry.kind == FILE else entry
            )
        cache.save()
        return found

    async def digests(self, manifest: Manifest, paths: Collection[str]) -> None:
        missing = _undigested(manifest, paths)
        if not missing:
            return
        now = await self.stat(missing)
        for path in missing:
            entry, seen = manifest[path], now.get(path)
            if seen is not None and seen.kind == FILE and entry.same_stat(seen.size, seen.mtime_ns):
                manifest[path] = entry.with_digest(seen.digest)

    def submit(self, request: FileRequest) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        header, payload = request.to_frame()
        try:
            if isinstance(request, wire.Put):
                answer: Answer = self.writer.put(self.root, header, payload), b""
            elif isinstance(request, wire.PutBatch):
                answers = self.writer.put_batch(self.root, request.items, payload, _refused)
                answer = {"ok": True, "answers": answers}, b""
            elif isinstance(request, wire.Delete):
                answer = writer.delete(self.root, header), b""
            else:
                answer = writer.read(self.root, header)
        except fsops.OpError as error:
            answer = error_frame(error.kind, str(error)), b""
        future.set_result(answer)
        return future

    def open(self, path: str) -> BinaryIO | None:
        """A file to send, or None when it is gone since the scan."""
        try:
            return open(os.path.join(self.root, path), "rb")
        except FileNotFoundError:
            return None

    async def flush(self) -> None:
        return None

    async def ready(self) -> None:
        return None

    def discard(self, path: str) -> None:
        self.writer.discard_path(self.root, path)

    def idle_helpers(self) -> list[Endpoint]:
        return []

    async def open_helper(self) -> Endpoint | None:
        return None

    async def drop_helpers(self, every: bool = False) -> None:
        return None

    def close(self) -> None:
        """Remove the temp files of writes left unfinished."""
        self.writer.close()


class RemoteEndpoint:
    """The tree under root on a host, through the agent on an AgentChannel.

    `skip`: top-level names its scans leave out. Scans ask the agent only for what changed
    since the same scan on the same channel (the agent keeps its last answer).
    """

    def __init__(self, channel: AgentChannel, root: str, skip: list[str] | None = None) -> None:
        self.channel = channel
        self.host = channel.host
        self.root = root
        self.skip = skip
        self.token: str | None = None  # the agent's token of the last scan's answer
        # The token that answer is a delta against, and the paths it names (changed or
        # gone); (None, None) for a whole answer.
        self.delta: tuple[str | None, set[str] | None] = (None, None)

    async def scan(self, base: Base, only: list[str] | None) -> Manifest:
        request = Scan(self.root, self.skip, only, False)
        key = scan_key(self.root, self.skip, only, False)
        memo: dict[str, Any] = self.channel.scan_memo
        # (the agent's token, the manifest of that answer, the paths whose digest came from
        # the base, the base's version then): patched with the next answer's delta.
        held: tuple[str, dict[str, Entry], set[str], Version] | None = memo.pop(key, None)
        if held is not None:
            request = replace(request, since=held[0])
        # The rows apart: a whole tree's answer is decoded a row at a time as it is taken.
        header, payload = await self.channel.request_rows(request)
        rows: Iterable[Any] = header["rows"]
        answer = request.answer({**header, "rows": []}, payload)
        del header
        self.token, self.delta = answer.token, (None, None)
        since: tuple[str, Version] | None = None
        if held is not None and answer.since == held[0]:
            scanned, filled = held[1], held[2]
            since = (held[0], held[3])
            for path in answer.gone:
                scanned.pop(path, None)
                filled.discard(path)
        else:
            scanned, filled = {}, set()
        del held
        taken: list[str] = []
        try:
            _take_rows(rows, scanned, filled, taken if since is not None else None)
        except (ProtocolError, TypeError, ValueError) as error:
            # (the memo of this scan is gone: the next scan is answered whole)
            what = f"the agent's answer is malformed: {error}"
            again = "run the command again (the next scan is answered whole)"
            raise RemoteError(self.host, "the remote scan", what, again) from None
        del rows
        recheck: set[str] | None = None
        if since is not None:
            # (A union is sized once for what it holds; a set grown by adds is up to 4x that.)
            changed = set(taken) | set(answer.gone)
            del taken
            self.delta = (since[0], changed)
            # Digests come from the base: its paths changed since count as changed here.
            moved = base.changed_since(since[1])
            recheck = None if moved is None else (moved | changed if moved else changed)
        manifest = base.remote_entries(scanned, filled, recheck)
        memo[key] = (answer.token, scanned, filled, base.version())
        del answer
        for _ in range(scans_to_forget([len(m[1]) for m in memo.values()])):
            del memo[next(iter(memo))]  # the agent forgets as much (agent/scan.ScanMemo)
        return manifest

    async def digests(self, manifest: Manifest, paths: Collection[str]) -> None:
        missing = _undigested(manifest, paths)
        if not missing:
            return
        digests = await self.channel.call(Digest(self.root, missing))
        for path, digest in digests.items():
            if path in manifest and digest is not None:
                manifest[path] = manifest[path].with_digest(digest)

    def submit(self, request: FileRequest) -> asyncio.Future[Answer]:
        return self.channel.submit(request)

    async def flush(self) -> None:
        await self.channel.flush()

    async def ready(self) -> None:
        await self.channel.ready()

    def discard(self, path: str) -> None:
        return None  # the agent removes the temp file of a write it never finished

    def idle_helpers(self) -> list[Endpoint]:
        return [RemoteEndpoint(h, self.root, self.skip) for h in self.channel.helpers()]

    async def open_helper(self) -> Endpoint | None:
        helper = await self.channel.open_helper()
        return None if helper is None else RemoteEndpoint(helper, self.root, self.skip)

    async def drop_helpers(self, every: bool = False) -> None:
        await self.channel.drop_helpers(every)


def _refused(error: Exception) -> dict[str, Any]:
    """A batch item's refusal here: an OpError as the agent's error frame; others raise."""
    if isinstance(error, fsops.OpError):
        return error_frame(error.kind, str(error))
    raise error


_KINDS = {FILE: FILE, DIR: DIR, LINK: LINK}


def _take_rows(
    rows: Iterable[Any], scanned: dict[str, Entry], filled: set[str], taken: list[str] | None
) -> None:
    """The agent's rows ([path, kind, size, mtime_ns, mode, digest, target]) into scanned as
    Entries (their paths into `taken` when given), each row let go as soon as it is one
    (no decoded answer beside the manifest: a list is emptied as it is read); paths and
    digests are interned (the local side's objects), kinds and modes are shared objects."""
    kinds = _KINDS
    modes = _MODES
    intern = sys.intern
    listed = rows if isinstance(rows, list) else None
    for index, row in enumerate(rows):
        if listed is not None:
            listed[index] = None
        path, kind, size, mtime_ns, mode, digest, target = row
        if type(path) is str:
            path = intern(path)
        if type(digest) is str:
            digest = intern(digest)
        if type(kind) is str:
            kind = kinds.get(kind, kind)
        if type(mode) is int:
            mode = modes.get(mode, mode)
        scanned[path] = Entry(kind, size, mtime_ns, mode, digest, target)
        filled.discard(path)
        if taken is not None:
            taken.append(path)
    if listed is not None:
        listed.clear()


_MODES: dict[int, int] = {mode: mode for mode in range(0o10000)}


def _undigested(manifest: Manifest, paths: Collection[str]) -> list[str]:
    """The files of manifest at paths that have no digest yet, sorted."""
    found = []
    for path in paths:
        entry = manifest.get(path)
        if entry is not None and entry.digest is None and entry.kind == FILE:
            found.append(path)
    return sorted(found)
