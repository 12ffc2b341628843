"""The OTLP/HTTP ingest under clients that hold connections open: keyless, slow, silent, too many.

Real sockets against the real server: a refused request is answered from its headers alone and its
connection closed, so a client without a key can never take a processing slot nor make the server read
a body; every connection has total deadlines; the number of connections is capped.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from google.rpc import code_pb2

from tests.ingest_fixtures import PB, Running, headers, pb_request, serve, status_of

BIG = 60_000_000  # announced, never sent


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def head(content_length: int, key: str | None = None, path: str = "/v1/logs", **extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {PB}", f"Content-Length: {content_length}"]
    lines += [f"{k}: {v}" for k, v in (({"x-logclaw-api-key": key} if key else {}) | extra).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (raises TimeoutError when it does not)."""
    sock.settimeout(timeout)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@contextmanager
def attackers(port: int, count: int, first_bytes: bytes) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(connect(port))
            sock.sendall(first_bytes)
            socks.append(sock)
        yield socks


def timed_valid_post(running: Running) -> tuple[int, float]:
    started = time.monotonic()
    status = running.post(pb_request("acme").SerializeToString(), headers())[0]
    return status, time.monotonic() - started


def test_keyless_and_slow_clients_do_not_block_a_valid_request() -> None:
    """The reported attack (32 keyless POSTs announcing 60 MB, a byte now and then) plus slow headers."""
    with serve(max_body_bytes=4 * 1024 * 1024) as running, \
            attackers(running.port, 48, head(BIG) + b"\x0a") as keyless, \
            attackers(running.port, 48, b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n"):
        time.sleep(0.3)
        status, took = timed_valid_post(running)
        assert (status, took < 2.0) == (200, True), f"valid request: {status} after {took:.2f} s"
        answers = [read_until_closed(sock, 5.0) for sock in keyless]
    assert {a.split(b"\r\n", 1)[0] for a in answers} == {b"HTTP/1.1 401 Unauthorized"}
    assert len(running.producer.sent) == 1


def test_refusals_are_answered_from_the_headers_without_reading_the_body() -> None:
    with serve() as running:
        for first_bytes, expected in [
            (head(BIG), b"HTTP/1.1 401 "),
            (head(BIG, key="wrong-key-0123456789"), b"HTTP/1.1 401 "),
            (head(BIG, key="key-acme-1-0123456789", path="/v1/metrics"), b"HTTP/1.1 404 "),
            (head(BIG, key="key-acme-1-0123456789", path="/v1/traces"), b"HTTP/1.1 413 "),
            (head(BIG, key="key-acme-1-0123456789"), b"HTTP/1.1 413 "),
            (head(10, key="key-acme-1-0123456789", **{"Content-Encoding": "br"}), b"HTTP/1.1 415 "),
        ]:
            with connect(running.port) as sock:
                started = time.monotonic()
                sock.sendall(first_bytes)
                answer = read_until_closed(sock, 5.0)  # closed by the server: no body byte was sent
                assert answer.startswith(expected), answer[:80]
                assert b"\r\nConnection: close\r\n" in answer
                assert time.monotonic() - started < 3.0  # the lingering close waits 2 s at most


def test_more_slow_clients_than_the_connection_cap_do_not_block_a_valid_request() -> None:
    """At the cap a newcomer evicts the connection that has waited longest for its request."""
    baseline = threading.active_count()
    with serve(max_connections=16, max_inflight=4) as running, \
            attackers(running.port, 100, b"POST /v1/logs HTTP/1.1\r\nHost: x\r\n") as slow:
        time.sleep(0.3)
        threads = threading.active_count() - baseline
        status, took = timed_valid_post(running)
        assert (status, took < 1.0) == (200, True), f"valid request: {status} after {took:.2f} s"
        evicted = [read_until_closed(sock, 2.0) for sock in slow[:80]]
    assert threads <= 16 + 2, threads  # one thread per open connection, the serving loop
    assert evicted == [b""] * 80  # the oldest 84 were shut down without an answer, the newest 16 waited


def test_a_refused_lingering_connection_is_evicted_first_at_the_cap() -> None:
    with serve(max_connections=3, max_inflight=2) as running, \
            attackers(running.port, 3, head(BIG) + b"\x0a") as refused:  # 401, then lingering up to 2 s
        time.sleep(0.2)
        status, took = timed_valid_post(running)
        assert (status, took < 1.0) == (200, True), f"valid request: {status} after {took:.2f} s"
        assert [read_until_closed(sock, 3.0).split(b"\r\n", 1)[0] for sock in refused] == [
            b"HTTP/1.1 401 Unauthorized"] * 3


def test_a_connection_past_the_cap_gets_503_when_all_are_working() -> None:
    with serve(max_connections=2, max_inflight=2) as running, \
            attackers(running.port, 2, head(1000, key="key-acme-1-0123456789") + b"\x0a"):
        time.sleep(0.2)  # both are reading their bodies
        with connect(running.port) as third:
            over_cap = read_until_closed(third, 2.0)
    head_line, rest = over_cap.split(b"\r\n", 1)
    assert head_line == b"HTTP/1.1 503 Service Unavailable" and b"Retry-After: 7\r\n" in rest
    assert status_of(rest.split(b"\r\n\r\n", 1)[1]) == (code_pb2.UNAVAILABLE,
                                                         "too many connections (2); retry later")


def test_silent_and_slow_head_connections_are_dropped_at_their_deadlines() -> None:
    with serve(idle_timeout_s=0.5, head_timeout_s=0.5) as running, attackers(running.port, 3, b"") as silent, \
            attackers(running.port, 3, b"POST /v1/logs HTTP/1.1\r\n") as slow:
        started = time.monotonic()
        dropped = [read_until_closed(sock, 3.0) for sock in silent + slow]
        waited = time.monotonic() - started
    assert (dropped, waited < 1.5) == ([b""] * 6, True)


def test_a_keyed_client_that_sends_its_body_too_slowly_gets_408_at_the_deadline() -> None:
    with serve(body_grace_s=0.5, min_upload_bytes_per_s=1000) as running:  # 1000 bytes: 0.5 + 1 s
        with connect(running.port) as sock:
            started = time.monotonic()
            sock.sendall(head(1000, key="key-acme-1-0123456789") + b"\x0a\x05")
            answer = read_until_closed(sock, 5.0)
            took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert 1.4 < took < 3.0
        assert timed_valid_post(running)[0] == 200  # its in-flight slot was given back


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout() -> None:
    with serve(idle_timeout_s=0.3) as running:
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
        try:
            conn.request("POST", "/v1/logs", body=pb_request("acme").SerializeToString(), headers=headers())
            assert conn.getresponse().read() == b""
            assert conn.sock is not None
            assert read_until_closed(conn.sock, 2.0) == b""
        finally:
            conn.close()
