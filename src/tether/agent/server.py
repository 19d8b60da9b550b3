"""The agent's request loop: frames in on stdin, frames out on stdout, one request at a time.

Requests carry an "id" and an "op"; every answer repeats the id. The client pipelines:
it sends many requests before reading answers, so a thousand writes cost one round trip.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Optional, Tuple

from . import fsops, writer
from .protocol import PROTOCOL, FrameReader, encode_parts, grow_pipe
from .scan import ScanMemo, scan_tree
from .watching import Watching
from .wire import ErrorKind, Op, error_frame, scan_key

VERSION = "dev"
# Agent modules that add request handlers (each has register(agent)), imported at the
# first request that is none of the agent's own ops (~60 ms that a sync-only agent, the
# push's helper lanes and `watch` among them, never pays).
EXTENSIONS = ("jobs", "kernels", "slurm", "housekeeping", "envs", "envwheels")
Handler = Callable[[Dict[str, Any], bytes], Tuple[Dict[str, Any], bytes]]


class Agent:
    """State of one agent process: open writes, digest caches, the output lock."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.flushed = time.monotonic()
        self.writer = writer.Writer()
        self.caches: Dict[str, fsops.DigestCache] = {}
        self.roots: Dict[str, str] = {}  # sync_root's answers (a pure function of the text)
        self.scans = ScanMemo()
        self.tracer: Any = None  # TETHER_TRACEMALLOC (dev: memtrace.py)
        self.watching = Watching(self.scans)
        self.cache_dir = os.path.expanduser("~/.cache/tether")
        self.handlers: Dict[str, Handler] = {
            Op.HELLO.value: self.hello,
            Op.SCAN.value: self.scan,
            Op.DIGEST.value: self.digest,
            Op.PUT.value: self.put,
            Op.PUT_BATCH.value: self.put_batch,
            Op.DELETE.value: self.delete,
            Op.READ.value: self.read,
            Op.PROBE.value: self.probe,
        }
        self.extended = False
        self.extending = threading.Lock()

    def handler(self, op: str) -> Optional[Handler]:
        """The handler of op, with the extensions' handlers added at the first op that
        needs them."""
        found = self.handlers.get(op)
        if found is None and not self.extended:
            self.extend()
            found = self.handlers.get(op)
        return found

    def extend(self) -> None:
        """Add every extension's handlers (once; requests may come from several threads)."""
        with self.extending:
            if not self.extended:
                for extension in EXTENSIONS:
                    importlib.import_module("." + extension, __package__).register(self)
                self.extended = True

    def add(self, *handlers: Handler) -> None:
        """Register handlers under the op each is named after (`def job_rm` serves
        Op.JOB_RM; a name that is no op is a ValueError at start, not a silent gap)."""
        for handler in handlers:
            self.handlers[Op(handler.__name__).value] = handler

    def send(self, header: Dict[str, Any], payload: bytes = b"", flush: bool = True) -> None:
        """Write one frame atomically with respect to other threads."""
        parts = encode_parts(header, payload)
        with self.lock:
            for part in parts:
                if part:
                    self.out.write(part)
            # Batched, but never for long: a failed write is how a dropped link shows.
            if flush or time.monotonic() - self.flushed > 0.05:
                self.out.flush()
                self.flushed = time.monotonic()

    def flush(self) -> None:
        """Hand buffered answers to ssh (called before waiting for more requests)."""
        with self.lock:
            self.out.flush()
            self.flushed = time.monotonic()

    def cache(self, root: str) -> fsops.DigestCache:
        if root not in self.caches:
            self.caches[root] = fsops.DigestCache(self.cache_dir, root)
        return self.caches[root]

    def hello(self, header: Dict[str, Any], payload: bytes) -> Tuple[Dict[str, Any], bytes]:
        if header.get("watch"):  # a kept channel: its trees will be scanned again
            self.watching.eager = True
        return {
            "version": VERSION,
            "protocol": PROTOCOL,
            "python": "%d.%d.%d" % sys.version_info[:3],
            "pid": os.getpid(),
            "home": os.path.expanduser("~"),
            "hostname": socket.gethostname(),
        }, b""

    def scan(self, header: Dict[str, Any], payload: bytes) -> Tuple[Dict[str, Any], bytes]:
        """The tree's entries; with "rows", compact rows and, with "since" (the token of
        this agent's previous answer to the same scan), only what changed since then."""
        root = fsops.sync_root(header["root"])
        cache = self.cache(root)
        skip = header.get("skip", [])
        digests = bool(header.get("digests"))
        only = header.get("only")
        key = scan_key(root, skip, only, digests)
        if header.get("rows") and only is None:
            if self.tracer is not None:
                self.tracer.next_phase()
            answer, exists = self.watching.scan(
                key, root, skip, cache, digests, header.get("since")
            )
            cache.save()
            answer.update(exists=exists, root=root)
            return answer, b""
        rows, exists = scan_tree(root, skip, cache, digests, only)
        cache.save()
        if not header.get("rows"):
            entries = {path: fsops.entry_of_row(row) for path, row in rows.items()}
            return {"entries": entries, "exists": exists, "root": root}, b""
        answer = self.scans.answer(key, header.get("since"), rows)
        answer.update(exists=exists, root=root)
        return answer, b""

    def digest(self, header: Dict[str, Any], payload: bytes) -> Tuple[Dict[str, Any], bytes]:
        root = fsops.sync_root(header["root"])
        cache = self.cache(root)
        digests: Dict[str, Any] = {}
        for rel in header["paths"]:
            full = os.path.join(root, fsops.check_rel(rel))
            try:
                st = os.lstat(full)
                digests[rel] = cache.get(full, st, True)
            except (FileNotFoundError, NotADirectoryError):
                digests[rel] = None
        cache.save()
        self.watching.touched(root, list(digests))
        return {"digests": digests}, b""

    def root(self, header: Dict[str, Any]) -> str:
        """fsops.sync_root of the request's root, worked out once per root (a push sends
        it with each of its thousands of requests)."""
        given = header["root"]
        found = self.roots.get(given) if isinstance(given, str) else None
        if found is None:
            found = fsops.sync_root(given)
            if len(self.roots) >= 64:
                self.roots.clear()
            self.roots[given] = found
        return found

    def put(self, header: Dict[str, Any], payload: bytes) -> Tuple[Dict[str, Any], bytes]:
        root = self.root(header)
        answer = self.writer.put(root, header, payload)
        if self.watching.kept:
            self.watching.wrote(root)
        return answer, b""

    def put_batch(self, header: Dict[str, Any], payload: bytes) -> Tuple[Dict[str, Any], bytes]:
        items = header["items"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise fsops.OpError(ErrorKind.PROTOCOL, "a batch's items are not objects")
        root = self.root(header)
        answers = self.writer.put_batch(root, items, payload, failure)
        if self.watching.kept:
            self.watching.wrote(root)
        return {"answers": answers}, b""

    def delete(self, header: Dict[str, Any], payload: bytes) -> Tuple[Dict[str, Any], bytes]:
        return writer.delete(self.root(header), header), b""

    def read(self, header: Dict[str, Any], payload: bytes) -> Tuple[Dict[str, Any], bytes]:
        return writer.read(self.root(header), header)

    def probe(self, header: Dict[str, Any], payload: bytes) -> Tuple[Dict[str, Any], bytes]:
        """Everything `host check` wants, in one answer."""
        import platform

        path = fsops.root_path(header.get("path") or "~")
        while not os.path.isdir(path) and path != "/":
            path = os.path.dirname(path)
        usage = shutil.disk_usage(path)
        answer: Dict[str, Any] = {
            "python": "%d.%d.%d" % sys.version_info[:3],
            "python_path": sys.executable,
            "platform": platform.platform(),  # (~20 ms: here, not in every hello)
            "tmux": _version(["tmux", "-V"]),
            "sbatch": _version(["sbatch", "--version"]),
            "disk_free": usage.free,
            "disk_total": usage.total,
            "disk_path": path,
            "gpus": _gpus(),
            "linger": _linger(),
        }
        python = header.get("python")
        if python:
            answer["ipykernel"] = _version(
                [python, "-c", "import ipykernel; print(ipykernel.__version__)"]
            )
        return answer, b""

    def serve(self, fd: int) -> None:
        """Answer requests until the input (a file descriptor) closes."""
        grow_pipe(fd)
        reader = FrameReader(fd, self.flush)
        try:
            while True:
                frame = reader.read_frame()
                if frame is None:
                    return
                header, payload = frame
                self.dispatch(header, payload)
        finally:
            self.flush()
            self.writer.close()

    def dispatch(self, header: Dict[str, Any], payload: bytes) -> None:
        request_id = header.get("id")
        handler = self.handler(str(header.get("op")))
        if handler is None:
            answer = error_frame(ErrorKind.UNKNOWN_OP, "unknown op %r" % (header.get("op"),))
            answer["id"] = request_id
            self.send(answer, flush=False)
            return
        try:
            answer, data = handler(header, payload)
        except Exception as error:
            answer, data = failure(error), b""
        answer.setdefault("ok", True)
        answer["id"] = request_id
        self.send(answer, data, flush=False)


def failure(error: Exception) -> Dict[str, Any]:
    """The error answer of a request that raised `error` (while it is being handled)."""
    if isinstance(error, fsops.OpError):
        return error_frame(error.kind, str(error))
    if isinstance(error, OSError):
        converted = fsops.os_error(error, str(error.filename or ""))
        return error_frame(converted.kind, str(converted))
    answer = error_frame(ErrorKind.INTERNAL, "%s: %s" % (type(error).__name__, error))
    answer["trace"] = traceback.format_exc()
    return answer


def _version(argv: Any) -> Any:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return (done.stdout.strip() or done.stderr.strip()).splitlines()[0] if done.stdout else None


def _gpus() -> Any:
    query = "index,name,memory.used,memory.total,utilization.gpu"
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=" + query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    gpus = []
    for line in done.stdout.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) < 5:
            continue
        try:
            gpus.append(
                {
                    "index": int(cells[0]),
                    "name": cells[1],
                    "memory_used": int(float(cells[2])),
                    "memory_total": int(float(cells[3])),
                    "utilization": int(float(cells[4])),
                }
            )
        except ValueError:
            continue
    return gpus


