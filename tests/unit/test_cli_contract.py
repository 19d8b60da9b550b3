"""The CLI's contract: exit codes, one error line, fast lazy --help, stdlib-only core/agent."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.env import write_config
from tether.cli.app import main
from tether.transport.ssh import link_failure, quote_argv

SRC = Path(__file__).resolve().parents[2] / "src" / "tether"
HOSTILE = [
    "a b",
    "$(touch /tmp/tether-pwned)",
    "`id`",
    "--flag",
    "it's",
    "",
    'q"uote',
    "back\\slash",
    "new\nline",
    "ünïcødé ✓",
    "*",
    "~",
    ";rm -rf x",
    "-",
]


def test_remote_command_line_carries_hostile_argv_exactly() -> None:
    script = "import sys, json; print(json.dumps(sys.argv[1:]))"
    line = quote_argv([sys.executable, "-c", script, *HOSTILE])
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True)
    import json

    assert json.loads(done.stdout) == HOSTILE
    assert not Path("/tmp/tether-pwned").exists()


def test_bad_toml_is_one_error_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tether.toml").write_text("[targets.a\nhost = 1")
    monkeypatch.chdir(tmp_path)
    assert main(["push"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("tether: error: ") and "tether.toml" in err
    assert "Traceback" not in err


def test_unknown_target_is_a_usage_error_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(tmp_path / "tether.toml", '[targets.a]\nhost = "h"\npath = "~/p"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["push", "--to", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'nope'" in err and err.count("\n") == 1


def test_missing_config_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["pull"]) == 1
    assert "tether init" in capsys.readouterr().err


def test_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TETHER_DEBUG", raising=False)
    assert main(["--debug", "pull"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["pull"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_unknown_command_and_option_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert main(["push", "--nope"]) == 2


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys\nfrom tether.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('jupyter_client', 'watchfiles', 'tether.sync.session', "
        "'tether.transport.channel', 'zmq') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("ssh: Could not resolve hostname nope: Name or service not known", "unknown host"),
        ("Host key verification failed.", "host key verification failed"),
        ("root@127.0.0.1: Permission denied (publickey).", "authentication refused"),
        ("ssh: connect to host 127.0.0.1 port 1: Connection refused", "connection refused"),
    ],
)
def test_ssh_failures_become_clear_reasons(stderr: str, expected: str) -> None:
    failure = link_failure(stderr, 255)
    assert failure is not None and failure[0].startswith(expected)
    assert link_failure(stderr, 1) is None


STDLIB = set(sys.stdlib_module_names) | {"__future__"}


@pytest.mark.parametrize("package", ["core", "agent"])
def test_core_and_agent_import_only_the_standard_library(package: str) -> None:
    for source in (SRC / package).rglob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                allowed = top in STDLIB or (package == "core" and name.startswith("tether.core"))
                assert allowed, f"{source.name} imports {name}"


def test_a_closed_loops_transport_noise_is_not_printed_after_the_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a cut link can leave behind: a subprocess transport collected after asyncio.run
    # closed its loop (seen once in the fault suite as 15 lines after the one error line).
    from tether.cli.app import _quiet_unraisable

    class Dying:
        def __init__(self, error: BaseException) -> None:
            self.error = error

        def __del__(self) -> None:
            raise self.error

    monkeypatch.setattr(sys, "unraisablehook", _quiet_unraisable)
    Dying(RuntimeError("Event loop is closed"))  # collected at once: __del__ raises
    assert capsys.readouterr().err == ""
    Dying(ValueError("a real bug"))
    assert "a real bug" in capsys.readouterr().err


def test_nothing_below_the_cli_imports_the_cli() -> None:
    # Features return results and the CLI renders them; entry points (the fast-path
    # client, the sync daemon, the demo) live in tether.cli.
    for source in SRC.rglob("*.py"):
        if "cli" in source.relative_to(SRC).parts or source.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("tether.cli"), f"{source} imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("tether.cli"), f"{source} imports it"


def _imports(source: Path) -> set[str]:
    """The modules a source file imports (absolute names; relative ones resolved)."""
    package = "tether." + ".".join(source.relative_to(SRC).parent.parts)
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_the_tmux_and_slurm_job_clients_do_not_import_each_other() -> None:
    # Each backend stands alone behind tether.jobs.backend; what they share lives below both.
    client, slurm = SRC / "jobs" / "client.py", SRC / "jobs" / "slurm.py"
    assert "tether.jobs.slurm" not in _imports(client), "jobs/client.py imports jobs/slurm.py"
    assert "tether.jobs.client" not in _imports(slurm), "jobs/slurm.py imports jobs/client.py"


# The agent modules the client may import: what is deliberately shipped to both sides.
SHARED_AGENT_MODULES = {
    "wire": "the wire catalogue: requests, answers, error kinds",
    "wire_jobs": "the wire catalogue: jobs, envs, kernels",
    "bundle": "the agent's zipapp, built and uploaded by the client",
    "protocol": "the frame codec both ends of the channel speak",
    "modes": "the one rule for the modes that cross (safe_mode)",
    "roots": "the one rule for directories tether never syncs into",
    "shared_jobs": "job names, tmux sessions, states and exit codes",
    "fsops": "the digest cache and OpError the local endpoint shares with the agent's",
    "writer": "the one stat-check, temp-file and rename writer pull uses too",
    "watched": "the watched-state model: a tree's last scan kept current by events",
    "inotify": "the inotify watcher (ctypes) that feeds it, on both sides",
    "memtrace": "TETHER_TRACEMALLOC's tracer (dev): the daemon's and the agent's memory",
}
# (client file, agent module) pairs still to move to a shared module.
AGENT_IMPORTS_TO_MOVE = {("envs/offline.py", "envbuild")}


def test_the_client_imports_only_what_is_shared_with_the_agent() -> None:
    # The agent is not the client's library: a rule both sides need lives in a module
    # listed above, shipped to both on purpose; anything else stays on its own side.
    found = []
    for source in sorted(SRC.rglob("*.py")):
        relative = source.relative_to(SRC).as_posix()
        if relative.startswith("agent/"):
            continue
        for name in sorted(_imports(source)):
            parts = name.split(".")
            if parts[:2] != ["tether", "agent"] or len(parts) < 3:
                continue
            if parts[2] not in SHARED_AGENT_MODULES and (relative, parts[2]) not in (
                AGENT_IMPORTS_TO_MOVE
            ):
                found.append(f"{relative} imports tether.agent.{parts[2]}")
    assert not found, "client modules import agent internals: " + ", ".join(sorted(set(found)))


SCHEDULER_FILES = {"jobs/backend.py", "config.py"}  # the registry and config validation


def _names_a_scheduler(node: ast.expr, names: set[str]) -> bool:
    """Whether an operand of a comparison is a scheduler's name or a scheduler field."""
    if isinstance(node, ast.Constant):
        return node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_scheduler(item, names) for item in node.elts)
    if isinstance(node, ast.Attribute):
        return node.attr == "scheduler"
    if isinstance(node, ast.Name):
        return node.id == "scheduler"
    if isinstance(node, ast.Subscript):
        return _names_a_scheduler(node.slice, {"scheduler"})
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "get" and any(
            _names_a_scheduler(arg, {"scheduler"}) for arg in node.args[:1]
        )
    return False


