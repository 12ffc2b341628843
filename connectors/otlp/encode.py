"""Encoders: typed records/spans -> ``ExportLogsServiceRequest`` / ``ExportTraceServiceRequest`` bytes
(OTLP/JSON or protobuf), one resource group per (tenant, service). Used by the scenario generator,
tests, benchmarks and ``logclaw simulate``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar, cast

import orjson
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from connectors.otlp.values import _NONFINITE_NAMES, _lift, _resource
from udfs.records import (
    AttrValue,
    LogRecord,
    Span,
)

# --------------------------------------------------------------------------------------------------
# Encoders (scenario generator, tests, ``logclaw simulate``).

_T = TypeVar("_T")


def _group(items: Sequence[_T], key: Callable[[_T], Any]) -> list[list[_T]]:
    """Items grouped by ``key`` in first-seen order (order kept inside a group)."""
    groups: dict[Any, list[_T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


def _wire_resource(first: LogRecord) -> dict[str, AttrValue]:
    """Resource attributes that decode back to ``first``'s tenant, service and namespace."""
    attrs = dict(first.resource_attributes)
    tenant, service, namespace, _ = _resource(MappingProxyType(attrs))
    if tenant != first.tenant:
        attrs["tenant.id"] = first.tenant
    if service != first.service:
        attrs["service.name"] = first.service
    if namespace != first.service_namespace:
        attrs["service.namespace"] = first.service_namespace
    return attrs


def _wire_attributes(rec: LogRecord) -> dict[str, AttrValue]:
    """Log attributes plus the lifted fields the attributes do not already carry."""
    attrs = dict(rec.attributes)
    if rec.http_status is not None and _lift(attrs)[1] != rec.http_status:
        attrs["http.response.status_code"] = rec.http_status
    for key, value in (
        ("exception.type", rec.exception_type),
        ("exception.message", rec.exception_message),
        ("exception.stacktrace", rec.exception_stacktrace),
    ):
        if value and key not in attrs:
            attrs[key] = value
    return attrs


def _json_value(value: AttrValue) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value if math.isfinite(value) else _NONFINITE_NAMES[str(value)]}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return {"arrayValue": {"values": [_json_value(v) for v in value]}}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": _json_kv_list(value)}}
    return {}


def _json_kv_list(attrs: Mapping[str, AttrValue]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _json_value(v)} for k, v in attrs.items()]


def _json_log_record(rec: LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"timeUnixNano": str(rec.time_unix_nano)}
    if rec.observed_time_unix_nano:
        out["observedTimeUnixNano"] = str(rec.observed_time_unix_nano)
    out["severityNumber"] = rec.severity_number or int(rec.level)
    if rec.severity_text:
        out["severityText"] = rec.severity_text
    if rec.body:
        out["body"] = {"stringValue": rec.body}
    attrs = _wire_attributes(rec)
    if attrs:
        out["attributes"] = _json_kv_list(attrs)
    if rec.trace_id:
        out["traceId"] = rec.trace_id
    if rec.span_id:
        out["spanId"] = rec.span_id
    return out


def encode_logs_json(records: Sequence[LogRecord]) -> bytes:
    """One OTLP/JSON ``ExportLogsServiceRequest`` on one line (no trailing newline).

    Records are grouped by resource (tenant, service, namespace) and then by scope name, in
    first-seen order; resource and scope attributes come from each group's first record.
    """
    resource_logs = []
    for group in _group(records, lambda r: (r.tenant, r.service, r.service_namespace)):
        scope_logs = []
        for scoped in _group(group, lambda r: r.scope_name):
            scope: dict[str, Any] = {"name": scoped[0].scope_name} if scoped[0].scope_name else {}
            if scoped[0].scope_attributes:
                scope["attributes"] = _json_kv_list(scoped[0].scope_attributes)
            scope_logs.append({"scope": scope, "logRecords": [_json_log_record(r) for r in scoped]})
        resource = {"attributes": _json_kv_list(_wire_resource(group[0]))}
        resource_logs.append({"resource": resource, "scopeLogs": scope_logs})
    return orjson.dumps({"resourceLogs": resource_logs})


