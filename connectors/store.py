"""The embedded store: SQLite (standard library) with FTS5, the no-server default.

One file holds logs, bucket metrics, anomalies and incident events (tables in
``connectors.store_schema``). Ids are the deterministic ids of ``connectors.logstore``, so a replay
maps onto what it wrote (``INSERT OR IGNORE``: one row per id). WAL mode and a busy timeout let the
detection job write while the ticketing worker and the console (other processes) read.

Write path (issue 16: indexing at speed). A message's log rows and bucket counts are one short
transaction, committed before ``write_logs`` returns: PyFlink has no checkpoint hook, so nothing a
checkpoint counts as done may sit in memory. That transaction only appends (rows in arrival order,
indexes in time order). What would touch random places per row -- the full-text index, the trace
index, the metric upserts -- is built in batches from the rows past ``index_progress``: every
``INDEX_EVERY_ROWS`` rows or ``INDEX_EVERY_S`` seconds of a writer's writes, and at close. Reads see
every committed row at once: the few rows past ``index_progress`` (the tail) are matched without
the indexes (text by case-insensitive substring). Retention (``connectors.store_retention``) runs
after each batch, in small transactions.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from connectors import store_retention
from connectors.logstore import (
    EVENT_RANK,
    INCIDENT_STATE_FIELDS,
    STACKTRACE_MAX_BYTES,
    LogDoc,
    MetricRow,
    check_keys,
    clamp_limit,
    cut_utf8,
    doc_time,
    incident_event_id,
    incident_state,
    json_attributes,
    log_doc_ids,
    merge_metric_rows,
    parse_time_ms,
)
from connectors.store_retention import NO_RETENTION, RetentionSettings
from connectors.store_schema import (
    INCIDENT_UPSERT,
    LOG_INSERT,
    LOG_TABLE_COLUMNS,
    METRIC_FOLD,
    METRIC_PENDING_INSERT,
    ROW_BYTES_SQL,
    SCHEMA_VERSION,
    create_or_migrate,
)
from udfs.records import Level, LogRecord

__all__ = ["SCHEMA_VERSION", "EmbeddedStore", "StoreError", "fts_query", "log_row", "row_doc", "text_rids_sql",
           "trace_rids_sql"]

INDEX_EVERY_ROWS = 10_000
"""Rows a writer appends before it builds the batch structures: one text-index segment per ~10k rows
instead of one per message (FTS5 writes a segment per transaction), and a tail that a read scans
without an index in a few ms."""
INDEX_EVERY_S = 1.0
"""...or this much processing time since its last batch: text search and trace lookups by index lag
the rows by about a second on a slow stream (OpenSearch's default refresh interval is also 1 s)."""
INDEX_MAX_ROWS = 50_000
"""Rows indexed per transaction at most, so that catching up a long tail never holds the write lock
for more than a few hundred ms."""
CACHE_KIB = 16_384
"""SQLite page cache per connection (16 MiB; a job subtask opens two): the hot ends of the indexes
and a batch of tail rows (10k rows of ~400 bytes) stay in memory."""


class StoreError(RuntimeError):
    """The store file cannot be used (missing SQLite feature, unknown schema version)."""


_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """Free text -> an FTS5 query matching rows that contain every word (each quoted, so user
    text can never be read as FTS5 syntax). None when the text has no words."""
    words = _WORD.findall(text)
    if not words:
        return None
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def text_rids_sql(text: str) -> tuple[str, list[Any]] | None:
    """A subquery of the rids of rows holding every word of ``text`` in the body or exception
    message: the text index (one MATCH into a set; a join would let SQLite rerun the MATCH for every
    candidate row), and the tail past it, where a word matches as a case-insensitive (ASCII)
    substring. None when the text has no words."""
    match = fts_query(text)
    if match is None:
        return None
    words = [word.lower() for word in _WORD.findall(text)]
    tail = " AND ".join("instr(lower(body || ' ' || exception_message), ?) > 0" for _ in words)
    return (f"SELECT rowid FROM logs_fts WHERE logs_fts MATCH ? UNION ALL SELECT rid FROM logs NOT INDEXED"
            f" WHERE rid > (SELECT rid FROM index_progress) AND {tail}", [match, *words])


# -- the stored row ------------------------------------------------------------------------------

_LEVEL_BY_NUMBER = (Level.UNSPECIFIED, *(Level(1 + 4 * ((n - 1) // 4)) for n in range(1, 25)))
_LEVEL_NAME = {level: level.name for level in Level}  # Enum.name is a descriptor call: ~1 us a record


def _level_of(severity_number: int) -> Level:
    return _LEVEL_BY_NUMBER[severity_number] if 0 <= severity_number < len(_LEVEL_BY_NUMBER) else Level.UNSPECIFIED


def _dumps(doc: Mapping[str, Any]) -> str:
    try:
        return orjson.dumps(doc).decode()
    except TypeError:  # e.g. a lone surrogate orjson refuses: the standard library escapes it
        return json.dumps(doc, separators=(",", ":"))


def log_row(doc_id: str, r: LogRecord) -> tuple[Any, ...]:
    """The row of one record: the columns reads filter on, and in ``doc`` only the other fields of
    ``connectors.logstore.log_doc`` that differ from their defaults ("" / false / null / {}; level as
    its severity number implies; severity text as the level's name). ``row_doc`` inverts it."""
    extra: dict[str, Any] = {}
    level = r.level
    if r.service_namespace:
        extra["namespace"] = r.service_namespace
    name = _LEVEL_NAME.get(level) or level.name
    if level != _level_of(r.severity_number):
        extra["level"] = name
    if r.severity_text != name:
        extra["severity_text"] = r.severity_text
    if r.body_truncated:
        extra["body_truncated"] = True
    if r.span_id:
        extra["span_id"] = r.span_id
    if r.http_status is not None:
        extra["http_status"] = r.http_status
    if r.exception_type:
        extra["exception_type"] = r.exception_type
    if r.exception_stacktrace:
        extra["exception_stacktrace"] = cut_utf8(r.exception_stacktrace, STACKTRACE_MAX_BYTES)
    if r.attributes:
        extra["attributes"] = json_attributes(r.attributes)
    return (doc_id, r.tenant, r.service, r.time_unix_nano // 1_000_000, r.severity_number, r.trace_id, r.body,
            r.exception_message, _dumps(extra) if extra else "{}")


LOG_COLUMNS = ", ".join(name for name in LOG_TABLE_COLUMNS if name != "id")
"""The columns ``row_doc`` reads, in its order: the table's but ``id`` (the document id)."""


def row_doc(row: Sequence[Any]) -> LogDoc:
    """``connectors.logstore.log_doc`` of a stored row (``LOG_COLUMNS``). Schema 1/2 rows hold the
    whole document in ``doc``; it overrides the defaults the same way."""
    tenant, service, time_ms, severity_number, trace_id, body, exception_message, stored = row
    extra = orjson.loads(stored)
    level = extra.get("level") or _LEVEL_NAME[_level_of(severity_number)]
    return {
        "tenant": tenant,
        "service": service,
        "namespace": extra.get("namespace", ""),
        "time": doc_time(time_ms),
        "time_ms": time_ms,
        "level": level,
        "severity_number": severity_number,
        "severity_text": extra.get("severity_text", level),
        "body": body,
        "body_truncated": extra.get("body_truncated", False),
        "trace_id": trace_id,
        "span_id": extra.get("span_id", ""),
        "http_status": extra.get("http_status"),
        "exception_type": extra.get("exception_type", ""),
        "exception_message": exception_message,
        "exception_stacktrace": extra.get("exception_stacktrace", ""),
        "attributes": extra.get("attributes", {}),
    }


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

    Every write call has committed when it returns; ``flush`` builds the batch structures only when
    they are due. Safe to open from several processes; one instance may be shared by threads (a lock
    serializes). ``retention``: what its flushes and ``close`` delete, from the caller only (the job
    passes ``JobConfig.store_retention``, read once at start-up); the default deletes nothing, as a
    reader needs.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0,
                 retention: RetentionSettings = NO_RETENTION) -> None:
        self.path = str(path)
        self.retention = retention
        self._pending_rows = 0
        self._last_index = time.monotonic()
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
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against a process crash, no fsync per commit
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        conn.execute("PRAGMA recursive_triggers=ON")
        with self._transaction():
            create_or_migrate(conn, self.path, _incident_row, StoreError)

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
        rows = [log_row(doc_id, record) for doc_id, record in zip(log_doc_ids(records), records, strict=True)]
        merged = merge_metric_rows(metrics)
        with self._transaction() as conn:  # one transaction per message: logs and their bucket counts
            conn.executemany(LOG_INSERT, rows)
            if merged:
                conn.executemany(METRIC_PENDING_INSERT, merged)
        self._pending_rows += len(rows) + len(merged)
        self._maybe_index()
        return len(rows)

    def write_metrics(self, metrics: Sequence[MetricRow]) -> int:
        merged = merge_metric_rows(metrics)
        if merged:
            with self._transaction() as conn:
                conn.executemany(METRIC_PENDING_INSERT, merged)
            self._pending_rows += len(merged)
            self._maybe_index()
        return len(merged)

    def _maybe_index(self) -> None:
        if self._pending_rows >= INDEX_EVERY_ROWS or time.monotonic() - self._last_index >= INDEX_EVERY_S:
            self.build_indexes()

    def build_indexes(self, *, retention: bool = True) -> int:
        """Bring the text index, the trace index, the tenant usage and the metrics up to every committed
        row (in transactions of at most ``INDEX_MAX_ROWS`` logs), then run retention; returns the log
        rows indexed. Called by the writer when due and at close; harmless at any time."""
        indexed = 0
        while True:
            with self._transaction() as conn:
                done = conn.execute("SELECT rid FROM index_progress").fetchone()[0]
                newest = conn.execute("SELECT max(rid) FROM logs").fetchone()[0] or 0
                top = min(newest, done + INDEX_MAX_ROWS)
                if top > done:
                    span = (done, top)
                    conn.execute("INSERT INTO logs_fts (rowid, body, exception_message) SELECT rid, body,"
                                 " exception_message FROM logs WHERE rid > ? AND rid <= ?", span)
                    conn.execute("INSERT OR IGNORE INTO log_traces (tenant, trace_id, rid) SELECT tenant, trace_id,"
                                 " rid FROM logs WHERE rid > ? AND rid <= ? AND trace_id != ''", span)
                    conn.execute(
                        f"INSERT INTO tenant_usage (tenant, newest_ms, rows, bytes) SELECT tenant, max(time_ms),"
                        f" count(*), sum({ROW_BYTES_SQL}) FROM logs WHERE rid > ? AND rid <= ? GROUP BY tenant"
                        " ON CONFLICT (tenant) DO UPDATE SET newest_ms = max(newest_ms, excluded.newest_ms),"
                        " rows = rows + excluded.rows, bytes = bytes + excluded.bytes", span)
                    conn.execute("UPDATE index_progress SET rid = ?", (top,))
                    indexed += top - done
                mtop = conn.execute("SELECT max(rid) FROM metrics_pending").fetchone()[0]
                if mtop is not None:
                    conn.execute(METRIC_FOLD, (mtop,))
                    conn.execute("INSERT INTO tenant_usage (tenant, newest_ms, rows, bytes) SELECT tenant,"
                                 " max(bucket_ms), 0, 0 FROM metrics_pending WHERE rid <= ? GROUP BY tenant"
                                 " ON CONFLICT (tenant) DO UPDATE SET newest_ms = max(newest_ms, excluded.newest_ms)",
                                 (mtop,))
                    conn.execute("DELETE FROM metrics_pending WHERE rid <= ?", (mtop,))
            if top <= done or top - done < INDEX_MAX_ROWS:
                break
        self._pending_rows = 0
        self._last_index = time.monotonic()
        if retention:
            self.enforce_retention(budget=max(store_retention.BATCH_ROWS, 2 * indexed))
        return indexed

    def enforce_retention(self, budget: int | None = None) -> store_retention.Pass:
        """Delete what the retention settings expire, ``store_retention.BATCH_ROWS`` rows per
        transaction, until nothing is due or ``budget`` rows are gone (None: until nothing is due)."""
        total = store_retention.Pass()
        while budget is None or total.total < budget:
            with self._transaction() as conn:
                step = store_retention.one_batch(conn, self.retention)
            total.logs += step.logs
            total.metrics += step.metrics
            total.incidents += step.incidents
            if step.total == 0:
                break
        return total

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
            conn.executemany(INCIDENT_UPSERT, [_incident_row(event) for event in events])
        return len(rows)

    def flush(self) -> None:
        """Every write call has committed; builds the batch structures if they are due."""
        if self._pending_rows:
            self._maybe_index()

    def close(self) -> None:
        try:
            if self._pending_rows:
                self.build_indexes()
        finally:
            with self._lock:
                self._conn.close()

    # -- LogReader -------------------------------------------------------------------------------

    def search_logs(self, tenant: str, services: Sequence[str], start_ms: int, end_ms: int, *,
                    min_severity_number: int = 0, text: str | None = None, limit: int = 50) -> list[LogDoc]:
        where = ["tenant = ?", "time_ms >= ?", "time_ms < ?", "severity_number >= ?"]
        params: list[Any] = [tenant, int(start_ms), int(end_ms), int(min_severity_number)]
        if services:
            where.append(f"service IN ({', '.join('?' * len(services))})")
            params.extend(services)
        if text is not None:
            found = text_rids_sql(text)
            if found is None:
                return []
            where.append(f"rid IN ({found[0]})")
            params.extend(found[1])
        params.append(clamp_limit(limit))
        rows = self._query(f"SELECT {LOG_COLUMNS} FROM logs WHERE {' AND '.join(where)}"
                           " ORDER BY time_ms, id LIMIT ?", params)
        return [row_doc(row) for row in rows]

    def trace_logs(self, tenant: str, trace_ids: Sequence[str], *, limit: int = 100) -> list[LogDoc]:
        wanted = [trace_id for trace_id in trace_ids if trace_id]
        if not wanted:
            return []
        sql, params = trace_rids_sql(tenant, wanted)
        rows = self._query(f"SELECT {LOG_COLUMNS} FROM logs WHERE rid IN ({sql}) ORDER BY time_ms, id LIMIT ?",
                           [*params, clamp_limit(limit)])
        return [row_doc(row) for row in rows]

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


def trace_rids_sql(tenant: str, trace_ids: Sequence[str]) -> tuple[str, list[Any]]:
    """A subquery of the rids of ``tenant``'s rows of ``trace_ids``: from the trace index, and from the
    tail past it (read in rid order: ``NOT INDEXED`` keeps the planner on the rid range)."""
    marks = ", ".join("?" * len(trace_ids))
    sql = (f"SELECT rid FROM log_traces WHERE tenant = ? AND trace_id IN ({marks}) UNION ALL"
           f" SELECT rid FROM logs NOT INDEXED WHERE rid > (SELECT rid FROM index_progress) AND tenant = ?"
           f" AND trace_id IN ({marks})")
    return sql, [tenant, *trace_ids, tenant, *trace_ids]


def _incident_row(event: Mapping[str, Any]) -> tuple[Any, ...]:
    state = incident_state(event)
    state["services"] = " ".join(state["services"])
    return tuple(state[name] for name in INCIDENT_STATE_FIELDS)
