"""`tether send [FILE[:START[-END]]] [--on TARGET] [--name KERNEL]`.

Reached from the entry point before the CLI framework is imported (send is on a
keypress). The code is smart-unindented, run in the target's kernel (started on first
use), and its stdout, stderr, results and traceback printed; exit 1 on an exception.
"""

from __future__ import annotations

from tether import invocation

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: send imports only what a keypress needs
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    from tether.config import Config, Target

MARK_PREFIX = "# tether: "  # tether.agent.kernel_shim.MARK_PREFIX (not imported: fast path)

# Whether this process's send was served by a send helper from start to end: it then
# holds nothing the interpreter's shutdown need tidy (tether.cli.app ends it at once).
HELPER_SERVED = False
USAGE = """usage: tether send [FILE[:START[-END]]] [--on TARGET] [--name KERNEL]

Run lines of FILE (1-based, inclusive; FILE:LINE for one line; no FILE: stdin) in the
target's remote IPython kernel, smart-unindented. Output is printed here and in any
open `tether console`. Exit 1 if the code raised.
"""


def parse_args(args: list[str]) -> tuple[str | None, str | None, str | None]:
    """(spec, on, name) from send's arguments; UsageError on anything else."""
    from tether.errors import UsageError

    spec = on = name = None
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("--on", "--name"):
            if not rest:
                raise UsageError(f"{arg} needs a value", "", "see `tether send --help`")
            value = rest.pop(0)
            if arg == "--on":
                on = value
            else:
                name = value
        elif arg.startswith("--on="):
            on = arg[5:]
        elif arg.startswith("--name="):
            name = arg[7:]
        elif arg == "--":
            if rest:
                spec = rest.pop(0)
            if rest:
                raise UsageError(f"unexpected argument {rest[0]!r}", "", "see `tether send --help`")
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg!r}", "", "see `tether send --help`")
        elif spec is None:
            spec = arg
        else:
            raise UsageError(f"unexpected argument {arg!r}", "send takes one FILE[:START-END]")
    return (None if spec == "-" else spec), on, name


