"""Timestamps, watermarks and keying in Java for elements a Python operator already keyed and timed.

PyFlink's own ``assign_timestamps_and_watermarks(...with_timestamp_assigner(...))`` and
``key_by(lambda ...)`` each add a Python operator that unpickles every element to read one field
and pickles it again (they wrap it as ``(value, timestamp)`` and ``Row(key, value)`` for Java).
The decoders already know both the key and the event time, so they emit
``(Row(key, value), event_time_ms)`` themselves (``KEYED_TIMED``) and this module does the rest
with the same Java classes PyFlink uses behind those two calls: the timestamp is read from the
tuple, watermarks are generated, the tuple is unwrapped and the stream is keyed by the row's
first field. The keyed stream is exactly what ``key_by`` would have produced, so keyed Python
functions see ``value`` and ``ctx.get_current_key() == key``.
"""

from __future__ import annotations

from typing import Any

from pyflink.common import Types, WatermarkStrategy
from pyflink.datastream import DataStream, KeyedStream

from jobs.steps import STEPS

KEY = Types.STRING()
VALUE = Types.PICKLED_BYTE_ARRAY()
KEYED = Types.ROW([KEY, VALUE])
KEYED_TIMED = Types.TUPLE([KEYED, Types.LONG()])
"""What the decoders emit for keyed steps: ``(Row(key, value), event_time_ms)``."""


def keyed_by_event_time(
    stream: DataStream, strategy: WatermarkStrategy, watermarks: str, unwrap: str, *others: tuple[DataStream, str]
) -> KeyedStream:
    """``stream`` (of ``KEYED_TIMED``) with event-time timestamps and ``strategy``'s watermarks,
    keyed by the key. ``watermarks`` and ``unwrap`` name the two Java operators (jobs/steps.py).

    ``others``: more streams of the same shape (with the name of their watermarks operator), each
    given its own watermarks before the union, so the union's watermark is the slower input's: one
    input read ahead (the logs file before the spans file) never makes the other's elements late."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    eventtime = jvm.org.apache.flink.streaming.api.functions.python.eventtime
    j_strategy = strategy._j_watermark_strategy.withTimestampAssigner(eventtime.CustomTimestampAssigner())
    j_timed = stream._j_data_stream.assignTimestampsAndWatermarks(j_strategy)
    _name(j_timed, watermarks)
    for other, name in others:
        j_other = other._j_data_stream.assignTimestampsAndWatermarks(j_strategy)
        _name(j_other, name)
        j_timed = DataStream(j_timed).union(DataStream(j_other))._j_data_stream
    j_rows = j_timed.map(eventtime.RemoveTimestampMapFunction(), KEYED.get_java_type_info())
    _name(j_rows, unwrap)
    j_keyed = j_rows.keyBy(jvm.KeyByKeySelector(), Types.ROW([KEY]).get_java_type_info())
    return KeyedStream(j_keyed, VALUE, DataStream(j_rows))


def _name(j_stream: Any, key: str) -> None:
    sid = STEPS[key]
    j_stream.name(sid.name).uid(sid.uid)


def keyed(stream: DataStream) -> KeyedStream:
    """``stream`` (of ``KEYED`` rows, already timed downstream of a keyed step) keyed by the key,
    keeping the upstream timestamps and watermarks: a keyed step's timers may emit elements that
    are already behind a watermark of their own event time, so a new watermark generator must not
    be put in front of the next one."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    j_keyed = stream._j_data_stream.keyBy(jvm.KeyByKeySelector(), Types.ROW([KEY]).get_java_type_info())
    return KeyedStream(j_keyed, VALUE, stream)
