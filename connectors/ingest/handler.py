"""One HTTP request: ``POST /v1/logs`` or ``/v1/traces`` checked on its headers alone (path, framing, key,
size, type), then its body read within a deadline and exported (``intake.Intake.export``); ``GET /healthz``
and ``GET /metrics`` (Prometheus).

A refused request is answered with a ``google.rpc.Status`` and, when its body was not read, its
connection closed after a short linger; every read has a total deadline (``_DeadlineReader``).
"""

from __future__ import annotations

import io
import logging
import re
import socket
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from connectors.ingest.intake import (
    API_KEY_HEADER,
    JSON,
    LOGS,
    PROTOBUF,
    SIGNALS,
    Reason,
    Refused,
    Signal,
)
from connectors.ingest.intake import export_response as signal_response
from connectors.ingest.limits import LINGER_BYTES, LINGER_S, LOGGER_NAME, SEND_TIMEOUT_S
from connectors.ingest.metrics import METRICS_CONTENT_TYPE
from connectors.ingest.payload import BadPayload, inflate

if TYPE_CHECKING:
    from connectors.ingest.server import IngestServer

log = logging.getLogger(LOGGER_NAME)

LOGS_PATH = LOGS.http_path
TRACES_PATH = "/v1/traces"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
_SIGNAL_OF_PATH = {signal.http_path: signal for signal in SIGNALS}
_PATHS_TEXT = f"logs go to {LOGS_PATH}, traces to {TRACES_PATH}"
_MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}
_ENCODINGS = ("", "identity", "gzip", "x-gzip", "deflate")
_DIGITS = re.compile(r"[0-9]+")


def export_response(rejected: int, error_message: str, content_type: str) -> bytes:
    """An ``ExportLogsServiceResponse``; ``partial_success`` only when records were rejected."""
    return signal_response(LOGS, rejected, error_message, content_type)


def status_body(code: int, message: str, content_type: str) -> bytes:
    """A ``google.rpc.Status`` (the OTLP/HTTP body of every 4xx/5xx)."""
    status = status_pb2.Status(code=code, message=message)
    if content_type == JSON:
        return str(json_format.MessageToJson(status, indent=None)).encode()
    return bytes(status.SerializeToString())


def peer(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)


# The reason (metric label) of each refusal status, unless the refusal names its own.
_REASON_OF_STATUS = {
    HTTPStatus.BAD_REQUEST: Reason.BAD_REQUEST, HTTPStatus.UNAUTHORIZED: Reason.UNAUTHENTICATED,
    HTTPStatus.NOT_FOUND: Reason.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED: Reason.METHOD_NOT_ALLOWED,
    HTTPStatus.REQUEST_TIMEOUT: Reason.BODY_TIMEOUT, HTTPStatus.LENGTH_REQUIRED: Reason.LENGTH_REQUIRED,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: Reason.TOO_LARGE, HTTPStatus.UNSUPPORTED_MEDIA_TYPE:
    Reason.UNSUPPORTED_MEDIA_TYPE, HTTPStatus.SERVICE_UNAVAILABLE: Reason.SATURATED,
}
# The answer to a refusal of the shared export path: HTTP status and google.rpc code (the OTLP/HTTP spec).
_ANSWER_OF_REASON = {
    Reason.BAD_REQUEST: (HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT),
    Reason.TOO_LARGE: (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, code_pb2.RESOURCE_EXHAUSTED),
    Reason.BROKER_UNAVAILABLE: (HTTPStatus.SERVICE_UNAVAILABLE, code_pb2.UNAVAILABLE),
    Reason.SATURATED: (HTTPStatus.SERVICE_UNAVAILABLE, code_pb2.UNAVAILABLE),
    Reason.NOT_FOUND: (HTTPStatus.NOT_FOUND, code_pb2.NOT_FOUND),
}


