"""The embedded store: SQLite (standard library) with FTS5, the no-server default.

One file holds logs, anomalies and incident events. Documents are stored whole as JSON beside the
columns reads filter on; ids are the deterministic ids of ``connectors.logstore``, so replays
overwrite (``INSERT OR REPLACE``). WAL mode and a busy timeout let the detection job write while
the ticketing worker (another process) reads. Every write call is one transaction.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from connectors.logstore import (
    EVENT_RANK,
    INCIDENT_STATE_FIELDS,
    LogDoc,
    MetricRow,
    check_keys,
    clamp_limit,
    incident_event_id,
    incident_state,
    log_doc,
    log_doc_ids,
    merge_metric_rows,
    parse_time_ms,
)
from udfs.records import LogRecord

SCHEMA_VERSION = 2
METRICS_RETENTION_MS = 7 * 24 * 3600 * 1000
"""Metrics rows older than this (event time, behind the newest bucket written) are deleted."""
_RETENTION_EVERY = 500  # write calls between retention passes


class StoreError(RuntimeError):
    """The store file cannot be used (missing SQLite feature, unknown schema version)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    service TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    severity_number INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    body TEXT NOT NULL,
    exception_message TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_tenant_service_time ON logs (tenant, service, time_ms);
CREATE INDEX IF NOT EXISTS logs_tenant_trace ON logs (tenant, trace_id);
CREATE INDEX IF NOT EXISTS logs_tenant_time ON logs (tenant, time_ms);
CREATE VIRTUAL TABLE IF NOT EXISTS logs_fts USING fts5(
    body, exception_message, content='logs', content_rowid='rid'
);
CREATE TRIGGER IF NOT EXISTS logs_fts_insert AFTER INSERT ON logs BEGIN
    INSERT INTO logs_fts (rowid, body, exception_message)
    VALUES (new.rid, new.body, new.exception_message);
END;
CREATE TRIGGER IF NOT EXISTS logs_fts_delete AFTER DELETE ON logs BEGIN
    INSERT INTO logs_fts (logs_fts, rowid, body, exception_message)
    VALUES ('delete', old.rid, old.body, old.exception_message);
