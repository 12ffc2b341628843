"""OTLP codec: ``Export{Logs,Trace}ServiceRequest`` bytes (protobuf or OTLP/JSON) <-> typed records.

Pure functions: no I/O, no environment, no clock. Bad input is data: every decoder returns records
and ``DecodeError``s and never raises on input bytes; every input record ends up as exactly one
record or one error (``index`` = its position in the message), and a message that cannot be read at
all gives no records and one error with ``index == -1``.

Times are event time in Unix nanoseconds, as OTLP carries them. OTLP/JSON follows the OTLP spec's
"JSON Protobuf Encoding": lowerCamelCase keys (proto snake_case accepted too), 64-bit integers as
numbers or decimal strings, enums as integers (names accepted), bytes as base64, trace/span ids as
case-insensitive hex, unknown keys ignored, ``null`` meaning "absent".

Speed: protobuf is parsed into *views* derived from the generated opentelemetry-proto descriptors in
which strings, bodies, attributes, resources and scopes stay raw bytes. Raw bytes cost nothing to
parse, they are decoded with the generated classes only on a memo miss (the same attribute sets,
resources and scopes repeat across records and messages), and a bad string spoils one record
instead of the whole message. The memos are bounded and only ever hold results of pure functions.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar, cast

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError as PbDecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from udfs.records import (
    DEFAULT_TENANT,
    EMPTY_ATTRIBUTES,
    UNKNOWN_SERVICE,
    Attributes,
    AttrValue,
    Decoded,
    DecodedSpans,
    DecodeError,
    Level,
    LogRecord,
    Span,
    SpanStatus,
)

__all__ = [
    "decode_logs",
    "decode_spans",
    "encode_logs_json",
    "encode_logs_proto",
    "encode_spans_json",
    "encode_spans_proto",
]

MIN_TIME_UNIX_NANO = 946_684_800 * 1_000_000_000  # 2000-01-01T00:00:00Z
MAX_TIME_UNIX_NANO = 4_102_444_800 * 1_000_000_000  # 2100-01-01T00:00:00Z
_MAX_DEPTH = 64  # nesting of AnyValue arrays/kvlists
_MEMO_LIMIT = 8192
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_BOM = b"\xef\xbb\xbf"
_FORMATS = ("auto", "proto", "json")

# Level by OTLP severityNumber (index 0..24) and by lower-cased severityText.
_LEVEL_BY_NUMBER: tuple[Level, ...] = (
    Level.UNSPECIFIED,
    *(Level(1 + 4 * ((n - 1) // 4)) for n in range(1, 25)),
)
_LEVEL_BY_TEXT: dict[str, Level] = {
    "trace": Level.TRACE,
    "debug": Level.DEBUG,
    "info": Level.INFO,
    "information": Level.INFO,
    "informational": Level.INFO,
    "notice": Level.INFO,
    "warn": Level.WARN,
    "warning": Level.WARN,
    "err": Level.ERROR,
    "error": Level.ERROR,
    "fatal": Level.FATAL,
    "critical": Level.FATAL,
    "crit": Level.FATAL,
    "emerg": Level.FATAL,
    "emergency": Level.FATAL,
    "alert": Level.FATAL,
    "panic": Level.FATAL,
}
_SEVERITY_BY_NAME: dict[str, int] = dict(logs_pb2.SeverityNumber.items())
_KIND_BY_NAME: dict[str, int] = dict(trace_pb2.Span.SpanKind.items())
_STATUS_BY_NAME: dict[str, int] = dict(trace_pb2.Status.StatusCode.items())
_STATUSES: dict[int, SpanStatus] = {int(s): s for s in SpanStatus}
_INT_RE = re.compile(r"-?[0-9]+")
_FLOAT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_NONFINITE_NAMES = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

_new_record = cast(Callable[[type[LogRecord], tuple[Any, ...]], LogRecord], tuple.__new__)


class _Bad(Exception):
    """Internal control flow: one input (record or message) is bad for ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------------------------------
