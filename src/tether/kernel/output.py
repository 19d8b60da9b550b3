"""What an execution's outputs look like here: one iopub message printed as text.

Used where the outputs arrive: by the send helper (kernel/helper.py), which renders each
message into the frames it streams to `tether send`, and by send's direct path (its own
jupyter_client). A PNG is saved under the project's .tether/figures/ and named instead of
printed; a traceback keeps its colour only when the stream it goes to may show it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

Write = Callable[[str], None]


def render(message: dict[str, Any], root: str | Path, out: Write, err: Write, colour: bool) -> bool:
    """Print one iopub message through out/err; True if it reports an error."""
    kind = message.get("msg_type") or message.get("header", {}).get("msg_type")
    content = message.get("content", {})
    if kind == "stream":
        (err if content.get("name") == "stderr" else out)(content.get("text", ""))
    elif kind in ("execute_result", "display_data"):
        data = content.get("data", {})
        if "image/png" in data:
            out(f"figure saved: {save_figure(root, data['image/png'])}\n")
        elif "text/plain" in data:
            out(data["text/plain"] + "\n")
    elif kind == "error":
        text = "\n".join(content.get("traceback", [])) + "\n"
        err(text if colour else strip_ansi(text))
        return True
    return False


def strip_ansi(text: str) -> str:
    """text without ANSI escape sequences (CSI and OSC)."""
    import re

    return re.sub(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])", "", text)


def save_figure(root: str | Path, encoded: str) -> Path:
    """Decode a base64 PNG into .tether/figures/ under the project; its path."""
    import base64
    import time

    directory = Path(root) / ".tether" / "figures"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"figure-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}.png"
    path.write_bytes(base64.b64decode(encoded))
    return path
