"""The iopub recorder: run on the remote beside a kernel, by the target's python.

    python recorder.py CONNECTION_FILE LOG_DIR KERNEL_PID

It subscribes to the kernel's iopub channel and appends every message, as one JSON line
(seq, msg_id, msg_type, header, parent_header, metadata, content; binary buffers
dropped), to LOG_DIR/iopub.jsonl. When that file passes MAX_BYTES it becomes
iopub.1.jsonl (the older one is dropped), so the buffer stays under 2 * MAX_BYTES. A
client that lost its link asks the agent for the lines after the last message it saw
(`kernel_catchup`). The recorder exits when the kernel's process is gone.

Needs pyzmq, which every ipykernel brings; otherwise the standard library only, and
Python >= 3.8 (it is sent to the remote as source by `kernel_start`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

MAX_BYTES = 1 << 20
DELIMITER = b"<IDS|MSG>"
LOG = "iopub.jsonl"
OLD = "iopub.1.jsonl"


def parse(frames: list[bytes], seq: int) -> dict[str, Any] | None:
    """One log entry from a multipart iopub message (None if it is not one)."""
    try:
        at = frames.index(DELIMITER)
        header, parent, metadata, content = (json.loads(f) for f in frames[at + 2 : at + 6])
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    return {
        "seq": seq,
        "msg_id": header.get("msg_id", ""),
        "msg_type": header.get("msg_type", ""),
        "header": header,
        "parent_header": parent if isinstance(parent, dict) else {},
        "metadata": metadata if isinstance(metadata, dict) else {},
        "content": content if isinstance(content, dict) else {},
    }


def address(info: dict[str, Any]) -> str:
    if info.get("transport") == "ipc":
        return f"ipc://{info['ip']}-{info['iopub_port']}"
    return f"tcp://{info.get('ip', '127.0.0.1')}:{info['iopub_port']}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def main(argv: list[str]) -> int:
    import zmq

    connection_file, log_dir, pid = argv[1], argv[2], int(argv[3])
    with open(connection_file, encoding="utf-8") as handle:
        info = json.load(handle)
    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(address(info))
    log_path = os.path.join(log_dir, LOG)
    seq = 0
    out = open(log_path, "ab")  # noqa: SIM115 - rotated below
    try:
        while alive(pid):
            if not socket.poll(1000):
                continue
            while True:
                try:
                    frames = socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                seq += 1
                entry = parse(frames, seq)
                if entry is None:
                    continue
                out.write(json.dumps(entry).encode() + b"\n")
            out.flush()
            if out.tell() > MAX_BYTES:
                out.close()
                os.replace(log_path, os.path.join(log_dir, OLD))
                out = open(log_path, "ab")  # noqa: SIM115
    finally:
        out.close()
        socket.close()
        context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
