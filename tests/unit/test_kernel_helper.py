"""The send helper's heartbeat channel (tether.kernel.helper): what makes it leave at once."""

from __future__ import annotations

import contextlib
import socket
import time

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
