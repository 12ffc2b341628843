"""The console's one read interface over either store (``logclaw ui``, ``logclaw incidents``).

``ConsoleReader`` is read-only and every method takes the tenant: nothing is ever read across
tenants except ``tenants()`` (the list an operator without ``--keys`` picks from). Two
implementations: ``SqliteConsoleReader`` (the embedded store, opened read-only) here, and
``OpenSearchConsoleReader`` in ``connectors.console_opensearch``. Times are event time, Unix ms.

What it reads (schema in ``docs/console.md``): the incident list (one row per incident, its latest
state: ``incidents`` table / ``<prefix>-incident_state-<tenant>`` index), incident events, logs, the
per (tenant, service, 10 s bucket) counts the decode operator writes (``metrics``), anomalies.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from connectors.logstore import METRIC_FIELDS, LogDoc, MetricRow, clamp_limit
from connectors.security import OpenSearchAccess, Secret
from connectors.store import LOG_COLUMNS, EmbeddedStore, fts_query, row_doc, text_rids_sql, trace_rids_sql
from connectors.store_retention import NO_RETENTION

SEVERITIES = ("critical", "high", "medium", "low")
STATES = ("open", "resolved")
MAX_PAGE = 500


@dataclass(frozen=True)
class IncidentQuery:
    """Filters of the incident list; ``start_ms <= opened_ms < end_ms``; ``text``: every word in the
    title, summary or services."""

    tenant: str
    severity: str = ""
    state: str = ""
    service: str = ""
    start_ms: int | None = None
    end_ms: int | None = None
    text: str = ""
    offset: int = 0
    limit: int = 50


@dataclass(frozen=True)
class IncidentPage:
    rows: list[dict[str, Any]]  # connectors.logstore.incident_state() dicts, newest opened first
    total: int  # matching incidents (all pages)
    by_severity: dict[str, int] = field(default_factory=dict)
    by_state: dict[str, int] = field(default_factory=dict)
    mttr_ms: float | None = None  # mean resolved - opened over the matching resolved incidents


class ConsoleReader(Protocol):
    kind: str

    def tenants(self) -> list[str]: ...

    def incidents(self, query: IncidentQuery) -> IncidentPage: ...

    def incident_events(self, tenant: str, incident_id: str) -> list[dict[str, Any]]: ...

    def search_logs(self, tenant: str, *, services: Sequence[str] = (), start_ms: int = 0, end_ms: int = 2**62,
                    min_severity_number: int = 0, text: str = "", limit: int = 100) -> list[LogDoc]:
        """Newest first."""
        ...

    def log_context(self, tenant: str, service: str, time_ms: int, n: int = 15) -> list[LogDoc]:
        """Up to ``n`` lines of ``service`` before ``time_ms`` and ``n`` at or after it, in time order."""
        ...

    def trace_logs(self, tenant: str, trace_id: str, limit: int = 500) -> list[LogDoc]: ...

    def metrics(self, tenant: str, services: Sequence[str], start_ms: int, end_ms: int) -> list[MetricRow]:
        """Bucket rows with ``start_ms <= bucket_ms < end_ms`` (all services when empty), in time order."""
        ...

    def newest_ms(self, tenant: str) -> int | None:
        """The newest bucket (event time) of the tenant, or None: the console's "now"."""
        ...

    def anomalies(self, tenant: str, start_ms: int, end_ms: int, limit: int = 200) -> list[dict[str, Any]]: ...

    def store_info(self) -> dict[str, Any]:
        """What the health page shows about the store (kind, size; no credentials)."""
        ...

    def close(self) -> None: ...


def page_limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE))


