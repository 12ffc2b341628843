"""The detection job: OTLP logs in, incidents out. Runs under ``flink run -py jobs/detect.py``, on
the local MiniCluster (``logclaw run``, ``logclaw replay``, ``logclaw demo``), and as the
FlinkDeployment's Python entry point. Nothing runs at import time.

    logs ─► decode, index, summarize ─► watermarks ─► key_by(tenant, service): service window ─┐
             ├─► dead letters          └─► key_by(tenant, trace): trace timeline ──────────────┤
             │           spans ─► decode ──┘           └─► span timings ─┐                     │
             └─► log timings (records that state a duration) ────────────┴─► key_by(tenant,    │
                                                        service, operation): RED ──────────────┤
                                                                  key_by(tenant): correlate ◄──┘
                                                                      └─► incidents: topic + store
"""

from __future__ import annotations

import sys
from typing import NamedTuple

from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment

from jobs import operators as op
from jobs import sinks
from jobs import span_operators as sop
from jobs.config import ConfigError, JobConfig
from jobs.event_time import KEYED_TIMED, keyed, keyed_by_event_time
from jobs.steps import STEPS, step
from udfs.engine import EngineConfig


class Streams(NamedTuple):
    incidents: DataStream  # contract events as JSON strings, after the sinks
    progress: DataStream  # replay progress lines (JSON)


def watermarks(cfg: JobConfig) -> WatermarkStrategy:
    """Bounded out-of-orderness with idleness; the timestamp is the event time the decoders put on
    every keyed element (see jobs.event_time)."""
    return WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(cfg.out_of_orderness_ms)).with_idleness(
        Duration.of_millis(cfg.idleness_ms)
    )


def build_pipeline(
    env: StreamExecutionEnvironment,
    cfg: JobConfig,
    logs: DataStream,
    spans: DataStream | None,
    engine_cfg: EngineConfig | None = None,
    progress_every: int = 0,
) -> Streams:
    ecfg = engine_cfg or EngineConfig(out_of_orderness_ms=cfg.out_of_orderness_ms)
    decoded = step(logs.process(op.DecodeAndSummarize(cfg, ecfg, progress_every), KEYED_TIMED), "decode")
    # decoded: ServiceBatch per (message, tenant, service), keyed and timed; side outputs: dead letters,
    # trace observations and log timings (keyed by tenant and trace shard), progress
    letters = decoded.get_side_output(op.DEAD_LETTER)
    batches = keyed_by_event_time(decoded, watermarks(cfg), "watermarks", "batches_keyed")
    observations = decoded.get_side_output(op.TRACE_OBSERVATIONS)
    span_input: tuple[tuple[DataStream, str], ...] = ()
    if spans is not None:
        spans_decoded = step(spans.process(sop.DecodeSpans(cfg), KEYED_TIMED), "decode_spans")
        span_input = ((spans_decoded, "span_watermarks"),)  # a message's spans per trace shard, own watermarks
        # A side output nobody asks for is emitted as a main-output element: ask, or one bad span fails the job.
        letters = letters.union(spans_decoded.get_side_output(op.DEAD_LETTER))
    dead = step(letters.process(sinks.DeadLetterSink(cfg)), "dead_letter_sink")  # bounded JSON per bad message
    terminate(dead.set_parallelism(1), "dead_letter_end")
    timelines = keyed_by_event_time(observations, watermarks(cfg), "trace_watermarks", "traces_keyed", *span_input)
    # timelines: tuples of TraceObservation, Span or SpanTiming, keyed by (tenant, trace shard)
    anomalies = step(
        batches.process(op.ServiceWindow(ecfg)), "service_window"
    )  # ServiceAnomaly (immediate at once, windowed on bucket close) | ServiceRecovered
    facts = step(timelines.process(sop.TraceTimeline(ecfg)), "trace_timeline")
    # facts: FactBatch (learned/span call edges and error precedence) per element; side output: span timings
    # (with self time, once the watermark passes their end) and log timings, a tuple per (tenant, service,
    # operation)
    red = step(keyed(facts.get_side_output(sop.SPAN_TIMINGS)).process(sop.SpanRed(ecfg)), "span_red")
    anomalies = anomalies.union(red)  # + ServiceAnomaly (latency, span_errors) on RED bucket close
    events = step(
        anomalies.union(facts).key_by(lambda x: x.tenant).process(op.Correlate(ecfg), Types.STRING()), "correlate"
    )
    # events: incident events (opened / updated / resolved) as contract JSON
    # A chain break: PyFlink would fuse these two Python operators and reuse one uid for both.
    incidents = step(events.process(sinks.IncidentSink(cfg), Types.STRING()), "incident_sink").start_new_chain()
    terminate(incidents, "incident_end")
    return Streams(incidents, decoded.get_side_output(op.PROGRESS))


def terminate(stream: DataStream, key: str) -> None:
    from connectors.flink_sources import discard

    discard(stream, *STEPS[key])


def configure(env: StreamExecutionEnvironment, cfg: JobConfig) -> None:
    """Job-level settings that belong to this job rather than to the cluster's config.yaml."""
    from pyflink.common import Configuration

    conf = Configuration()
    # PyFlink 2.3 fuses consecutive Python operators and then drops the fused head's side outputs
    # (dead letters, trace observations): found by test_job_minicluster. Keep them separate.
    conf.set_string("python.operator-chaining.enabled", "false")
    env.configure(conf)
    env.set_parallelism(cfg.parallelism)
    if cfg.mode == "kafka" and cfg.checkpoint_interval_ms > 0:
        env.enable_checkpointing(cfg.checkpoint_interval_ms)


def sources(env: StreamExecutionEnvironment, cfg: JobConfig) -> tuple[DataStream, DataStream | None]:
    from connectors import flink_sources

    if cfg.mode == "files":
        logs = flink_sources.text_files(env, cfg.log_files, "otlp-logs-files")
        spans = flink_sources.text_files(env, cfg.trace_files, "otlp-spans-files") if cfg.trace_files else None
        return logs, spans
    security = cfg.kafka_security.java_properties()  # SASL / TLS of the Java Kafka client
    logs = flink_sources.kafka_topic(
        env, bootstrap=cfg.bootstrap_servers, topic=cfg.logs_topic, group_id=cfg.group_id, name="logs",
        max_message_bytes=cfg.max_message_bytes, client_properties=security,
    )
    spans = None
    if cfg.spans_topic:
        spans = flink_sources.kafka_topic(
            env, bootstrap=cfg.bootstrap_servers, topic=cfg.spans_topic, group_id=cfg.group_id, name="spans",
            max_message_bytes=cfg.max_message_bytes, client_properties=security,
        )
    return logs, spans


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``flink run -py jobs/detect.py``: configuration from LOGCLAW_* variables."""
    try:
        cfg = JobConfig.from_env()
    except ConfigError as exc:  # one line naming the setting, no traceback
        print(f"logclaw-detect: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    env = StreamExecutionEnvironment.get_execution_environment()
    configure(env, cfg)
    logs, spans = sources(env, cfg)
    build_pipeline(env, cfg, logs, spans)
    env.execute("logclaw-detect")


if __name__ == "__main__":
    main(sys.argv[1:])