def _linger() -> Any:
    """'kills' if logind would end tmux at logout, else None."""
    try:
        with open("/etc/systemd/logind.conf", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.strip().replace(" ", "") == "KillUserProcesses=yes":
            user = os.environ.get("USER", "")
            if not os.path.exists("/var/lib/systemd/linger/" + user):
                return "kills"
    return None


def main(argv: Any = None) -> int:
    """Entry point: `agent.pyz serve HASH` (the hash is reported by `hello`)."""
    global VERSION
    args = list(argv or sys.argv)
    if len(args) >= 3 and args[1] == "serve":
        VERSION = args[2]
    os.umask(0o022)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    # A dropped link may end us by signal (sshd's SIGHUP, a SIGTERM): leave through the
    # normal path, so half-written temp files are removed before we go.
    for number in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, _leave)
    agent = Agent(out)
    where = os.environ.get("TETHER_TRACEMALLOC")
    if where:
        from . import memtrace

        agent.tracer = memtrace.start("agent", where)
    with contextlib.suppress(BrokenPipeError, SystemExit), _profiled():
        agent.serve(sys.stdin.fileno())
    return 0


@contextlib.contextmanager
def _profiled() -> Any:
    """With TETHER_AGENT_PROFILE=DIR in the agent's environment (set by the remote
    host, e.g. bench/profile_first.py's sandbox), the agent runs under cProfile and leaves
    DIR/agent-PID.prof when it ends: where a push's time goes on the remote."""
    where = os.environ.get("TETHER_AGENT_PROFILE")
    if not where:
        yield
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        with contextlib.suppress(OSError):
            profiler.dump_stats(os.path.join(where, "agent-%d.prof" % os.getpid()))


def _leave(number: int, frame: Any) -> None:
    raise SystemExit(128 + number)