# Protobuf views: the generated descriptors with strings and selected sub-messages turned into bytes.

_OPAQUE_FIELDS = {
    ("ResourceLogs", "resource"),
    ("ScopeLogs", "scope"),
    ("LogRecord", "body"),
    ("LogRecord", "attributes"),
    ("ResourceSpans", "resource"),
    ("ScopeSpans", "scope"),
    ("Span", "attributes"),
    ("Span", "events"),
    ("Span", "links"),
}


def _loosen(message: Any) -> None:
    """Turn every string (and every ``_OPAQUE_FIELDS`` sub-message) of ``message`` into bytes."""
    for field in message.field:
        if field.type == field.TYPE_STRING or (message.name, field.name) in _OPAQUE_FIELDS:
            field.type = field.TYPE_BYTES
            field.ClearField("type_name")
    for nested in message.nested_type:
        _loosen(nested)


def _view_pool() -> Any:
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, logs_pb2, trace_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        for message in proto.message_type:
            _loosen(message)
        pool.Add(proto)
    return pool


_POOL = _view_pool()


def _view(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(name))


_LogsView = _view("opentelemetry.proto.logs.v1.LogsData")  # wire-identical to ExportLogsServiceRequest
_SpansView = _view("opentelemetry.proto.trace.v1.TracesData")  # ... to ExportTraceServiceRequest
_LOOSE: dict[type[Any], Any] = {
    common_pb2.AnyValue: _view("opentelemetry.proto.common.v1.AnyValue"),
    common_pb2.KeyValue: _view("opentelemetry.proto.common.v1.KeyValue"),
    common_pb2.InstrumentationScope: _view("opentelemetry.proto.common.v1.InstrumentationScope"),
    resource_pb2.Resource: _view("opentelemetry.proto.resource.v1.Resource"),
}

_M = TypeVar("_M")


def _parse_pb(cls: type[_M], raw: bytes, what: str) -> _M:
    """Parse ``raw`` with a generated class; a failure says whether only UTF-8 was wrong."""
    try:
        return cast(_M, cast(Any, cls).FromString(raw))
    except PbDecodeError:
        pass
    try:
        _LOOSE[cls].FromString(raw)
    except PbDecodeError:
        raise _Bad("invalid_protobuf", f"{what} is not valid protobuf") from None
    raise _Bad("invalid_utf8", f"{what} has a string that is not valid UTF-8")


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value


_seen_once: set[int] = set()  # hashes of keys met once: the doorkeeper of ``_remember_twice``


def _remember_twice(memo: dict[Any, Any], key: Any, value: Any) -> bool:
    """Memoize ``key`` only when it is met the second time (one-off keys would churn the memo).

    Returns whether ``key`` had been met before.
    """
    mark = hash(key)
    if mark in _seen_once:
        _remember(memo, key, value)
        return True
    if len(_seen_once) >= 4 * _MEMO_LIMIT:
        _seen_once.clear()
    _seen_once.add(mark)
    return False


# --------------------------------------------------------------------------------------------------
# AnyValue: decode (protobuf, JSON), render as text.


def _pb_any(value: common_pb2.AnyValue) -> AttrValue:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind is None:
        return None
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "array_value":
        return tuple(_pb_any(item) for item in value.array_value.values)
    return _pb_kvs(value.kvlist_value.values)


def _pb_kvs(kvs: Iterable[common_pb2.KeyValue]) -> Attributes:
    out = {kv.key: _pb_any(kv.value) for kv in kvs}
    return MappingProxyType(out) if out else EMPTY_ATTRIBUTES


_ANY_KINDS = {
    "stringValue": "s", "string_value": "s", "boolValue": "b", "bool_value": "b",
    "intValue": "i", "int_value": "i", "doubleValue": "d", "double_value": "d",
    "arrayValue": "a", "array_value": "a", "kvlistValue": "k", "kvlist_value": "k",
    "bytesValue": "y", "bytes_value": "y",
}  # fmt: skip