def read_code(spec: str | None, stdin: Any = None) -> str:
    """The smart-unindented code of FILE[:START[-END]] (or of stdin)."""
    from tether.core.dedent import RangeError, parse_spec, select_lines, smart_dedent
    from tether.errors import UsageError

    if spec is None:
        return smart_dedent((stdin or invocation.stdin()).read())
    try:
        file, start, end = parse_spec(spec)
        try:
            with open(file, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise UsageError(f"no such file: {file}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{file} is not UTF-8 text") from None
        code = smart_dedent(select_lines(text, start, end, file))
    except RangeError as error:
        raise UsageError(str(error)) from None
    return marked(code, file, start or 1)


def marked(code: str, file: str, first: int) -> str:
    """code under the mark that makes the kernel compile it as FILE from line `first` on
    (tether.agent.kernel_shim): its tracebacks then name FILE and the file's lines."""
    if not code.strip() or not file.isprintable():
        return code
    return f"{MARK_PREFIX}{file}:{first}\n{code}"


def fast_main(args: list[str]) -> int:
    """Entry for `tether send ...` (errors are mapped to exit codes by the caller)."""
    if "-h" in args or "--help" in args:
        invocation.stdout().write(USAGE)
        return 0
    spec, on, name = parse_args(args)
    code = read_code(spec)
    if not code.strip():
        return 0
    return send_code(code, on, name)


def send_code(code: str, on: str | None, name: str | None) -> int:
    """Run code in the kernel; print what it prints; 1 if it raised.

    Through the target's send helper when it runs (the fast path: its socket from
    tether.kernel.sendcache while the config and its trust are unchanged, else from the
    loaded config); else the kernel is made sure of, the helper started for next time and
    used; the direct path (a jupyter_client of our own) when the helper cannot be had.
    """

    from tether.kernel import sendcache

    kept = sendcache.lookup(invocation.cwd(), on, name)
    if kept is not None:
        done = via_helper(kept[0], code, kept[1], lambda: interrupt_kernel(*_kernel(on, name)))
        if done is not None:
            return done
    from tether import config as config_module
    from tether.kernel import names

    config = config_module.load()
    target = config.one(on)
    kernel = names.kernel_name(target, name)
    sock_path, _ = names.helper_paths(target, kernel)

    def interrupt() -> None:
        interrupt_kernel(target, kernel)

    done = via_helper(sock_path, code, config.root, interrupt)
    if done is None:
        done = _start_and_send(config, target, kernel, sock_path, code, interrupt)
    _remember(config, on, name, sock_path)
    return done


def _kernel(on: str | None, name: str | None) -> tuple[Target, str]:
    """(target, kernel name) of a send, from the (trusted) config."""
    from tether import config as config_module
    from tether.kernel import names

    target = config_module.load().one(on)
    return target, names.kernel_name(target, name)


def _remember(config: Config, on: str | None, name: str | None, sock_path: Path) -> None:
    """Keep the helper's socket for the next send while the config's trust inputs stay."""
    from tether import trust
    from tether.kernel import sendcache

    inputs = trust.inputs(config)
    if inputs is not None:
        files = [str(path) for path in inputs]
        sendcache.remember(str(config.file), on, name, str(sock_path), str(config.root), files)


def _start_and_send(
    config: Config, target: Target, kernel: str, sock_path: Path, code: str,
    interrupt: Callable[[], None],
) -> int:  # fmt: skip
    """The kernel made sure of, the helper started and used (or a client of our own)."""

    from tether.envs.spec import find
    from tether.kernel.lifecycle import RemoteKernel

    remote = RemoteKernel(target, kernel)
    answer = remote.ensure(find(config))
    if not invocation.getenv("TETHER_SEND_DIRECT"):
        remote.link(answer["connection"])  # replaces a stale helper itself
        if wait_for_socket(sock_path, 60.0):
            done = via_helper(sock_path, code, config.root, interrupt)
            if done is not None:
                return done
    path = remote.connect(answer["connection"])
    try:
        return execute(path, code, config.root)
    except KeyboardInterrupt:
        interrupt()
        raise


def interrupt_kernel(target: Target, kernel: str) -> None:
    """Interrupt the running cell of the remote kernel (Ctrl-C during a send)."""
    from tether.kernel.lifecycle import RemoteKernel

    invocation.stderr().write("tether: interrupting the kernel\n")
    invocation.stderr().flush()
    RemoteKernel(target, kernel).interrupt()


def wait_for_socket(path: Path, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return False


class CtrlC:
    """SIGINT as a count while a send waits on the helper, with a wakeup socket.

    Ctrl-C can land anywhere in the loop (while a line is read, or while an output is
    printed), so it never raises there: the count goes up and `wakeup` becomes readable
    (signal.set_wakeup_fd), so a select() on it returns at once. The second Ctrl-C raises
    KeyboardInterrupt (leave now). Outside the main thread it does nothing.
    """

    def __init__(self) -> None:
        import os

        self.count = 0
        self.wakeup, self._write = os.pipe()
        for end in (self.wakeup, self._write):
            os.set_blocking(end, False)
        self._saved: tuple[Any, int] | None = None

    def __enter__(self) -> CtrlC:
        import _signal  # type: ignore[import-not-found]  # C; `signal` imports enum (~4 ms)

        try:  # refused outside the main thread (ValueError): then nothing changes
            wake = _signal.set_wakeup_fd(self._write)
        except ValueError:
            return self
        self._saved = (_signal.signal(_signal.SIGINT, self._on_sigint), wake)
        return self

    def __exit__(self, *_: object) -> None:
        import _signal
        import os

        if self._saved is not None:
            _signal.signal(_signal.SIGINT, self._saved[0])
            _signal.set_wakeup_fd(self._saved[1])
        os.close(self.wakeup)
        os.close(self._write)

    def _on_sigint(self, *_: object) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt

    def drain(self) -> None:
        import os

        try:
            while os.read(self.wakeup, 512):
                pass
        except BlockingIOError:
            pass


def via_helper(
    sock_path: str | Path, code: str, root: str | Path,
    interrupt: Callable[[], None] | None = None,
) -> int | None:  # fmt: skip
    """Run code through the helper's socket: 0/1, or None if no helper took it.

    Ctrl-C interrupts the cell on the remote (interrupt()) and shows what it printed up to
    there, then 130; a second Ctrl-C leaves at once.
    """
    import _socket  # the C module: `socket` imports enum, selectors, ...
    import select

    from tether import clientwire

    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    request = {"code": code, "root": str(root), "colour": coloured(invocation.stderr())}
    try:
        conn.connect(str(sock_path))
        conn.sendall(clientwire.request_line(request))
    except OSError:
        conn.close()
        return None
    interrupted = accepted = False
    buffer = bytearray()
    try:
        with CtrlC() as ctrl_c:
            while True:
                if ctrl_c.count and not interrupted:
                    if interrupt is None:
                        raise KeyboardInterrupt
                    interrupted = True
                    interrupt()
                watched: list[Any] = [conn, ctrl_c.wakeup]
                ready, _, _ = select.select(watched, [], [])
                if ctrl_c.wakeup in ready:
                    ctrl_c.drain()
                if conn not in ready:
                    continue
                try:
                    chunk = conn.recv(1 << 16)
                except OSError:  # reset: the helper died
                    chunk = b""
                if not chunk:
                    break
                buffer += chunk
                for kind, text in clientwire.frames(buffer):
                    if clientwire.shown(kind, text, invocation.stdout(), invocation.stderr()):
                        continue
                    if kind == clientwire.ACCEPTED:
                        accepted = True
                    elif kind == clientwire.STALE:
                        return None
                    elif kind == clientwire.EXIT:
                        if interrupted or ctrl_c.count:  # (a Ctrl-C now: the cell ended anyway)
                            return 130
                        global HELPER_SERVED
                        HELPER_SERVED = True
                        return 1 if text != "0" else 0
    finally:
        conn.close()
    if not accepted and not interrupted:  # it died before it took the cell: nothing ran
        return None
    from tether.errors import TetherError

    raise TetherError("the send helper went away during the run", "", "run it again")


def execute(connection_file: Path, code: str, root: str | Path, timeout: float = 60.0) -> int:
    """Execute over jupyter_client; stream the outputs; 0, or 1 on an error reply."""
    from jupyter_client.blocking.client import BlockingKernelClient

    from tether.errors import TetherError

    client = BlockingKernelClient(connection_file=str(connection_file))
    client.load_connection_file()
    client.start_channels()
    try:
        try:
            client.wait_for_ready(timeout=timeout)
        except RuntimeError:
            raise TetherError(
                "the kernel did not answer",
                f"within {timeout:.0f} s",
                "try `tether kernel restart`",
            ) from None
        from tether.kernel.output import render

        failed = False
        colour = coloured(invocation.stderr())

        def write(stream: Any) -> Callable[[str], None]:
            def to(text: str) -> None:
                stream.write(text)
                stream.flush()

            return to

        out, err = write(invocation.stdout()), write(invocation.stderr())

        def show(message: dict[str, Any]) -> None:
            nonlocal failed
            failed = render(message, root, out, err, colour) or failed

        reply = client.execute_interactive(
            code, store_history=True, output_hook=show, allow_stdin=False, timeout=None
        )
        content = reply.get("content", {})
        return 1 if failed or content.get("status") == "error" else 0
    finally:
        client.stop_channels()


def coloured(stream: Any) -> bool:
    """Whether colour may go to stream: a terminal, NO_COLOR unset, TERM not dumb."""

    if invocation.getenv("NO_COLOR") or invocation.getenv("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())
