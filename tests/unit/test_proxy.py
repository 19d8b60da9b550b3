"""The harness proxy on its own: forwarding, delay, order, cut, refuse, stop."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.harness.proxy import RUNNING, Proxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A tiny threaded TCP echo server on 127.0.0.1."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conns.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    server.close()
    for conn in conns:
        conn.close()


def _connect(proxy: Proxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=5)
    sock.settimeout(5)
    return sock


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_forwards_both_ways_and_counts(echo_port: int) -> None:
    with Proxy("127.0.0.1", echo_port) as proxy, _connect(proxy) as sock:
        sock.sendall(b"hello")
        assert _recv_exactly(sock, 5) == b"hello"
        assert proxy.stats.connections == 1
        assert proxy.stats.bytes_up == 5
    assert proxy.stats.bytes_down == 5
    assert proxy not in RUNNING


def test_delay_is_one_way_per_direction(echo_port: int) -> None:
    with Proxy("127.0.0.1", echo_port, delay_ms=40) as proxy, _connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(b"x")
        assert _recv_exactly(sock, 1) == b"x"
        elapsed = time.monotonic() - start
    assert 0.080 <= elapsed < 0.5


def test_delay_keeps_order_and_does_not_serialise(echo_port: int) -> None:
    with Proxy("127.0.0.1", echo_port, delay_ms=50) as proxy, _connect(proxy) as sock:
        start = time.monotonic()
        payload = b"".join(b"%04d" % i for i in range(20))
        for i in range(20):  # 20 chunks sent back to back
            sock.sendall(b"%04d" % i)
            time.sleep(0.002)
        assert _recv_exactly(sock, len(payload)) == payload
        elapsed = time.monotonic() - start
    # Serialising the delay per chunk would take 20 * 100 ms.
    assert elapsed < 0.6


def test_cut_closes_open_connections_but_accepts_new_ones(echo_port: int) -> None:
    with Proxy("127.0.0.1", echo_port) as proxy:
        first = _connect(proxy)
        first.sendall(b"a")
        assert _recv_exactly(first, 1) == b"a"
        assert proxy.cut() == 1
        with contextlib.suppress(ConnectionResetError):
            assert first.recv(10) == b""
        first.close()
        with _connect(proxy) as second:
            second.sendall(b"b")
            assert _recv_exactly(second, 1) == b"b"
        assert proxy.stats.cuts == 1


def test_refuse_closes_new_connections(echo_port: int) -> None:
    with Proxy("127.0.0.1", echo_port) as proxy:
        proxy.refuse(True)
        with _connect(proxy) as sock:
            try:
                sock.sendall(b"a")
                assert sock.recv(10) == b""
            except (ConnectionResetError, BrokenPipeError):
                pass
        assert proxy.stats.refused == 1
        proxy.refuse(False)
        with _connect(proxy) as sock:
            sock.sendall(b"c")
            assert _recv_exactly(sock, 1) == b"c"


def test_stop_frees_the_port(echo_port: int) -> None:
    proxy = Proxy("127.0.0.1", echo_port).start()
    port = proxy.port
    proxy.stop()
    assert not proxy.running
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
