"""OTLP/HTTP logs receiver: ``POST /v1/logs`` -> one message on the logs topic per accepted request.

The edge of the product for apps that speak OTLP/HTTP (the OpenTelemetry SDKs' ``OTLPLogExporter``,
a Collector's ``otlphttp`` exporter). Per the OTLP spec (opentelemetry-proto ``docs/specification.md``,
"OTLP/HTTP"):

- binary protobuf (``application/x-protobuf``) and JSON Protobuf encoding (``application/json``) on the
  same port, optionally ``Content-Encoding: gzip`` (or ``deflate``); the response uses the request's
  content type;
- 200 with an ``ExportLogsServiceResponse``: empty on full success, ``partial_success`` with
  ``rejected_log_records`` and an ``error_message`` when some records could not be decoded;
- failures carry a ``google.rpc.Status``: 400 bad payload, 401 missing/unknown API key, 404/405 wrong
  path/method, 411 no Content-Length, 413 body over the limit (compressed or decompressed), 415 unknown
  content type or encoding, 503 with ``Retry-After`` when the broker did not acknowledge or the
  receiver is saturated (the client retries; nothing is dropped silently).

Tenants never mix: the ``x-logclaw-api-key`` header names the tenant, and ``tenant.id`` on every
resource is set to it, whatever the client sent. The request is decoded with the job's codec (records
it cannot decode are the rejected ones), re-encoded as protobuf and produced as ONE message to the
logs topic (key = tenant, timestamp = the newest record's event time in ms); the answer waits for the
broker's acknowledgement (at-least-once: a client retry after a lost answer can duplicate a message).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import yaml
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from connectors.otlp import decode_logs, encode_logs_proto
from udfs.records import Attributes, DecodeError, LogRecord

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_MAX_BODY_BYTES",
    "LOGS_PATH",
    "BadPayload",
    "IngestServer",
    "Ingested",
    "KafkaLogsProducer",
    "LogsProducer",
    "ProduceError",
    "load_api_keys",
    "prepare",
]

log = logging.getLogger(__name__)

LOGS_PATH = "/v1/logs"
API_KEY_HEADER = "x-logclaw-api-key"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024  # a refused body up to this size is read and dropped (keeps the connection)
PROTOBUF, JSON = "application/x-protobuf", "application/json"
_MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}
_MAX_MESSAGE_CHARS = 1000


class BadPayload(ValueError):
    """The request body cannot be read as an ``ExportLogsServiceRequest`` at all (HTTP 400)."""


class ProduceError(RuntimeError):
    """The broker did not acknowledge the message; ``too_large`` when it never will (HTTP 413, else 503)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class LogsProducer(Protocol):
    """Where accepted requests go: one message per request, acknowledged before ``send`` returns."""

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None: ...


# --- API keys -------------------------------------------------------------------------------------------