class _Refusal(Exception):
    """Internal control flow: answer ``status`` with a Status body and stop handling the request."""

    def __init__(self, status: HTTPStatus, code: int, message: str, headers: Mapping[str, str] | None = None,
                 reason: Reason | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, dict(headers or {})
        self.reason = reason or _REASON_OF_STATUS.get(status, Reason.BAD_REQUEST)


class _DeadlineReader(io.RawIOBase):
    """Socket reads that fail with ``TimeoutError`` once ``deadline`` (monotonic s) has passed.

    A socket timeout bounds each read, not the request: one byte every 20 s kept a request open forever.
    Every read gets the time left until the deadline as its timeout instead.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class Handler(BaseHTTPRequestHandler):
    server: IngestServer
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse their connection
    # Headers and body go out in two sends: with Nagle on, the body waits for the client's delayed
    # ACK (~40 ms per answer on a kept-alive connection, found by tests/test_suite_bad_input_ingest.py).
    disable_nagle_algorithm = True
    timeout = SEND_TIMEOUT_S  # reads set their own deadline (_DeadlineReader); this bounds writes
    _body_unread = False  # the request announced a body that was not read (yet)
    _signal: Signal | None = None  # the signal of the POST being handled
    _expect_100 = False  # the client waits for "100 Continue" before sending its body

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self._reader = _DeadlineReader(self.connection)
        self.rfile: io.BufferedReader = io.BufferedReader(self._reader, 65536)

    def handle_one_request(self) -> None:
        limits = self.server.limits
        self._reader.deadline = time.monotonic() + limits.idle_timeout_s
        self._body_unread = self._expect_100 = False
        self._signal = None
        self.server.connections.waits(self.connection)
        try:
            if not self.rfile.peek(1):
                self.close_connection = True
                return
        except OSError:  # idle past the timeout, or reset: not worth a warning
            self.close_connection = True
            return
        self._reader.deadline = time.monotonic() + limits.head_timeout_s
        super().handle_one_request()

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if not self.server.connections.works(self.connection):
            self.close_connection = True  # evicted while its head arrived
            return False
        return parsed

    def handle_expect_100(self) -> bool:
        self._expect_100 = True  # answered only once the headers are accepted (_read_body)
        return True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def log_error(self, format: str, *args: Any) -> None:  # malformed requests, header timeouts
        self.server.intake.metrics.refused("http", Reason.MALFORMED.value)
        self.server.refusals.warn("ingest: refused a request from %s: " + format, peer(self.client_address), *args)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in (HEALTH_PATH, METRICS_PATH):
            self._body_unread = self._announces_body()
            self.close_connection = self.close_connection or self._body_unread
            if path == HEALTH_PATH:
                self._reply(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            else:
                self._reply(HTTPStatus.OK, self.server.intake.metrics.exposition(), METRICS_CONTENT_TYPE)
            self._linger_if_unread()
            return
        self._not_allowed()

    def do_HEAD(self) -> None:
        if urlsplit(self.path).path == HEALTH_PATH:
            self.close_connection = self.close_connection or self._announces_body()
            self._reply(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8", head_only=True)
            return
        self._not_allowed(head_only=True)

    # Everything but POST on a signal's path and GET/HEAD on the health and metrics paths.
    def _not_allowed(self, head_only: bool = False) -> None:
        self._body_unread = self._announces_body()
        path = urlsplit(self.path).path
        if path in _SIGNAL_OF_PATH:
            refusal = _Refusal(HTTPStatus.METHOD_NOT_ALLOWED, code_pb2.UNIMPLEMENTED,
                               f"{self.command} is not allowed on {path}; use POST", {"Allow": "POST"})
        else:
            refusal = _Refusal(HTTPStatus.NOT_FOUND, code_pb2.NOT_FOUND, f"no such path; {_PATHS_TEXT}")
        self._refuse(refusal, head_only=head_only)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def do_POST(self) -> None:
        self._body_unread = self._announces_body()
        content_type = self._content_type()
        try:
            self._post(content_type)
        except _Refusal as refusal:
            self._refuse(refusal, content_type)

    def _post(self, content_type: str) -> None:
        server = self.server
        received_ns = server.clock_ns()  # the request's head has arrived: its receive time
        signal = _SIGNAL_OF_PATH.get(urlsplit(self.path).path)
        if signal is None:
            raise _Refusal(HTTPStatus.NOT_FOUND, code_pb2.NOT_FOUND, f"no such path; {_PATHS_TEXT}")
        self._signal = signal
        length = self._content_length()
        tenant = server.intake.tenant_of(self.headers.get(API_KEY_HEADER), self.headers.get("Authorization"))
        if tenant is None:
            raise _Refusal(HTTPStatus.UNAUTHORIZED, code_pb2.UNAUTHENTICATED,
                           f"missing or unknown API key ({API_KEY_HEADER} header or Authorization: Bearer)")
        if length > server.limits.max_body_bytes:
            raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, code_pb2.RESOURCE_EXHAUSTED,
                           f"body of {length} bytes exceeds the limit of {server.limits.max_body_bytes} bytes")
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        if not content_type or encoding not in _ENCODINGS:
            raise _Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, code_pb2.INVALID_ARGUMENT,
                           f"Content-Type must be {PROTOBUF} or {JSON}" if not content_type else
                           f"Content-Encoding {encoding!r} is not supported; use gzip or none")
        if not server.inflight.acquire(blocking=False):
            raise _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, code_pb2.UNAVAILABLE, "receiver saturated",
                           {"Retry-After": str(server.retry_after_s)}, Reason.SATURATED)
        try:
            raw = self._read_body(length)
            server.intake.metrics.received("http", signal.name, len(raw))
            self._ingest(signal, self._inflate(raw, encoding), tenant, content_type, received_ns)
        finally:
            server.inflight.release()

    def _ingest(self, signal: Signal, body: bytes, tenant: str, content_type: str, received_ns: int) -> None:
        server = self.server
        try:
            ready = server.intake.export(signal, body, tenant=tenant, fmt="json" if content_type == JSON else "proto",
                                         received_ns=received_ns)
        except Refused as refused:
            status, code = _ANSWER_OF_REASON[refused.reason]
            retry = {"Retry-After": str(server.retry_after_s)} if status == HTTPStatus.SERVICE_UNAVAILABLE else None
            raise _Refusal(status, code, refused.message, retry, refused.reason) from None
        server.stats.add(HTTPStatus.OK, ready.accepted, ready.rejected, 1 if ready.accepted else 0)
        server.intake.metrics.answered("http", signal.name, "partial" if ready.rejected else "ok")
        self._reply(HTTPStatus.OK, signal_response(signal, ready.rejected, ready.error_message, content_type),
                    content_type)

    def _content_type(self) -> str:
        """The canonical request media type (``PROTOBUF`` / ``JSON``), or "" when it is neither."""
        media = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        return _MEDIA_TYPES.get(media, "")

    def _announces_body(self) -> bool:
        """Whether the client may send body bytes after the headers."""
        lengths = self.headers.get_all("Content-Length") or []
        return bool(self.headers.get_all("Transfer-Encoding")) or any(v.strip(" \t") != "0" for v in lengths)

    def _content_length(self) -> int:
        """The body's length: exactly one Content-Length of ASCII digits and no Transfer-Encoding.

        Anything else is refused: a proxy in front may frame the request differently (request smuggling).
        """
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get_all("Transfer-Encoding"):
            if lengths:
                raise _Refusal(HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT,
                               "both Transfer-Encoding and Content-Length: refused (the framing is ambiguous)")
            raise _Refusal(HTTPStatus.LENGTH_REQUIRED, code_pb2.INVALID_ARGUMENT, "Content-Length is required")
        if not lengths:
            raise _Refusal(HTTPStatus.LENGTH_REQUIRED, code_pb2.INVALID_ARGUMENT, "Content-Length is required")
        if len(lengths) > 1:
            raise _Refusal(HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT, "more than one Content-Length")
        raw = lengths[0].strip(" \t")
        if not _DIGITS.fullmatch(raw):
            raise _Refusal(HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT,
                           f"bad Content-Length {raw[:40]!r}: not a decimal number")
        return int(raw) if len(raw) <= 18 else 10**18  # past any limit either way; int() caps digits

    def _read_body(self, length: int) -> bytes:
        if self._expect_100:
            self.send_response_only(HTTPStatus.CONTINUE)
            self.end_headers()
        allowed_s = self.server.limits.body_deadline_s(length)
        self._reader.deadline = time.monotonic() + allowed_s
        try:
            raw = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            self._body_unread = False  # a slow client gets no lingering
            raise _Refusal(HTTPStatus.REQUEST_TIMEOUT, code_pb2.DEADLINE_EXCEEDED,
                           f"body of {length} bytes not received within {allowed_s:.1f} s (at least "
                           f"{self.server.limits.min_upload_bytes_per_s:.0f} bytes/s)") from None
        self._body_unread = False
        if len(raw) != length:
            self.close_connection = True
            raise _Refusal(HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT, "body shorter than Content-Length")
        return raw

    def _inflate(self, raw: bytes, encoding: str) -> bytes:
        limit = self.server.limits.max_body_bytes
        try:
            return inflate(raw, encoding, limit)
        except OverflowError:
            raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, code_pb2.RESOURCE_EXHAUSTED,
                           f"decompressed body exceeds the limit of {limit} bytes") from None
        except BadPayload as exc:
            raise _Refusal(HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT, str(exc)) from None

    def _refuse(self, refusal: _Refusal, content_type: str = "", head_only: bool = False) -> None:
        """Answer ``refusal``; when the body was not read, close the connection (lingering briefly)."""
        server = self.server
        server.stats.add(refusal.status)
        server.intake.refused("http", refusal.reason, f"{self.command} {self.path[:200]!r}", peer(self.client_address),
                              int(refusal.status), refusal.message)
        if self._signal is not None:
            server.intake.metrics.answered("http", self._signal.name, "refused")
        if self._body_unread or refusal.status == HTTPStatus.UNAUTHORIZED:
            self.close_connection = True  # nobody without a key keeps a connection
        kind = content_type or PROTOBUF
        self._reply(refusal.status, status_body(refusal.code, refusal.message, kind), kind, refusal.headers,
                    head_only=head_only)
        self._linger_if_unread()

    def _linger_if_unread(self) -> None:
        """After answering a request whose body was not read: stop sending, drop what arrives for a moment
        (``LINGER_S``, ``LINGER_BYTES``), then let the connection close."""
        if not self._body_unread:
            return
        self.close_connection = True
        self._reader.deadline = time.monotonic() + LINGER_S
        self.server.connections.lingers(self.connection)  # the first to go when connections run out
        budget = LINGER_BYTES
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while budget > 0 and (chunk := self.rfile.read1(min(budget, 65536))):
                budget -= len(chunk)
        except OSError:
            pass

    def _reply(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None,
               head_only: bool = False) -> None:
        self.connection.settimeout(SEND_TIMEOUT_S)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head_only:
            self.wfile.write(body)
