"""jupyter_console's terminal shell, changed where tether's console needs it to differ.

- Others' cells (`tether send`, a notebook) show as one block each: `[send] In [9]: code`
  with continuation lines marked `...:` once, then their output; all of it printed above
  the live prompt (prompt_toolkit's run_in_terminal: erased, printed, redrawn), so nothing
  is glued to the console's own prompt and the prompt is never left stale.
- Prompt numbers follow the kernel: a silent execute's reply gives its count at start
  and after each reconnect, execute_input messages (any client's) after that.
- The console's own cell is waited for through a link outage (the link keeper says when
  it is re-made); only a status of that cell ends the wait, not another client's idle;
  a reply lost with the link is taken from the replayed idle.
- Without colour (tether.kernel.send.coloured: not a terminal, NO_COLOR, TERM=dumb)
  prompts are monochrome and tracebacks plain; not a terminal: IPython's simple prompt.

jupyter_console is untyped, hence Any throughout.
"""

from __future__ import annotations

import errno
import signal
import sys
import time
from queue import Empty
from typing import Any

from jupyter_client.consoleapp import JupyterConsoleApp
from jupyter_console.app import ZMQTerminalIPythonApp
from jupyter_console.ptshell import ZMQTerminalInteractiveShell
from jupyter_console.utils import run_sync
from pygments.token import Token
from zmq import ZMQError

from tether.kernel.link import Link
from tether.kernel.output import strip_ansi
from tether.kernel.send import MARK_PREFIX, coloured

SENT = "send"  # the label of others' cells
REPLY_LOST_S = 1.0  # after the cell's idle, a reply this late was lost with the link
RESYNC_S = 1.0  # the count probe after a reconnect (a busy kernel answers later: dropped)

Tokens = list[tuple[Any, str]]


def sent_block(code: str, count: int) -> list[Tokens]:
    """The lines showing another client's cell: the first behind `[send] In [N]: `, the
    rest behind `...: ` under it; tether's file mark becomes the label's `FILE:LINE`."""
    label = SENT
    lines = code.split("\n")
    if lines[0].startswith(MARK_PREFIX) and len(lines) > 1:
        label = f"{SENT} {lines[0][len(MARK_PREFIX) :]}"
        lines = lines[1:]
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    head: Tokens = [
        (Token.RemotePrompt, f"[{label}] "),
        (Token.Prompt, "In ["),
        (Token.PromptNum, str(count)),
        (Token.Prompt, "]: "),
    ]
    width = sum(len(text) for _, text in head)
    more = (Token.Prompt, " " * (width - 5) + "...: ")
    return [[*head, (Token.Text, lines[0])]] + [[more, (Token.Text, line)] for line in lines[1:]]