def load_api_keys(path: Path) -> dict[str, str]:
    """``{api_key: tenant}`` from a JSON or YAML file; raises ValueError naming the file when malformed."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: neither JSON nor YAML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty mapping of api_key: tenant")
    keys: dict[str, str] = {}
    for key, tenant in data.items():
        if not isinstance(key, str) or not key.strip() or not isinstance(tenant, str) or not tenant.strip():
            raise ValueError(f"{path}: every api key and tenant must be a non-empty string (entry {key!r})")
        keys[key.strip()] = tenant.strip()
    return keys


def tenant_of(keys: Mapping[str, str], presented: str | None) -> str | None:
    """The tenant of ``presented`` (constant-time comparison against every key), or None."""
    if not presented:
        return None
    given = presented.strip().encode("utf-8", "surrogateescape")
    found = None
    for key, tenant in keys.items():
        if hmac.compare_digest(key.encode("utf-8"), given):
            found = tenant
    return found


# --- payload: decode, set the tenant, re-encode ----------------------------------------------------------


class Ingested(NamedTuple):
    """One request made ready for the logs topic; ``payload`` is b"" when no record was accepted."""

    payload: bytes
    timestamp_ms: int  # the newest accepted record's event time
    accepted: int
    rejected: int
    error_message: str  # why records were rejected ("" when none was)


def prepare(body: bytes, *, tenant: str, fmt: str, received_unix_nano: int, max_body_bytes: int) -> Ingested:
    """Decode ``body`` (``fmt`` "proto" or "json"), stamp ``tenant`` on every resource, re-encode as protobuf.

    Records without any timestamp get ``received_unix_nano`` (the edge's arrival time, as a Collector's
    observed time). Bodies are not cut here (``max_body_bytes`` is the request limit): the job applies
    its own limit. Raises ``BadPayload`` when the message as a whole cannot be read.
    """
    if not body:
        return Ingested(b"", 0, 0, 0, "")  # the spec: an empty request is a success
    decoded = decode_logs(body, fmt=fmt, max_body_bytes=max_body_bytes, default_time_unix_nano=received_unix_nano)
    whole = [e for e in decoded.errors if e.index == -1]
    if whole:
        raise BadPayload(f"not an OTLP ExportLogsServiceRequest ({whole[0].reason}): {whole[0].detail}")
    records = with_tenant(decoded.records, tenant)
    payload, unencodable = _encode(records)
    accepted = len(records) - len(unencodable)
    errors = list(decoded.errors) + [
        DecodeError("out_of_range", "a number does not fit its protobuf field (e.g. beyond int64)", -1)
        for _ in unencodable
    ]
    skipped = {id(r) for r in unencodable}
    newest = max((r.time_ms for r in records if id(r) not in skipped), default=0)
    return Ingested(payload if accepted else b"", newest, accepted, len(errors),
                    rejection_message(errors, accepted + len(errors)))


def with_tenant(records: Sequence[LogRecord], tenant: str) -> list[LogRecord]:
    """``records`` with ``tenant`` and ``tenant.id`` = ``tenant`` in their resource attributes."""
    memo: dict[int, Attributes] = {}  # one new mapping per resource (the codec shares them across records)
    out = []
    for rec in records:
        attrs = memo.get(id(rec.resource_attributes))
        if attrs is None:
            attrs = MappingProxyType({**rec.resource_attributes, "tenant.id": tenant})
            memo[id(rec.resource_attributes)] = attrs
        out.append(rec._replace(tenant=tenant, resource_attributes=attrs))
    return out


def _runs(records: Sequence[LogRecord]) -> Iterator[list[LogRecord]]:
    """Consecutive records of one (resource, scope): the request's own grouping, kept as is."""
    run: list[LogRecord] = []
    for rec in records:
        if run and not (rec.resource_attributes is run[0].resource_attributes
                        and rec.scope_attributes is run[0].scope_attributes and rec.scope_name == run[0].scope_name):
            yield run
            run = []
        run.append(rec)
    if run:
        yield run


def _encode(records: Sequence[LogRecord]) -> tuple[bytes, list[LogRecord]]:
    """Protobuf bytes of ``records`` and the records that cannot be encoded (numbers beyond their field).

    Each run is encoded on its own and the bytes concatenated: parsing concatenated messages appends
    their repeated fields, so two resources with equal (tenant, service) keep their own attributes.
    """
    parts: list[bytes] = []
    bad: list[LogRecord] = []
    for run in _runs(records):
        try:
            parts.append(encode_logs_proto(run))
        except ValueError:
            for rec in run:
                try:
                    parts.append(encode_logs_proto([rec]))
                except ValueError:
                    bad.append(rec)
    return b"".join(parts), bad


def rejection_message(errors: Sequence[DecodeError], total: int) -> str:
    """Why records were rejected, one clause per reason with its first example; "" when none was."""
    if not errors:
        return ""
    counts = Counter(e.reason for e in errors)
    first: dict[str, DecodeError] = {}
    for e in errors:
        first.setdefault(e.reason, e)
    clauses = []
    for reason, n in counts.most_common():
        example = first[reason]
        where = f"record {example[2]}: " if example[2] >= 0 else ""
        clauses.append(f"{reason} x{n} ({where}{example.detail})")
    text = f"{len(errors)} of {total} log records rejected: " + "; ".join(clauses)
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + "..."


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """``data`` decoded per ``Content-Encoding`` with at most ``limit`` bytes of output.

    Raises ``OverflowError`` past ``limit``, ``LookupError`` for an unknown encoding and ``BadPayload``
    for a corrupt stream. Concatenated gzip members (allowed by RFC 1952) are all read; "deflate" is
    the zlib format (RFC 9110), raw deflate is accepted too.
    """
    if encoding in ("", "identity"):
        return data
    if encoding in ("gzip", "x-gzip"):
        wbits = 31
    elif encoding == "deflate":
        wbits = 15 if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0 else -15
    else:
        raise LookupError(encoding)
    out = bytearray()
    rest = data
    for _ in range(len(data)):  # every member consumes input: bounded
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))  # max_length >= 1 here (0 = unbounded)
        except zlib.error as exc:
            raise BadPayload(f"body is not valid {encoding}: {exc}") from None
        if len(out) > limit:
            raise OverflowError(limit)
        if not inflater.eof:
            raise BadPayload(f"body is truncated {encoding}")
        rest = inflater.unused_data
        if not rest or wbits != 31:
            break
    return bytes(out)


# --- responses -------------------------------------------------------------------------------------------


