"""Protobuf ``ExportLogsServiceRequest`` -> log records and decode errors (one per bad record)."""

from __future__ import annotations

from google.protobuf.message import DecodeError as PbDecodeError
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from connectors.otlp.values import (
    _LEVEL_BY_NUMBER,
    _LEVEL_BY_TEXT,
    _NO_ATTRS,
    _ZERO_SPAN,
    _ZERO_TRACE,
    MIN_TIME_UNIX_NANO,
    _Bad,
    _cap,
    _lift,
    _Lifted,
    _new_record,
    _pb_any,
    _pb_id,
    _pb_kvs,
    _Resource,
    _resource,
    _Scope,
    _time_error,
    _whole,
    render_text,
)
from connectors.otlp.views import _LogsView, _parse_pb, _remember, _remember_twice
from udfs.records import (
    AttrValue,
    Decoded,
    DecodeError,
    Level,
    LogRecord,
)

# --------------------------------------------------------------------------------------------------
# Protobuf logs.

_resource_memo: dict[bytes, _Resource] = {}
_scope_memo: dict[bytes, _Scope] = {}
_attrs_memo: dict[tuple[bytes, ...], _Lifted] = {}
_kv_memo: dict[bytes, tuple[str, AttrValue]] = {}
_text_memo: dict[bytes, tuple[str, Level]] = {}


def _pb_resource(raw: bytes) -> _Resource:
    found = _resource_memo.get(raw)
    if found is None:
        found = _resource(_pb_kvs(_parse_pb(resource_pb2.Resource, raw, "resource").attributes))
        _remember(_resource_memo, raw, found)
    return found


def _pb_scope(raw: bytes) -> _Scope:
    found = _scope_memo.get(raw)
    if found is None:
        scope = _parse_pb(common_pb2.InstrumentationScope, raw, "scope")
        found = (scope.name, _pb_kvs(scope.attributes))
        _remember(_scope_memo, raw, found)
    return found


def _pb_attributes(raws: tuple[bytes, ...]) -> _Lifted:
    """Log attributes from their raw KeyValues (an ``_attrs_memo`` miss).

    Results enter a memo on their second sighting only, so values that never repeat (a request
    id on every record) do not churn the memos; records with an equal attribute set that does
    repeat share one read-only mapping.
    """
    out: dict[str, AttrValue] = {}
    get = _kv_memo.get
    first_sighting = False  # of one KeyValue, so of the whole set too
    for raw in raws:
        kv = get(raw)
        if kv is None:
            kv = _pb_kv(raw)
            first_sighting |= not _remember_twice(_kv_memo, raw, kv)
        out[kv[0]] = kv[1]
    found = _lift(out)
    if not first_sighting:
        _remember_twice(_attrs_memo, raws, found)
    return found


def _pb_kv(raw: bytes) -> tuple[str, AttrValue]:
    """One raw KeyValue; the usual short string KeyValue is read straight off the wire."""
    size = len(raw)
    # 0A <key len> <key> 12 <value len> 0A <string len> <string>, every length one byte and exact
    if size >= 6 and raw[0] == 0x0A and raw[1] < 0x80:
        pos = raw[1] + 2
        if (
            pos + 4 <= size and raw[pos] == 0x12 and raw[pos + 2] == 0x0A and raw[pos + 1] < 0x80
            and raw[pos + 1] == size - pos - 2 and raw[pos + 3] == size - pos - 4
        ):  # fmt: skip
            try:
                return raw[2:pos].decode("utf-8"), raw[pos + 4 :].decode("utf-8")
            except UnicodeDecodeError:
                pass  # the generated class below tells which string is bad
    parsed = _parse_pb(common_pb2.KeyValue, raw, "attribute")
    return parsed.key, _pb_any(parsed.value)


def _pb_text(raw: bytes) -> tuple[str, Level]:
    found = _text_memo.get(raw)
    if found is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad("invalid_utf8", "severityText is not valid UTF-8") from None
        found = (text, _LEVEL_BY_TEXT.get(text.strip().lower(), Level.UNSPECIFIED))
        _remember(_text_memo, raw, found)
    return found


