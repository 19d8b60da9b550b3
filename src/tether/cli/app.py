"""Entry point: builds the command tree lazily and maps errors to exit codes in one place."""

from __future__ import annotations

import sys

from tether import invocation

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs ~10 ms here
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from tether.runtime import Runtime

EPILOG = "Docs: README.md. Add --debug to any command for a traceback on errors."
# Commands served by the long-lived local sync daemon (tether.cli.daemon), which keeps an
# agent channel per target open: a push costs one round trip instead of an ssh session,
# an agent start and the CLI framework's import. Short commands only: the daemon serves a
# few at once (cli/daemon.MAX_COMMANDS).
DAEMON_COMMANDS = ("push", "pull", "jobs", "status")
# Those of them that use the daemon's kept scans and marks (sync/kept.py,
# sync/incremental.py): one at a time; another runs in its own process meanwhile.
KEPT_STATE_COMMANDS = ("push", "pull")


def _split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """Remove every `--debug` that comes before a `--` separator."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [arg for arg in argv[:end] if arg != "--debug"]
    return head + argv[end:], len(head) != end


def main(argv: Sequence[str] | None = None) -> int:
    """Run tether with argv (default sys.argv[1:]) and return the process exit code."""
    args, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    debug = debug or bool(invocation.getenv("TETHER_DEBUG"))
    if not debug:
        sys.unraisablehook = _quiet_unraisable
    if args in (["--version"], ["-V"]):
        from tether import __version__

        invocation.stdout().write(f"tether {__version__}\n")
        return 0
    if args and args[-1] in ("--help", "-h") and not debug:
        from tether.cli import helpcache

        names = helpcache.words(args)
        if names is not None:
            return _kept_help(args, names)
    if (
        args[:1]
        and args[0] in DAEMON_COMMANDS
        and not asks_help(args)
        and not invocation.getenv("TETHER_NO_DAEMON")
    ):
        from tether.cli.fastpath import via_daemon

        try:
            code = via_daemon(args, debug)
        except KeyboardInterrupt:  # before the daemon answered (relay maps it after)
            invocation.stderr().write("tether: interrupted\n")
            return 130
        if code is not None:
            if argv is None:  # this process is the command line's own: nothing to tidy
                _leave(code)
            return code
    code = run_mapped(args, debug)
    if argv is None and args[:1] == ["send"] and _served_send():
        _leave(code)
    return code


def _served_send() -> bool:
    send = sys.modules.get("tether.kernel.send")
    return bool(getattr(send, "HELPER_SERVED", False))


def _leave(code: int) -> None:
    """End this process now with code, its output flushed: a command the sync daemon ran
    left nothing here that the interpreter's own shutdown (~3 ms: modules, objects, atexit)
    would need to tidy."""
    import os

    for stream in (invocation.stdout(), invocation.stderr()):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): the output is gone anyway
            code = code or 1
    os._exit(code)


def _kept_help(args: list[str], names: list[str]) -> int:
    """`tether [COMMAND...] --help`: the text kept from the last time (tether.cli.helpcache),
    else rendered by the CLI framework and kept."""
    import contextlib

    from tether.cli import helpcache

    out = invocation.stdout()
    cache_key = helpcache.key(names)
    text = helpcache.get(cache_key)
    if text is None:
        capture = helpcache.Capture(tty=out.isatty())
        with contextlib.redirect_stdout(capture):  # this process's own: help is never served
            code = run_mapped(args, False)
        text = capture.getvalue()
        if code != 0:
            out.write(text)
            return code
        helpcache.put(cache_key, text)
    out.write(text)
    out.flush()
    return 0


def asks_help(args: list[str]) -> bool:
    """Whether a command line asks for help (run here: help is printed by the CLI framework
    straight to this process's stdout, which a daemon-served command does not own)."""
    end = args.index("--") if "--" in args else len(args)
    return any(arg in ("-h", "--help") for arg in args[:end])


def _quiet_unraisable(unraisable: Any) -> None:
    """A subprocess transport of a dropped link collected after asyncio.run closed its loop
    says "Event loop is closed" from __del__: noise after the one error line (the process
    was already ended); anything else is reported as Python would."""
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def run_mapped(args: list[str], debug: bool, runtime: Runtime | None = None) -> int:
    """Run one command line in this process (on `runtime`: the sync daemon's channels and
    loop, default fresh ones); errors become one line and an exit code."""
    from tether.errors import TetherError

    try:
        return _run(args, runtime)
    except TetherError as error:
        if debug:
            import traceback

            traceback.print_exc(file=invocation.stderr())
        say_error(error.line())
        return error.exit_code
    except KeyboardInterrupt:
        invocation.stderr().write("tether: interrupted\n")
        return 130
    except ModuleNotFoundError as error:
        if debug or not error.name or error.name.split(".")[0] == "tether":
            raise
        package = error.name.split(".")[0]
        say_error(
            f"the Python package {package!r} is missing from tether's environment "
            f"({sys.prefix}), reinstall tether there (pip install --force-reinstall tether) "
            f"or `pip install {package}`"
        )
        return 1
    except BrokenPipeError:
        return 1
    except OSError as error:
        if debug:
            raise
        say_error(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))
        return 1


def say_error(line: str) -> None:
    """The one `tether: error: ...` line on stderr."""
    invocation.stderr().write(f"tether: error: {line}\n")
    invocation.stderr().flush()


_COMMANDS: dict[str, Any] = {}  # "" -> the whole tree; a module's name -> its part


def _command(name: str = "") -> Any:
    """The click command tree for running command `name`: only the part its module registers
    when it names a known command, else (help, a typo: every name is needed) the whole
    tree. Built once per process; the sync daemon builds the whole tree and reuses it."""
    from tether.cli.commands import COMMAND_MODULES

    module = COMMAND_MODULES.get(name, "")
    if "" in _COMMANDS or not module:
        module = ""
    if module not in _COMMANDS:
        import typer.main

        from tether.cli.commands import MODULES, build_app

        # get_group, not get_command: a tree of one command must stay a group.
        _COMMANDS[module] = typer.main.get_group(build_app((module,) if module else MODULES))
    return _COMMANDS[module]


def _click_exception() -> Any:
    """ClickException of the click the installed typer runs on: newer typers vendor it as
    `typer._click`, older ones (0.12 on) depend on the `click` package."""
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # an older typer
        from click.exceptions import ClickException  # type: ignore[import-not-found,no-redef]
    return ClickException


def _run(args: list[str], runtime: Runtime | None = None) -> int:
    if args[:1] == ["send"]:  # on a keypress: skip the CLI framework's import
        from tether.kernel.send import fast_main

        return fast_main(args[1:])
    from typer import Abort  # public in every typer we allow

    click_exception = _click_exception()
    command = _command(args[0] if args else "")
    try:
        result = command.main(args=args, prog_name="tether", standalone_mode=False, obj=runtime)
    except click_exception as error:
        error.show(file=invocation.stderr())
        return int(error.exit_code)
    except Abort:
        invocation.stderr().write("tether: aborted\n")
        return 1
    return result if isinstance(result, int) else 0
