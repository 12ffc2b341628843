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

Modules, along the data: ``values`` (limits, severity, AnyValue, resource/attribute mapping),
``views`` (protobuf views and memos), ``logs_pb`` / ``logs_json`` (logs), ``spans`` (traces),
``decode`` (the entry points below), ``encode`` (records -> request bytes), ``dead_letter`` (what a
rejected message becomes, bounded in size).

Limits: ``MAX_MESSAGE_BYTES`` is the one message size limit (topics, producers, fetch size, dead
letters); integers are int64 (``intValue``), uint64 (times) or int32 (enums), anything larger is that
record's ``int_out_of_range`` error (it would not fit the protobuf field, nor the state codec); an
HTTP status is 100..599 or none; an event time more than the configured skew after receive time is
a ``future_timestamp`` error (``latest_event_time_unix_nano``).
"""

from __future__ import annotations

from connectors.otlp.dead_letter import DEAD_LETTER_PREFIX_BYTES, build_dead_letter
from connectors.otlp.decode import decode_logs, decode_spans
from connectors.otlp.encode import encode_logs_json, encode_logs_proto, encode_spans_json, encode_spans_proto
from connectors.otlp.values import MAX_MESSAGE_BYTES, latest_event_time_unix_nano, render_text

__all__ = [
    "DEAD_LETTER_PREFIX_BYTES",
    "MAX_MESSAGE_BYTES",
    "build_dead_letter",
    "decode_logs",
    "decode_spans",
    "encode_logs_json",
    "encode_logs_proto",
    "encode_spans_json",
    "encode_spans_proto",
    "latest_event_time_unix_nano",
    "render_text",
]