def _fill_pb_value(target: common_pb2.AnyValue, value: AttrValue) -> None:
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, tuple):
        target.array_value.SetInParent()
        for item in value:
            _fill_pb_value(target.array_value.values.add(), item)
    elif isinstance(value, Mapping):
        target.kvlist_value.SetInParent()
        _fill_pb_kvs(target.kvlist_value.values, value)


def _fill_pb_kvs(target: Any, attrs: Mapping[str, AttrValue]) -> None:
    for key, value in attrs.items():
        kv = target.add()
        kv.key = key
        _fill_pb_value(kv.value, value)


def encode_logs_proto(records: Sequence[LogRecord]) -> bytes:
    """The same request as ``encode_logs_json``, as protobuf. Ints beyond int64 raise ValueError."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    for group in _group(records, lambda r: (r.tenant, r.service, r.service_namespace)):
        resource_logs = request.resource_logs.add()
        _fill_pb_kvs(resource_logs.resource.attributes, _wire_resource(group[0]))
        for scoped in _group(group, lambda r: r.scope_name):
            scope_logs = resource_logs.scope_logs.add()
            scope_logs.scope.name = scoped[0].scope_name
            _fill_pb_kvs(scope_logs.scope.attributes, scoped[0].scope_attributes)
            for rec in scoped:
                out = scope_logs.log_records.add()
                out.time_unix_nano = rec.time_unix_nano
                out.observed_time_unix_nano = rec.observed_time_unix_nano
                out.severity_number = rec.severity_number or int(rec.level)
                out.severity_text = rec.severity_text
                if rec.body:
                    out.body.string_value = rec.body
                _fill_pb_kvs(out.attributes, _wire_attributes(rec))
                out.trace_id = bytes.fromhex(rec.trace_id)
                out.span_id = bytes.fromhex(rec.span_id)
    return cast(bytes, request.SerializeToString())


def _span_resource(span: Span) -> dict[str, AttrValue]:
    return {"tenant.id": span.tenant, "service.name": span.service}


def encode_spans_json(spans: Sequence[Span]) -> bytes:
    """One OTLP/JSON ``ExportTraceServiceRequest`` on one line, spans grouped by (tenant, service)."""
    resource_spans = []
    for group in _group(spans, lambda s: (s.tenant, s.service)):
        items = []
        for span in group:
            item: dict[str, Any] = {"traceId": span.trace_id, "spanId": span.span_id}
            if span.parent_span_id:
                item["parentSpanId"] = span.parent_span_id
            item.update(
                name=span.name, kind=span.kind, startTimeUnixNano=str(span.start_unix_nano),
                endTimeUnixNano=str(span.end_unix_nano),
                status={"code": int(span.status), "message": span.status_message},
            )  # fmt: skip
            items.append(item)
        resource = {"attributes": _json_kv_list(_span_resource(group[0]))}
        resource_spans.append({"resource": resource, "scopeSpans": [{"spans": items}]})
    return orjson.dumps({"resourceSpans": resource_spans})


def encode_spans_proto(spans: Sequence[Span]) -> bytes:
    """The same request as ``encode_spans_json``, as protobuf."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    for group in _group(spans, lambda s: (s.tenant, s.service)):
        resource_spans = request.resource_spans.add()
        _fill_pb_kvs(resource_spans.resource.attributes, _span_resource(group[0]))
        scope_spans = resource_spans.scope_spans.add()
        for span in group:
            out = scope_spans.spans.add()
            out.trace_id = bytes.fromhex(span.trace_id)
            out.span_id = bytes.fromhex(span.span_id)
            out.parent_span_id = bytes.fromhex(span.parent_span_id)
            out.name = span.name
            out.kind = span.kind
            out.start_time_unix_nano = span.start_unix_nano
            out.end_time_unix_nano = span.end_unix_nano
            out.status.code = int(span.status)
            out.status.message = span.status_message
    return cast(bytes, request.SerializeToString())
