"""Memory per file of what the sync daemon and the agent hold (issue #26: 100,000 files).

A full local scan (scan_local + digests) peaks at a bound per file; after a push the base
holds the local manifest's own entries (no copy per file), and so does the remote manifest
kept for the next push; the agent's extensions (an env op loads them) leave out what only a
fetch of uv needs (ssl, urllib.request). Measured with tracemalloc on real
trees and a real local agent (bench/memory.py measures the RSS at 100,000 files).
"""

from __future__ import annotations

import json.decoder
import subprocess
import sys
import tracemalloc
from pathlib import Path

from tests.harness.local_agent import with_agent
from tether.agent.fsops import DigestCache
from tether.agent.protocol import encode_parts
from tether.agent.scan import ScanMemo
from tether.agent.watching import Watching
from tether.agent.wire import Scan
from tether.core.manifest import FILE, Entry
from tether.core.plan import plan_push
from tether.sync import incremental
from tether.sync.endpoint import RemoteEndpoint
from tether.sync.local import Scope
from tether.sync.session import Pair, push_pair
from tether.sync.state import Base
from tether.transport.channel import AgentChannel

FILES = 3000
# A push's files: more than a scan answer's rows encoded at once (agent/protocol.ROWS_CHUNK),
# as in a tree of 100,000 files.
PUSH_FILES = 5000
# A whole-tree scan answer as it arrives: its text (~110 bytes a row here).
SCAN_ANSWER_PER_FILE = 200
# A file's share of a full scan's peak: its Entry (with and without digest), path, digest
# and its stat until the digest is filled (an os.stat_result alone held ~600 bytes).
SCAN_PEAK_PER_FILE = 1250
# A first full scan (every file hashed, its digest cached): the Entry without digest and
# the lstat of each file let go as its digest is filled, not held until all are.
FIRST_SCAN_PEAK_PER_FILE = 900


def _tree(root: Path, files: int = FILES) -> None:
    for index in range(files):
        path = root / f"d{index % 20}" / f"s{index % 7}" / f"f{index:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"value = {index}\n")