def export_response(rejected: int, error_message: str, content_type: str) -> bytes:
    """An ``ExportLogsServiceResponse``; ``partial_success`` only when records were rejected."""
    response = logs_service_pb2.ExportLogsServiceResponse()
    if rejected or error_message:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = error_message
    if content_type == JSON:
        return str(json_format.MessageToJson(response, indent=None)).encode()
    return bytes(response.SerializeToString())


def status_body(code: int, message: str, content_type: str) -> bytes:
    """A ``google.rpc.Status`` (the OTLP/HTTP body of every 4xx/5xx)."""
    status = status_pb2.Status(code=code, message=message)
    if content_type == JSON:
        return str(json_format.MessageToJson(status, indent=None)).encode()
    return bytes(status.SerializeToString())


# --- the Kafka producer ----------------------------------------------------------------------------------


class KafkaLogsProducer:
    """Idempotent confluent-kafka producer; ``send`` blocks until the broker acknowledged (or raises)."""

    def __init__(self, bootstrap_servers: str, topic: str, *, timeout_s: float = 10.0,
                 max_message_bytes: int = DEFAULT_MAX_BODY_BYTES + 65536) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": int(timeout_s * 1000),
            "message.max.bytes": max_message_bytes,
        })

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        from confluent_kafka import KafkaError, KafkaException

        done = threading.Event()
        outcome: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            outcome.append(err)
            done.set()

        try:
            self._producer.produce(self.topic, value=value, key=key, timestamp=timestamp_ms, on_delivery=delivered)
        except BufferError as exc:
            raise ProduceError(f"producer queue full: {exc}") from exc
        except KafkaException as exc:
            err = exc.args[0]
            raise ProduceError(f"produce to {self.topic} failed: {err.str()}",
                               too_large=err.code() == KafkaError.MSG_SIZE_TOO_LARGE) from exc
        deadline = time.monotonic() + self.timeout_s + 5.0  # librdkafka reports a timeout itself first
        while not done.is_set() and time.monotonic() < deadline:
            self._producer.poll(0.05)  # serves any thread's callbacks; each sets its own event
        if not done.is_set():
            raise ProduceError(f"{self.topic}: no acknowledgement within {self.timeout_s} s")
        err = outcome[0]
        if err is not None:
            raise ProduceError(f"{self.topic}: {err.str()}", too_large=err.code() == KafkaError.MSG_SIZE_TOO_LARGE)

    def close(self) -> None:
        self._producer.flush(self.timeout_s)


# --- the HTTP server -------------------------------------------------------------------------------------


