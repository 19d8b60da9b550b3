"""`tether console`: jupyter_console's terminal shell attached to the forwarded kernel.

Output from other clients (`tether send`) is shown; leaving never stops the kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tether.config import Target


def console_argv(connection_file: Path) -> list[str]:
    """jupyter_console's arguments: attach to an existing kernel, show others' output."""
    return [
        "--existing",
        str(connection_file),
        "--ZMQTerminalInteractiveShell.include_other_output=True",
        "--ZMQTerminalInteractiveShell.other_output_prefix=[send] ",
        "--ZMQTerminalIPythonApp.confirm_exit=False",
        "--ZMQTerminalInteractiveShell.kernel_timeout=120",
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


def keep_through_drops(app: Any, target: Target, name: str, remote: dict[str, Any]) -> Any:
    """Route the console's iopub through a Feed and watch the link (see tether.kernel.link)."""
    import sys
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

    def say(line: str) -> None:
        sys.stdout.write("\n" + line + "\n")
        sys.stdout.flush()

    return Link(target, name, remote, feed, say, beating=client.hb_channel.is_beating).start()


def run(
    connection_file: Path,
    target: Target | None = None,
    name: str = "",
    remote: dict[str, Any] | None = None,
) -> int:
    """Run the console in this process until the user leaves; the kernel goes on."""
    from jupyter_console.app import ZMQTerminalIPythonApp

    app: Any = ZMQTerminalIPythonApp.instance()
    app.initialize(console_argv(connection_file))
    link = (
        None if target is None or remote is None else keep_through_drops(app, target, name, remote)
    )

    def keep(*args: Any, **kwargs: Any) -> None:
        """`exit` asks the console to shut the kernel down: tether never does that here."""

    app.shell.client.shutdown = keep
    app.shell.own_kernel = False
    try:
        app.start()
    finally:
        if link is not None:
            link.stop()
    return 0
