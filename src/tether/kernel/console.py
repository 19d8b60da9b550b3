"""`tether console`: jupyter_console's terminal shell attached to the forwarded kernel.

Output from other clients (`tether send`) is shown; leaving never stops the kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def run(connection_file: Path) -> int:
    """Run the console in this process until the user leaves; the kernel goes on."""
    from jupyter_console.app import ZMQTerminalIPythonApp

    app: Any = ZMQTerminalIPythonApp.instance()
    app.initialize(console_argv(connection_file))

    def keep(*args: Any, **kwargs: Any) -> None:
        """`exit` asks the console to shut the kernel down: tether never does that here."""

    app.shell.client.shutdown = keep
    app.shell.own_kernel = False
    app.start()
    return 0