def _json_any(value: Any, depth: int) -> AttrValue:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Bad("wrong_type", "an AnyValue is not a JSON object")
    if depth > _MAX_DEPTH:
        raise _Bad("too_deep", f"AnyValue nesting exceeds {_MAX_DEPTH}")
    kind, item = "", None
    for key, candidate in value.items():
        found = _ANY_KINDS.get(key)
        if found is not None and candidate is not None:
            if kind:
                raise _Bad("wrong_type", "an AnyValue sets more than one value")
            kind, item = found, candidate
    if not kind:
        return None
    if kind == "s":
        if isinstance(item, str):
            return item
    elif kind == "b":
        if isinstance(item, bool):
            return item
    elif kind == "i":
        return _json_int(item, "intValue")
    elif kind == "d":
        return _json_float(item)
    elif kind == "y":
        return _json_b64(item)
    elif isinstance(item, dict):
        values = _json_list(item.get("values"), "values")
        if kind == "a":
            return tuple(_json_any(v, depth + 1) for v in values)
        return _json_kvs(values, depth + 1)
    raise _Bad("wrong_type", f"AnyValue {kind!r} kind has a JSON value of the wrong type")


def _json_kvs(values: Any, depth: int) -> Attributes:
    out = _json_kv_dict(values, depth)
    return MappingProxyType(out) if out else EMPTY_ATTRIBUTES


def _json_kv_dict(values: Any, depth: int) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    for kv in _json_list(values, "attributes"):
        if not isinstance(kv, dict):
            raise _Bad("wrong_type", "a KeyValue is not a JSON object")
        key = kv.get("key")
        if key is None:
            key = ""
        elif not isinstance(key, str):
            raise _Bad("wrong_type", "a KeyValue key is not a string")
        out[key] = _json_any(kv.get("value"), depth)
    return out


def _json_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad("wrong_type", f"{what} is not a JSON array")
    return value


def _json_int(value: Any, what: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str) and _INT_RE.fullmatch(value):
        return int(value)
    if type(value) is float and value.is_integer():
        return int(value)
    raise _Bad("wrong_type", f"{what} is not an integer")


def _json_enum(value: Any, names: Mapping[str, int], what: str) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    return 0 if value is None else _json_int(value, what)


def _json_float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        if value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        if _FLOAT_RE.fullmatch(value):
            return float(value)
    raise _Bad("wrong_type", "doubleValue is not a number")


def _json_b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _Bad("wrong_type", "bytesValue is not a string")
    text = value.replace("-", "+").replace("_", "/")  # proto3 JSON accepts the URL-safe alphabet
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("invalid_base64", "bytesValue is not base64") from None


def _jsonable(value: AttrValue) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def render_text(value: AttrValue) -> str:
    """An AnyValue as text: strings as is, compact JSON for arrays/kvlists, base64 for bytes."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (tuple, Mapping)):
        return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _cap(text: str, max_bytes: int) -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes on a character boundary."""
    if len(text) * 4 <= max_bytes:
        return text, False
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes:
        return text, False
    return raw[:max_bytes].decode("utf-8", "ignore"), True


# --------------------------------------------------------------------------------------------------
# Shared mapping rules: resource -> (tenant, service, namespace), attributes -> lifted fields.

_Resource = tuple[str, str, str, Attributes]
_Scope = tuple[str, Attributes]
_Lifted = tuple[Attributes, int | None, str, str, str]
_NO_ATTRS: _Lifted = (EMPTY_ATTRIBUTES, None, "", "", "")


def _resource(attrs: Attributes) -> _Resource:
    tenant = render_text(attrs.get("tenant.id")) or DEFAULT_TENANT
    service = render_text(attrs.get("service.name")) or UNKNOWN_SERVICE
    return tenant, service, render_text(attrs.get("service.namespace")), attrs