def test_scheduler_names_are_compared_only_in_the_backend_registry_and_config() -> None:
    # A new scheduler is one client class registered in jobs/backend.py (plus one agent
    # module): no `if scheduler == "slurm"` branches elsewhere in the client.
    from tether.config import SCHEDULERS

    names = set(SCHEDULERS)
    found = []
    for source in sorted(SRC.rglob("*.py")):
        relative = source.relative_to(SRC).as_posix()
        if relative.startswith("agent/") or relative in SCHEDULER_FILES:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(_names_a_scheduler(operand, names) for operand in operands):
                    found.append(f"{relative}:{node.lineno}")
    assert not found, "scheduler compared outside the registry and config: " + ", ".join(found)


def test_every_scheduler_config_accepts_has_a_job_backend() -> None:
    from tether.config import SCHEDULERS, Target
    from tether.jobs.backend import BACKENDS, backend_for

    assert set(BACKENDS) == set(SCHEDULERS)
    for name in SCHEDULERS:
        backend = backend_for(Target(name="t", host="h", path="~/p", scheduler=name))
        assert backend.target.scheduler == name
        assert isinstance(backend, BACKENDS[name])


def test_the_agent_builds_a_job_record_in_one_place() -> None:
    # A record literal names the fields every job has; only agent/record.py writes one.
    found = []
    for source in sorted((SRC / "agent").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Dict):
                keys = {key.value for key in node.keys if isinstance(key, ast.Constant)}
                if {"snapshot_id", "exit_code", "created"} <= keys:
                    found.append(f"{source.name}:{node.lineno}")
    assert [place.split(":")[0] for place in found] == ["record.py"], found