END;
CREATE TABLE IF NOT EXISTS anomalies (
    tenant TEXT NOT NULL,
    anomaly_id TEXT NOT NULL,
    service TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant, anomaly_id)
);
CREATE INDEX IF NOT EXISTS anomalies_tenant_service_time ON anomalies (tenant, service, time_ms);
CREATE TABLE IF NOT EXISTS incident_events (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    event TEXT NOT NULL,
    detected_at_ms INTEGER NOT NULL,
    event_rank INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS incident_events_incident
    ON incident_events (tenant, incident_id, detected_at_ms, event_rank);
"""

# Schema version 2 (``docs/console.md``): per-bucket metrics and the incident list (latest state).
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS metrics (
    tenant TEXT NOT NULL,
    service TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    client_errors INTEGER NOT NULL DEFAULT 0,
    spans INTEGER NOT NULL DEFAULT 0,
    span_errors INTEGER NOT NULL DEFAULT 0,
    span_ms_sum INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, service, bucket_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metrics_tenant_bucket ON metrics (tenant, bucket_ms);
CREATE TABLE IF NOT EXISTS incidents (
    rid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    service TEXT NOT NULL,
    root_service TEXT NOT NULL,
    score REAL NOT NULL,
    opened_ms INTEGER NOT NULL,
    detected_ms INTEGER NOT NULL,
    resolved_ms INTEGER,
    duration_ms INTEGER,
    event_rank INTEGER NOT NULL,
    title TEXT NOT NULL,
    summary TEXT NOT NULL,
    services TEXT NOT NULL,
    UNIQUE (tenant, incident_id)
);
CREATE INDEX IF NOT EXISTS incidents_tenant_opened ON incidents (tenant, opened_ms);
CREATE VIRTUAL TABLE IF NOT EXISTS incidents_fts USING fts5(
    title, summary, services, content='incidents', content_rowid='rid'
);
CREATE TRIGGER IF NOT EXISTS incidents_fts_insert AFTER INSERT ON incidents BEGIN
    INSERT INTO incidents_fts (rowid, title, summary, services) VALUES (new.rid, new.title, new.summary, new.services);
END;
CREATE TRIGGER IF NOT EXISTS incidents_fts_delete AFTER DELETE ON incidents BEGIN
    INSERT INTO incidents_fts (incidents_fts, rowid, title, summary, services)
    VALUES ('delete', old.rid, old.title, old.summary, old.services);
END;
CREATE TRIGGER IF NOT EXISTS incidents_fts_update AFTER UPDATE ON incidents BEGIN
    INSERT INTO incidents_fts (incidents_fts, rowid, title, summary, services)
    VALUES ('delete', old.rid, old.title, old.summary, old.services);
    INSERT INTO incidents_fts (rowid, title, summary, services) VALUES (new.rid, new.title, new.summary, new.services);
END;
"""

_METRIC_UPSERT = (
    "INSERT INTO metrics (tenant, service, bucket_ms, total, failures, client_errors, spans, span_errors,"
    " span_ms_sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, service, bucket_ms) DO UPDATE SET"
    " total = total + excluded.total, failures = failures + excluded.failures,"
    " client_errors = client_errors + excluded.client_errors, spans = spans + excluded.spans,"
    " span_errors = span_errors + excluded.span_errors, span_ms_sum = span_ms_sum + excluded.span_ms_sum"
)
# The latest event wins (event time, then opened < updated < resolved); a replayed older event never
# rolls the list back.
_INCIDENT_UPSERT = (
    "INSERT INTO incidents (tenant, incident_id, severity, state, service, root_service, score, opened_ms,"
    " detected_ms, resolved_ms, duration_ms, event_rank, title, summary, services)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, incident_id) DO UPDATE SET"
    " severity = excluded.severity, state = excluded.state, service = excluded.service,"
    " root_service = excluded.root_service, score = excluded.score, opened_ms = excluded.opened_ms,"
    " detected_ms = excluded.detected_ms, resolved_ms = excluded.resolved_ms, duration_ms = excluded.duration_ms,"
    " event_rank = excluded.event_rank, title = excluded.title, summary = excluded.summary,"
    " services = excluded.services"
    " WHERE (excluded.detected_ms, excluded.event_rank) >= (incidents.detected_ms, incidents.event_rank)"
)

_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """Free text -> an FTS5 query matching rows that contain every word (each quoted, so user
    text can never be read as FTS5 syntax). None when the text has no words."""
    words = _WORD.findall(text)
    if not words:
        return None
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def _check_fts5(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.logclaw_fts5_probe USING fts5(x)")
        conn.execute("DROP TABLE temp.logclaw_fts5_probe")
    except sqlite3.OperationalError as exc:
        raise StoreError(
            f"this Python's SQLite ({sqlite3.sqlite_version}) was built without FTS5, which the "
            f"embedded store needs for text search; use a Python whose sqlite3 has FTS5 "
            f"(the python.org and distro builds do) or the OpenSearch store ({exc})"
        ) from exc


class EmbeddedStore:
    """SQLite + FTS5 store implementing ``LogWriter`` and ``LogReader``.

    Writes go straight to disk (each call is one transaction), so ``flush`` has nothing to do.
    Safe to open from several processes; one instance may be shared by threads (a lock serializes).
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0,
                 metrics_retention_ms: int = METRICS_RETENTION_MS) -> None:
        self.path = str(path)
        self.metrics_retention_ms = metrics_retention_ms
        self._writes = 0
        self._newest_bucket_ms = 0
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                     check_same_thread=False)
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        conn = self._conn
        _check_fts5(conn)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # INSERT OR REPLACE deletes the old row; only with recursive triggers does that delete fire
        # the trigger that removes the old row from the FTS index.
        conn.execute("PRAGMA recursive_triggers=ON")
        with self._transaction():
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            found = row[0] if row else None
            if found is None:
                for statement in _statements(_SCHEMA + _SCHEMA_V2):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif found == 1:  # version 1 -> 2: add metrics and the incident list, filled from the events
                for statement in _statements(_SCHEMA_V2):
                    conn.execute(statement)
                events = [json.loads(row[0]) for row in conn.execute(
                    "SELECT doc FROM incident_events ORDER BY detected_at_ms, event_rank")]
                conn.executemany(_INCIDENT_UPSERT, [_incident_row(event) for event in events])
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif found != SCHEMA_VERSION:
                newer = found > SCHEMA_VERSION
                raise StoreError(
                    f"{self.path}: store schema version {found} is "
                    f"{'newer than' if newer else 'older than'} the version this LogClaw build "
                    f"supports ({SCHEMA_VERSION}); "
                    + ("upgrade LogClaw to read it" if newer else "no migration exists; recreate the file")
                )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- LogWriter -------------------------------------------------------------------------------

    def write_logs(self, records: Sequence[LogRecord], metrics: Sequence[MetricRow] = ()) -> int:
        rows = []
        for doc_id, record in zip(log_doc_ids(records), records, strict=True):
            doc = log_doc(record)
            rows.append((doc_id, doc["tenant"], doc["service"], doc["time_ms"], doc["severity_number"],
                         doc["trace_id"], doc["body"], doc["exception_message"], _dumps(doc)))
        with self._transaction() as conn:  # one transaction per message: logs and their bucket counts
            conn.executemany(
                "INSERT OR REPLACE INTO logs (id, tenant, service, time_ms, severity_number, trace_id,"
                " body, exception_message, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._upsert_metrics(conn, metrics)
        return len(rows)

    def write_metrics(self, metrics: Sequence[MetricRow]) -> int:
        with self._transaction() as conn:
            return self._upsert_metrics(conn, metrics)

    def _upsert_metrics(self, conn: sqlite3.Connection, metrics: Sequence[MetricRow]) -> int:
        merged = merge_metric_rows(metrics)
        if not merged:
            return 0
        conn.executemany(_METRIC_UPSERT, merged)
        self._newest_bucket_ms = max(self._newest_bucket_ms, max(row.bucket_ms for row in merged))
        self._writes += 1
        if self._writes % _RETENTION_EVERY == 1:  # retention: by event time, behind the newest bucket
            conn.execute("DELETE FROM metrics WHERE bucket_ms < ?",
                         (self._newest_bucket_ms - self.metrics_retention_ms,))
        return len(merged)

    def write_anomalies(self, anomalies: Sequence[Mapping[str, Any]]) -> int:
        rows = []
        for anomaly in anomalies:
            check_keys(anomaly, ("tenant", "anomaly_id", "service", "time_ms"), "anomaly")
            rows.append((anomaly["tenant"], anomaly["anomaly_id"], anomaly["service"],
                         int(anomaly["time_ms"]), _dumps(anomaly)))
        with self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO anomalies (tenant, anomaly_id, service, time_ms, doc)"
                             " VALUES (?, ?, ?, ?, ?)", rows)
        return len(rows)

    def write_incident_events(self, events: Sequence[Mapping[str, Any]]) -> int:
        rows = []
        for event in events:
            check_keys(event, ("tenant", "incident_id", "event", "detected_at"), "incident event")
            rows.append((event["tenant"], incident_event_id(event), event["incident_id"], event["event"],
                         parse_time_ms(event["detected_at"]), EVENT_RANK.get(event["event"], 9),
                         _dumps(event)))
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO incident_events (tenant, id, incident_id, event, detected_at_ms,"
                " event_rank, doc) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            conn.executemany(_INCIDENT_UPSERT, [_incident_row(event) for event in events])
        return len(rows)

    def flush(self) -> None:
        """Nothing is buffered: every write call has committed."""

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- LogReader -------------------------------------------------------------------------------

    def search_logs(self, tenant: str, services: Sequence[str], start_ms: int, end_ms: int, *,
                    min_severity_number: int = 0, text: str | None = None, limit: int = 50) -> list[LogDoc]:
        where = ["logs.tenant = ?", "logs.time_ms >= ?", "logs.time_ms < ?", "logs.severity_number >= ?"]
        params: list[Any] = [tenant, int(start_ms), int(end_ms), int(min_severity_number)]
        if services:
            where.append(f"logs.service IN ({', '.join('?' * len(services))})")
            params.extend(services)
        if text is not None:
            match = fts_query(text)
            if match is None:
                return []
            # one FTS query into a set; a join would let SQLite rerun the MATCH for every candidate row
            where.append("logs.rid IN (SELECT rowid FROM logs_fts WHERE logs_fts MATCH ?)")
            params.append(match)
        params.append(clamp_limit(limit))
        rows = self._query(f"SELECT logs.doc FROM logs WHERE {' AND '.join(where)}"
                           " ORDER BY logs.time_ms, logs.id LIMIT ?", params)
        return [json.loads(row[0]) for row in rows]

    def trace_logs(self, tenant: str, trace_ids: Sequence[str], *, limit: int = 100) -> list[LogDoc]:
        wanted = [trace_id for trace_id in trace_ids if trace_id]
        if not wanted:
            return []
        rows = self._query(
            f"SELECT doc FROM logs WHERE tenant = ? AND trace_id IN ({', '.join('?' * len(wanted))})"
            " ORDER BY time_ms, id LIMIT ?", [tenant, *wanted, clamp_limit(limit)])
        return [json.loads(row[0]) for row in rows]

    def incident_events(self, tenant: str, incident_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT doc FROM incident_events WHERE tenant = ? AND incident_id = ?"
                           " ORDER BY detected_at_ms, event_rank", [tenant, incident_id])
        return [json.loads(row[0]) for row in rows]

    # -- summaries -------------------------------------------------------------------------------

    def incidents(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """The latest event of every incident (of one tenant, or all), ordered by opened time."""
        sql = ("SELECT doc FROM (SELECT doc, tenant, incident_id, detected_at_ms, ROW_NUMBER() OVER ("
               " PARTITION BY tenant, incident_id ORDER BY detected_at_ms DESC, event_rank DESC) AS n"
               " FROM incident_events{where}) WHERE n = 1 ORDER BY tenant, incident_id")
        if tenant is None:
            rows = self._query(sql.format(where=""), [])
        else:
            rows = self._query(sql.format(where=" WHERE tenant = ?"), [tenant])
        latest = [json.loads(row[0]) for row in rows]
        latest.sort(key=lambda e: (str(e.get("opened_at", "")), e["tenant"], e["incident_id"]))
        return latest

    def counts(self) -> dict[str, int]:
        """Row counts for the demo summary: logs, anomalies, incident_events, incidents."""
        with self._lock:
            conn = self._conn
            return {
                "logs": conn.execute("SELECT COUNT(*) FROM logs").fetchone()[0],
                "anomalies": conn.execute("SELECT COUNT(*) FROM anomalies").fetchone()[0],
                "incident_events": conn.execute("SELECT COUNT(*) FROM incident_events").fetchone()[0],
                "incidents": conn.execute(
                    "SELECT COUNT(*) FROM (SELECT DISTINCT tenant, incident_id FROM incident_events)"
                ).fetchone()[0],
            }

    def __enter__(self) -> EmbeddedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _incident_row(event: Mapping[str, Any]) -> tuple[Any, ...]:
    state = incident_state(event)
    state["services"] = " ".join(state["services"])
    return tuple(state[name] for name in INCIDENT_STATE_FIELDS)


def _dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _statements(script: str) -> list[str]:
    """Split the schema script into statements (triggers contain ``;`` inside BEGIN ... END)."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        joined = "\n".join(current).strip()
        if joined.endswith(";") and sqlite3.complete_statement(joined):
            statements.append(joined)
            current = []
    return statements