def _http_status(value: AttrValue) -> int | None:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def _lift(attrs: dict[str, AttrValue]) -> _Lifted:
    """Read-only attributes, and the fields detection needs lifted out of them (http status, exception.*)."""
    if not attrs:
        return _NO_ATTRS
    get = attrs.get
    found = get("http.response.status_code")
    status = None if found is None else _http_status(found)
    if status is None:
        found = get("http.status_code")
        status = None if found is None else _http_status(found)
    kind, message, stack = get("exception.type"), get("exception.message"), get("exception.stacktrace")
    return (
        MappingProxyType(attrs),
        status,
        "" if kind is None else kind if type(kind) is str else render_text(kind),
        "" if message is None else message if type(message) is str else render_text(message),
        "" if stack is None else stack if type(stack) is str else render_text(stack),
    )


def _level(number: int, text: str) -> Level:
    if 0 < number <= 24:
        return _LEVEL_BY_NUMBER[number]
    return _LEVEL_BY_TEXT.get(text.strip().lower(), Level.UNSPECIFIED)


def _check_time(time: int, index: int) -> DecodeError | None:
    if MIN_TIME_UNIX_NANO <= time <= MAX_TIME_UNIX_NANO:
        return None
    return _time_error(time, index)


def _time_error(time: int, index: int) -> DecodeError:
    if not time:
        return DecodeError("missing_timestamp", "no timestamp: every candidate field is 0", index)
    return DecodeError("absurd_timestamp", f"{time} ns is outside 2000-01-01..2100-01-01", index)


def _pb_id(raw: bytes, size: int, what: str) -> str:
    if not raw.strip(b"\x00"):  # absent or all-zero: no id
        return ""
    if len(raw) != size:
        raise _Bad("bad_trace_id", f"{what} has {len(raw)} bytes, not {size}")
    return raw.hex()


def _json_id(value: Any, size: int, what: str) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) != 2 * size:
        raise _Bad("bad_trace_id", f"{what} is not {2 * size} hex digits")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise _Bad("bad_trace_id", f"{what} is not hex") from None
    if len(raw) != size:
        raise _Bad("bad_trace_id", f"{what} is not {2 * size} hex digits")
    return "" if raw == bytes(size) else raw.hex()


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _json_time(obj: dict[str, Any], camel: str, snake: str) -> int:
    value = _field(obj, camel, snake)
    return 0 if value is None else _json_int(value, camel)


