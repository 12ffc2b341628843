"""The OTLP/HTTP receiver: ``IngestServer`` (threads, one per connection) with its connection cap
(``ConnectionTable``); the state it shares with the gRPC receiver (keys, limits, producers, in-flight slots,
counters, metrics, refusal warnings) is its ``intake`` (``connectors.ingest.intake``). Requests are handled in
``connectors.ingest.handler``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any

from google.rpc import code_pb2

from connectors.ingest.handler import LOGS_PATH, Handler, peer, status_body
from connectors.ingest.intake import LOGS, PROTOBUF, TRACES, IngestStats, Intake, Reason, RefusalLog
from connectors.ingest.keys import ApiKeys
from connectors.ingest.limits import (
    BODY_GRACE_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_FUTURE_SKEW_MS,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_RECORDS,
    HEAD_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    LISTEN_BACKLOG,
    LOGGER_NAME,
    MIN_UPLOAD_BYTES_PER_S,
    IngestLimits,
    default_max_message_bytes,
)
from connectors.ingest.producer import LogsProducer

log = logging.getLogger(LOGGER_NAME)


class ConnectionTable:
    """Open connections, and which of them linger after a refusal or wait for a request (idle, or still
    sending its head).

    At the cap a new connection evicts a lingering one, else the one that has waited longest: a slow-loris
    holds its connections in exactly these states, and an idle exporter simply reconnects. Only when all
    are working is the newcomer refused. An evicted connection ends at once (its socket is shut down), so the count
    passes the cap only for moments, and never reaches twice the cap.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0
        self._lock = threading.Lock()
        self._waiting: dict[socket.socket, None] = {}  # insertion order = longest waiting first
        self._lingering: dict[socket.socket, None] = {}

    def admit(self) -> bool:
        """Count a new connection in, evicting the longest-waiting one at the cap; False: refuse it."""
        victim = None
        with self._lock:
            if self.open >= self.cap:
                idle = self._lingering or self._waiting
                if self.open >= 2 * self.cap or not idle:
                    return False
                victim = next(iter(idle))
                del idle[victim]
            self.open += 1
        if victim is not None:
            with contextlib.suppress(OSError):
                victim.shutdown(socket.SHUT_RDWR)  # its blocked read returns: the thread ends
        return True

    def waits(self, sock: socket.socket) -> None:
        with self._lock:
            self._waiting.pop(sock, None)
            self._waiting[sock] = None

    def lingers(self, sock: socket.socket) -> None:
        with self._lock:
            self._lingering[sock] = None

    def works(self, sock: socket.socket) -> bool:
        """The connection's request head has arrived; False when it was evicted meanwhile."""
        with self._lock:
            return self._waiting.pop(sock, False) is None

    def leave(self, sock: socket.socket) -> None:
        with self._lock:
            self._waiting.pop(sock, None)
            self._lingering.pop(sock, None)
            self.open -= 1


class IngestServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` answering ``POST /v1/logs`` and ``/v1/traces``, ``GET /healthz`` and
    ``/metrics``; ``serve_forever()`` until ``shutdown()``. ``keys`` is ``{api_key: tenant}`` (kept as digests)
    or an ``ApiKeys``; ``producer`` takes the logs, ``spans_producer`` the traces (without it, ``/v1/traces``
    answers 404); ``limits``, when given, replaces the limit arguments (``max_*``, timeouts, rate).
    ``clock_ns`` is the wall clock (Unix ns) read when a request arrives: its receive time."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], *, keys: Mapping[str, str] | ApiKeys, producer: LogsProducer,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, retry_after_s: int = 5,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_records: int = DEFAULT_MAX_RECORDS, max_message_bytes: int | None = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, head_timeout_s: float = HEAD_TIMEOUT_S,
                 body_grace_s: float = BODY_GRACE_S, min_upload_bytes_per_s: float = MIN_UPLOAD_BYTES_PER_S,
                 max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS, limits: IngestLimits | None = None,
                 clock_ns: Callable[[], int] = time.time_ns, spans_producer: LogsProducer | None = None) -> None:
        api_keys = keys if isinstance(keys, ApiKeys) else ApiKeys(keys)
        limits = limits or IngestLimits(
            max_body_bytes=max_body_bytes, max_records=max_records,
            max_message_bytes=default_max_message_bytes(max_body_bytes) if max_message_bytes is None
            else max_message_bytes,
            max_connections=max_connections, max_inflight=max_inflight, idle_timeout_s=idle_timeout_s,
            head_timeout_s=head_timeout_s, body_grace_s=body_grace_s, min_upload_bytes_per_s=min_upload_bytes_per_s,
            max_future_skew_ms=max_future_skew_ms)
        producers = {LOGS.name: producer} | ({TRACES.name: spans_producer} if spans_producer is not None else {})
        self.intake = Intake(keys=api_keys, producers=producers, limits=limits, retry_after_s=retry_after_s,
                             clock_ns=clock_ns)
        self.api_keys, self.limits, self.producer, self.spans_producer = api_keys, limits, producer, spans_producer
        self.retry_after_s, self.clock_ns = retry_after_s, clock_ns
        self.inflight: threading.BoundedSemaphore = self.intake.inflight
        self.stats: IngestStats = self.intake.stats
        self.refusals: RefusalLog = self.intake.refusals
        self.connections = ConnectionTable(self.limits.max_connections)
        super().__init__(address, Handler)

    @property
    def max_body_bytes(self) -> int:
        return self.limits.max_body_bytes

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{LOGS_PATH}"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start the connection's thread, or answer 503 at once when ``max_connections`` are working."""
        if not self.connections.admit():
            self._refuse_connection(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.leave(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.leave(request)

    def _refuse_connection(self, request: socket.socket, client_address: Any) -> None:
        message = f"too many connections ({self.limits.max_connections}); retry later"
        body = status_body(code_pb2.UNAVAILABLE, message, PROTOBUF)
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {len(body)}\r\n"
                f"Retry-After: {self.retry_after_s}\r\nConnection: close\r\n\r\n")
        try:  # a new socket's send buffer is empty: this never blocks the accept loop
            request.setblocking(False)
            request.send(head.encode("ascii") + body)
        except OSError:
            pass
        self.shutdown_request(request)
        self.stats.add(HTTPStatus.SERVICE_UNAVAILABLE)
        self.intake.refused("http", Reason.TOO_MANY_CONNECTIONS, "a connection", peer(client_address), 503, message)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke (reset, timeout) is the client's business; anything else is a bug."""
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("ingest: connection from %s ended: %s", peer(client_address), sys.exc_info()[1])
        else:
            log.exception("ingest: error while serving %s", peer(client_address))
