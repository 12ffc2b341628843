"""OTLP/HTTP logs receiver: ``POST /v1/logs`` -> one message on the logs topic per accepted request.

The edge of the product for apps that speak OTLP/HTTP (the OpenTelemetry SDKs' ``OTLPLogExporter``,
a Collector's ``otlphttp`` exporter). Per the OTLP spec (opentelemetry-proto ``docs/specification.md``,
"OTLP/HTTP"):

- binary protobuf (``application/x-protobuf``) and JSON Protobuf encoding (``application/json``) on the
  same port, optionally ``Content-Encoding: gzip`` (or ``deflate``); the response uses the request's
  content type;
- 200 with an ``ExportLogsServiceResponse``: empty on full success, ``partial_success`` with
  ``rejected_log_records`` and an ``error_message`` when some records could not be decoded;
- failures carry a ``google.rpc.Status``: 400 bad payload or ambiguous framing, 401 missing/unknown API
  key, 404/405 wrong path/method, 408 body not received in time, 411 no Content-Length, 413 over a limit
  (body, decompressed body, records per request, re-encoded size), 415 unknown content type or encoding,
  503 with ``Retry-After`` when the broker did not acknowledge or the receiver is saturated (the client
  retries; nothing is dropped silently). ``GET /healthz`` answers 200 without a key (probes).

Tenants never mix: the ``x-logclaw-api-key`` header names the tenant, and ``tenant.id`` on every
resource is set to it, whatever the client sent. The request is decoded with the job's codec (records
it cannot decode are the rejected ones), re-encoded as protobuf and produced as ONE message to the
logs topic (key = tenant, timestamp = the newest record's event time in ms); the answer waits for the
broker's acknowledgement (at-least-once: a client retry after a lost answer can duplicate a message).

Nobody without a key costs more than reading headers: path, framing, key, size and type are checked on
the headers alone, and a refused request is answered and its connection closed without reading its body.
Every connection has total deadlines (idle, headers, body at a minimum rate), connections are capped, and
a processing slot is taken only by a keyed request whose body is about to be read. Refusals are logged
at WARNING (reason and peer, never the key), at most ``REFUSAL_WARNINGS_PER_S`` a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import orjson
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError as PbDecodeError
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from connectors.otlp import decode_logs, encode_logs_proto
from udfs.records import Attributes, DecodeError, LogRecord

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_RECORDS",
    "HEALTH_PATH",
    "LOGS_PATH",
    "ApiKeys",
    "BadPayload",
    "IngestLimits",
    "IngestServer",
    "Ingested",
    "KafkaLogsProducer",
    "LogsProducer",
    "PayloadTooLarge",
    "ProduceError",
    "check_api_keys",
    "load_api_keys",
    "prepare",
]

log = logging.getLogger(__name__)

LOGS_PATH = "/v1/logs"
HEALTH_PATH = "/healthz"
API_KEY_HEADER = "x-logclaw-api-key"
PROTOBUF, JSON = "application/x-protobuf", "application/json"
_MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}
_ENCODINGS = ("", "identity", "gzip", "x-gzip", "deflate")
_MAX_MESSAGE_CHARS = 1000

# --- limits: each bounds one resource a client can make the receiver spend ---------------------------------
# Request size: exporters batch far below this (SDK: 512 records; Collector batch processor: 8192 records,
# typically well under 4 MiB); it bounds memory per request, compressed and decompressed.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# Decoding costs about 8 us per record, whatever its size (1 MiB of empty protobuf records made 524 280
# of them: 4-10 CPU-s, 120-350 MiB). 32 768 records (~0.3 CPU-s) is 4x the Collector's default batch and
# 64x the SDK's; the count is taken from the envelope before anything is decoded.
DEFAULT_MAX_RECORDS = 32_768
# The re-encoded message may exceed the request a little (tenant.id on each resource, receive times):
# the producer is configured for max body + this (``logclaw ingest``), so anything bigger is refused
# here, before it costs the broker a round trip.
MESSAGE_HEADROOM_BYTES = 64 * 1024
# One thread and one socket per connection: the cap bounds both. At the cap a newcomer evicts a
# connection that is lingering after a refusal or waiting for a request (ConnectionTable); only when all
# are working does it get 503 + Retry-After at once. Far above the in-flight cap, so that is rare.
DEFAULT_MAX_CONNECTIONS = 256
# Requests whose body is being read, decoded or produced: bounds memory to about this many bodies
# (compressed + decompressed + decoded). Taken only after the key and the size were accepted.
DEFAULT_MAX_INFLIGHT = 32
# A kept-alive connection may wait this long for its next request (exporters send every 1-5 s).
IDLE_TIMEOUT_S = 30.0
# Request line and headers, in total, from their first byte: a well-behaved client sends them in one
# packet; one that trickles them is holding a connection (slow-loris).
HEAD_TIMEOUT_S = 10.0
# Body deadline = grace + length / minimum rate: a 4 MiB body gets 74 s, while a client announcing a big
# body and sending a byte now and then is cut off (a per-read timeout alone never fired).
BODY_GRACE_S = 10.0
MIN_UPLOAD_BYTES_PER_S = 64 * 1024
# After a refusal with the body unread: stop sending, read and drop what is already in flight for a
# moment, then close. Closing with unread data sends a reset, which can destroy the answer before the
# client reads it; a refused client gets at most this much of our time.
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024
# Connections the kernel queues until they are accepted. socketserver's 5 dropped the SYN of every
# sixth connection of a burst (the client retries after 1 s); the kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 512
# Writing an answer: the client must take our few bytes within this.
SEND_TIMEOUT_S = 10.0
# Refusals logged per second, the rest counted into the next line: a flood of refused requests must
# not become a flood of log lines.
REFUSAL_WARNINGS_PER_S = 10
# The first slice of a gzip member fed to zlib (it doubles while the member lasts); see _inflate_member.
GZIP_FIRST_SLICE_BYTES = 256
# API keys are bearer secrets: 16 printable characters are the least that cannot be guessed online
# (secrets.token_urlsafe(18), the demo key, has 24).
MIN_API_KEY_CHARS = 16
# Tenant names go into Kafka keys, composite state keys, index names and tickets: letters, digits and
# . _ - only (no separator such as | : / that could make two tenants' keys collide), at most 64.
MAX_TENANT_CHARS = 64
_TENANT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class IngestLimits:
    """The receiver's limits (see the constants above for the principle of each); checked at start-up."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_records: int = DEFAULT_MAX_RECORDS
    max_message_bytes: int = DEFAULT_MAX_BODY_BYTES + MESSAGE_HEADROOM_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    idle_timeout_s: float = IDLE_TIMEOUT_S
    head_timeout_s: float = HEAD_TIMEOUT_S
    body_grace_s: float = BODY_GRACE_S
    min_upload_bytes_per_s: float = MIN_UPLOAD_BYTES_PER_S

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"ingest limit {name} must be > 0, not {value!r}")

    def body_deadline_s(self, length: int) -> float:
        """Seconds a body of ``length`` bytes may take to arrive."""
        return self.body_grace_s + length / self.min_upload_bytes_per_s