def _json_str(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad("wrong_type", f"{what} is not a string")
    return value


def _json_object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad("wrong_type", f"{what} is not a JSON object")
    return value


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


def _decode_logs_pb(data: bytes, max_body: int, default_time: int) -> Decoded:
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
    min_t, max_t, cap_chars = MIN_TIME_UNIX_NANO, MAX_TIME_UNIX_NANO, max_body // 4
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
                    fail(_time_error(time, index))
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
                    raws = tuple(rec.attributes)
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


# --------------------------------------------------------------------------------------------------
# OTLP/JSON logs.


def _json_resource(obj: Any) -> _Resource:
    resource = _json_object(obj, "resource")
    return _resource(_json_kvs(resource.get("attributes"), 0))


def _json_scope(obj: Any) -> _Scope:
    scope = _json_object(obj, "scope")
    return _json_str(scope.get("name"), "scope name"), _json_kvs(scope.get("attributes"), 0)


def _json_log(
    rec: Any, resource: _Resource, scope: _Scope, max_body: int, default_time: int, index: int
) -> LogRecord | DecodeError:
    if not isinstance(rec, dict):
        return DecodeError("wrong_type", "a log record is not a JSON object", index)
    observed = _json_time(rec, "observedTimeUnixNano", "observed_time_unix_nano")
    time = _json_time(rec, "timeUnixNano", "time_unix_nano") or observed or default_time
    bad_time = _check_time(time, index)
    if bad_time is not None:
        return bad_time
    number = _json_enum(_field(rec, "severityNumber", "severity_number"), _SEVERITY_BY_NAME, "severity")
    text = _json_str(_field(rec, "severityText", "severity_text"), "severityText")
    level = _level(number, text)
    body, truncated = _cap(render_text(_json_any(rec.get("body"), 0)), max_body)
    trace_id = _json_id(_field(rec, "traceId", "trace_id"), 16, "traceId")
    span_id = _json_id(_field(rec, "spanId", "span_id"), 8, "spanId")
    attrs, status, exc_type, exc_message, exc_stack = _lift(_json_kv_dict(rec.get("attributes"), 0))
    tenant, service, namespace, resource_attrs = resource
    return LogRecord(
        tenant, service, namespace, time, observed, number or int(level), level, text, body, truncated,
        trace_id, span_id, status, exc_type, exc_message, exc_stack, scope[0], resource_attrs, scope[1],
        attrs,
    )  # fmt: skip


def _json_groups(doc: Any, outer: tuple[str, str], inner: tuple[str, str], items: tuple[str, str]) -> Any:
    """Yield (resource_json, scope_json, records_list); a malformed envelope spoils the message."""
    if not isinstance(doc, dict):
        raise _Bad("wrong_type", "the request is not a JSON object")
    for group in _json_list(_field(doc, *outer), outer[0]):
        if not isinstance(group, dict):
            raise _Bad("wrong_type", f"an element of {outer[0]} is not a JSON object")
        for scoped in _json_list(_field(group, *inner), inner[0]):
            if not isinstance(scoped, dict):
                raise _Bad("wrong_type", f"an element of {inner[0]} is not a JSON object")
            yield group.get("resource"), scoped.get("scope"), _json_list(_field(scoped, *items), items[0])


def _decode_logs_json(doc: Any, max_body: int, default_time: int) -> Decoded:
    records: list[LogRecord] = []
    errors: list[DecodeError] = []
    index = -1
    try:
        groups = list(
            _json_groups(doc, ("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"),
                         ("logRecords", "log_records"))
        )  # fmt: skip
    except _Bad as bad:
        return _whole(Decoded, bad.reason, bad.detail)
    for resource_json, scope_json, recs in groups:
        try:
            resource, scope = _json_resource(resource_json), _json_scope(scope_json)
        except _Bad as bad:
            errors.extend(DecodeError(bad.reason, bad.detail, index + 1 + k) for k in range(len(recs)))
            index += len(recs)
            continue
        for rec in recs:
            index += 1
            try:
                out = _json_log(rec, resource, scope, max_body, default_time, index)
            except _Bad as bad:
                out = DecodeError(bad.reason, bad.detail, index)
            if isinstance(out, LogRecord):
                records.append(out)
            else:
                errors.append(out)
    return Decoded(tuple(records), tuple(errors))


# --------------------------------------------------------------------------------------------------
# Spans.


def _pb_span(span: Any, tenant: str, service: str, index: int) -> Span | DecodeError:
    start = span.start_time_unix_nano
    bad_time = _check_time(start, index)
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


def _decode_spans_pb(data: bytes) -> DecodedSpans:
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
                    out = _pb_span(span, tenant, service, index)
                except _Bad as bad:
                    out = DecodeError(bad.reason, bad.detail, index)
                if isinstance(out, Span):
                    spans.append(out)
                else:
                    errors.append(out)
    return DecodedSpans(tuple(spans), tuple(errors))


def _json_span(obj: Any, tenant: str, service: str, index: int) -> Span | DecodeError:
    if not isinstance(obj, dict):
        return DecodeError("wrong_type", "a span is not a JSON object", index)
    start = _json_time(obj, "startTimeUnixNano", "start_time_unix_nano")
    bad_time = _check_time(start, index)
    if bad_time is not None:
        return bad_time
    status = _json_object(obj.get("status"), "status")
    code = _json_enum(status.get("code"), _STATUS_BY_NAME, "status code")
    return Span(
        tenant, service, _json_id(_field(obj, "traceId", "trace_id"), 16, "traceId"),
        _json_id(_field(obj, "spanId", "span_id"), 8, "spanId"),
        _json_id(_field(obj, "parentSpanId", "parent_span_id"), 8, "parentSpanId"),
        _json_str(obj.get("name"), "name"), _json_enum(obj.get("kind"), _KIND_BY_NAME, "kind"), start,
        _json_time(obj, "endTimeUnixNano", "end_time_unix_nano"),
        _STATUSES.get(code, SpanStatus.UNSET), _json_str(status.get("message"), "status message"),
    )  # fmt: skip


def _decode_spans_json(doc: Any) -> DecodedSpans:
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
                out = _json_span(obj, tenant, service, index)
            except _Bad as bad:
                out = DecodeError(bad.reason, bad.detail, index)
            if isinstance(out, Span):
                spans.append(out)
            else:
                errors.append(out)
    return DecodedSpans(tuple(spans), tuple(errors))


# --------------------------------------------------------------------------------------------------
# Entry points.

_D = TypeVar("_D", Decoded, DecodedSpans)


def _whole(kind: type[_D], reason: str, detail: str) -> _D:
    return kind((), (DecodeError(reason, detail, -1),))


def _looks_like_json(data: bytes) -> bool:
    """OTLP/JSON starts with optional BOM/whitespace and ``{``; protobuf never starts with ``{``."""
    start = 3 if data.startswith(_BOM) else 0
    return data[start : start + 64].lstrip(b" \t\r\n")[:1] == b"{"


def _load_json(data: bytes) -> Any:
    """The parsed JSON document; raises ``_Bad`` (invalid_utf8 / invalid_json)."""
    try:
        return orjson.loads(data[3:] if data.startswith(_BOM) else data)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("invalid_utf8", "the JSON text is not valid UTF-8") from None
    if "surrogate" in message:
        raise _Bad("invalid_utf8", f"the JSON text escapes an unpaired surrogate: {message}")
    raise _Bad("invalid_json", message)


def _dispatch(
    data: bytes, fmt: str, kind: type[_D], on_pb: Callable[[bytes], _D], on_json: Callable[[Any], _D]
) -> _D:
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, not {fmt!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return _whole(kind, "wrong_type", f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        return _whole(kind, "empty", "zero-length message")
    try:
        if fmt == "proto" or (fmt == "auto" and not _looks_like_json(data)):
            return on_pb(data)
        try:
            return on_json(_load_json(data))
        except _Bad as bad:
            # "\n{" also starts a protobuf request whose first resource is 123 bytes long.
            if fmt == "auto" and data[:1] != b"{":
                decoded = on_pb(data)
                if not (decoded.errors and decoded.errors[0].index == -1):
                    return decoded
            return _whole(kind, bad.reason, bad.detail)
    except RecursionError:
        return _whole(kind, "too_deep", "the message nests too deeply")
    except Exception as exc:  # a codec bug must not kill the job: dead-letter the message instead
        return _whole(kind, "internal_error", f"{type(exc).__name__}: {exc}")


def decode_logs(
    data: bytes, *, fmt: str = "auto", max_body_bytes: int = 65536, default_time_unix_nano: int = 0
) -> Decoded:
    """Decode one ``ExportLogsServiceRequest`` (``fmt``: "proto", "json" or "auto" = sniff).

    Event time is ``timeUnixNano``, else ``observedTimeUnixNano``, else ``default_time_unix_nano``
    (the caller passes the Kafka message timestamp, in ns). Bodies are cut to ``max_body_bytes``
    UTF-8 bytes. Never raises on bad ``data``; see the module docstring for the error contract.
    """
    if max_body_bytes < 0:
        raise ValueError("max_body_bytes must be >= 0")
    return _dispatch(
        data, fmt, Decoded,
        lambda raw: _decode_logs_pb(raw, max_body_bytes, default_time_unix_nano),
        lambda doc: _decode_logs_json(doc, max_body_bytes, default_time_unix_nano),
    )  # fmt: skip


def decode_spans(data: bytes, *, fmt: str = "auto") -> DecodedSpans:
    """Decode one ``ExportTraceServiceRequest`` (protobuf or OTLP/JSON) into spans and errors."""
    return _dispatch(data, fmt, DecodedSpans, _decode_spans_pb, _decode_spans_json)


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
