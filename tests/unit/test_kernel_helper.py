"""The send helper's heartbeat channel (tether.kernel.helper): what makes it leave at once."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import uuid

import zmq

from tether.kernel.helper import _heartbeat_class


def test_heartbeat_sockets_do_not_linger() -> None:
    # jupyter_client makes each heartbeat socket with a 1 s linger and replaces it after
    # every missed beat; an unanswered ping then held zmq's context (the helper's exit)
    # for that second once the kernel had gone. The helper's channel makes them with 0.
    with socket.socket() as probe:  # a port nothing listens on: every beat is missed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = zmq.Context()
    channel = _heartbeat_class()(context, None, f"tcp://127.0.0.1:{port}")
    channel.time_to_dead = 0.05
    channel.start()
    try:
        seen: list[zmq.Socket[bytes]] = []  # held, so no two share an id
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            current = channel.socket
            if current is not None and not any(current is s for s in seen):
                with contextlib.suppress(zmq.ZMQError):  # closed meanwhile: next one
                    assert current.linger == 0
                    seen.append(current)
            time.sleep(0.01)
        assert len(seen) >= 3, "the channel did not replace its socket after missed beats"
    finally:
        channel.stop()
        context.destroy(linger=0)


# A helper's way out as background.stop sees it (the real one: test_send_helper): it
# answers the quit, removes its pidfile, then takes a while to end (threads, zmq).
LEAVING = """
import os, socket, sys, time
sock_path, pid_path = sys.argv[1], sys.argv[2]
server = socket.socket(socket.AF_UNIX)
server.bind(sock_path)
server.listen(1)
with open(pid_path, "w") as handle:
    handle.write(str(os.getpid()))
print("ready", flush=True)
conn, _ = server.accept()
conn.recv(100)
conn.sendall(b'{"bye": true}\\n')
conn.close()
os.unlink(pid_path)
time.sleep(1.0)
"""


def test_stop_returns_once_a_leaving_helper_has_ended() -> None:
    from tether.config import Target
    from tether.hosts.processes import end_process
    from tether.kernel import background, names

    target = Target(name="box", host=f"h-{uuid.uuid4().hex[:8]}", path="~/p")
    sock_path, pid_path = names.helper_paths(target, "k")
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    helper = subprocess.Popen(
        [sys.executable, "-c", LEAVING, str(sock_path), str(pid_path), "tether.kernel.helper"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert helper.stdout is not None and helper.stdout.readline() == "ready\n"
        background.stop(target, "k")
        assert helper.poll() is not None, "stop returned before the helper had ended"
        assert helper.returncode == 0, "it left by itself (no signal)"
        assert not sock_path.exists() and not pid_path.exists()
    finally:
        end_process(helper)
        assert helper.stdout is not None
        helper.stdout.close()
