"""Entry points: message bytes (protobuf or OTLP/JSON, told apart by their first byte unless the
format is given) -> ``Decoded`` / ``DecodedSpans``; never raises on input bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from connectors.otlp.logs_json import _decode_logs_json
from connectors.otlp.logs_pb import _decode_logs_pb
from connectors.otlp.spans import _decode_spans_json, _decode_spans_pb
from connectors.otlp.values import _BOM, _D, _FORMATS, MAX_MESSAGE_BYTES, MAX_TIME_UNIX_NANO, _Bad, _whole
from udfs.records import (
    Decoded,
    DecodedSpans,
)

# --------------------------------------------------------------------------------------------------
# Entry points.


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
    data: bytes, fmt: str, max_bytes: int, kind: type[_D], on_pb: Callable[[bytes], _D], on_json: Callable[[Any], _D]
) -> _D:
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, not {fmt!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return _whole(kind, "wrong_type", f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        return _whole(kind, "empty", "zero-length message")
    if len(data) > max_bytes:
        return _whole(kind, "too_large", f"{len(data)} bytes is over the message size limit of {max_bytes}")
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
    data: bytes,
    *,
    fmt: str = "auto",
    max_body_bytes: int = 65536,
    default_time_unix_nano: int = 0,
    latest_time_unix_nano: int = MAX_TIME_UNIX_NANO,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> Decoded:
    """Decode one ``ExportLogsServiceRequest`` (``fmt``: "proto", "json" or "auto" = sniff).

    Event time is ``timeUnixNano``, else ``observedTimeUnixNano``, else ``default_time_unix_nano``
    (the caller passes the Kafka message timestamp, in ns); a record whose event time is after
    ``latest_time_unix_nano`` (see ``latest_event_time_unix_nano``) is a ``future_timestamp`` error.
    Bodies are cut to ``max_body_bytes`` UTF-8 bytes; a message over ``max_message_bytes`` is one
    ``too_large`` error. Never raises on bad ``data``; see the module docstring for the error contract.
    """
    if max_body_bytes < 0:
        raise ValueError("max_body_bytes must be >= 0")
    return _dispatch(
        data, fmt, max_message_bytes, Decoded,
        lambda raw: _decode_logs_pb(raw, max_body_bytes, default_time_unix_nano, latest_time_unix_nano),
        lambda doc: _decode_logs_json(doc, max_body_bytes, default_time_unix_nano, latest_time_unix_nano),
    )  # fmt: skip


def decode_spans(
    data: bytes,
    *,
    fmt: str = "auto",
    latest_time_unix_nano: int = MAX_TIME_UNIX_NANO,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> DecodedSpans:
    """Decode one ``ExportTraceServiceRequest`` (protobuf or OTLP/JSON) into spans and errors; a span
    starting or ending after ``latest_time_unix_nano`` is a ``future_timestamp`` error."""
    return _dispatch(
        data, fmt, max_message_bytes, DecodedSpans,
        lambda raw: _decode_spans_pb(raw, latest_time_unix_nano),
        lambda doc: _decode_spans_json(doc, latest_time_unix_nano),
    )  # fmt: skip