class BadPayload(ValueError):
    """The request body cannot be read as an ``ExportLogsServiceRequest`` at all (HTTP 400)."""


class PayloadTooLarge(ValueError):
    """The request is within the size limit but over another one (records, re-encoded size): HTTP 413."""


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
    """``{api_key: tenant}`` from a JSON or YAML file, every entry checked (see ``check_api_keys``).

    Raises ValueError naming the file (and the entry or its tenant), never quoting a key.
    """
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:  # its str() quotes the offending line, which holds a key
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"{path}: neither JSON nor YAML: {getattr(exc, 'problem', None) or 'syntax error'}"
                             f"{where}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty mapping of api_key: tenant")
    return check_api_keys(data, source=str(path))


def tenant_problem(tenant: object) -> str:
    """Why ``tenant`` is not a valid tenant name, or "" when it is."""
    if not isinstance(tenant, str):
        return "not a string"
    if not 1 <= len(tenant) <= MAX_TENANT_CHARS:
        return f"{len(tenant)} characters, not 1-{MAX_TENANT_CHARS}"
    bad = next((i for i, c in enumerate(tenant) if c not in _TENANT_CHARS), -1)
    if bad >= 0:
        return f"character {tenant[bad]!r} at position {bad + 1} is not allowed"
    return "" if tenant[0].isalnum() else "it must start with a letter or a digit"


