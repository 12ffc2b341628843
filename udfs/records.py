"""Typed records every layer shares: decoded log records, spans and decode errors.

Records are ``NamedTuple``s: immutable, typed, and cheap to build (the codec makes hundreds of
thousands per second). Times are event time in Unix nanoseconds as OTLP carries them; the
``*_ms`` properties give milliseconds, the unit the engine and Flink use.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple, Union

DEFAULT_TENANT = "default"
UNKNOWN_SERVICE = "unknown_service"

# An OTLP AnyValue after decoding: str, bool, int, float, bytes, a tuple of values or a mapping.
AttrValue = Union[str, bool, int, float, bytes, tuple["AttrValue", ...], Mapping[str, "AttrValue"], None]
Attributes = Mapping[str, AttrValue]
EMPTY_ATTRIBUTES: Attributes = MappingProxyType({})


class Level(enum.IntEnum):
    """Normalized severity: the first number of each OTLP severity range (TRACE=1 ... FATAL=21)."""

    UNSPECIFIED = 0
    TRACE = 1
    DEBUG = 5
    INFO = 9
    WARN = 13
    ERROR = 17
    FATAL = 21

    @property
    def is_error(self) -> bool:
        return self >= Level.ERROR


class LogRecord(NamedTuple):
    """One decoded OTLP log record with the fields detection needs lifted out of the attributes."""

    tenant: str
    service: str
    service_namespace: str
    time_unix_nano: int
    """Event time: ``timeUnixNano``, or ``observedTimeUnixNano`` when that is 0."""
    observed_time_unix_nano: int
    severity_number: int
    """The OTLP ``severityNumber`` as sent (0..24), or derived from the text when absent."""
    level: Level
    severity_text: str
    body: str
    body_truncated: bool
    trace_id: str
    """Lower-case hex, 32 chars, or "" when absent."""
    span_id: str
    http_status: int | None
    exception_type: str
    exception_message: str
    exception_stacktrace: str
    scope_name: str
    resource_attributes: Attributes
    scope_attributes: Attributes
    attributes: Attributes

    @property
    def time_ms(self) -> int:
        """Event time in Unix milliseconds."""
        return self.time_unix_nano // 1_000_000


class SpanStatus(enum.IntEnum):
    UNSET = 0
    OK = 1
    ERROR = 2


class Span(NamedTuple):
    """One decoded OTLP span: enough to learn the service call graph and error order."""

    tenant: str
    service: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_unix_nano: int
    end_unix_nano: int
    status: SpanStatus
    status_message: str

    @property
    def start_ms(self) -> int:
        return self.start_unix_nano // 1_000_000


class DecodeError(NamedTuple):
    """Why an input (a whole message, or one record inside it) could not be decoded.

    ``reason`` is a short stable code (for metrics and dead-letter routing); ``detail`` is prose.
    ``index`` is the record's position in the message (-1 for the whole message).
    """

    reason: str
    detail: str
    index: int = -1  # type: ignore[assignment]  # shadows tuple.index by design: the record position


class Decoded(NamedTuple):
    """The codec's answer for one message: every input record is in exactly one of the two."""

    records: tuple[LogRecord, ...]
    errors: tuple[DecodeError, ...]


class DecodedSpans(NamedTuple):
    spans: tuple[Span, ...]
    errors: tuple[DecodeError, ...]
