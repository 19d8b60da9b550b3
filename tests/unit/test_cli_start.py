"""A command's start: only its own part of the command tree is built, nothing heavy imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from tether.cli.commands import COMMAND_MODULES, MODULES, build_app

# Imported only by the commands that use them (rich renders tables, asyncio talks to
# hosts, jupyter_client/zmq run kernels, watchfiles watches); never by a start or a help.
# pydantic: typer 0.29 builds a pydantic TypeAdapter per parameter (pyproject keeps < 0.29).
HEAVY = (
    "pydantic",
    "rich",
    "asyncio",
    "jupyter_client",
    "zmq",
    "watchfiles",
    "tether.transport.channel",
    "tether.sync.session",
    "tether.jobs.status",
)


def imported_by(argv: list[str] | None, cwd: Path) -> set[str]:
    """The modules a fresh interpreter holds after importing the CLI (and running argv)."""
    code = (
        "import json, os, sys\n"
        "from tether.cli.app import main\n"
        f"argv = {argv!r}\n"
        "if argv is not None:\n"
        "    out = os.dup(1)\n"
        "    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    sys.stdout.flush()\n"
        "    os.dup2(out, 1)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, "TETHER_NO_DAEMON": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_command_modules_names_the_module_that_registers_each_command() -> None:
    whole = typer.main.get_group(build_app())
    assert sorted(COMMAND_MODULES) == sorted(whole.commands)
    for module in MODULES:
        part = typer.main.get_group(build_app((module,)))
        assert sorted(part.commands) == sorted(
            name for name, owner in COMMAND_MODULES.items() if owner == module
        ), module


def test_importing_the_cli_imports_no_framework(tmp_path: Path) -> None:
    found = imported_by(None, tmp_path)
    assert not {"typer", "pydantic", "tether.cli.commands", *HEAVY} & found


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["status", "--help"], "status"),
        (["logs", "--help"], "jobs"),
        (["host", "ls", "--help"], "hosts"),
        (["kernel", "nope"], "kernel"),
    ],
)
def test_one_command_builds_only_the_module_that_registers_it(
    argv: list[str], module: str, tmp_path: Path
) -> None:
    found = imported_by(argv, tmp_path)
    assert {m for m in found if m.startswith("tether.cli.commands.")} == {
        f"tether.cli.commands.{module}"
    }
    assert not set(HEAVY) & found


@pytest.mark.parametrize("argv", [["--help"], [], ["bogus"], ["-h", "status"]])
def test_help_and_typos_see_every_command_and_nothing_heavy(
    argv: list[str], tmp_path: Path
) -> None:
    found = imported_by(argv, tmp_path)
    assert {f"tether.cli.commands.{name}" for name in MODULES} <= found
    assert not set(HEAVY) & found


def test_the_sync_daemon_client_imports_neither_json_nor_socket(tmp_path: Path) -> None:
    """The path of every push, pull, jobs and status (cli/fastpath.py): `json` and `socket`
    (with re, enum, ...) cost ~10 ms of a fresh interpreter on the 2-core CI machine."""
    code = (
        "import sys\n"
        "from tether.cli.app import main\n"
        "from tether import clientwire\n"
        "from tether.cli import fastpath\n"
        "fastpath.socket_path()\n"
        "fastpath.connect(sys.argv[1])\n"
        "clientwire.request_line(fastpath._request(['push'], False))\n"
        "clientwire.frames(bytearray(clientwire.frame('x', '0')))\n"
        "print(sorted(sys.modules))\n"
    )
    found = modules_after(code, tmp_path)
    assert not {"json", "socket", "re", "enum", "typing", *HEAVY} & found
    assert "fcntl" not in found  # only a client that starts the daemon takes its lock


def test_a_send_through_its_helper_imports_neither_json_nor_re(tmp_path: Path) -> None:
    """`tether send` on a keypress (kernel/send.py's fast path: the kept answer, the
    selection, the helper's frames): json, re, socket and signal (enum) cost ~10 ms."""
    (tmp_path / "tether.toml").write_text("[targets.t]\nhost = 'h'\npath = '~/p'\n")
    (tmp_path / "code.py").write_text("if True:\n    x = 1\n")
    code = (
        "import sys\n"
        "from tether.cli.app import main\n"
        "from tether.kernel import send, sendcache\n"
        "from tether.core.dedent import parse_spec, select_lines, smart_dedent\n"
        "file, start, end = parse_spec('code.py:2')\n"
        "smart_dedent(select_lines(open(file).read(), start, end))\n"
        "sendcache.lookup('.', None, None)\n"
        "assert send.via_helper(sys.argv[1], 'x', '.') is None\n"
        "with send.CtrlC():\n"
        "    pass\n"
        "print(sorted(sys.modules))\n"
    )
    found = modules_after(code, tmp_path)
    assert not {"json", "socket", "re", "enum", "signal", "typing", *HEAVY} & found


def modules_after(code: str, cwd: Path) -> set[str]:
    """The modules a fresh interpreter holds after code, run in cwd with one argument (a
    socket path nothing listens on); code ends by printing sorted(sys.modules), with no
    json import of its own."""
    import ast

    done = subprocess.run(
        [sys.executable, "-c", code, str(cwd / "no.sock")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(ast.literal_eval(done.stdout.splitlines()[-1]))


def test_the_sync_daemon_preloads_only_the_commands_it_serves(tmp_path: Path) -> None:
    """A cold daemon's start is part of the first push after it left: it builds the parts
    of the command tree of push, pull, jobs and status, not every command's."""
    from tether.cli.app import DAEMON_COMMANDS
    from tether.cli.commands import COMMAND_MODULES

    code = (
        "import sys\nfrom tether.cli import daemon\ndaemon._preload()\nprint(sorted(sys.modules))\n"
    )
    found = modules_after(code, tmp_path)
    served = {COMMAND_MODULES[name] for name in DAEMON_COMMANDS}
    for module in set(COMMAND_MODULES.values()):
        assert (f"tether.cli.commands.{module}" in found) == (module in served), module