def check_api_keys(entries: Mapping[Any, Any], *, source: str = "api keys") -> dict[str, str]:
    """``entries`` with keys stripped, or ValueError naming ``source`` and the entry or tenant, never the key.

    Tenants: ``TENANT_PATTERN`` (no separator a composite key such as ``tenant|service`` could be confused
    by). Keys: at least ``MIN_API_KEY_CHARS`` printable ASCII characters, no spaces, no two the same.
    """
    keys: dict[str, str] = {}
    entry_of: dict[str, int] = {}
    for n, (key, tenant) in enumerate(entries.items(), 1):
        problem = tenant_problem(tenant)
        if problem:
            raise ValueError(f"{source}: entry {n}: the tenant name is not valid: {problem}; use 1-{MAX_TENANT_CHARS}"
                             " characters of A-Z a-z 0-9 . _ - starting with a letter or a digit")
        if not isinstance(key, str):
            raise ValueError(f"{source}: entry {n} (tenant {tenant!r}): the api key is not a string (quote it)")
        key = key.strip()
        if len(key) < MIN_API_KEY_CHARS:
            raise ValueError(f"{source}: the api key of tenant {tenant!r} has fewer than {MIN_API_KEY_CHARS} "
                             "characters; use a random one, e.g. python -c 'import secrets; "
                             "print(secrets.token_urlsafe(24))'")
        if not all("!" <= c <= "~" for c in key):
            raise ValueError(f"{source}: the api key of tenant {tenant!r} may only contain printable ASCII "
                             "characters without spaces")
        if key in keys:
            raise ValueError(f"{source}: entries {entry_of[key]} and {n} have the same api key "
                             f"(tenants {keys[key]!r} and {tenant!r})")
        keys[key], entry_of[key] = tenant, n
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class ApiKeys:
    """Tenant by API key, keeping only the keys' SHA-256 digests (a heap dump or a repr shows no key).

    Keys are long random tokens (``MIN_API_KEY_CHARS``), so a plain hash needs no salt or stretching; the
    lookup compares digests, which tells a timing observer nothing about a key.
    """

    def __init__(self, keys: Mapping[str, str], *, source: str = "api keys") -> None:
        self._tenants = {_digest(key): tenant for key, tenant in check_api_keys(keys, source=source).items()}
        if not self._tenants:
            raise ValueError(f"{source}: at least one api key is required")

    @classmethod
    def from_file(cls, path: Path) -> ApiKeys:
        """``load_api_keys(path)`` without keeping the keys (for the ``ingest`` command)."""
        return cls(load_api_keys(path), source=str(path))

    def tenant_of(self, presented: str | None) -> str | None:
        """The tenant whose key is ``presented`` (surrounding spaces ignored), or None."""
        return self._tenants.get(_digest(presented.strip())) if presented else None

    def __len__(self) -> int:
        return len(self._tenants)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self)} keys; tenants {', '.join(sorted(set(self._tenants.values())))})"


# --- payload: count, decode, set the tenant, re-encode ---------------------------------------------------


class Ingested(NamedTuple):
    """One request made ready for the logs topic; ``payload`` is b"" when no record was accepted."""

    payload: bytes
    timestamp_ms: int  # the newest accepted record's event time
    accepted: int
    rejected: int
    error_message: str  # why records were rejected ("" when none was)


