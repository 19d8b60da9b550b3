"""`tether console`: jupyter_console's terminal shell attached to the forwarded kernel.

Output from other clients (`tether send`) is shown (how, and the prompt numbers, outages
and colour: tether.kernel.shell); leaving never stops the kernel. The is_complete check
asks the kernel while the link is up and IPython's local (codeop-based) test while it is
down or the kernel is slow to answer; jupyter_console's own check would turn the kernel's
off for the whole session after one timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tether.config import Target


def console_argv(connection_file: Path, terminal: bool = True) -> list[str]:
    """jupyter_console's arguments: attach to an existing kernel, show others' output;
    IPython's simple prompt (no line editor, no escapes) when not on a TERMINAL."""
    simple = [] if terminal else ["--ZMQTerminalInteractiveShell.simple_prompt=True"]
    return [
        "--existing",
        str(connection_file),
        "--ZMQTerminalInteractiveShell.include_other_output=True",
        "--ZMQTerminalIPythonApp.confirm_exit=False",
        "--ZMQTerminalInteractiveShell.kernel_timeout=120",
        *simple,
    ]


class _Polled:
    """The iopub socket as the console polls it: ready too when caught-up output waits."""

    def __init__(self, socket: Any, feed: Any) -> None:
        self._socket = socket
        self._feed = feed

    def poll(self, timeout: int = 0, *args: Any) -> int:
        if self._feed.pending:
            return 1
        if self._feed.holding.is_set():
            return 0
        return int(self._socket.poll(timeout, *args))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._socket, name)


def local_complete(code: str) -> tuple[bool, str]:
    """(more?, indent) from IPython's local completeness test (what ipykernel runs too)."""
    from IPython.core import inputtransformer2

    make: Any = inputtransformer2.TransformerManager
    manager = make()
    status, indent = manager.check_complete(code)
    if status == "incomplete":
        return True, " " * (indent or 0)
    return False, ""


def complete_through_link(shell: Any, up: Callable[[], bool]) -> None:
    """Replace the shell's check_complete: the kernel's while up() else the local test.

    A request that times out falls back to the local test for that line only; its late
    reply is dropped from the shell channel (it would be taken for an execute reply), as
    are stale replies it meets (a prompt-number probe the kernel answered late).
    """
    import inspect
    import queue
    import time

    from jupyter_console.utils import run_sync

    client = shell.client
    channel = client.shell_channel
    real_get = channel.get_msg
    abandoned: set[str] = set()

    def left(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def wanted(message: dict[str, Any]) -> bool:
        parent = message.get("parent_header", {}).get("msg_id")
        if parent not in abandoned:
            return True
        abandoned.discard(parent)
        return False

    get_msg: Callable[..., Any]
    if inspect.iscoroutinefunction(real_get):

        async def get_async(timeout: float | None = None) -> dict[str, Any]:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                message: dict[str, Any] = await real_get(timeout=left(deadline))
                if wanted(message):
                    return message

        get_msg = get_async
    else:

        def get_sync(timeout: float | None = None) -> dict[str, Any]:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                message: dict[str, Any] = real_get(timeout=left(deadline))
                if wanted(message):
                    return message

        get_msg = get_sync
    channel.get_msg = get_msg

    def check_complete(code: str) -> tuple[bool, str]:
        if not up():
            return local_complete(code)
        msg_id = client.is_complete(code)
        deadline = time.monotonic() + shell.kernel_is_complete_timeout
        while True:  # at the prompt no cell runs: another reply here is a stale one
            try:
                reply = run_sync(get_msg)(timeout=left(deadline))
            except queue.Empty:
                abandoned.add(msg_id)
                return local_complete(code)
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                break
        content = reply.get("content", {})
        status, indent = content.get("status"), str(content.get("indent", ""))
        if status == "incomplete":
            return True, indent
        return False, "" if status == "invalid" else indent

    shell.use_kernel_is_complete = True
    shell.check_complete = check_complete


def keep_through_drops(app: Any, target: Target, name: str, remote: dict[str, Any]) -> Any:
    """Route the console's iopub through a Feed and watch the link (see tether.kernel.link)."""
    from types import SimpleNamespace

    from tether.kernel.link import Feed, Link

    client = app.shell.client
    channel = client.iopub_channel
    real = channel.socket

    def ready() -> bool:
        return bool(real.poll(0))

    def get(timeout: float | None = None) -> dict[str, Any]:
        _, message = channel.session.feed_identities(real.recv_multipart())
        return dict(channel.session.deserialize(message))

    feed = Feed(SimpleNamespace(msg_ready=ready, get_msg=get, socket=real))
    channel.msg_ready = feed.msg_ready
    channel.get_msg = feed.get_msg
    channel.socket = _Polled(channel.socket, feed)

    beating = client.hb_channel.is_beating
    gone = "leave and run `tether console` again for a new one"
    link = Link(target, name, remote, feed, app.shell.say, beating=beating, when_gone=gone)
    app.shell.link = link
    return link.start()


def save_figures(shell: Any, root: Path) -> None:
    """PNG output (plt.show(), display(Image)) is saved under .tether/figures/ and its path
    printed, as `send` does; other images are left to the console."""
    from tether.kernel.output import save_figure

    def save(data: dict[str, Any]) -> bool:
        if "image/png" not in data:
            return False
        print(f"figure saved: {save_figure(root, data['image/png'])}")
        return True

    shell.image_handler = "callable"
    shell.callable_image_handler = save


def interrupt_on_ctrl_c(app: Any, target: Target, name: str) -> None:
    """Ctrl-C while a cell runs interrupts it on the remote (through the agent: the
    console did not start the kernel, so jupyter_console cannot); at the prompt it
    clears the line as before."""
    import signal
    import threading

    from tether.kernel.send import interrupt_kernel

    def interrupt() -> None:  # a thread: the console's own event loop runs here
        try:
            interrupt_kernel(target, name)
        except Exception as error:  # the link is down, ...: the cell runs on; say why
            print(f"tether: could not interrupt the kernel: {error}")

    def on_sigint(*args: Any) -> None:
        if not app.shell._executing:
            raise KeyboardInterrupt
        threading.Thread(target=interrupt, name="tether-interrupt", daemon=True).start()

    signal.signal(signal.SIGINT, on_sigint)


def run(
    connection_file: Path,
    target: Target | None = None,
    name: str = "",
    remote: dict[str, Any] | None = None,
    root: Path | None = None,
) -> int:
    """Run the console in this process until the user leaves; the kernel goes on."""
    import sys

    from tether.kernel.shell import TetherConsoleApp

    app: Any = TetherConsoleApp.instance()
    app.initialize(console_argv(connection_file, sys.stdin.isatty() and sys.stdout.isatty()))
    link = (
        None if target is None or remote is None else keep_through_drops(app, target, name, remote)
    )
    complete_through_link(app.shell, (lambda: True) if link is None else link.up.is_set)

    def keep(*args: Any, **kwargs: Any) -> None:
        """`exit` asks the console to shut the kernel down: tether never does that here."""

    app.shell.client.shutdown = keep
    app.shell.own_kernel = False
    if target is not None:
        interrupt_on_ctrl_c(app, target, name)
    if root is not None:
        save_figures(app.shell, root)
    try:
        app.start()
    finally:
        if link is not None:
            link.stop()
    return 0