def _pb_body(raw: bytes) -> str:
    """A raw AnyValue body as text; a lone ``string_value`` is read straight off the wire."""
    if not raw:
        return ""
    if raw[0] == 0x0A:  # field 1 (string_value), length-delimited: read the varint length
        size, shift, pos = 0, 0, 1
        while pos < len(raw) and pos < 6:
            byte = raw[pos]
            size |= (byte & 0x7F) << shift
            pos += 1
            if byte < 0x80:
                if pos + size == len(raw):
                    try:
                        return raw[pos:].decode("utf-8")
                    except UnicodeDecodeError:
                        raise _Bad("invalid_utf8", "body is not valid UTF-8") from None
                break
            shift += 7
    return render_text(_pb_any(_parse_pb(common_pb2.AnyValue, raw, "body")))


def _decode_logs_pb(data: bytes, max_body: int, default_time: int, latest: int) -> Decoded:
    try:
        view = _LogsView.FromString(data)
    except PbDecodeError as exc:
        return _whole(Decoded, "invalid_protobuf", f"not an ExportLogsServiceRequest: {exc}")
    if not view.ListFields():
        return _whole(Decoded, "invalid_protobuf", "no ExportLogsServiceRequest fields (unknown data)")
    records: list[LogRecord] = []
    errors: list[DecodeError] = []
    add, fail, new, level_of = records.append, errors.append, _new_record, _LEVEL_BY_NUMBER
    attributes_of, text_of, body_of, id_of = _pb_attributes, _pb_text, _pb_body, _pb_id
    attr_memo, text_memo, zero_trace, zero_span = _attrs_memo, _text_memo, _ZERO_TRACE, _ZERO_SPAN
    min_t, max_t, cap_chars = MIN_TIME_UNIX_NANO, latest, max_body // 4
    index = -1
    for resource_logs in view.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            try:  # the bad resource or scope spoils every record under it
                tenant, service, namespace, resource_attrs = _pb_resource(resource_logs.resource)
                scope_name, scope_attrs = _pb_scope(scope_logs.scope)
            except _Bad as bad:
                for _ in scope_logs.log_records:
                    index += 1
                    fail(DecodeError(bad.reason, bad.detail, index))
                continue
            for rec in scope_logs.log_records:  # hot loop: locals only, helpers on rare paths
                index += 1
                observed = rec.observed_time_unix_nano
                time = rec.time_unix_nano or observed or default_time
                if time < min_t or time > max_t:
                    fail(_time_error(time, index, max_t))
                    continue
                try:
                    number, raw = rec.severity_number, rec.severity_text
                    text, text_level = text_memo.get(raw) or text_of(raw)
                    level = level_of[number] if 0 < number <= 24 else text_level
                    raw = rec.body  # usually one short string_value: 0A <length> <UTF-8>
                    size = len(raw)
                    if size > 1 and raw[0] == 0x0A and raw[1] == size - 2 and size < 0x82:
                        body = raw[2:].decode("utf-8") if size > 2 else ""
                    else:
                        body = body_of(raw)
                    truncated = False
                    if len(body) > cap_chars:
                        body, truncated = _cap(body, max_body)
                    raws = tuple(rec.attributes[:])  # slice first: upb copies it in C, tuple() alone iterates slower
                    lifted = attr_memo.get(raws) if raws else _NO_ATTRS
                    if lifted is None:
                        lifted = attributes_of(raws)
                    raw = rec.trace_id
                    trace_id = raw.hex() if len(raw) == 16 and raw != zero_trace else id_of(raw, 16, "traceId")
                    raw = rec.span_id
                    span_id = raw.hex() if len(raw) == 8 and raw != zero_span else id_of(raw, 8, "spanId")
                except _Bad as bad:
                    fail(DecodeError(bad.reason, bad.detail, index))
                    continue
                except UnicodeDecodeError:
                    fail(DecodeError("invalid_utf8", "body is not valid UTF-8", index))
                    continue
                attrs, status, exc_type, exc_message, exc_stack = lifted
                add(new(LogRecord, (
                    tenant, service, namespace, time, observed, number or int(level), level, text,
                    body, truncated, trace_id, span_id, status, exc_type, exc_message, exc_stack,
                    scope_name, resource_attrs, scope_attrs, attrs,
                )))  # fmt: skip
    return Decoded(tuple(records), tuple(errors))