def prepare(body: bytes, *, tenant: str, fmt: str, received_unix_nano: int, max_body_bytes: int,
            max_records: int = DEFAULT_MAX_RECORDS, max_message_bytes: int | None = None) -> Ingested:
    """Decode ``body`` (``fmt`` "proto" or "json"), stamp ``tenant`` on every resource, re-encode as protobuf.

    Records without any timestamp get ``received_unix_nano`` (the edge's arrival time, as a Collector's
    observed time). Bodies are not cut here (``max_body_bytes`` is the request limit): the job applies
    its own limit. Raises ``BadPayload`` when the message as a whole cannot be read, ``PayloadTooLarge``
    when it holds more than ``max_records`` records (or resource/scope groups), counted before decoding,
    or when its re-encoding exceeds ``max_message_bytes`` (default: ``max_body_bytes`` + headroom).
    """
    if not body:
        return Ingested(b"", 0, 0, 0, "")  # the spec: an empty request is a success
    records_n, groups_n = count_records(body, fmt, stop_after=max_records)
    if records_n > max_records or groups_n > max_records:
        what = "log records" if records_n > max_records else "resource/scope groups"
        raise PayloadTooLarge(f"the request has {max(records_n, groups_n)} {what}; the limit is {max_records} per"
                              " request: send smaller batches")
    decoded = decode_logs(body, fmt=fmt, max_body_bytes=max_body_bytes, default_time_unix_nano=received_unix_nano)
    whole = [e for e in decoded.errors if e.index == -1]
    if whole:
        raise BadPayload(f"not an OTLP ExportLogsServiceRequest ({whole[0].reason}): {whole[0].detail}")
    records = with_tenant(decoded.records, tenant)
    limit = max_body_bytes + MESSAGE_HEADROOM_BYTES if max_message_bytes is None else max_message_bytes
    payload, unencodable = _encode(records, limit)
    accepted = len(records) - len(unencodable)
    errors = list(decoded.errors) + [
        DecodeError("out_of_range", "a number does not fit its protobuf field (e.g. beyond int64)", -1)
        for _ in unencodable
    ]
    skipped = {id(r) for r in unencodable}
    newest = max((r.time_ms for r in records if id(r) not in skipped), default=0)
    return Ingested(payload if accepted else b"", newest, accepted, len(errors),
                    rejection_message(errors, accepted + len(errors)))


def _count_view() -> Any:
    """A lenient view of ``ExportLogsServiceRequest`` that parses only the envelope: records stay bytes.

    As lenient as the codec's own parse (which keeps strings as bytes), so no record it would decode
    escapes the count, and as cheap as the framing: 4 MiB of empty records parse in about 0.1 s.
    """
    fdp = descriptor_pb2.FileDescriptorProto(name="logclaw_ingest_count.proto", package="logclaw.ingest",
                                             syntax="proto3")
    field_type = descriptor_pb2.FieldDescriptorProto
    repeated, message = field_type.LABEL_REPEATED, field_type.TYPE_MESSAGE
    for name, field, number, kind, type_name in (
        ("Scope", "log_records", 2, field_type.TYPE_BYTES, ""),
        ("Resource", "scope_logs", 2, message, ".logclaw.ingest.Scope"),
        ("Request", "resource_logs", 1, message, ".logclaw.ingest.Resource"),
    ):
        added = fdp.message_type.add(name=name).field.add(name=field, number=number, type=kind, label=repeated)
        if type_name:
            added.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logclaw.ingest.Request"))


_CountView = _count_view()


def count_records(body: bytes, fmt: str, *, stop_after: int) -> tuple[int, int]:
    """(log records, resource + scope groups) in ``body``, counted without decoding a record.

    Counting stops soon after either passes ``stop_after``; an envelope that cannot be read counts
    (0, 0) and is left to the codec to explain.
    """
    records = groups = 0
    if fmt == "json":
        try:
            doc = orjson.loads(body[3:] if body.startswith(b"\xef\xbb\xbf") else body)
        except orjson.JSONDecodeError:
            return 0, 0
        for resource in _json_items(doc, "resourceLogs", "resource_logs"):
            groups += 1
            for scope in _json_items(resource, "scopeLogs", "scope_logs"):
                groups += 1
                records += len(_json_items(scope, "logRecords", "log_records"))
                if records > stop_after or groups > stop_after:
                    return records, groups
        return records, groups
    try:
        view = _CountView.FromString(body)
    except PbDecodeError:
        return 0, 0
    for resource in view.resource_logs:
        groups += 1
        for scope in resource.scope_logs:
            groups += 1
            records += len(scope.log_records)
            if records > stop_after or groups > stop_after:
                return records, groups
    return records, groups


def _json_items(obj: Any, camel: str, snake: str) -> list[Any]:
    items = obj.get(camel, obj.get(snake)) if isinstance(obj, dict) else None
    return items if isinstance(items, list) else []


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


