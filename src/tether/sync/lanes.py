"""Send a push's writes pipelined, spread over several agent channels when the push is big.

Files are read from the source (a LocalEndpoint) and written to the destination endpoint
(sync/endpoint.py: the remote agent for a push) with its checked writes.

One ssh session carries at most its flow-control window per round trip (OpenSSH's session
window is 2 MB: ~40 MB/s at 50 ms RTT), and one agent writes one file at a time. A big push
therefore also uses helper channels (`AgentChannel.open_helper`: more ssh sessions over the
same ControlMaster, each with its own agent), each a *lane* that takes the next file from
one shared queue, so lanes stay busy until the queue is empty. Small files, directories and
links go many to a request (`PutBatch`): a first push of 100,000 small files costs each
side per-file work only, not a frame, a JSON header and an answer per file.

What the agents guarantee per request is the same on every lane (temp file in the same
directory, checked against `expect`, renamed), so it does not matter which lane writes a
file. Deletes, directories and links go on the main channel first; when any of them
replaces something on the remote (a delete, a type change) the helpers start only after
those answers are in, so a file never lands in a directory that is about to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tether.agent import wire
from tether.agent.modes import safe_mode
from tether.core.manifest import DIR, FILE, LINK, Entry
from tether.core.plan import Delete, Upload
from tether.sync.endpoint import Endpoint, LocalEndpoint

CHUNK = 1 << 20
# Bytes and writes (files, directories, links, deletes: a batch counts each of its items) a
# lane may have unanswered before it waits for the oldest answers. The count keeps the
# lanes busy alike: a lane never holds much more of the shared queue than it can soon write.
WINDOW = 32 << 20
REQUESTS = 512
# Channels a big push spreads over (the main one and helpers), and what makes it big.
LANES = 3
BIG_BYTES = 16 << 20
BIG_FILES = 400
# Files smaller than SMALL go in batches of at most BATCH_FILES files and BATCH_BYTES bytes.
SMALL = 64 << 10
BATCH_FILES = 256
BATCH_BYTES = 512 << 10

Answer = tuple[dict[str, Any], bytes]
# (answer header, action, path, entry sent, endpoint) -> None; may raise to stop the push.
OnAnswer = Callable[[dict[str, Any], str, str, Entry, Endpoint], None]
Progress = Callable[[int], None]


@dataclass
class _Request:
    future: asyncio.Future[Answer]
    action: str  # "create", "update", "delete", "chunk" (a part of a file, not its last), "batch"
    path: str
    entry: Entry
    size: int  # payload bytes
    items: list[tuple[str, str, Entry]] | None = None  # a batch's (action, path, entry sent)


@dataclass
class Lane:
    """One connection's requests in flight, answered in order."""

    endpoint: Endpoint
    on_answer: OnAnswer
    progress: Progress | None
    inflight: deque[_Request] = field(default_factory=deque)
    waiting: int = 0  # payload bytes unanswered
    writes: int = 0  # writes unanswered

    def send(self, action: str, path: str, entry: Entry, request: wire.Put | wire.Delete) -> None:
        """Queue one request (its answer is settled in order by `settle`)."""
        future = self.endpoint.submit(request)
        size = len(request.payload) if isinstance(request, wire.Put) else 0
        self.inflight.append(_Request(future, action, path, entry, size))
        self.waiting += size
        self.writes += 1

    def send_batch(self, items: list[tuple[str, str, Entry]], request: wire.PutBatch) -> None:
        """Queue a batch of writes; each item's answer is settled as its own request's."""
        future = self.endpoint.submit(request)
        size = len(request.payload)
        self.inflight.append(_Request(future, "batch", "", Entry(FILE), size, items))
        self.waiting += size
        self.writes += len(items)

    async def settle(self, limit: int = 0, requests: int = 0) -> None:
        """Hand queued requests to ssh, then take answers until at most limit bytes and
        `requests` writes are unanswered (0, 0: all)."""
        await self.endpoint.flush()
        if self.inflight:
            await self.endpoint.ready()  # the agent's hello (its version) comes first
        while self.inflight and (self.waiting > limit or self.writes > requests):
            request = self.inflight[0]
            header, _ = await request.future
            self.inflight.popleft()
            self.waiting -= request.size
            self.writes -= 1 if request.items is None else len(request.items)
            if request.items is None:
                self.on_answer(header, request.action, request.path, request.entry, self.endpoint)
            else:
                answers = _batch_answers(header, len(request.items))
                for (action, path, entry), answer in zip(request.items, answers, strict=True):
                    self.on_answer(answer, action, path, entry, self.endpoint)
            if self.progress is not None and request.size:
                self.progress(request.size)

    async def pace(self) -> None:
        """Wait for answers while too much is unanswered; else only for ssh to take bytes."""
        if self.waiting > WINDOW or self.writes > REQUESTS:
            await self.settle(WINDOW // 2, REQUESTS // 2)
        else:
            await self.endpoint.flush()


def delete(lane: Lane, item: Delete) -> None:
    root, expect = lane.endpoint.root, item.expect.to_json()
    request = wire.Delete(root, item.path, expect=expect, backup=item.backup)
    lane.send("delete", item.path, item.expect, request)


async def upload(
    lane: Lane,
    source: LocalEndpoint,
    item: Upload,
    between: Callable[[], None] | None = None,
) -> None:
    """Send one upload: a directory or link in one request, a file in 1 MB chunks (with
    `between()` called after each chunk but the last)."""
    entry = item.entry
    action, put = _put(lane.endpoint.root, item)
    if entry.kind in (DIR, LINK):
        lane.send(action, item.path, entry, replace(put, kind=entry.kind, target=entry.target))
        return
    handle = source.open(item.path)  # None: gone since the scan, settled by the next push
    if handle is None:
        return
    with handle:
        offset = 0
        digest = hashlib.sha256()
        while True:
            chunk = handle.read(CHUNK)
            if _submit_chunk(lane, item, action, put, chunk, offset, digest):
                return
            offset += len(chunk)
            if between is not None:
                between()
            await lane.pace()


def upload_small(lane: Lane, source: LocalEndpoint, item: Upload) -> bool:
    """upload() of a file that fits in one request, without waiting; False (nothing sent)
    if it has grown to a chunk or more since the scan."""
    action, put = _put(lane.endpoint.root, item)
    handle = source.open(item.path)
    if handle is None:
        return True
    with handle:
        chunk = handle.read(CHUNK)
        if len(chunk) >= CHUNK:
            return False
        _submit_chunk(lane, item, action, put, chunk, 0, hashlib.sha256())
    return True


def upload_batch(lane: Lane, source: LocalEndpoint, items: list[Upload]) -> list[Upload]:
    """Send whole files (each under a chunk), directories and links in one request, without
    waiting; the files that have grown to a chunk or more since the scan are returned (not
    sent: they go in chunks). A file gone since the scan is left out (settled by the next
    push, as by upload())."""
    heads: list[dict[str, Any]] = []
    sent: list[tuple[str, str, Entry]] = []
    payload: list[bytes] = []
    grown: list[Upload] = []
    for item in items:
        entry = item.entry
        head: dict[str, Any] = {"path": item.path, "mode": safe_mode(entry.mode)}
        if item.expect is not None:
            head["expect"] = item.expect.to_json()
        if item.backup:
            head["backup"] = True
        if entry.kind != FILE:
            head["kind"] = entry.kind
            if entry.target is not None:
                head["target"] = entry.target
        else:
            handle = source.open(item.path)
            if handle is None:
                continue
            with handle:
                data = handle.read(CHUNK)
            if len(data) >= CHUNK:
                grown.append(item)
                continue
            head["mtime_ns"] = entry.mtime_ns
            head["n"] = len(data)
            payload.append(data)
            entry = _sent(entry, len(data), hashlib.sha256(data).hexdigest())
        heads.append(head)
        sent.append((item.action, item.path, entry))
    if heads:
        request = wire.PutBatch(lane.endpoint.root, heads, b"".join(payload))
        lane.send_batch(sent, request)
    return grown


def _batch_answers(header: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Each item's answer in a batch's answer (a refused batch: its refusal for each)."""
    if not header.get("ok", True):
        return [header] * count
    answers = header.get("answers")
    if (
        isinstance(answers, list)
        and len(answers) == count
        and all(isinstance(answer, dict) for answer in answers)
    ):
        return answers
    what = f"the answer to a batch of {count} writes is malformed"
    return [wire.error_frame(wire.ErrorKind.PROTOCOL, what)] * count


def _small_batch(files: deque[Upload], right: bool, most: int) -> list[Upload]:
    """Up to `most` files smaller than SMALL from one end of the queue (BATCH_BYTES in all,
    or one file)."""
    batch: list[Upload] = []
    size = 0
    while files and len(batch) < most:
        item = files[-1] if right else files[0]
        if item.entry.size >= SMALL or (batch and size + item.entry.size > BATCH_BYTES):
            break
        batch.append(files.pop() if right else files.popleft())
        size += item.entry.size
    return batch


def _put(root: str, item: Upload) -> tuple[str, wire.Put]:
    """The upload's action ("create" or "update") and what each of its requests shares."""
    put = wire.Put(
        root,
        item.path,
        expect=item.expect.to_json() if item.expect else None,
        backup=item.backup,
        mode=safe_mode(item.entry.mode),
    )
    return item.action, put


def _submit_chunk(
    lane: Lane,
    item: Upload,
    action: str,
    put: wire.Put,
    chunk: bytes,
    offset: int,
    digest: Any,
) -> bool:
    """Submit one chunk of a file (the last if shorter than CHUNK); True when that was it."""
    entry = item.entry
    last = len(chunk) < CHUNK
    digest.update(chunk)
    request = wire.Put(
        put.root,
        put.path,
        expect=put.expect,
        backup=put.backup,
        mode=put.mode,
        offset=offset,
        last=last,
        mtime_ns=entry.mtime_ns,
        payload=chunk,
    )
    if not last:
        lane.send("chunk", item.path, Entry(FILE), request)
        return False
    sent = _sent(entry, offset + len(chunk), digest.hexdigest())
    lane.send(action, item.path, sent, request)
    return True


def _sent(entry: Entry, size: int, digest: str) -> Entry:
    """The Entry of the bytes sent for a file planned as entry: entry itself when they are
    the bytes it describes (the base then records the local manifest's object, not a copy
    per file: ~100 bytes each at 100,000 files)."""
    if entry.digest == digest and entry.size == size:
        return entry
    return Entry(FILE, size, entry.mtime_ns, entry.mode, sys.intern(digest))


def is_big(uploads: list[Upload]) -> bool:
    """Whether a push is worth helper channels (their start costs a few round trips)."""
    files = [item.entry.size for item in uploads if item.entry.kind == FILE]
    return len(files) >= BIG_FILES or sum(files) >= BIG_BYTES


async def run(
    source: LocalEndpoint,
    dest: Endpoint,
    deletes: list[Delete],
    uploads: list[Upload],
    on_answer: OnAnswer,
    progress: Progress | None,
) -> None:
    """Execute deletes and uploads (directories before what they hold), every answer
    passed to on_answer; raises the first error of any lane after stopping the others."""
    ordered = sorted(uploads, key=lambda up: (up.entry.kind != DIR, up.path.count("/")))
    first = [item for item in ordered if item.entry.kind != FILE]
    # Biggest first: the lanes end together, on small files. Those in path order: a batch
    # then holds a few directories' files (the agent opens each directory once per batch).
    files = deque(sorted((i for i in ordered if i.entry.kind == FILE), key=_order))
    main = Lane(dest, on_answer, progress)
    mix = _mix(files)
    lanes = LANES if is_big(uploads) else 1
    # Helpers wait for the main lane's first requests when those change what is there.
    ordered_first = lanes > 1 and (bool(deletes) or any(i.expect is not None for i in first))
    opened = asyncio.Event()
    if not ordered_first:
        opened.set()

    async def main_lane() -> None:
        for gone in deletes:
            delete(main, gone)
        for start in range(0, len(first), BATCH_FILES):
            upload_batch(main, source, first[start : start + BATCH_FILES])
            await main.pace()
        if ordered_first:
            await main.settle()
            opened.set()
        await _drain(main, source, files, mix)

    if lanes == 1:
        await main_lane()
        return
    working: set[asyncio.Task[None]] = set()

    async def helper_lane(helper: Endpoint | None) -> None:
        if helper is None:
            helper = await dest.open_helper()
        await opened.wait()
        if helper is None or not files:
            return
        task = asyncio.current_task()
        assert task is not None
        working.add(task)
        await _drain(Lane(helper, on_answer, progress), source, files, mix)

    spare: list[Endpoint | None] = [*dest.idle_helpers()[: lanes - 1]]
    spare += [None] * (lanes - 1 - len(spare))
    main_task = asyncio.create_task(main_lane())
    tasks = {main_task, *(asyncio.create_task(helper_lane(h)) for h in spare)}
    working.add(main_task)
    finished = False
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # the first error stops every lane (finally below)
            if not files and not (pending & working):
                # Work is done; helpers still starting are not waited for.
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                pending = set()
        finished = True
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A helper left with answers outstanding (or a half-sent file) is not reused.
        with contextlib.suppress(Exception):
            await dest.drop_helpers(every=not finished)


async def _drain(lane: Lane, source: LocalEndpoint, files: deque[Upload], mix: int) -> None:
    """Send files from the shared queue until it is empty, then take every answer.

    While a big file goes out in chunks, `mix` small files from the queue's end go after
    each chunk: their writes (CPU on the remote) overlap the transfer (the link's window).
    """

    def between() -> None:
        batch = _small_batch(files, True, mix)
        if batch:
            # Grown since the scan: sent in chunks, in turn.
            files.extendleft(upload_batch(lane, source, batch))

    while files:
        batch = _small_batch(files, False, BATCH_FILES)
        if batch:
            for item in upload_batch(lane, source, batch):
                await upload(lane, source, item)  # grown since the scan: in chunks
        else:
            await upload(lane, source, files.popleft(), between)
        await lane.pace()
    await lane.settle()


def _mix(files: deque[Upload]) -> int:
    """Small files to send after each chunk of a big one, so that both end together."""
    chunks = sum(item.entry.size // CHUNK for item in files)
    small = sum(1 for item in files if item.entry.size < CHUNK)
    return max(1, min(64, -(-small // max(chunks, 1))))


def _order(item: Upload) -> tuple[int, str]:
    size = item.entry.size
    return (-size, item.path) if size >= SMALL else (0, item.path)
