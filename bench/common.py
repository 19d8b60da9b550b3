"""Shared pieces of the benchmarks: an isolated HOME, sandboxes, latency, timing, tables.

Every bench script calls `isolate()` first: it points HOME, the XDG dirs and tether's
runtime dir at a fresh temporary home (and nss_wrapper at a passwd copy whose home field
agrees), so OpenSSH and tether never read or write the real ~/.ssh. Timings are medians
of several runs, taken side by side with rsync over the same ssh ControlMaster.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import measured
from measured import Measure, measures_path, read_measures, verdict

if TYPE_CHECKING:
    from tether.hosts.sandbox import Sandbox

# Re-exported: the bench scripts use common.Measure, common.verdict, ...
__all__ = ["Measure", "measures_path", "read_measures", "verdict"]

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "RESULTS.md"
for _path in (REPO / "src", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SUBPROCESS_TIMEOUT_S = 300.0


def tether_bin() -> str:
    """The tether console script of this interpreter's environment (the user's command)."""
    beside = Path(sys.executable).parent / "tether"
    return str(beside if beside.exists() else REPO / ".venv" / "bin" / "tether")


# ---------------------------------------------------------------------- isolation


@dataclass
class Isolation:
    """The temporary home every bench runs under, and how to undo it."""

    home: Path
    undo: Callable[[], None]
    session_processes: Callable[[], list[tuple[int, str]]] = field(default=lambda: [])


def isolate() -> Isolation:
    """Point os.environ at a fresh temporary HOME (checked) before tether or ssh runs.

    The same isolation the tests use (tests/harness/env.py): the real ~/.ssh is never read.
    """
    from tests.harness import env as harness

    test_env = harness.setup()
    compile_tether()
    return Isolation(
        home=test_env.home,
        undo=lambda: harness.teardown(test_env),
        session_processes=lambda: harness.session_processes(test_env),
    )


@contextlib.contextmanager
def isolated() -> Iterator[Isolation]:
    """isolate() for the block; afterwards end leftover processes and remove the home."""
    isolation = isolate()
    try:
        yield isolation
    finally:
        with contextlib.suppress(Exception):
            stop_daemons()  # the sync daemon the bench's tether commands started
        with contextlib.suppress(Exception):
            from tests.harness import env as harness

            left = [pid for pid, _ in isolation.session_processes()]
            harness.end_processes(left)
        isolation.undo()


def compile_tether() -> None:
    """Byte-compile tether's sources, so every start is timed as an installed tether's.

    pip compiles what it installs; a checkout run with PYTHONDONTWRITEBYTECODE=1 (as on the
    project's machines) would otherwise compile every module on every start (~30 ms).
    """
    import compileall

    compileall.compile_dir(str(REPO / "src" / "tether"), quiet=1)


def stop_daemons() -> None:
    """End the sync daemons of this (isolated) runtime dir, by pid."""
    from tether.cli import daemon

    daemon.stop_all()


def daemon_pids() -> list[int]:
    """The pids of the sync daemons of this (isolated) runtime dir."""
    from tether.cli import daemon

    return sorted(daemon.running())


def peak_rss_mb(pid: int) -> float | None:
    """A live process's peak resident set size (VmHWM) in MB, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


# ---------------------------------------------------------------------- hosts


def control_path() -> str:
    """tether's ControlPath (the same master tether's own ssh calls use)."""
    from tether.transport.ssh import control_path as tether_control_path

    return tether_control_path()


def master_options() -> list[str]:
    """The ssh options tether adds to every call (ControlMaster=auto, its path, persist)."""
    from tether.transport.ssh import ssh_options

    return ssh_options()


def ssh_command() -> str:
    """An `ssh` command line (for `rsync -e`) that shares tether's ControlMaster."""
    return shlex.join(["ssh", *master_options()])


def start_master(alias: str) -> None:
    """Open (or reuse) tether's ControlMaster to alias, so timed runs do not pay for it."""
    run(["ssh", *master_options(), alias, "true"])


def stop_master(alias: str) -> None:
    """Close alias's ControlMaster if one runs."""
    from tether.transport.ssh import SshTransport

    SshTransport(alias).stop_master()


@contextlib.contextmanager
def sandbox(name: str) -> Iterator[Sandbox]:
    """A sandbox sshd reachable as `ssh NAME` for the block (down closes its master too)."""
    from tests.harness.env import sandbox_up

    with sandbox_up(name) as box:
        yield box


@contextlib.contextmanager
def rtt_alias(box: Sandbox, rtt_ms: float) -> Iterator[str]:
    """An ssh alias reaching box with rtt_ms of added round-trip time.

    0 ms is the sandbox's own alias (no proxy); otherwise a latency proxy (half the RTT
    each way, tests/harness/proxy.py) and an alias through it, both removed afterwards.
    """
    if rtt_ms <= 0:
        yield box.name
        return
    from tests.harness.proxy import proxied

    with proxied(box, delay_ms=rtt_ms / 2) as (proxy, alias):
        yield alias
        stop_master(alias)
        # Let closed connections drain through the delay, so stopping cancels nothing.
        deadline = time.monotonic() + 3.0
        while proxy.stats.active and time.monotonic() < deadline:
            time.sleep(0.02)


# ---------------------------------------------------------------------- running, timing


def run(
    argv: Sequence[str],
    cwd: Path | None = None,
    timeout: float = SUBPROCESS_TIMEOUT_S,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (in env: os.environ plus these), capturing output; raise if it fails."""
    done = subprocess.run(
        list(argv),
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"`{shlex.join(argv)}` exited {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )
    return done


def timed(action: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@dataclass
class Timing:
    """Every sample of one measurement and their median."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def spread(self) -> str:
        """min-max, for the notes."""
        return f"{min(self.samples):.3f}-{max(self.samples):.3f}"


def median_of(
    runs: int, action: Callable[[], Any], prepare: Callable[[], Any] | None = None
) -> Timing:
    """Time action `runs` times (prepare, untimed, before each); the samples and median."""
    samples = []
    for _ in range(runs):
        if prepare is not None:
            prepare()
        samples.append(timed(action))
    return Timing(samples)


def side_by_side(
    runs: int,
    actions: dict[str, Callable[[], Any]],
    prepare: Callable[[str, int], Any] | None = None,
) -> dict[str, Timing]:
    """Time several actions interleaved (a, b, a, b, ...), prepare(name, i) untimed first.

    Interleaving spreads any drift of the machine (page cache, other load) over all of them.
    """
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for index in range(runs):
        for name, action in actions.items():
            if prepare is not None:
                prepare(name, index)
            samples[name].append(timed(action))
    return {name: Timing(values) for name, values in samples.items()}


# ---------------------------------------------------------------------- the ML-like tree

_WORDS_TEXT = (
    "model layer tensor batch epoch loss grad optim config train eval data loader metric step "
    "scale seed device cuda shape token embed attention head norm dropout"
)
FILES_PER_DIR = 15
# Top-level directories with the share of directories and the file suffixes they hold.
_TOPS = (
    ("src", 0.6, (".py",)),
    ("configs", 0.15, (".yaml", ".json")),
    ("docs", 0.1, (".md", ".txt")),
    ("scripts", 0.15, (".py", ".sh")),
)


@dataclass(frozen=True)
class TreeSpec:
    """How big a generated project is."""

    small_files: int
    big_files: int
    big_bytes: int  # each
    seed: int = 7

    @property
    def approx_bytes(self) -> int:
        return self.small_files * 3000 + self.big_files * self.big_bytes


FULL_TREE = TreeSpec(small_files=5000, big_files=3, big_bytes=45 << 20)
SMALL_TREE = TreeSpec(small_files=500, big_files=3, big_bytes=9 << 19)


@dataclass(frozen=True)
class Tree:
    """A generated project: its root and some of its files."""

    root: Path
    files: int
    bytes: int
    sources: list[str]


def make_tree(root: Path, spec: TreeSpec) -> Tree:
    """Write an ML-like project: nested source/config/text files and a few large binaries.

    The small files average ~3 KB, 15 to a directory, in a four-level package tree (the
    shape of a real repository: ~5000 files in ~330 directories); the large ones are
    random bytes (checkpoints: incompressible, as in life). Deterministic for a seed.
    """
    rng = random.Random(spec.seed)
    root.mkdir(parents=True, exist_ok=True)
    sources: list[str] = []
    total = 0
    words = _WORDS_TEXT.split()
    tops = [top for top, _, _ in _TOPS]
    shares = [share for _, share, _ in _TOPS]
    suffixes = {top: kinds for top, _, kinds in _TOPS}
    folder = ""
    for index in range(spec.small_files):
        if index % FILES_PER_DIR == 0:
            number = index // FILES_PER_DIR
            top = rng.choices(tops, shares)[0]
            folder = f"{top}/pkg{number % 8}/sub{(number // 8) % 6}/m{number // 48}"
        suffix = rng.choice(suffixes[folder.split("/", 1)[0]])
        relative = f"{folder}/f{index:05d}{suffix}"
        lines = []
        size = 0
        target = int(rng.lognormvariate(7.6, 0.6))
        while size < target:
            line = " ".join(rng.choices(words, k=8)) + f" = {rng.randrange(1 << 30)}\n"
            lines.append(line)
            size += len(line)
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
        total += size
        if suffix == ".py":
            sources.append(relative)
    (root / "checkpoints").mkdir(exist_ok=True)
    for index in range(spec.big_files):
        data = rng.randbytes(spec.big_bytes)
        (root / "checkpoints" / f"model-{index}.pt").write_bytes(data)
        total += len(data)
    (root / "README.md").write_text("# bench project\n")
    return Tree(root, spec.small_files + spec.big_files + 1, total, sources)


def git_init(root: Path) -> None:
    """Make root a git repository with everything committed (tether uses `git ls-files`)."""
    git = ["git", "-C", str(root), "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    run([*git, "init", "-q"])
    run([*git, "add", "-A"])
    run([*git, "commit", "-q", "-m", "bench tree"])


def remove(path: Path) -> None:
    """rm -rf path."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


# ---------------------------------------------------------------------- tables, results


@dataclass
class Table:
    """One markdown table with a title and notes under it."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The table as GitHub markdown (title as a level-3 heading, notes as bullets)."""
        widths = [
            max(len(str(cell)) for cell in column)
            for column in zip(self.headers, *self.rows, strict=False)
        ]

        def line(cells: Sequence[str]) -> str:
            padded = (str(cell).ljust(width) for cell, width in zip(cells, widths, strict=False))
            return "| " + " | ".join(padded) + " |"

        out = [f"### {self.title}", "", line(self.headers)]
        out.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
        out += [line(row) for row in self.rows]
        if self.notes:
            out.append("")
            out += [f"- {note}" for note in self.notes]
        return "\n".join(out) + "\n"


def machine() -> str:
    """`uname -srm`, CPU count, date and load: what every results section starts with."""
    uname = " ".join((platform.system(), platform.release(), platform.machine()))
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"machine: `{uname}`, {os.cpu_count()} CPUs, python {platform.python_version()}; "
        f"{now}; load average {load} (1/5/15 min) when written: other work skews timings"
    )


def variant_of(args: argparse.Namespace) -> str:
    """Which size a script ran at: "quick", "small" or "full"."""
    return "quick" if args.quick else "small" if args.small else "full"


def report(
    tables: Sequence[Table],
    results: Path | None,
    heading: str,
    measures: Sequence[Measure] = (),
    script: str = "",
    variant: str = "full",
) -> None:
    """Print the tables; with a results file, append them there as one section and record
    the measures (under script, e.g. "push") in the JSON file beside it."""
    text = "\n".join(table.markdown() for table in tables)
    print(text, flush=True)
    if results is not None:
        section = f"## {heading}\n\n{machine()}\n\n{text}\n"
        with results.open("a", encoding="utf-8") as handle:
            handle.write(section)
        if script:
            measured.write_measures(results, script, variant, machine(), measures)


QUICK_RUNS = 2


def arguments(
    description: str,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The flags every bench script takes: --small, --quick, --runs, --results FILE, and
    those extra(parser) adds (so that --help lists them all).

    --quick is --small with QUICK_RUNS samples per median (unless --runs says otherwise):
    the plumbing checked in a few minutes, not numbers to quote.
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="a quick, smaller variant")
    parser.add_argument(
        "--quick", action="store_true", help=f"--small with {QUICK_RUNS} runs: a smoke test"
    )
    parser.add_argument("--runs", type=int, default=0, help="samples per median (0: default)")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help=f"append the tables to this file ({RESULTS}) and the numbers to its .json",
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.small = True
        args.runs = args.runs or QUICK_RUNS
    return args


def seconds(value: float) -> str:
    """A duration for a table cell."""
    return f"{value:.3f}"


def ratio(numerator: float, denominator: float) -> str:
    """numerator/denominator for a table cell."""
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "n/a"


def write_config(path: Path, text: str) -> None:
    """Write a project's tether.toml and trust it, as its user would (`tether trust`)."""
    path.write_text(text)
    from tether import config, trust

    trust.record(config.load(path.parent, trusted=False))


def set_session_env(box: Any, name: str, value: str) -> None:
    """Add NAME=VALUE to the sandbox sshd's SetEnv and have it reread its config."""
    lines = box.sshd_config.read_text().splitlines()
    lines = [f"{line} {name}={value}" if line.startswith("SetEnv ") else line for line in lines]
    box.sshd_config.write_text("\n".join(lines) + "\n")
    os.kill(box.pid, signal.SIGHUP)  # sshd re-executes itself with the new config
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            done = run(["ssh", box.name, "printenv", name], timeout=10)
        except (RuntimeError, OSError):
            continue
        if done.stdout.strip() == value:
            return
    raise RuntimeError(f"the sandbox's sessions do not see {name}")