class SqliteConsoleReader:
    """``ConsoleReader`` over the embedded store, on a read-only connection (``mode=ro``)."""

    kind = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such store (run `logclaw demo` or `logclaw replay` first)")
        # Checks FTS5 and the schema version, adds tables a v1 file lacks; a reader: the job alone deletes.
        EmbeddedStore(self.path, retention=NO_RETENTION).close()
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def tenants(self) -> list[str]:
        rows = self._rows("SELECT DISTINCT tenant FROM incidents UNION SELECT DISTINCT tenant FROM metrics"
                          " UNION SELECT DISTINCT tenant FROM metrics_pending ORDER BY 1", [])
        return [row[0] for row in rows]

    def incidents(self, query: IncidentQuery) -> IncidentPage:
        where: list[str] = ["tenant = ?"]
        params: list[Any] = [query.tenant]
        if query.severity:
            where.append("severity = ?")
            params.append(query.severity)
        if query.service:
            where.append("(' ' || services || ' ') LIKE ? ESCAPE '\\'")
            params.append("% " + query.service.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + " %")
        if query.start_ms is not None:
            where.append("opened_ms >= ?")
            params.append(query.start_ms)
        if query.end_ms is not None:
            where.append("opened_ms < ?")
            params.append(query.end_ms)
        if query.text:
            match = fts_query(query.text)
            if match is None:
                return IncidentPage([], 0)
            where.append("rid IN (SELECT rowid FROM incidents_fts WHERE incidents_fts MATCH ?)")
            params.append(match)
        by_severity: dict[str, int] = {}
        by_state: dict[str, int] = {}
        durations, resolved = 0.0, 0
        for severity, state, n, total_ms in self._rows(
                f"SELECT severity, state, COUNT(*), SUM(duration_ms) FROM incidents WHERE {' AND '.join(where)}"
                " GROUP BY severity, state", params):
            if query.state and state != query.state:
                continue
            by_severity[severity] = by_severity.get(severity, 0) + n
            by_state[state] = by_state.get(state, 0) + n
            if state == "resolved" and total_ms is not None:
                durations += total_ms
                resolved += n
        if query.state:
            where.append("state = ?")
            params.append(query.state)
        columns = ", ".join(_INCIDENT_COLUMNS)
        rows = self._rows(f"SELECT {columns} FROM incidents WHERE {' AND '.join(where)}"
                          " ORDER BY opened_ms DESC, incident_id LIMIT ? OFFSET ?",
                          [*params, page_limit(query.limit), max(0, query.offset)])
        return IncidentPage([_incident(row) for row in rows], sum(by_state.values()), by_severity, by_state,
                            durations / resolved if resolved else None)

    def incident_events(self, tenant: str, incident_id: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT doc FROM incident_events WHERE tenant = ? AND incident_id = ?"
                          " ORDER BY detected_at_ms, event_rank", [tenant, incident_id])
        return [json.loads(row[0]) for row in rows]

    def search_logs(self, tenant: str, *, services: Sequence[str] = (), start_ms: int = 0, end_ms: int = 2**62,
                    min_severity_number: int = 0, text: str = "", limit: int = 100) -> list[LogDoc]:
        where = ["tenant = ?", "time_ms >= ?", "time_ms < ?"]
        params: list[Any] = [tenant, int(start_ms), int(end_ms)]
        if min_severity_number > 0:
            where.append("severity_number >= ?")
            params.append(int(min_severity_number))
        if services:
            where.append(f"service IN ({', '.join('?' * len(services))})")
            params.extend(services)
        if text:
            found = text_rids_sql(text)  # the text index, and the rows past it by substring
            if found is None:
                return []
            where.append(f"rid IN ({found[0]})")
            params.extend(found[1])
        rows = self._rows(f"SELECT id, {LOG_COLUMNS} FROM logs WHERE {' AND '.join(where)} ORDER BY time_ms DESC, id"
                          " LIMIT ?", [*params, clamp_limit(limit)])
        return [_log(row) for row in rows]

    def log_context(self, tenant: str, service: str, time_ms: int, n: int = 15) -> list[LogDoc]:
        n = max(1, min(int(n), 200))
        before = self._rows(f"SELECT id, {LOG_COLUMNS} FROM logs WHERE tenant = ? AND service = ? AND time_ms < ?"
                            " ORDER BY time_ms DESC, id DESC LIMIT ?", [tenant, service, int(time_ms), n])
        after = self._rows(f"SELECT id, {LOG_COLUMNS} FROM logs WHERE tenant = ? AND service = ? AND time_ms >= ?"
                           " ORDER BY time_ms, id LIMIT ?", [tenant, service, int(time_ms), n])
        return [_log(row) for row in [*reversed(before), *after]]

    def trace_logs(self, tenant: str, trace_id: str, limit: int = 500) -> list[LogDoc]:
        if not trace_id:
            return []
        sql, params = trace_rids_sql(tenant, [trace_id])
        rows = self._rows(f"SELECT id, {LOG_COLUMNS} FROM logs WHERE rid IN ({sql}) ORDER BY time_ms, id LIMIT ?",
                          [*params, clamp_limit(limit)])
        return [_log(row) for row in rows]

    def metrics(self, tenant: str, services: Sequence[str], start_ms: int, end_ms: int) -> list[MetricRow]:
        """Folded rows plus the counts still pending (``store_schema.METRIC_FOLD``), summed per bucket."""
        where = ["tenant = ?", "bucket_ms >= ?", "bucket_ms < ?"]
        params: list[Any] = [tenant, int(start_ms), int(end_ms)]
        if services:
            where.append(f"service IN ({', '.join('?' * len(services))})")
            params.extend(services)
        fields = ", ".join(METRIC_FIELDS)
        cond = " AND ".join(where)
        rows = self._rows(f"SELECT tenant, service, bucket_ms, {', '.join(f'sum({f})' for f in METRIC_FIELDS)} FROM"
                          f" (SELECT tenant, service, bucket_ms, {fields} FROM metrics WHERE {cond} UNION ALL"
                          f" SELECT tenant, service, bucket_ms, {fields} FROM metrics_pending WHERE {cond})"
                          " GROUP BY tenant, service, bucket_ms ORDER BY bucket_ms, service", [*params, *params])
        return [MetricRow(*row) for row in rows]

    def newest_ms(self, tenant: str) -> int | None:
        row = self._rows("SELECT max(m) FROM (SELECT MAX(bucket_ms) AS m FROM metrics WHERE tenant = ? UNION ALL"
                         " SELECT MAX(bucket_ms) FROM metrics_pending WHERE tenant = ?)", [tenant, tenant])
        found = row[0][0] if row else None
        if found is None:
            row = self._rows("SELECT MAX(detected_ms) FROM incidents WHERE tenant = ?", [tenant])
            found = row[0][0] if row else None
        return None if found is None else int(found)

    def anomalies(self, tenant: str, start_ms: int, end_ms: int, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._rows("SELECT doc FROM anomalies WHERE tenant = ? AND time_ms >= ? AND time_ms < ?"
                          " ORDER BY time_ms DESC LIMIT ?", [tenant, int(start_ms), int(end_ms), clamp_limit(limit)])
        return [json.loads(row[0]) for row in rows]

    def store_info(self) -> dict[str, Any]:
        size = sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return {"kind": "embedded SQLite (FTS5)", "location": str(self.path), "size_bytes": size}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_INCIDENT_COLUMNS = ("tenant", "incident_id", "severity", "state", "service", "root_service", "score",
                     "opened_ms", "detected_ms", "resolved_ms", "duration_ms", "title", "summary", "services")


def _incident(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(_INCIDENT_COLUMNS, row, strict=True))
    out["services"] = str(out["services"]).split()
    return out


def _log(row: Sequence[Any]) -> LogDoc:
    doc = row_doc(row[1:])
    doc["_id"] = row[0]
    return doc


def open_reader(*, store: str | Path | None = None, opensearch_url: str = "", opensearch_user: str = "",
                opensearch_password: str = "", index_prefix: str = "logclaw",
                opensearch: OpenSearchAccess | None = None) -> ConsoleReader:
    """OpenSearch when ``opensearch`` (URL, basic auth, TLS) or ``opensearch_url`` names one, else the
    embedded store at ``store``."""
    if opensearch is None and opensearch_url:
        opensearch = OpenSearchAccess(opensearch_url, opensearch_user, Secret(opensearch_password))
    if opensearch is not None and opensearch.url:
        from connectors.console_opensearch import OpenSearchConsoleReader

        return OpenSearchConsoleReader.from_access(opensearch, index_prefix)
    if store is None:
        raise ValueError("no store: give the embedded store's path or an OpenSearch URL")
    return SqliteConsoleReader(store)


@dataclass(frozen=True)
class TicketLink:
    destination: str  # the platform (jira, servicenow, pagerduty, opsgenie, slack, zammad, file)
    state: str  # pending / open / resolved
    external_id: str
    url: str
    last_event: str


def tickets(ledger_path: str | Path | None, tenant: str, fingerprint: str) -> list[TicketLink]:
    """The tickets the ticketing worker filed for one incident fingerprint, from its ledger (none
    when there is no ledger file)."""
    if ledger_path is None or not Path(ledger_path).exists():
        return []
    from connectors.ledger import TicketLedger

    ledger = TicketLedger(ledger_path, owner="console")
    try:
        rows = [row for row in ledger.rows(tenant) if row.key.fingerprint == fingerprint]
    finally:
        ledger.close()
    return [TicketLink(row.key.destination, row.state, row.ref.external_id if row.ref else "",
                       row.ref.url if row.ref else "", row.mark.event if row.mark else "") for row in rows]
