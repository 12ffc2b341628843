"""The log/incident store API both stores implement: document shape, deterministic ids, protocols.

The detection job writes decoded log records, anomalies and incident events through a ``LogWriter``;
the ticketing worker reads evidence back through a ``LogReader``. Two implementations exist: the
embedded SQLite store (``connectors.store``, the no-server default) and OpenSearch
(``connectors.opensearch``). Every read is scoped by tenant, sorted by event time ascending and
bounded by ``limit``. Times are event time: ``time_ms`` is Unix milliseconds, ``time`` the same
instant as RFC 3339 UTC with milliseconds.

Ids are deterministic so that a replay from a Flink checkpoint overwrites the documents it already
wrote instead of duplicating them (at-least-once delivery becomes effectively-once storage).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from udfs.anomaly import ServiceBatch
from udfs.records import Attributes, AttrValue, LogRecord, Span, SpanStatus
from udfs.timefmt import format_time_ms as format_time_ms  # re-exported: one implementation
from udfs.timefmt import parse_time_ms as parse_time_ms

LogDoc = dict[str, Any]

STACKTRACE_MAX_BYTES = 4096
MAX_LIMIT = 10_000
"""Upper bound for any ``limit`` (OpenSearch's default ``index.max_result_window``)."""

EVENT_RANK = {"opened": 0, "updated": 1, "resolved": 2}
"""Order of incident events that share one ``detected_at`` (opened before updated before resolved)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LogReader(Protocol):
    def search_logs(
        self,
        tenant: str,
        services: Sequence[str],
        start_ms: int,
        end_ms: int,
        *,
        min_severity_number: int = 0,
        text: str | None = None,
        limit: int = 50,
    ) -> list[LogDoc]:
        """Log docs of ``tenant`` with ``start_ms <= time_ms < end_ms`` (event time), of the given
        services (all services when empty), at or above ``min_severity_number``, and when ``text`` is
        given containing every word of it in the body or exception message; earliest first."""
        ...

    def trace_logs(self, tenant: str, trace_ids: Sequence[str], *, limit: int = 100) -> list[LogDoc]:
        """Log docs of ``tenant`` belonging to any of ``trace_ids``, earliest first."""
        ...

    def incident_events(self, tenant: str, incident_id: str) -> list[dict[str, Any]]:
        """The contract events of one incident as written, in ``detected_at`` order."""
        ...


class LogWriter(Protocol):
    def write_logs(self, records: Sequence[LogRecord], metrics: Sequence[MetricRow] = ()) -> int:
        """Store (or overwrite) one doc per record, and add ``metrics`` to their buckets (the same
        message's summary, written with it); returns the number of log docs accepted."""
        ...

    def write_metrics(self, metrics: Sequence[MetricRow]) -> int:
        """Add per-bucket counts (``MetricRow``) to the ``metrics`` rows; returns the rows touched."""
        ...

    def write_anomalies(self, anomalies: Sequence[Mapping[str, Any]]) -> int:
        """Each anomaly has ``tenant``, ``anomaly_id`` (deterministic), ``service``, ``time_ms``."""
        ...

    def write_incident_events(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Contract events (incident.schema.json); id ``{incident_id}:{event}:{detected_at}``."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def utc_day(time_ms: int) -> str:
    """The UTC calendar day of an event time as ``YYYY.MM.DD`` (the index date suffix)."""
    return _utc_day(time_ms // 86_400_000)


@functools.lru_cache(maxsize=64)
def _utc_day(day: int) -> str:  # a stream spans few days: one strftime per day, not per record
    return (_EPOCH + timedelta(days=day)).strftime("%Y.%m.%d")


@functools.lru_cache(maxsize=4096)
def _second_text(second: int) -> str:
    return format_time_ms(second * 1000)[:-5]  # "YYYY-MM-DDTHH:MM:SS"


def doc_time(time_ms: int) -> str:
    """``format_time_ms(time_ms)``, with the text of each second cached: records arrive by the hundred
    per second, and strftime is a fifth of a log document's cost."""
    return f"{_second_text(time_ms // 1000)}.{time_ms % 1000:03d}Z"


def cut_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, never splitting a character."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")


_PLAIN = (str, int, bool)


def json_value(value: AttrValue) -> Any:
    """One decoded OTLP AnyValue as plain JSON: bytes as base64 (as OTLP/JSON does), tuples as
    lists, non-finite floats as strings (JSON and OpenSearch reject NaN/Infinity)."""
    if type(value) in _PLAIN:  # the common case first, without the Mapping ABC check
        return value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, tuple):
        return [json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    return value


def json_attributes(attributes: Attributes) -> dict[str, Any]:
    return {str(key): json_value(value) for key, value in attributes.items()}


def log_doc(record: LogRecord) -> LogDoc:
    """The stored form of one log record (the same in every store)."""
    time_ms = record.time_ms
    return {
        "tenant": record.tenant,
        "service": record.service,
        "namespace": record.service_namespace,
        "time": doc_time(time_ms),
        "time_ms": time_ms,
        "level": record.level.name,
        "severity_number": record.severity_number,
        "severity_text": record.severity_text,
        "body": record.body,
        "body_truncated": record.body_truncated,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "http_status": record.http_status,
        "exception_type": record.exception_type,
        "exception_message": record.exception_message,
        "exception_stacktrace": cut_utf8(record.exception_stacktrace, STACKTRACE_MAX_BYTES),
        "attributes": json_attributes(record.attributes),
    }


def _identity(record: LogRecord) -> tuple[str, str, int, str, str, str]:
    return (record.tenant, record.service, record.time_unix_nano, record.span_id, record.trace_id,
            record.body)


def log_doc_id(record: LogRecord, index_in_message: int = 0) -> str:
    """Deterministic doc id: sha1 over tenant, service, event time (ns), span and trace id, body and
    the record's index among identical records, each followed by 0x1f -> first 20 hex chars."""
    tenant, service, time_ns, span_id, trace_id, body = _identity(record)
    key = f"{tenant}\x1f{service}\x1f{time_ns}\x1f{span_id}\x1f{trace_id}\x1f{body}\x1f{index_in_message}\x1f"
    return hashlib.sha1(key.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()[:20]


def log_doc_ids(records: Sequence[LogRecord]) -> list[str]:
    """Ids for a batch: records identical in every id field get indices 0, 1, 2... in batch order,
    so genuine repeats inside one batch are kept apart while a replayed batch maps onto itself."""
    seen: dict[str, int] = {}
    ids = []
    sha1 = hashlib.sha1
    for r in records:
        key = f"{r.tenant}\x1f{r.service}\x1f{r.time_unix_nano}\x1f{r.span_id}\x1f{r.trace_id}\x1f{r.body}\x1f"
        index = seen.get(key, 0)
        seen[key] = index + 1
        # the bytes log_doc_id hashes (_identity's fields, then the index), built once per record
        ids.append(sha1(f"{key}{index}\x1f".encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()[:20])
    return ids


def incident_event_id(event: Mapping[str, Any]) -> str:
    return f"{event['incident_id']}:{event['event']}:{event['detected_at']}"


def check_keys(doc: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    missing = [key for key in keys if key not in doc]
    if missing:
        raise ValueError(f"{what} lacks required field(s) {missing}: {dict(doc)!r:.200}")


def clamp_limit(limit: int) -> int:
    return max(0, min(int(limit), MAX_LIMIT))


# -- per-service bucket metrics and the incident list -----------------------------------------------

METRIC_FIELDS = ("total", "failures", "client_errors", "spans", "span_errors", "span_ms_sum")
"""Additive counts per (tenant, service, 10 s bucket): log records, failures (signals stage 1),
4xx client errors, spans, failed spans and the sum of span durations in ms (mean latency =
``span_ms_sum / spans``). Each message adds its own counts, so a bucket's row is the sum over every
message that touched it. Upserts add, so a replay from a checkpoint counts what it replays again:
the charts show shape, detection never reads them."""


class MetricRow(NamedTuple):
    tenant: str
    service: str
    bucket_ms: int
    total: int = 0
    failures: int = 0
    client_errors: int = 0
    spans: int = 0
    span_errors: int = 0
    span_ms_sum: int = 0

    def counts(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in METRIC_FIELDS}


def metric_rows(batches: Iterable[ServiceBatch]) -> list[MetricRow]:
    """One row per (tenant, service, bucket) of one message's summary (``udfs.batch.summarize``)."""
    return [MetricRow(batch.tenant, batch.service, bucket.start_ms, bucket.total, bucket.failures,
                      bucket.client_errors)
            for batch in batches for bucket in batch.buckets]


def span_metric_rows(spans: Iterable[Span], bucket_ms: int = 10_000) -> list[MetricRow]:
    """Span counts, failed spans and summed durations per (tenant, service, bucket of the start)."""
    acc: dict[tuple[str, str, int], list[int]] = {}
    for span in spans:
        start = span.start_ms
        key = (span.tenant, span.service, start - start % bucket_ms)
        counts = acc.setdefault(key, [0, 0, 0])
        counts[0] += 1
        counts[1] += span.status == SpanStatus.ERROR
        counts[2] += max(0, (span.end_unix_nano - span.start_unix_nano) // 1_000_000)
    return [MetricRow(t, s, b, spans=c[0], span_errors=c[1], span_ms_sum=c[2]) for (t, s, b), c in acc.items()]


def merge_metric_rows(rows: Iterable[MetricRow]) -> list[MetricRow]:
    """Rows of one key added together (one upsert per key and write)."""
    acc: dict[tuple[str, str, int], list[int]] = {}
    for row in rows:
        counts = acc.setdefault((row.tenant, row.service, row.bucket_ms), [0] * len(METRIC_FIELDS))
        for i, name in enumerate(METRIC_FIELDS):
            counts[i] += getattr(row, name)
    return [MetricRow(t, s, b, *c) for (t, s, b), c in acc.items()]


def metric_doc_id(row: MetricRow) -> str:
    digest = hashlib.sha1(f"{row.tenant}\x1f{row.service}\x1f{row.bucket_ms}".encode("utf-8", "surrogatepass"),
                          usedforsecurity=False)
    return digest.hexdigest()[:20]


INCIDENT_STATE_FIELDS = ("tenant", "incident_id", "severity", "state", "service", "root_service", "score",
                         "opened_ms", "detected_ms", "resolved_ms", "duration_ms", "event_rank", "title",
                         "summary", "services")


def incident_state(event: Mapping[str, Any]) -> dict[str, Any]:
    """The list view of an incident after ``event`` (its latest event): what the incident list filters,
    sorts and searches on. ``state`` is ``open`` or ``resolved``; ``duration_ms`` is resolved minus
    opened (event time) or None while open; ``services`` are the detecting, root-cause and affected ones."""
    opened_ms = parse_time_ms(event["opened_at"])
    resolved_ms = parse_time_ms(event["resolved_at"]) if event.get("resolved_at") else None
    if event["event"] == "resolved" and resolved_ms is None:
        resolved_ms = parse_time_ms(event["detected_at"])
    root = str((event.get("root_cause") or {}).get("service") or event.get("service") or "")
    services = list(dict.fromkeys([str(event.get("service", "")), root,
                                   *[str(s) for s in event.get("affected_services") or ()]]))
    return {
        "tenant": event["tenant"],
        "incident_id": event["incident_id"],
        "severity": str(event.get("severity", "")),
        "state": "resolved" if event["event"] == "resolved" else "open",
        "service": str(event.get("service", "")),
        "root_service": root,
        "score": float(event.get("score") or 0.0),
        "opened_ms": opened_ms,
        "opened_at": event["opened_at"],
        "detected_ms": parse_time_ms(event["detected_at"]),
        "resolved_ms": resolved_ms,
        "duration_ms": None if resolved_ms is None else max(0, resolved_ms - opened_ms),
        "event_rank": EVENT_RANK.get(event["event"], 9),
        "title": str(event.get("title", "")),
        "summary": str(event.get("summary", "")),
        "services": [s for s in services if s],
    }
