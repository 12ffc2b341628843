"""Flink sources for the three ways of running: Kafka topics (production and the local stack) and
OTLP/JSON-lines files through Flink's FileSource (replay; .gz files are decompressed by extension).

The Kafka source is declared through the Table API with the ``raw`` format because that is the one
PyFlink path that exposes each record's partition, offset and timestamp (dead letters carry them);
its rows are handed to the DataStream API at once. Start offsets: the consumer group's committed
offsets, else earliest — never "latest", which the local tansu broker answers wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pyflink.common import WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

from connectors.otlp import MAX_MESSAGE_BYTES

_SAFE = re.compile(r"[^A-Za-z0-9_]")


def kafka_topic(env: StreamExecutionEnvironment, *, bootstrap: str, topic: str, group_id: str, name: str,
                max_message_bytes: int = MAX_MESSAGE_BYTES,
                client_properties: Mapping[str, str] | None = None) -> DataStream:  # fmt: skip
    """Rows of (value bytes, partition, offset, timestamp) from ``topic``. A partition's fetch takes
    ``max_message_bytes`` (the topics' ``max.message.bytes``), so the largest message the topic can
    hold comes in one fetch; the decoder rejects anything larger as ``too_large``.
    ``client_properties``: more Java Kafka client settings (security:
    ``KafkaSecurity.java_properties()``), passed as ``'properties.<key>'`` options."""
    from pyflink.table import StreamTableEnvironment

    t_env = StreamTableEnvironment.create(env)
    table = "src_" + _SAFE.sub("_", name)
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE `{table}` (
          `value` BYTES,
          `partition` INT METADATA VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL,
          `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{topic}',
          'properties.bootstrap.servers' = '{bootstrap}',
          'properties.group.id' = '{group_id}',
          'properties.auto.offset.reset' = 'earliest',
          'properties.max.partition.fetch.bytes' = '{int(max_message_bytes)}',
          'scan.startup.mode' = 'group-offsets',{kafka_options(client_properties or {})}
          'format' = 'raw'
        )""")
    return t_env.to_data_stream(t_env.from_path(table))


def kafka_options(properties: Mapping[str, str]) -> str:
    """``'properties.<key>' = '<value>',`` lines for the Kafka table's WITH clause (SQL string literals:
    a quote is doubled, so a password or PEM text cannot end the literal)."""
    return "".join(f"\n          {_sql_literal('properties.' + key)} = {_sql_literal(value)},"
                   for key, value in properties.items())


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def text_files(env: StreamExecutionEnvironment, paths: tuple[str, ...], name: str) -> DataStream:
    """Each line of the files as a string (one OTLP/JSON request per line)."""
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), *paths).build()
    return env.from_source(source, WatermarkStrategy.no_watermarks(), name)


def row_payload(value: Any) -> tuple[bytes, int, int, int]:
    """(payload, partition, offset, timestamp_ms) from a Kafka row or a file line."""
    if isinstance(value, str):
        return value.encode("utf-8"), -1, -1, 0
    return bytes(value[0] or b""), int(value[1]), int(value[2]), _epoch_ms(value[3])


def _epoch_ms(ts: Any) -> int:
    """A TIMESTAMP_LTZ field in ms: PyFlink's Instant in process mode; in thread mode the
    java.time.Instant itself, reached through pemja."""
    if ts is None:
        return 0
    if hasattr(ts, "to_epoch_milli"):
        return int(ts.to_epoch_milli())
    return int(ts.toEpochMilli())


def discard(stream: DataStream, name: str, uid: str) -> None:
    """End ``stream`` in a sink that drops elements. The job's Python sinks are process functions
    (PyFlink has no Python Sink API), and Flink only runs what ends in a sink."""
    from pyflink.datastream.connectors.base import Sink

    stream.sink_to(Sink("org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink")).name(name).uid(uid)
