"""Protobuf *views*: the generated opentelemetry-proto descriptors with strings, bodies, attributes,
resources and scopes turned into raw bytes, so a message parses at once and each part is decoded
(and memoised) only when needed; a bad string spoils one record instead of the whole message.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError as PbDecodeError
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from connectors.otlp.values import _MEMO_LIMIT, _Bad

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
