"""A request body made ready for the logs topic: inflate (gzip/deflate), count records from the envelope,
decode with the job's codec, stamp the tenant, re-encode as protobuf within the message limit.

Pure functions of their arguments (no clock, no I/O): the server passes the receive time in, and it is
also the message's Kafka timestamp (never a record's event time: see ``prepare``).
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError as PbDecodeError

from connectors.ingest.limits import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    DEFAULT_MAX_RECORDS,
    GZIP_FIRST_SLICE_BYTES,
    default_max_message_bytes,
)
from connectors.otlp import decode_logs, encode_logs_proto, latest_event_time_unix_nano
from udfs.records import Attributes, DecodeError, LogRecord

_MAX_MESSAGE_CHARS = 1000  # of a partial-success error message


class BadPayload(ValueError):
    """The request body cannot be read as an ``ExportLogsServiceRequest`` at all (HTTP 400)."""


class PayloadTooLarge(ValueError):
    """The request is within the size limit but over another one (records, re-encoded size): HTTP 413."""




class Ingested(NamedTuple):
    """One request made ready for the logs topic; ``payload`` is b"" when no record was accepted."""

    payload: bytes
    timestamp_ms: int  # the receive time (Unix ms): the Kafka message timestamp, never an event time
    accepted: int
    rejected: int
    error_message: str  # why records were rejected ("" when none was)
    key: bytes = b""  # the Kafka message key (``message_key``)


# Bytes of the resource hash in a message key: 4 bytes spread a tenant's resources over any realistic
# number of partitions (2**32 values), and keep the key short.
KEY_HASH_BYTES = 4


def message_key(tenant: str, resources: Iterable[bytes]) -> bytes:
    """``tenant/<hash of the request's resources>``: one emitting process (resource) keeps its messages in
    order on one partition, while a tenant's many processes spread over the partitions (and so over the
    job's decode subtasks). The job never reads the key: every keyed step keys by fields of the records.
    A tenant name never holds "/" (``keys.tenant_problem``), so the tenant stays readable in the key."""
    digest = hashlib.blake2b(digest_size=KEY_HASH_BYTES)
    for resource in resources:
        digest.update(len(resource).to_bytes(4, "big"))
        digest.update(resource)
    return f"{tenant}/{digest.hexdigest()}".encode()


def _log_resources(records: Sequence[LogRecord]) -> Iterator[bytes]:
    """A stable identity of each distinct resource of ``records`` (its attributes, sorted by name)."""
    seen: set[int] = set()
    for rec in records:
        attrs = rec.resource_attributes
        if id(attrs) not in seen:
            seen.add(id(attrs))
            yield repr(sorted(attrs.items(), key=lambda kv: kv[0])).encode("utf-8", "surrogateescape")


def prepare(body: bytes, *, tenant: str, fmt: str, received_unix_nano: int, max_body_bytes: int,
            max_records: int = DEFAULT_MAX_RECORDS, max_message_bytes: int | None = None,
            max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS) -> Ingested:
    """Decode ``body`` (``fmt`` "proto" or "json"), stamp ``tenant`` on every resource, re-encode as protobuf.

    ``received_unix_nano`` is the wall clock when the request arrived: records without any timestamp get
    it (as a Collector's observed time), a record dated more than ``max_future_skew_ms`` after it is
    rejected (``future_timestamp``, as the job's decoder does), and it is the message's timestamp. Bodies
    are not cut here (``max_body_bytes`` is the request limit): the job applies its own limit. Raises
    ``BadPayload`` when the message as a whole cannot be read, ``PayloadTooLarge`` when it holds more than
    ``max_records`` records (or resource/scope groups), counted before decoding, or when its re-encoding
    exceeds ``max_message_bytes`` (default: ``default_max_message_bytes(max_body_bytes)``).
    """
    received_ms = received_unix_nano // 1_000_000
    if not body:
        return Ingested(b"", received_ms, 0, 0, "")  # the spec: an empty request is a success
    records_n, groups_n = count_records(body, fmt, stop_after=max_records)
    if records_n > max_records or groups_n > max_records:
        n, what = (records_n, "log records") if records_n > max_records else (groups_n, "resource/scope groups")
        raise PayloadTooLarge(f"the request has {n} {what}; the limit is {max_records} per"
                              " request: send smaller batches")
    latest = latest_event_time_unix_nano(received_ms, max_future_skew_ms=max_future_skew_ms)
    decoded = decode_logs(body, fmt=fmt, max_body_bytes=max_body_bytes, default_time_unix_nano=received_unix_nano,
                          latest_time_unix_nano=latest)
    whole = [e for e in decoded.errors if e.index == -1]
    if whole:
        raise BadPayload(f"not an OTLP ExportLogsServiceRequest ({whole[0].reason}): {whole[0].detail}")
    records = with_tenant(decoded.records, tenant)
    limit = default_max_message_bytes(max_body_bytes) if max_message_bytes is None else max_message_bytes
    payload, unencodable = _encode(records, limit)
    accepted = len(records) - len(unencodable)
    errors = list(decoded.errors) + [
        DecodeError("out_of_range", "a number does not fit its protobuf field (e.g. beyond int64)", -1)
        for _ in unencodable
    ]
    return Ingested(payload if accepted else b"", received_ms, accepted, len(errors),
                    rejection_message(errors, accepted + len(errors)), message_key(tenant, _log_resources(records)))


def _count_view(request: str, scope: str, items: str) -> Any:
    """A lenient view of an ``Export*ServiceRequest`` that parses only the envelope: records stay bytes.

    ``request``/``scope``/``items`` name its three repeated fields (``resource_logs``, ``scope_logs``,
    ``log_records``; ``resource_spans``, ``scope_spans``, ``spans``). As lenient as the codec's own parse
    (which keeps strings as bytes), so no record it would decode escapes the count, and as cheap as the
    framing: 4 MiB of empty records parse in about 0.1 s.
    """
    fdp = descriptor_pb2.FileDescriptorProto(name=f"logclaw_ingest_count_{items}.proto",
                                             package=f"logclaw.ingest.{items}", syntax="proto3")
    field_type = descriptor_pb2.FieldDescriptorProto
    repeated, message = field_type.LABEL_REPEATED, field_type.TYPE_MESSAGE
    for name, field, number, kind, type_name in (
        ("Scope", items, 2, field_type.TYPE_BYTES, ""),
        ("Resource", scope, 2, message, f".logclaw.ingest.{items}.Scope"),
        ("Request", request, 1, message, f".logclaw.ingest.{items}.Resource"),
    ):
        added = fdp.message_type.add(name=name).field.add(name=field, number=number, type=kind, label=repeated)
        if type_name:
            added.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"logclaw.ingest.{items}.Request"))


# signal -> (the envelope view, its fields as protobuf names, its fields as OTLP/JSON names)
_ENVELOPES = {
    "logs": (_count_view("resource_logs", "scope_logs", "log_records"), ("resource_logs", "scope_logs", "log_records"),
             ("resourceLogs", "scopeLogs", "logRecords")),
    "traces": (_count_view("resource_spans", "scope_spans", "spans"), ("resource_spans", "scope_spans", "spans"),
               ("resourceSpans", "scopeSpans", "spans")),
}


def count_records(body: bytes, fmt: str, *, stop_after: int, signal: str = "logs") -> tuple[int, int]:
    """(log records or spans, resource + scope groups) in ``body``, counted without decoding a record.

    Counting stops soon after either passes ``stop_after``; an envelope that cannot be read counts
    (0, 0) and is left to the codec to explain.
    """
    view_class, (request, scope, items), camel = _ENVELOPES[signal]
    records = groups = 0
    if fmt == "json":
        try:
            doc = orjson.loads(body[3:] if body.startswith(b"\xef\xbb\xbf") else body)
        except orjson.JSONDecodeError:
            return 0, 0
        for resource in _json_items(doc, camel[0], request):
            groups += 1
            for scope_obj in _json_items(resource, camel[1], scope):
                groups += 1
                records += len(_json_items(scope_obj, camel[2], items))
                if records > stop_after or groups > stop_after:
                    return records, groups
        return records, groups
    try:
        view = view_class.FromString(body)
    except PbDecodeError:
        return 0, 0
    for resource in getattr(view, request):
        groups += 1
        for scope_group in getattr(resource, scope):
            groups += 1
            records += len(getattr(scope_group, items))
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


def rejection_message(errors: Sequence[DecodeError], total: int, noun: str = "log records") -> str:
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
    text = f"{len(errors)} of {total} {noun} rejected: " + "; ".join(clauses)
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
