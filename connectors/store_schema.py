"""The embedded store's tables (SQLite + FTS5) and the migrations between schema versions.

Version 3 (this one) writes a message's log rows and bucket counts in one short transaction to
tables whose indexes grow at their end (arrival order, time order), and builds the structures that
a message would otherwise update at random places (the text index, the trace index, the metric
upserts) in batches, from the rows past ``index_progress`` (``connectors.store`` says when).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

SCHEMA_VERSION = 3

LOG_TABLE_COLUMNS = ("id", "tenant", "service", "time_ms", "severity_number", "trace_id", "body", "exception_message",
               "doc")
"""The ``logs`` columns a row is written with (``rid`` is SQLite's rowid, assigned in arrival order)."""

_LOG_TYPES = {"time_ms": "INTEGER", "severity_number": "INTEGER"}  # the rest are TEXT


def logs_table(version: int = SCHEMA_VERSION) -> str:
    """The ``logs`` DDL as schema ``version`` creates it. Versions 1 and 2 made ``id`` itself
    ``UNIQUE`` (a migrated file keeps that; tests build such files from here). Version 3 makes it
    unique through ``(time_ms, id)``: the id hashes the event time, so the pair is as unique as the
    id, and the index grows at its end instead of at a random place per row. ``doc`` holds only the
    fields that are not columns and differ from their defaults (``connectors.store``)."""
    columns = ",\n".join(
        f"    {name} {_LOG_TYPES.get(name, 'TEXT')} NOT NULL" + (" UNIQUE" if name == "id" and version < 3 else "")
        for name in LOG_TABLE_COLUMNS)
    ddl = f"CREATE TABLE IF NOT EXISTS logs (\n    rid INTEGER PRIMARY KEY,\n{columns}\n);\n"
    return ddl + ("CREATE UNIQUE INDEX IF NOT EXISTS logs_time_id ON logs (time_ms, id);\n" if version >= 3 else "")


_COMMON = """
CREATE INDEX IF NOT EXISTS logs_tenant_service_time ON logs (tenant, service, time_ms);
CREATE INDEX IF NOT EXISTS logs_tenant_time ON logs (tenant, time_ms);
CREATE VIRTUAL TABLE IF NOT EXISTS logs_fts USING fts5(
    body, exception_message, content='logs', content_rowid='rid'
);
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

# Version 2 (``docs/console.md``): per-bucket metrics and the incident list (latest state).
_V2 = """
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

# Version 3: what is built in batches. ``log_traces`` is the trace index of the rows up to
# ``index_progress.rid`` (as is ``logs_fts``); ``metrics_pending`` holds bucket counts as written,
# folded into ``metrics`` by the same batch; ``tenant_usage`` is each tenant's newest event time
# and stored bytes (retention reads it instead of scanning the logs).
_V3 = """
CREATE TABLE IF NOT EXISTS log_traces (
    tenant TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    rid INTEGER NOT NULL,
    PRIMARY KEY (tenant, trace_id, rid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_progress (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    rid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics_pending (
    rid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    service TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    total INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    client_errors INTEGER NOT NULL,
    spans INTEGER NOT NULL,
    span_errors INTEGER NOT NULL,
    span_ms_sum INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tenant_usage (
    tenant TEXT PRIMARY KEY,
    newest_ms INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
"""

# The latest event wins (event time, then opened < updated < resolved); a replayed older event never
# rolls the list back.
INCIDENT_UPSERT = (
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

ROW_BYTES_SQL = ("length(id) + length(tenant) + length(service) + length(trace_id) + length(body)"
                 " + length(exception_message) + length(doc) + 16")
"""A log row's stored size for the size limit: its text columns plus 16 for the integers and the
record header (characters, not bytes: an estimate, the same on every platform)."""


def statements(script: str) -> list[str]:
    """Split a schema script into statements (triggers contain ``;`` inside BEGIN ... END)."""
    out, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        joined = "\n".join(current).strip()
        if joined.endswith(";") and sqlite3.complete_statement(joined):
            out.append(joined)
            current = []
    return out


def _run(conn: sqlite3.Connection, script: str) -> None:
    for statement in statements(script):
        conn.execute(statement)


def _to_v3(conn: sqlite3.Connection) -> None:
    """Version 2 -> 3: the per-row text-index triggers and the trace index go; the batch-built
    structures are created and filled from the rows already stored. A version 2 file keeps its
    ``UNIQUE (id)`` (rebuilding the table is not worth it): dedup works the same, a little slower."""
    conn.execute("DROP TRIGGER IF EXISTS logs_fts_insert")
    conn.execute("DROP TRIGGER IF EXISTS logs_fts_delete")
    conn.execute("DROP INDEX IF EXISTS logs_tenant_trace")
    _run(conn, _V3)
    conn.execute("INSERT OR IGNORE INTO log_traces (tenant, trace_id, rid) SELECT tenant, trace_id, rid FROM logs"
                 " WHERE trace_id != ''")
    conn.execute("INSERT OR REPLACE INTO index_progress (one, rid) SELECT 1, coalesce(max(rid), 0) FROM logs")
    conn.execute(f"INSERT OR REPLACE INTO tenant_usage (tenant, newest_ms, rows, bytes) SELECT tenant, max(time_ms),"
                 f" count(*), sum({ROW_BYTES_SQL}) FROM logs GROUP BY tenant")


def create_or_migrate(conn: sqlite3.Connection, path: str, incident_row: Callable[[Any], Sequence[Any]],
                      error: type[Exception]) -> None:
    """Create the tables, or bring a version 1/2 file to version 3 (inside the caller's transaction)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    found = row[0] if row else None
    if found is None:
        _run(conn, logs_table() + _COMMON + _V2 + _V3)
        conn.execute("INSERT INTO index_progress (one, rid) VALUES (1, 0)")
    elif found in (1, 2):
        if found == 1:  # add metrics and the incident list, filled from the events
            _run(conn, _V2)
            events = [json.loads(r[0]) for r in conn.execute(
                "SELECT doc FROM incident_events ORDER BY detected_at_ms, event_rank")]
            conn.executemany(INCIDENT_UPSERT, [incident_row(event) for event in events])
        _to_v3(conn)
    elif found != SCHEMA_VERSION:
        newer = found > SCHEMA_VERSION
        raise error(
            f"{path}: store schema version {found} is "
            f"{'newer than' if newer else 'older than'} the version this LogClaw build "
            f"supports ({SCHEMA_VERSION}); "
            + ("upgrade LogClaw to read it" if newer else "no migration exists; recreate the file")
        )
    if found != SCHEMA_VERSION:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))


LOG_INSERT = (f"INSERT OR IGNORE INTO logs ({', '.join(LOG_TABLE_COLUMNS)})"
              f" VALUES ({', '.join('?' * len(LOG_TABLE_COLUMNS))})")
"""A replayed record has the id it had, so it is ignored: one row per id (what it first stored)."""

METRIC_PENDING_INSERT = ("INSERT INTO metrics_pending (tenant, service, bucket_ms, total, failures, client_errors,"
                         " spans, span_errors, span_ms_sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")

METRIC_FOLD = (
    "INSERT INTO metrics (tenant, service, bucket_ms, total, failures, client_errors, spans, span_errors,"
    " span_ms_sum) SELECT tenant, service, bucket_ms, sum(total), sum(failures), sum(client_errors), sum(spans),"
    " sum(span_errors), sum(span_ms_sum) FROM metrics_pending WHERE rid <= ? GROUP BY tenant, service, bucket_ms"
    " ON CONFLICT (tenant, service, bucket_ms) DO UPDATE SET"
    " total = total + excluded.total, failures = failures + excluded.failures,"
    " client_errors = client_errors + excluded.client_errors, spans = spans + excluded.spans,"
    " span_errors = span_errors + excluded.span_errors, span_ms_sum = span_ms_sum + excluded.span_ms_sum"
)
"""Pending bucket counts added into ``metrics``: one upsert per key per batch instead of per message.
(``GROUP BY`` before ``ON CONFLICT`` keeps SQLite's parser from reading ON as a join constraint.)"""