class IngestStats:
    """Counters since start (thread-safe): requests by status, records accepted/rejected, messages sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_status: Counter[int] = Counter()
        self.accepted = self.rejected = self.messages = 0

    def add(self, status: int, accepted: int = 0, rejected: int = 0, messages: int = 0) -> None:
        with self._lock:
            self.by_status[int(status)] += 1
            self.accepted += accepted
            self.rejected += rejected
            self.messages += messages


class IngestServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` answering ``POST /v1/logs``; ``serve_forever()`` until ``shutdown()``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, keys: Mapping[str, str], producer: LogsProducer,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, retry_after_s: int = 5, max_inflight: int = 32,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        if not keys:
            raise ValueError("at least one api key is required")
        self.keys = dict(keys)
        self.producer = producer
        self.max_body_bytes = max_body_bytes
        self.retry_after_s = retry_after_s
        self.clock_ns = clock_ns
        self.inflight = threading.BoundedSemaphore(max_inflight)
        self.stats = IngestStats()
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{LOGS_PATH}"


class _Refusal(Exception):
    """Internal control flow: answer ``status`` with a Status body and stop handling the request."""

    def __init__(self, status: HTTPStatus, code: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, dict(headers or {})


class _Handler(BaseHTTPRequestHandler):
    server: IngestServer
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse their connection
    timeout = 30  # seconds a connection may stay silent (idle keep-alive, slow senders)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # Everything but POST on the logs path.
    def _not_allowed(self) -> None:
        self._drain_or_close()
        if urlsplit(self.path).path == LOGS_PATH:
            self._refuse(_Refusal(HTTPStatus.METHOD_NOT_ALLOWED, code_pb2.UNIMPLEMENTED,
                                  f"{self.command} is not allowed on {LOGS_PATH}; use POST", {"Allow": "POST"}))
        else:
            self._refuse(_Refusal(HTTPStatus.NOT_FOUND, code_pb2.NOT_FOUND, f"no such path; logs go to {LOGS_PATH}"))

    do_GET = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def do_HEAD(self) -> None:
        self._drain_or_close()
        if urlsplit(self.path).path == LOGS_PATH:
            self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
            self.send_header("Allow", "POST")
        else:
            self.send_response(HTTPStatus.NOT_FOUND)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        content_type = self._content_type()
        if not self.server.inflight.acquire(blocking=False):
            self._drain_or_close()
            self._refuse(_Refusal(HTTPStatus.SERVICE_UNAVAILABLE, code_pb2.UNAVAILABLE, "receiver saturated",
                                  {"Retry-After": str(self.server.retry_after_s)}), content_type)
            return
        try:
            status = self._post(content_type)
        except _Refusal as refusal:
            self._refuse(refusal, content_type)
            status = refusal.status
        finally:
            self.server.inflight.release()
        if status >= 400:
            log.info("%s %s -> %d", self.command, self.path, status)

    def _post(self, content_type: str) -> int:
        server = self.server
        if urlsplit(self.path).path != LOGS_PATH:
            self._drain_or_close()
            raise _Refusal(HTTPStatus.NOT_FOUND, code_pb2.NOT_FOUND, f"no such path; logs go to {LOGS_PATH}")
        tenant = tenant_of(server.keys, self.headers.get(API_KEY_HEADER))
        if tenant is None:
            self._drain_or_close()
            raise _Refusal(HTTPStatus.UNAUTHORIZED, code_pb2.UNAUTHENTICATED,
                           f"missing or unknown {API_KEY_HEADER} header")
        length = self._content_length()
        if length > server.max_body_bytes:
            self._drain_or_close(length)
            raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, code_pb2.RESOURCE_EXHAUSTED,
                           f"body of {length} bytes exceeds the limit of {server.max_body_bytes} bytes")
        raw = self.rfile.read(length)
        if len(raw) != length:
            self.close_connection = True
            raise _Refusal(HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT, "body shorter than Content-Length")
        if not content_type:
            raise _Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, code_pb2.INVALID_ARGUMENT,
                           f"Content-Type must be {PROTOBUF} or {JSON}")
        body = self._inflate(raw)
        try:
            ready = prepare(body, tenant=tenant, fmt="json" if content_type == JSON else "proto",
                            received_unix_nano=server.clock_ns(), max_body_bytes=server.max_body_bytes)
        except BadPayload as exc:
            raise _Refusal(HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT, str(exc)) from None
        if ready.accepted:
            try:
                server.producer.send(tenant.encode("utf-8"), ready.payload, ready.timestamp_ms)
            except ProduceError as exc:
                log.warning("ingest: not acknowledged (%d records of tenant %s): %s", ready.accepted, tenant, exc)
                if exc.too_large:
                    raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, code_pb2.RESOURCE_EXHAUSTED,
                                   f"the broker refuses a message this large; send smaller batches ({exc})") from None
                raise _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, code_pb2.UNAVAILABLE,
                               f"the log broker did not acknowledge; retry later ({exc})",
                               {"Retry-After": str(server.retry_after_s)}) from None
        server.stats.add(HTTPStatus.OK, ready.accepted, ready.rejected, 1 if ready.accepted else 0)
        self._reply(HTTPStatus.OK, export_response(ready.rejected, ready.error_message, content_type), content_type)
        return HTTPStatus.OK

    def _content_type(self) -> str:
        """The canonical request media type (``PROTOBUF`` / ``JSON``), or "" when it is neither."""
        media = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        return _MEDIA_TYPES.get(media, "")

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            raise _Refusal(HTTPStatus.LENGTH_REQUIRED, code_pb2.INVALID_ARGUMENT, "Content-Length is required")
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise _Refusal(HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT, f"bad Content-Length {raw!r}")
        return length

    def _inflate(self, raw: bytes) -> bytes:
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        limit = self.server.max_body_bytes
        try:
            return inflate(raw, encoding, limit)
        except LookupError:
            raise _Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, code_pb2.INVALID_ARGUMENT,
                           f"Content-Encoding {encoding!r} is not supported; use gzip or none") from None
        except OverflowError:
            raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, code_pb2.RESOURCE_EXHAUSTED,
                           f"decompressed body exceeds the limit of {limit} bytes") from None
        except BadPayload as exc:
            raise _Refusal(HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT, str(exc)) from None

    def _drain_or_close(self, length: int | None = None) -> None:
        """Read and drop an unread body so the connection stays usable; close when it is too big to."""
        if length is None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                length = -1
        if length < 0 or length > DRAIN_LIMIT_BYTES:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _refuse(self, refusal: _Refusal, content_type: str = "") -> None:
        self.server.stats.add(refusal.status)
        kind = content_type or PROTOBUF
        self._reply(refusal.status, status_body(refusal.code, refusal.message, kind), kind, refusal.headers)

    def _reply(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
