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
import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from udfs.records import Attributes, AttrValue, LogRecord
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
    def write_logs(self, records: Sequence[LogRecord]) -> int:
        """Store (or overwrite) one doc per record; returns the number of docs accepted."""
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
    return (_EPOCH + timedelta(milliseconds=time_ms)).strftime("%Y.%m.%d")


def cut_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, never splitting a character."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")


def json_value(value: AttrValue) -> Any:
    """One decoded OTLP AnyValue as plain JSON: bytes as base64 (as OTLP/JSON does), tuples as
    lists, non-finite floats as strings (JSON and OpenSearch reject NaN/Infinity)."""
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
        "time": format_time_ms(time_ms),
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
    the record's index among identical records -> first 20 hex chars."""
    digest = hashlib.sha1(usedforsecurity=False)
    for part in (*_identity(record), index_in_message):
        digest.update(str(part).encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return digest.hexdigest()[:20]


def log_doc_ids(records: Sequence[LogRecord]) -> list[str]:
    """Ids for a batch: records identical in every id field get indices 0, 1, 2... in batch order,
    so genuine repeats inside one batch are kept apart while a replayed batch maps onto itself."""
    seen: dict[tuple[str, str, int, str, str, str], int] = {}
    ids = []
    for record in records:
        key = _identity(record)
        index = seen.get(key, 0)
        seen[key] = index + 1
        ids.append(log_doc_id(record, index))
    return ids


def incident_event_id(event: Mapping[str, Any]) -> str:
    return f"{event['incident_id']}:{event['event']}:{event['detected_at']}"


def check_keys(doc: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    missing = [key for key in keys if key not in doc]
    if missing:
        raise ValueError(f"{what} lacks required field(s) {missing}: {dict(doc)!r:.200}")


def clamp_limit(limit: int) -> int:
    return max(0, min(int(limit), MAX_LIMIT))