def _encode(records: Sequence[LogRecord], limit: int) -> tuple[bytes, list[LogRecord]]:
    """Protobuf bytes of ``records`` and the records that cannot be encoded (numbers beyond their field).

    Each run is encoded on its own and the bytes concatenated: parsing concatenated messages appends
    their repeated fields, so two resources with equal (tenant, service) keep their own attributes.
    That repeats a resource once per scope, so the output can outgrow the request: past ``limit`` bytes
    it raises ``PayloadTooLarge`` as soon as it knows.
    """
    runs = list(_runs(records))
    parts: list[bytes] = []
    bad: list[LogRecord] = []
    size = 0
    for run in runs:
        try:
            encoded = [encode_logs_proto(run)]
        except ValueError:
            encoded = []
            for rec in run:
                try:
                    encoded.append(encode_logs_proto([rec]))
                except ValueError:
                    bad.append(rec)
        parts += encoded
        size += sum(map(len, encoded))
        if size > limit:
            raise PayloadTooLarge(f"the request re-encoded for the logs topic exceeds {limit} bytes ({len(runs)}"
                                  " resource/scope groups repeat their attributes): send smaller batches")
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
    view = memoryview(data)
    start = 0
    while start < len(data):
        start = _inflate_member(view, start, zlib.decompressobj(wbits), out, limit, encoding)
        if wbits != 31:
            break  # one zlib/deflate stream; what follows it is ignored, as zlib itself does
    return bytes(out)


def _inflate_member(view: memoryview, start: int, inflater: Any, out: bytearray, limit: int, encoding: str) -> int:
    """Inflate the member at ``view[start:]`` into ``out``; the offset just past it.

    The input is fed in slices that double from ``GZIP_FIRST_SLICE_BYTES``: zlib copies whatever follows
    the end of a member into ``unused_data``, so feeding the whole rest at every member made many small
    members quadratic (2 MiB of empty ones: 5.7 CPU-s). Doubling keeps the copies within twice the member.
    """
    pos, step = start, GZIP_FIRST_SLICE_BYTES
    while True:
        piece = view[pos: pos + step]
        try:
            out += inflater.decompress(piece, limit + 1 - len(out))  # max_length >= 1 here (0 = unbounded)
        except zlib.error as exc:
            raise BadPayload(f"body is not valid {encoding}: {exc}") from None
        if len(out) > limit:
            raise OverflowError(limit)
        if inflater.eof:
            return pos + len(piece) - len(inflater.unused_data)
        pos += len(piece)
        if pos >= len(view):
            raise BadPayload(f"body is truncated {encoding}")
        step *= 2


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


class RefusalLog:
    """WARNING lines for refusals, at most ``per_s`` a second; the next line says how many were skipped."""

    def __init__(self, per_s: int = REFUSAL_WARNINGS_PER_S) -> None:
        self.per_s = per_s
        self._lock = threading.Lock()
        self._second, self._used, self._skipped = -1, 0, 0

    def warn(self, message: str, *args: object) -> None:
        with self._lock:
            second = int(time.monotonic())
            if second != self._second:
                self._second, self._used = second, 0
            if self._used >= self.per_s:
                self._skipped += 1
                return
            self._used += 1
            skipped, self._skipped = self._skipped, 0
        if skipped:
            message, args = message + " (%d earlier refusals not logged)", (*args, skipped)
        log.warning(message, *args)


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
    """``ThreadingHTTPServer`` answering ``POST /v1/logs`` and ``GET /healthz``; ``serve_forever()`` until
    ``shutdown()``. ``keys`` is ``{api_key: tenant}`` (kept as digests) or an ``ApiKeys``."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], *, keys: Mapping[str, str] | ApiKeys, producer: LogsProducer,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, retry_after_s: int = 5,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_records: int = DEFAULT_MAX_RECORDS, max_message_bytes: int | None = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, head_timeout_s: float = HEAD_TIMEOUT_S,
                 body_grace_s: float = BODY_GRACE_S, min_upload_bytes_per_s: float = MIN_UPLOAD_BYTES_PER_S,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.api_keys = keys if isinstance(keys, ApiKeys) else ApiKeys(keys)
        self.limits = IngestLimits(
            max_body_bytes=max_body_bytes, max_records=max_records,
            max_message_bytes=max_body_bytes + MESSAGE_HEADROOM_BYTES if max_message_bytes is None
            else max_message_bytes,
            max_connections=max_connections, max_inflight=max_inflight, idle_timeout_s=idle_timeout_s,
            head_timeout_s=head_timeout_s, body_grace_s=body_grace_s, min_upload_bytes_per_s=min_upload_bytes_per_s)
        self.producer = producer
        self.retry_after_s = retry_after_s
        self.clock_ns = clock_ns
        self.inflight = threading.BoundedSemaphore(max_inflight)
        self.connections = ConnectionTable(max_connections)
        self.stats = IngestStats()
        self.refusals = RefusalLog()
        super().__init__(address, _Handler)

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
        self.refusals.warn("ingest: refused a connection from %s -> 503: %s", _peer(client_address), message)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke (reset, timeout) is the client's business; anything else is a bug."""
        if isinstance(sys.exc_info()[1], OSError):
            log.debug("ingest: connection from %s ended: %s", _peer(client_address), sys.exc_info()[1])
        else:
            log.exception("ingest: error while serving %s", _peer(client_address))


