"""The job's sink operators: incident events to their topic and the store, dead letters to their topic
or file, and the store writer shared with the decoders. No keyed state."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from pyflink.datastream import ProcessFunction, RuntimeContext

from jobs.config import JobConfig
from udfs.incidents import rfc3339
from udfs.timefmt import parse_time_ms


class SinkMetrics:
    """The store writer's retry/failure counts (OpenSearch) as Flink counters, advanced by the delta
    after each flush. Counters, never gauges: in thread mode a Python gauge is a callback the metrics
    reporter runs on a Java thread, and that crashed a TaskManager (SIGSEGV in take_gil) here."""

    NAMES = ("request_retries", "item_retries", "failures", "dead_lettered", "docs_written")

    def __init__(self, ctx: RuntimeContext, writer: Any) -> None:
        self.stats = getattr(writer, "stats", None)  # the embedded store raises instead of retrying
        group = ctx.get_metrics_group()
        self.counters = {n: group.counter(f"sink_{n}") for n in self.NAMES} if self.stats is not None else {}
        self.seen = dict.fromkeys(self.NAMES, 0)

    def sync(self) -> None:
        for name, counter in self.counters.items():
            now = int(getattr(self.stats, name))
            if now > self.seen[name]:
                counter.inc(now - self.seen[name])
                self.seen[name] = now


def open_writer(cfg: JobConfig) -> Any:
    """The log/incident store: OpenSearch when configured, else the embedded SQLite store."""
    if cfg.opensearch_url:
        from connectors.opensearch import OpenSearchSink

        access = cfg.opensearch  # basic auth, CA bundle, certificate verification
        sink = OpenSearchSink([access.url], auth=access.auth(), client_options=access.client_options())
        sink.ensure_templates()
        return sink
    from connectors.store import EmbeddedStore

    cfg.resolved_store_path.parent.mkdir(parents=True, exist_ok=True)
    return EmbeddedStore(cfg.resolved_store_path, retention=cfg.store_retention)


class IncidentSink(ProcessFunction):  # type: ignore[misc]
    """Incident events to the incidents topic (key = fingerprint, acknowledged before moving on) and
    the store; stamps ``emitted_at`` (wall clock) and measures detection lag."""

    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg

    def open(self, ctx: RuntimeContext) -> None:
        self.writer = open_writer(self.cfg)
        self.sink_metrics = SinkMetrics(ctx, self.writer)
        self.producer = None
        if self.cfg.mode == "kafka":
            from connectors.kafka_io import KeyedProducer

            self.producer = KeyedProducer(self.cfg.bootstrap_servers, self.cfg.incidents_topic,
                                          max_message_bytes=self.cfg.max_message_bytes,
                                          security=self.cfg.kafka_security)
        group = ctx.get_metrics_group()
        # A sum, not a gauge (see SinkMetrics): mean lag = detection_lag_ms_total / incident_events_out.
        self.m_lag = group.counter("detection_lag_ms_total")
        self.m_out = group.counter("incident_events_out")

    def process_element(self, value: str, ctx: ProcessFunction.Context) -> Iterator[str]:
        event = json.loads(value)
        now_ms = int(time.time() * 1000)
        event["emitted_at"] = rfc3339(now_ms)
        self.m_lag.inc(max(0, now_ms - parse_time_ms(event["detected_at"])))
        self.writer.write_incident_events([event])
        self.writer.flush()
        self.sink_metrics.sync()
        if self.producer is not None:
            self.producer.send(event["fingerprint"], event)
        self.m_out.inc()
        yield json.dumps(event, sort_keys=True)

    def close(self) -> None:
        for resource in (getattr(self, "writer", None), getattr(self, "producer", None)):
            if resource is not None:
                resource.close()


class DeadLetterSink(ProcessFunction):  # type: ignore[misc]
    """Dead letters to the dead-letter topic (Kafka mode) or ``<out>/dead-letter.jsonl`` (files)."""

    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg

    def open(self, ctx: RuntimeContext) -> None:
        self.producer = None
        self.file = None
        if self.cfg.mode == "kafka":
            from connectors.kafka_io import KeyedProducer

            self.producer = KeyedProducer(self.cfg.bootstrap_servers, self.cfg.dead_letter_topic,
                                          max_message_bytes=self.cfg.max_message_bytes,
                                          security=self.cfg.kafka_security)
        else:
            from pathlib import Path

            out = Path(self.cfg.out_dir or ".")
            out.mkdir(parents=True, exist_ok=True)
            self.file = (out / "dead-letter.jsonl").open("a", encoding="utf-8")
        group = ctx.get_metrics_group()
        self.m = group.counter("dead_letters")
        self.m_cut = group.counter("dead_letters_cut")
        self.m_dropped = group.counter("dead_letters_dropped")

    def process_element(self, value: str, ctx: ProcessFunction.Context) -> Iterator[Any]:
        if self.producer is not None:
            self._send(value)
        elif self.file is not None:
            self.file.write(value + "\n")
            self.file.flush()
        self.m.inc()
        return iter(())

    def _send(self, value: str) -> None:
        """Send one dead letter. One the topic refuses as too large or invalid (its limit is below
        ours) is sent again without its payload, and dropped (counted, logged) if even that is
        refused: a dead letter never fails the job. An unreachable broker still does, as for
        incidents: the job restarts from its checkpoint and nothing is lost."""
        from connectors.kafka_io import KafkaSinkError

        assert self.producer is not None
        obj = json.loads(value)
        key = f"{obj['topic']}-{obj['partition']}-{obj['offset']}"
        try:
            self.producer.send(key, value.encode())
            return
        except KafkaSinkError as exc:
            if not exc.refused:
                raise
            first = exc
        obj.update(payload_base64="", payload_truncated=True, errors=obj["errors"][:10],
                   errors_truncated=len(obj["errors"]) > 10, refused=str(first)[:500])
        self.m_cut.inc()
        try:
            self.producer.send(key, json.dumps(obj, sort_keys=True).encode())
        except KafkaSinkError as exc:
            if not exc.refused:
                raise
            self.m_dropped.inc()
            print(f"dead letter {key} dropped: the topic refused it ({exc})", file=sys.stderr, flush=True)

    def close(self) -> None:
        for resource in (getattr(self, "file", None), getattr(self, "producer", None)):
            if resource is not None:
                resource.close()
