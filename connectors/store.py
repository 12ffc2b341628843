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
    LogDoc,
    check_keys,
    clamp_limit,
    incident_event_id,
    log_doc,
    log_doc_ids,
    parse_time_ms,
)
from udfs.records import LogRecord

SCHEMA_VERSION = 1


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

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = str(path)
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
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
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

    def write_logs(self, records: Sequence[LogRecord]) -> int:
        rows = []
        for doc_id, record in zip(log_doc_ids(records), records, strict=True):
            doc = log_doc(record)
            rows.append((doc_id, doc["tenant"], doc["service"], doc["time_ms"], doc["severity_number"],
                         doc["trace_id"], doc["body"], doc["exception_message"], _dumps(doc)))
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO logs (id, tenant, service, time_ms, severity_number, trace_id,"
                " body, exception_message, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

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
