"""The shape of the code base (issue #23): no import cycles, no god modules.

Run on the source as text (ast), so a cycle through a function-level import counts too;
imports under `if TYPE_CHECKING:` do not (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_LINES = 600


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(path): path for path in (SRC / "tether").rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The tether modules path imports, at any depth, outside `if TYPE_CHECKING:` blocks."""
    me = _module(path).split(".")
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                name = child.module or ""
                if child.level:
                    base = me if path.name == "__init__.py" else me[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    name = ".".join([*base, name] if name else base)
                found.add(name)
                found.update(f"{name}.{alias.name}" for alias in child.names)
            else:
                visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in MODULES} - {_module(path)}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles_between_modules() -> None:
    graph = {name: _imports(path) for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_no_module_over_600_lines() -> None:
    long = {
        str(path.relative_to(SRC)): count
        for path in MODULES.values()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


# ---- one place for the caller's process state (tether.invocation) ----------------------

# Read through tether.invocation instead: a command the sync daemon runs for a client must
# see the client's environment, working directory and streams, not the daemon's, and the
# daemon never swaps its own (issue #23, "an explicit runtime").
CALLER_STATE = {
    "os.environ",
    "os.getenv",
    "os.getcwd",
    "os.path.expanduser",
    "os.path.abspath",
    "Path.cwd",
    "Path.home",
    "sys.stdout",
    "sys.stderr",
    "sys.stdin",
    "typer.echo",
    "click.echo",
}
SUBPROCESS_CALLS = {
    "subprocess.run",
    "subprocess.Popen",
    "subprocess.check_output",
    "subprocess.call",
    "asyncio.create_subprocess_exec",
}
# Where a process's own state is the point, with why:
OWN_PROCESS = {
    "tether.invocation": "the one place that reads it",
    "tether.cli.fastpath": "the client packs its own state into the daemon request",
    "tether.cli.daemon": "the daemon's own log and process",
    "tether.kernel.console": "IPython's terminal app owns the console's terminal",
    "tether.kernel.shell": "IPython's terminal app owns the console's terminal",
}


def _caller_state_uses(path: Path) -> list[str]:
    """`name:line` of every direct read of process state (and subprocess without env=)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            name = ast.unparse(node)
            if name in CALLER_STATE:
                found.append(f"{name}:{node.lineno}")
        elif isinstance(node, ast.Call):
            callee = ast.unparse(node.func)
            if callee == "print" or (
                callee.startswith("traceback.print_")
                and not any(kw.arg == "file" for kw in node.keywords)
            ):
                found.append(f"{callee}:{node.lineno}")
            if callee in SUBPROCESS_CALLS and not any(kw.arg == "env" for kw in node.keywords):
                found.append(f"{callee} without env=:{node.lineno}")
    return sorted(found, key=lambda use: int(use.rsplit(":", 1)[1]))


def test_the_process_state_finder_finds_each_kind(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, sys, subprocess\nfrom pathlib import Path\n"
        "os.environ.get('X')\nPath.home()\nsys.stdout.write('x')\nprint(1)\n"
        "subprocess.run(['true'])\nsubprocess.run(['true'], env=None)\n"
        "traceback.print_exc()\ntraceback.print_exc(file=f)\n"
    )
    assert _caller_state_uses(sample) == [
        "os.environ:3",
        "Path.home:4",
        "sys.stdout:5",
        "print:6",
        "subprocess.run without env=:7",
        "traceback.print_exc:9",
    ]


def test_client_code_reads_the_callers_state_only_through_invocation() -> None:
    """Everything tether runs on this machine, but the agent (its own process on the
    remote) and the modules that own their process (OWN_PROCESS)."""
    offenders = {
        name: uses
        for name, path in sorted(MODULES.items())
        if not name.startswith("tether.agent")
        and name not in OWN_PROCESS
        and (uses := _caller_state_uses(path))
    }
    assert offenders == {}