def _peer(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)


class _Refusal(Exception):
    """Internal control flow: answer ``status`` with a Status body and stop handling the request."""

    def __init__(self, status: HTTPStatus, code: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, dict(headers or {})


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


class _Handler(BaseHTTPRequestHandler):
    server: IngestServer
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse their connection
    timeout = SEND_TIMEOUT_S  # reads set their own deadline (_DeadlineReader); this bounds writes
    _body_unread = False  # the request announced a body that was not read (yet)
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
        self.server.refusals.warn("ingest: refused a request from %s: " + format, _peer(self.client_address), *args)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == HEALTH_PATH:
            self._body_unread = self._announces_body()
            self.close_connection = self.close_connection or self._body_unread
            self._reply(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
            self._linger_if_unread()
            return
        self._not_allowed()

    def do_HEAD(self) -> None:
        if urlsplit(self.path).path == HEALTH_PATH:
            self.close_connection = self.close_connection or self._announces_body()
            self._reply(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8", head_only=True)
            return
        self._not_allowed(head_only=True)

    # Everything but POST on the logs path and GET/HEAD on the health path.
    def _not_allowed(self, head_only: bool = False) -> None:
        self._body_unread = self._announces_body()
        if urlsplit(self.path).path == LOGS_PATH:
            refusal = _Refusal(HTTPStatus.METHOD_NOT_ALLOWED, code_pb2.UNIMPLEMENTED,
                               f"{self.command} is not allowed on {LOGS_PATH}; use POST", {"Allow": "POST"})
        else:
            refusal = _Refusal(HTTPStatus.NOT_FOUND, code_pb2.NOT_FOUND, f"no such path; logs go to {LOGS_PATH}")
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
        if urlsplit(self.path).path != LOGS_PATH:
            raise _Refusal(HTTPStatus.NOT_FOUND, code_pb2.NOT_FOUND, f"no such path; logs go to {LOGS_PATH}")
        length = self._content_length()
        tenant = server.api_keys.tenant_of(self.headers.get(API_KEY_HEADER))
        if tenant is None:
            raise _Refusal(HTTPStatus.UNAUTHORIZED, code_pb2.UNAUTHENTICATED,
                           f"missing or unknown {API_KEY_HEADER} header")
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
                           {"Retry-After": str(server.retry_after_s)})
        try:
            raw = self._read_body(length)
            self._ingest(self._inflate(raw, encoding), tenant, content_type)
        finally:
            server.inflight.release()

    def _ingest(self, body: bytes, tenant: str, content_type: str) -> None:
        server, limits = self.server, self.server.limits
        try:
            ready = prepare(body, tenant=tenant, fmt="json" if content_type == JSON else "proto",
                            received_unix_nano=server.clock_ns(), max_body_bytes=limits.max_body_bytes,
                            max_records=limits.max_records, max_message_bytes=limits.max_message_bytes)
        except BadPayload as exc:
            raise _Refusal(HTTPStatus.BAD_REQUEST, code_pb2.INVALID_ARGUMENT, str(exc)) from None
        except PayloadTooLarge as exc:
            raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, code_pb2.RESOURCE_EXHAUSTED, str(exc)) from None
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
        server.refusals.warn("ingest: refused %s %r from %s -> %d: %s", self.command, self.path[:200],
                             _peer(self.client_address), refusal.status, refusal.message)
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