class TetherShell(ZMQTerminalInteractiveShell):  # type: ignore[misc]
    """The console's shell; `link` (set by the console) is its kernel's Link, or None."""

    link: Link | None = None
    plain = False  # no colour
    _waiting = False  # a simple prompt is on the screen
    _below_prompt = False  # the next output starts a line under that prompt
    _line_open = False  # the last thing written did not end its line
    _above: Any = None  # the pending run_in_terminal (a future)
    _synced_drops = 0
    _cell_count = 0  # the execution count of the console's running cell
    _pending_clearoutput = False  # jupyter_console's: a clear_output(wait=True) is due
    prompt_for_code: Any  # jupyter_console's (a method, or its simple prompt's function)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plain = not coloured(sys.stdout)
        if self.pt_cli is not None and self.plain:
            from prompt_toolkit.output import ColorDepth

            self.pt_cli.color_depth = ColorDepth.DEPTH_1_BIT
        if self.pt_cli is None:
            asking = self.prompt_for_code

            async def prompt() -> Any:
                self._waiting = True
                try:
                    return await asking()
                finally:
                    self._waiting = False

            self.prompt_for_code = prompt
        self.sync_execution_count(self.kernel_timeout)

    # ----------------------------------------------------------- prompt numbers

    def sync_execution_count(self, timeout: float) -> bool:
        """Ask the kernel for its count (a silent execute's reply holds the last cell's);
        False when it did not answer in time (its late reply is dropped as stale)."""
        msg_id = self.client.execute("", silent=True, store_history=False)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = run_sync(self.client.shell_channel.get_msg)(timeout=left)
            except Empty:
                break
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                count = reply.get("content", {}).get("execution_count")
                if isinstance(count, int):
                    self.execution_count = count + 1
                    return True
        return False

    async def handle_external_iopub(self, loop: Any = None) -> None:
        import asyncio

        while self.keep_running:
            link = self.link
            if link is not None and link.up.is_set() and link.drops != self._synced_drops:
                self._synced_drops = link.drops
                if self.sync_execution_count(RESYNC_S):
                    self._redraw()
            if await run_async_poll(self.client.iopub_channel.socket):
                self.handle_iopub()
            await asyncio.sleep(0.1)

    def _redraw(self) -> None:
        if self.pt_cli is not None and self.pt_cli.app.is_running:
            self.pt_cli.app.invalidate()

    # ------------------------------------------------------- the console's cells

    def kernel_alive(self) -> bool:
        """Keep waiting for a cell: through an outage the Link says; else the heartbeat."""
        if self.link is not None:
            return self.link.kernel_alive()
        return bool(self.client.is_alive())

    def run_cell(self, cell: str, store_history: bool = True) -> None:
        """jupyter_console's run_cell, waiting through outages (see the module's doc)."""
        if (not cell) or cell.isspace():
            self.handle_iopub()
            return
        while run_sync(self.client.shell_channel.msg_ready)():  # stale replies
            run_sync(self.client.shell_channel.get_msg)()
        msg_id = self.client.execute(cell, not store_history)
        link = self.link
        drops, gaps = (link.drops, link.gaps) if link is not None else (0, 0)
        self._executing = True
        self._execution_state = "busy"
        self._cell_count = 0
        try:
            while self._execution_state != "idle" and self.kernel_alive():
                if link is not None and link.gaps != gaps:
                    return  # the cell's output was lost with the link: stop waiting
                try:
                    self.handle_input_request(msg_id, timeout=0.05)
                except Empty:
                    self.handle_iopub(msg_id)
                except ZMQError as error:
                    if error.errno != errno.EINTR:
                        raise
            idle = time.monotonic()
            while self.kernel_alive():
                try:
                    self.handle_execute_reply(msg_id, timeout=0.05)
                    return
                except Empty:
                    lost = link is not None and link.drops != drops
                    if lost and time.monotonic() - idle > REPLY_LOST_S:
                        if self._cell_count:  # the kernel's ROUTER dropped the reply
                            self.execution_count = self._cell_count + 1
                        return
        finally:
            self._executing = False

    # ------------------------------------------------------------------ output

    def handle_iopub(self, msg_id: str = "") -> None:
        """Show what iopub has; above the prompt while one is being edited."""
        if self.pt_cli is not None and self.pt_cli.app.is_running:
            if self._above is None or self._above.done():
                from prompt_toolkit.application import run_in_terminal

                self._above = run_in_terminal(self._drain_above)
            return
        if not self._waiting:
            self._drain(msg_id)
            return
        self._below_prompt = True  # output goes under a simple prompt, then that prompt again
        self._drain(msg_id)
        if not self._below_prompt:
            self._end_line()
            self._write(f"In [{self.execution_count}]: ")
        self._below_prompt = False

    def _drain_above(self) -> None:
        self._drain("")
        self._end_line()

    def _drain(self, msg_id: str) -> None:
        while run_sync(self.client.iopub_channel.msg_ready)():
            self.show(run_sync(self.client.iopub_channel.get_msg)(), msg_id)

    def say(self, line: str) -> None:
        """One line from another thread (the link keeper): above the prompt if one is up."""
        app = self.pt_cli.app if self.pt_cli is not None else None
        if app is not None and app.is_running and app.loop is not None:
            from prompt_toolkit.application import run_in_terminal

            def above() -> None:
                self._end_line()
                self._write(line + "\n")

            app.loop.call_soon_threadsafe(run_in_terminal, above)
            return
        self._write("\n" + line + "\n")

    def show(self, message: dict[str, Any], msg_id: str = "") -> None:
        """One iopub message: the console's own as jupyter_console shows them, another
        client's as blocks (its input once, with the prefix, then its output)."""
        kind = message.get("header", {}).get("msg_type", "")
        content = message.get("content", {})
        here = self.from_here(message)
        parent = message.get("parent_header", {}).get("msg_id")
        if kind == "execute_input":
            count = int(content.get("execution_count") or 0)
            self.execution_count = count + 1
            if here:
                self._cell_count = count
            else:
                self._end_line()
                for tokens in sent_block(str(content.get("code", "")), count):
                    self._tokens(tokens)
                    self._write("\n")
        elif kind == "status":
            if here and msg_id and parent == msg_id:
                self._execution_state = content.get("execution_state", "")
        elif kind == "stream":
            out = sys.stderr if content.get("name") == "stderr" else sys.stdout
            if self._pending_clearoutput:
                self._write("\r", out)
                self._pending_clearoutput = False
            self._write(str(content.get("text", "")), out)
        elif kind == "execute_result":
            self._result(content, here)
        elif kind == "display_data":
            data = content.get("data", {})
            if not self.handle_rich_data(data) and "text/plain" in data:
                self._write(str(data["text/plain"]) + "\n")
        elif kind == "error":
            text = "\n".join(content.get("traceback", [])) + "\n"
            self._write(text if coloured(sys.stderr) else strip_ansi(text), sys.stderr)
        elif kind == "clear_output":
            if content.get("wait"):
                self._pending_clearoutput = True
            else:
                self._write("\r")

    def _result(self, content: dict[str, Any], here: bool) -> None:
        if self._pending_clearoutput:
            self._write("\r")
            self._pending_clearoutput = False
        data = content.get("data", {})
        count = int(content.get("execution_count") or 0)
        if self.handle_rich_data(data) or "text/plain" not in data:
            return
        self._end_line()
        if here:  # jupyter_console's own Out prompt (it reads the count)
            self.execution_count = count
            self.print_out_prompt()
        else:
            self._tokens([(Token.OutPrompt, "Out["), (Token.OutPromptNum, str(count)),
                          (Token.OutPrompt, "]: ")])  # fmt: skip
        text = str(data["text/plain"])
        self._write(("\n" if "\n" in text else "") + text + "\n")

    def _tokens(self, tokens: Tokens) -> None:
        """Prompt tokens, styled like the shell's own (monochrome when plain), at once."""
        if self.pt_cli is None:
            self._write("".join(text for _, text in tokens))
            return
        from prompt_toolkit.formatted_text import PygmentsTokens
        from prompt_toolkit.renderer import print_formatted_text

        sys.stdout.flush()
        app = self.pt_cli.app
        print_formatted_text(app.output, PygmentsTokens(tokens), app.style, None, app.color_depth)
        self._line_open = True

    def _write(self, text: str, stream: Any = None) -> None:
        if self._below_prompt and text:
            self._below_prompt = False
            self._write("\n")
        out = stream or sys.stdout
        if out is sys.stderr:
            sys.stdout.flush()
        out.write(text)
        out.flush()
        if text:
            self._line_open = not text.endswith("\n")

    def _end_line(self) -> None:
        if self._line_open:
            self._write("\n")


async def run_async_poll(socket: Any) -> bool:
    """Whether the iopub socket (tether's _Polled) has something, without blocking."""
    from jupyter_console.utils import ensure_async

    return bool(await ensure_async(socket.poll(0)))


class TetherConsoleApp(ZMQTerminalIPythonApp):  # type: ignore[misc]
    """jupyter_console's app with TetherShell as its shell."""

    def init_shell(self) -> None:
        JupyterConsoleApp.initialize(self)
        signal.signal(signal.SIGINT, self.handle_sigint)
        self.shell = TetherShell.instance(
            parent=self,
            manager=self.kernel_manager,
            client=self.kernel_client,
            confirm_exit=self.confirm_exit,
        )
        self.shell.own_kernel = not self.existing
