"""``ExportTraceServiceRequest`` (protobuf or parsed OTLP/JSON) -> spans and decode errors."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError as PbDecodeError

from connectors.otlp.logs_json import _json_groups, _json_resource
from connectors.otlp.logs_pb import _pb_resource
from connectors.otlp.values import (
    _KIND_BY_NAME,
    _STATUS_BY_NAME,
    _STATUSES,
    _Bad,
    _check_time,
    _field,
    _json_enum,
    _json_id,
    _json_object,
    _json_str,
    _json_time,
    _pb_id,
    _whole,
)
from connectors.otlp.views import _SpansView
from udfs.records import (
    DecodedSpans,
    DecodeError,
    Span,
    SpanStatus,
)

# --------------------------------------------------------------------------------------------------
# Spans.


def _span_times(start: int, end: int, latest: int, index: int) -> DecodeError | None:
    """A span is exported once it ended: its start and (when set) its end must be valid times no
    later than ``latest`` (receive time + the maximum future skew)."""
    return _check_time(start, index, latest) or (_check_time(end, index, latest) if end else None)


def _pb_span(span: Any, tenant: str, service: str, latest: int, index: int) -> Span | DecodeError:
    start = span.start_time_unix_nano
    bad_time = _span_times(start, span.end_time_unix_nano, latest, index)
    if bad_time is not None:
        return bad_time
    try:
        name, message = span.name.decode("utf-8"), span.status.message.decode("utf-8")
    except UnicodeDecodeError:
        return DecodeError("invalid_utf8", "span name or status message is not valid UTF-8", index)
    return Span(
        tenant, service, _pb_id(span.trace_id, 16, "traceId"),
        _pb_id(span.span_id, 8, "spanId"),
        _pb_id(span.parent_span_id, 8, "parentSpanId"), name, span.kind, start,
        span.end_time_unix_nano, _STATUSES.get(span.status.code, SpanStatus.UNSET), message,
    )  # fmt: skip


def _decode_spans_pb(data: bytes, latest: int) -> DecodedSpans:
    try:
        view = _SpansView.FromString(data)
    except PbDecodeError as exc:
        return _whole(DecodedSpans, "invalid_protobuf", f"not an ExportTraceServiceRequest: {exc}")
    if not view.ListFields():
        return _whole(DecodedSpans, "invalid_protobuf", "no ExportTraceServiceRequest fields")
    spans: list[Span] = []
    errors: list[DecodeError] = []
    index = -1
    for resource_spans in view.resource_spans:
        try:
            tenant, service, _, _ = _pb_resource(resource_spans.resource)
            spoiled = None
        except _Bad as bad:  # the bad resource spoils every span under it
            tenant, service, spoiled = "", "", bad
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                index += 1
                try:
                    if spoiled is not None:
                        raise spoiled
                    out = _pb_span(span, tenant, service, latest, index)
                except _Bad as bad:
                    out = DecodeError(bad.reason, bad.detail, index)
                if isinstance(out, Span):
                    spans.append(out)
                else:
                    errors.append(out)
    return DecodedSpans(tuple(spans), tuple(errors))


def _json_span(obj: Any, tenant: str, service: str, latest: int, index: int) -> Span | DecodeError:
    if not isinstance(obj, dict):
        return DecodeError("wrong_type", "a span is not a JSON object", index)
    start = _json_time(obj, "startTimeUnixNano", "start_time_unix_nano")
    end = _json_time(obj, "endTimeUnixNano", "end_time_unix_nano")
    bad_time = _span_times(start, end, latest, index)
    if bad_time is not None:
        return bad_time
    status = _json_object(obj.get("status"), "status")
    code = _json_enum(status.get("code"), _STATUS_BY_NAME, "status code")
    return Span(
        tenant, service, _json_id(_field(obj, "traceId", "trace_id"), 16, "traceId"),
        _json_id(_field(obj, "spanId", "span_id"), 8, "spanId"),
        _json_id(_field(obj, "parentSpanId", "parent_span_id"), 8, "parentSpanId"),
        _json_str(obj.get("name"), "name"), _json_enum(obj.get("kind"), _KIND_BY_NAME, "kind"), start, end,
        _STATUSES.get(code, SpanStatus.UNSET), _json_str(status.get("message"), "status message"),
    )  # fmt: skip


def _decode_spans_json(doc: Any, latest: int) -> DecodedSpans:
    spans: list[Span] = []
    errors: list[DecodeError] = []
    index = -1
    try:
        groups = list(
            _json_groups(doc, ("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"),
                         ("spans", "spans"))
        )  # fmt: skip
    except _Bad as bad:
        return _whole(DecodedSpans, bad.reason, bad.detail)
    for resource_json, _, items in groups:
        try:
            tenant, service, _, _ = _json_resource(resource_json)
            spoiled = None
        except _Bad as bad:  # the bad resource spoils every span under it
            tenant, service, spoiled = "", "", bad
        for obj in items:
            index += 1
            try:
                if spoiled is not None:
                    raise spoiled
                out = _json_span(obj, tenant, service, latest, index)
            except _Bad as bad:
                out = DecodeError(bad.reason, bad.detail, index)
            if isinstance(out, Span):
                spans.append(out)
            else:
                errors.append(out)
    return DecodedSpans(tuple(spans), tuple(errors))
