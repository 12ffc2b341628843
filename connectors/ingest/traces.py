"""A traces request made ready for the spans topic: count the spans from the envelope, decode with the job's
codec (which spans are rejected, and why), stamp the tenant, drop the rejected spans, re-encode as protobuf
within the message limit.

The message keeps everything the client sent (span attributes, events, links, the whole resource) when
the request parses as an ``ExportTraceServiceRequest`` with the generated classes: protobuf as is, OTLP/JSON
after its hex ids are turned into the base64 that the protobuf JSON mapping expects. Otherwise (e.g. a
string that is not UTF-8, which the codec tolerates per span) it is re-encoded from the fields the job reads
(``connectors.otlp.encode_spans_proto``). Pure functions of their arguments, like ``payload``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as PbDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from connectors.ingest.limits import DEFAULT_MAX_FUTURE_SKEW_MS, DEFAULT_MAX_RECORDS, default_max_message_bytes
from connectors.ingest.payload import (
    BadPayload,
    Ingested,
    PayloadTooLarge,
    count_records,
    message_key,
    rejection_message,
)
from connectors.otlp import decode_spans, encode_spans_proto, latest_event_time_unix_nano
from udfs.records import Span

TENANT_ATTRIBUTE = "tenant.id"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def prepare_traces(body: bytes, *, tenant: str, fmt: str, received_unix_nano: int, max_body_bytes: int,
                   max_records: int = DEFAULT_MAX_RECORDS, max_message_bytes: int | None = None,
                   max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS) -> Ingested:
    """Decode ``body`` (``fmt`` "proto" or "json"), reject what the job would reject, stamp ``tenant``.

    Rejected spans (partial success): those the job's decoder cannot read, and those starting or ending
    more than ``max_future_skew_ms`` after ``received_unix_nano`` (``future_timestamp``). Raises
    ``BadPayload`` when the request cannot be read at all, ``PayloadTooLarge`` over ``max_records`` spans
    (or resource/scope groups), counted before decoding, or past ``max_message_bytes`` re-encoded.
    """
    received_ms = received_unix_nano // 1_000_000
    if not body:
        return Ingested(b"", received_ms, 0, 0, "")  # the spec: an empty request is a success
    spans_n, groups_n = count_records(body, fmt, stop_after=max_records, signal="traces")
    if spans_n > max_records or groups_n > max_records:
        n, what = (spans_n, "spans") if spans_n > max_records else (groups_n, "resource/scope groups")
        raise PayloadTooLarge(f"the request has {n} {what}; the limit is {max_records} per"
                              " request: send smaller batches")
    latest = latest_event_time_unix_nano(received_ms, max_future_skew_ms=max_future_skew_ms)
    decoded = decode_spans(body, fmt=fmt, latest_time_unix_nano=latest)
    whole = [e for e in decoded.errors if e.index == -1]
    if whole:
        raise BadPayload(f"not an OTLP ExportTraceServiceRequest ({whole[0].reason}): {whole[0].detail}")
    accepted = len(decoded.spans)
    message = rejection_message(decoded.errors, accepted + len(decoded.errors), "spans")
    if not accepted:
        return Ingested(b"", received_ms, 0, len(decoded.errors), message)
    rejected = {e.index for e in decoded.errors}
    request = _parsed(body, fmt, rejected)
    if request is not None:
        resources = list(_stamp_and_filter(request, tenant, rejected if fmt == "proto" else set()))
        payload = bytes(request.SerializeToString())
    else:
        spans = [s._replace(tenant=tenant) for s in decoded.spans]
        resources = [s.service.encode("utf-8", "surrogateescape") for s in _first_of_each_service(spans)]
        payload = encode_spans_proto(spans)
    limit = default_max_message_bytes(max_body_bytes) if max_message_bytes is None else max_message_bytes
    if len(payload) > limit:
        raise PayloadTooLarge(f"the request re-encoded for the spans topic exceeds {limit} bytes: send smaller"
                              " batches")
    return Ingested(payload, received_ms, accepted, len(decoded.errors), message, message_key(tenant, resources))


def _parsed(body: bytes, fmt: str, rejected: set[int]) -> Any:
    """``body`` as an ``ExportTraceServiceRequest`` of the generated classes, or None when they refuse it.
    From OTLP/JSON, the ``rejected`` spans are left out before parsing (a bad id would spoil the parse)."""
    try:
        if fmt == "proto":
            return ExportTraceServiceRequest.FromString(body)
        doc = orjson.loads(body[3:] if body.startswith(b"\xef\xbb\xbf") else body)
        return json_format.ParseDict(_base64_ids(_without(doc, rejected)), ExportTraceServiceRequest(),
                                     ignore_unknown_fields=True)
    except (PbDecodeError, json_format.ParseError, ValueError, TypeError, RecursionError, binascii.Error):
        return None


def _without(doc: Any, rejected: set[int]) -> Any:
    """``doc`` without the spans at the ``rejected`` positions (counted as the codec counts: every element of
    every ``spans`` list, resource by resource, scope by scope)."""
    index = -1
    for resource in _items(doc, "resourceSpans", "resource_spans"):
        for scope in _items(resource, "scopeSpans", "scope_spans"):
            name = "spans"
            spans = scope.get(name)
            if not isinstance(spans, list):
                continue
            kept = []
            for span in spans:
                index += 1
                if index not in rejected:
                    kept.append(span)
            scope[name] = kept
    return doc


def _base64_ids(doc: Any) -> Any:
    """OTLP/JSON carries trace and span ids as hex; the protobuf JSON mapping reads bytes as base64."""
    for resource in _items(doc, "resourceSpans", "resource_spans"):
        for scope in _items(resource, "scopeSpans", "scope_spans"):
            for span in _items(scope, "spans", "spans"):
                _convert_ids(span)
                for link in _items(span, "links", "links"):
                    _convert_ids(link)
    return doc


def _convert_ids(obj: dict[str, Any]) -> None:
    for name in _ID_FIELDS:
        value = obj.get(name)
        if isinstance(value, str):
            obj[name] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _items(obj: Any, camel: str, snake: str) -> list[Any]:
    """The JSON objects of ``obj[camel]`` (else ``obj[snake]``; null is absent), as the codec reads them."""
    items = None
    if isinstance(obj, dict):
        items = obj.get(camel) if obj.get(camel) is not None else obj.get(snake)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _stamp_and_filter(request: Any, tenant: str, rejected: set[int]) -> Iterator[bytes]:
    """Set ``tenant.id`` on every resource, drop the ``rejected`` spans (their positions in the request, as
    the codec counts them) and the groups left empty; yield each kept resource's serialized identity."""
    index = -1
    kept_resources = []
    for resource_spans in request.resource_spans:
        kept_scopes = []
        for scope_spans in resource_spans.scope_spans:
            kept = []
            for span in scope_spans.spans:
                index += 1
                if index not in rejected:
                    kept.append(span)
            if len(kept) != len(scope_spans.spans):
                del scope_spans.spans[:]
                scope_spans.spans.extend(kept)
            if kept:
                kept_scopes.append(scope_spans)
        if not kept_scopes:
            continue
        if len(kept_scopes) != len(resource_spans.scope_spans):
            del resource_spans.scope_spans[:]
            resource_spans.scope_spans.extend(kept_scopes)
        attributes = resource_spans.resource.attributes
        others = [kv for kv in attributes if kv.key != TENANT_ATTRIBUTE]
        del attributes[:]
        attributes.extend([*others, KeyValue(key=TENANT_ATTRIBUTE, value=AnyValue(string_value=tenant))])
        kept_resources.append(resource_spans)
    if len(kept_resources) != len(request.resource_spans):
        del request.resource_spans[:]
        request.resource_spans.extend(kept_resources)
    for resource_spans in request.resource_spans:
        yield bytes(resource_spans.resource.SerializeToString(deterministic=True))


def _first_of_each_service(spans: Sequence[Span]) -> list[Span]:
    seen: dict[str, Span] = {}
    for span in spans:
        seen.setdefault(span.service, span)
    return list(seen.values())