def _in_fresh_python(probe: str, *args: str) -> str:
    """What probe (Python source run with args) prints, in a fresh interpreter: none of the
    earlier tests' caches, interned strings or heap in its figures."""
    argv = [sys.executable, "-c", probe, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout


def _scan_peak(root: Path, cache_dir: Path, cached: bool) -> tuple[int, int, int]:
    """(entries, entries with a digest, traced peak in bytes) of a full scan of root, in a
    fresh interpreter (`cached`: after a first one filled the digest cache). In the test
    process, what earlier tests left (caches, interned strings, a grown heap) moved the
    figure by 10-60% (1377 and 1430 bytes a file after other test files)."""
    probe = (
        "import sys, tracemalloc\n"
        "from pathlib import Path\n"
        "from tether.agent.fsops import DigestCache\n"
        "from tether.sync.local import Scope, fill_local_digests, scan_local\n"
        "root, cache_dir, cached = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == '1'\n"
        "scope = Scope.of((), (), ())\n"
        "cache = DigestCache(cache_dir, str(root))\n"
        "if cached:\n"
        "    fill_local_digests(root, scan_local(root, scope), cache)\n"
        "tracemalloc.start()\n"
        "before = tracemalloc.get_traced_memory()[0]\n"
        "manifest = fill_local_digests(root, scan_local(root, scope), cache)\n"
        "peak = tracemalloc.get_traced_memory()[1] - before\n"
        "digested = sum(1 for entry in manifest.values() if entry.digest is not None)\n"
        "print(len(manifest), digested, peak)\n"
    )
    printed = _in_fresh_python(probe, str(root), str(cache_dir), "1" if cached else "0")
    count, digested, peak = map(int, printed.split())
    return count, digested, peak


def test_a_full_local_scan_peaks_under_a_bound_per_file(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    _tree(root)
    count, _, peak = _scan_peak(root, tmp_path / "cache", cached=True)
    assert count == sum(1 for _ in root.rglob("*"))
    assert peak / FILES < SCAN_PEAK_PER_FILE, f"{peak / FILES:.0f} bytes per file"


def test_a_first_full_scan_peaks_under_a_bound_per_file(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    _tree(root)
    _, digested, peak = _scan_peak(root, tmp_path / "cache", cached=False)
    assert digested == FILES
    assert peak / FILES < FIRST_SCAN_PEAK_PER_FILE, f"{peak / FILES:.0f} bytes per file"


def test_after_a_push_the_base_holds_the_local_manifests_entries(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    _tree(local, 300)
    pair = Pair("t", local, str(remote), Scope.of((), (), ()))

    async def body(channel: AgentChannel) -> tuple[int, int]:
        report = await push_pair(channel, pair, local)
        assert report.created and not report.errors and not report.conflicts
        base = pair.base("push", local)  # this process wrote it: its in-process copy
        uploads = [u for u in report.plan.uploads if u.entry.kind == FILE]
        return sum(1 for u in uploads if base.entries.get(u.path) is u.entry), len(uploads)

    shared, uploaded = with_agent(body)
    assert (shared, uploaded) == (300, 300)


def test_the_remote_manifest_kept_between_pushes_holds_the_bases_entries(
    tmp_path: Path,
) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    _tree(local, 300)
    pair = Pair("t", local, str(remote), Scope.of((), (), ()))

    async def body(channel: AgentChannel) -> tuple[int, int]:
        for _ in range(2):  # a first push, then one that scans what it wrote
            report = await push_pair(channel, pair, local)
            assert not report.errors and not report.conflicts
        base = pair.base("push", local)
        (scanned,) = [held[1] for held in channel.scan_memo.values()]
        files = [path for path, entry in scanned.items() if entry.kind == FILE]
        return sum(1 for path in files if scanned[path] is base.entries.get(path)), len(files)

    assert with_agent(body) == (300, 300)


def test_a_whole_tree_scan_answer_is_let_go_once_taken(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    _tree(local, FILES)
    pair = Pair("t", local, str(remote), Scope.of((), (), ()))

    async def body(channel: AgentChannel) -> int:
        await push_pair(channel, pair, local)
        channel.scan_memo.clear()  # the next scan is answered in full
        tracemalloc.start()
        try:
            manifest = await RemoteEndpoint(channel, str(remote)).scan(
                pair.base("push", local), None
            )
            decoded = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(True, json.decoder.__file__)]
            )
        finally:
            tracemalloc.stop()
        assert len(manifest) > FILES
        return sum(stat.size for stat in decoded.statistics("filename"))

    # What the manifest keeps of the answer (its entries' sizes and mtimes where they are not
    # the base's), not its rows (a list and its objects: ~250 bytes more per file).
    held = with_agent(body)
    assert held / FILES < 120, f"{held / FILES:.0f} bytes per file of the decoded answer held"


def test_the_agents_extensions_load_without_ssl_and_urllib_request() -> None:
    probe = (
        "import importlib, sys\n"
        "from tether.agent import server\n"
        "for name in server.EXTENSIONS:\n"
        "    importlib.import_module('tether.agent.' + name)\n"
        "print(sorted({'ssl', 'urllib.request'} & set(sys.modules)))\n"
    )
    assert _in_fresh_python(probe).strip() == "[]"


# What the agent keeps of a whole tree's scan for the next one (its answer's rows, the
# watched tree's entries), per file: a list of 7 objects per file held ~330 bytes; packed
# per directory (agent/packed.py) ~40.
AGENT_HELD_PER_FILE = 100
# The peak of that scan and of its encoded answer (~65 bytes a file here) over what was
# held before (rows as lists held whole: ~450).
AGENT_PEAK_PER_FILE = 250
AGENT_FILES = 8000  # several chunks of an answer's rows (protocol.ROWS_CHUNK)


def test_the_agents_kept_scan_of_a_tree_holds_under_a_bound_per_file(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    _tree(root, AGENT_FILES)
    watching = Watching(ScanMemo())
    watching.eager = True  # a kept channel's agent: watched from the first scan
    cache = DigestCache(str(tmp_path / "cache"), str(root))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        answer, exists = watching.scan("k", str(root), [], cache, False, None)
        sent = sum(len(part) for part in encode_parts(answer))
        del answer
        held, peak = (size - before for size in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
        for kept in watching.kept.values():
            if kept is not None:
                kept.watcher.close()
    assert exists and sent > AGENT_FILES * 20
    assert held / AGENT_FILES < AGENT_HELD_PER_FILE, f"{held / AGENT_FILES:.0f} bytes/file held"
    assert peak / AGENT_FILES < AGENT_PEAK_PER_FILE, f"{peak / AGENT_FILES:.0f} bytes/file peak"


def test_a_whole_tree_scan_answer_arrives_as_its_text_not_its_decoded_rows(
    tmp_path: Path,
) -> None:
    """A large scan answer's rows are decoded one at a time as they are taken (they become
    Entries at once: transport/rows.py), never all at once (~450 bytes a row)."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    _tree(local, PUSH_FILES)
    pair = Pair("t", local, str(remote), Scope.of((), (), ()))

    async def body(channel: AgentChannel) -> tuple[int, int]:
        await push_pair(channel, pair, local)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            header, _ = await channel.request_rows(Scan(str(remote), [".git", ".tether"]))
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        return held, sum(1 for row in header["rows"] if row[0].endswith(".py"))

    held, files = with_agent(body)
    assert files == PUSH_FILES
    assert held / files < SCAN_ANSWER_PER_FILE, f"{held / files:.0f} bytes per row held"


def test_a_plans_uploads_cost_a_small_object_each() -> None:
    """A first push plans an Upload per file (100,000 of them): slotted, not a dict each."""
    local = {f"d{i % 20}/f{i:05d}.py": Entry(FILE, i, i, 0o644, f"{i:064x}") for i in range(2000)}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        plan = plan_push(local, {}, {}, lambda path: True)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(plan.uploads) == len(local)
    assert held / len(local) < 90, f"{held / len(local):.0f} bytes per upload planned"


def test_uploads_expected_are_kept_without_a_copy(tmp_path: Path) -> None:
    """A first push's pending uploads (path -> digest of every file) are the dict it made,
    not a second one beside it."""
    digests = {f"d{i % 20}/f{i:05d}.py": f"{i:064x}" for i in range(2000)}
    base = Base(tmp_path / "push.json")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        base.expect_uploads(digests, save=False)
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert base.pending == digests
    assert grown < 4096, f"{grown} bytes to remember {len(digests)} uploads"


def test_saving_a_first_pushs_pending_uploads_peaks_under_a_bound_per_upload(
    tmp_path: Path,
) -> None:
    """The pending file of a first push names every file: it is written a piece at a time,
    never encoded whole beside its own pieces (~350 bytes a file: a first push's peak)."""
    uploads = 20_000
    digests = {f"d{i % 20}/s{i % 7}/f{i:05d}.py": f"{i:064x}" for i in range(uploads)}
    base = Base(tmp_path / "push.json")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        base.expect_uploads(digests)  # saved at once
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert Base.load(tmp_path / "push.json").pending == digests
    assert peak / uploads < 60, f"{peak / uploads:.0f} bytes per upload at the peak"


def test_what_a_first_push_leaves_unsettled_is_found_without_copies_of_the_tree() -> None:
    """After a first push every file is unsettled (sync/incremental.py): listed once, not
    beside a set of the local paths, one of the base's and their union."""
    files = 20_000
    local = {f"d{i % 20}/f{i:05d}.py": Entry(FILE, i, i, 0o644, f"{i:064x}") for i in range(files)}
    base_entries = dict(local)
    plan = plan_push(local, {}, {}, lambda path: True)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        unsettled = incremental.unsettled_after(plan, local, base_entries, None)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert unsettled == set(local)
    assert peak / files < 110, f"{peak / files:.0f} bytes per path at the peak"


def test_what_a_daemon_command_thread_frees_goes_back_to_the_system() -> None:
    """The daemon runs each command in a worker thread: the tens of MB a push frees (large
    blocks, between small ones it keeps) leave its resident set, not just its heap."""
    probe = (
        "import threading\n"
        "from tether.cli import daemon\n"
        "daemon.lean_malloc()\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1]) >> 10\n"
        "kept = []\n"
        "def command():\n"
        "    first = b'x' * (300 << 10)\n"  # freed: glibc's own threshold would rise
        "    del first\n"
        "    blocks = []\n"
        "    for _ in range(200):\n"  # 60 MB of blocks, a small block kept after each
        "        blocks.append(b'x' * (300 << 10))\n"
        "        kept.append(b'y' * 2000)\n"
        "    before = rss()\n"
        "    del blocks\n"
        "    print(before - rss())\n"
        "thread = threading.Thread(target=command)\n"
        "thread.start()\n"
        "thread.join()\n"
    )
    freed = _in_fresh_python(probe)
    assert int(freed) >= 50, f"{freed.strip()} MB of 60 MB freed went back"
