"""OTLP values shared by every decoder: limits, severity tables, AnyValue decoding (protobuf and
OTLP/JSON) and rendering, and the mapping rules from resource/attributes to typed fields.

Pure functions: no I/O, no environment, no clock. Times are event time in Unix nanoseconds.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar, cast

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
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
    SpanStatus,
)

MIN_TIME_UNIX_NANO = 946_684_800 * 1_000_000_000  # 2000-01-01T00:00:00Z
MAX_TIME_UNIX_NANO = 4_102_444_800 * 1_000_000_000  # 2100-01-01T00:00:00Z
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""The one size limit of a Kafka message, in bytes: ``max.message.bytes`` of the otlp_logs/otlp_spans
topics (deploy/kafka/topics.yaml) and the Collector's exporter, the job's fetch size, every producer's
``message.max.bytes`` and the bound on a dead letter; a larger input message is one decode error."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # OTLP intValue; also what the state codec (orjson) stores
UINT64_MAX = 2**64 - 1  # OTLP fixed64 times
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1  # OTLP enums (severityNumber, span kind, status code)
_MAX_INT_DIGITS = 20  # no int64/uint64 has more; longer text is rejected before int() reads it
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
        return _json_int(item, "intValue")  # int64, as the protobuf field
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


def _json_int(value: Any, what: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """A JSON integer (number or decimal string) in ``low..high``; anything else is this record's error.

    Digits are counted before ``int()`` reads them: past 4,300 digits ``int()`` raises, and a number
    beyond 64 bits would reach the state codec (orjson), which cannot store it."""
    if type(value) is int:
        number = value
    elif isinstance(value, str) and _INT_RE.fullmatch(value):
        if len(value.lstrip("-").lstrip("0")) > _MAX_INT_DIGITS:
            raise _Bad("int_out_of_range", f"{what} has {len(value)} digits: outside {low}..{high}")
        number = int(value)
    elif type(value) is float and value.is_integer():
        if not low <= value <= high:
            raise _Bad("int_out_of_range", f"{what} = {value:g} is outside {low}..{high}")
        number = int(value)
    else:
        raise _Bad("wrong_type", f"{what} is not an integer")
    if not low <= number <= high:
        raise _Bad("int_out_of_range", f"{what} = {str(number)[:40]} is outside {low}..{high}")
    return number


def _json_enum(value: Any, names: Mapping[str, int], what: str) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    return 0 if value is None else _json_int(value, what, INT32_MIN, INT32_MAX)


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
    """An HTTP status is 100..599 (RFC 9110); any other number or text is no status."""
    if type(value) is int:
        status = value
    elif isinstance(value, str):  # int() only ever sees three digits
        status = int(value) if len(value) == 3 and value.isascii() and value.isdigit() else 0
    elif type(value) is float:
        status = int(value) if 100 <= value <= 599 and value.is_integer() else 0
    else:
        return None
    return status if 100 <= status <= 599 else None


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


def latest_event_time_unix_nano(received_ms: int, *, max_future_skew_ms: int) -> int:
    """The latest event time (ns) a record received at ``received_ms`` (Unix ms) may carry.

    Watermarks are per subtask, not per tenant: one record from the future would close every other
    tenant's windows and make their records late, so a record more than the skew ahead of the time
    it was received is a decode error. Never past ``MAX_TIME_UNIX_NANO``."""
    return min(MAX_TIME_UNIX_NANO, (received_ms + max_future_skew_ms) * 1_000_000)


def _check_time(time: int, index: int, latest: int = MAX_TIME_UNIX_NANO) -> DecodeError | None:
    if MIN_TIME_UNIX_NANO <= time <= latest:
        return None
    return _time_error(time, index, latest)


def _time_error(time: int, index: int, latest: int = MAX_TIME_UNIX_NANO) -> DecodeError:
    if not time:
        return DecodeError("missing_timestamp", "no timestamp: every candidate field is 0", index)
    if latest < time <= MAX_TIME_UNIX_NANO:
        return DecodeError(
            "future_timestamp",
            f"{time} ns is {(time - latest) // 1_000_000} ms past the latest accepted event time {latest} ns"
            " (receive time + the maximum future skew)",
            index,
        )
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
    return 0 if value is None else _json_int(value, camel, INT64_MIN, UINT64_MAX)  # < 0: absurd_timestamp


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


_D = TypeVar("_D", Decoded, DecodedSpans)


def _whole(kind: type[_D], reason: str, detail: str) -> _D:
    return kind((), (DecodeError(reason, detail, -1),))
