"""Retention for the embedded store: raw logs and bucket metrics expire by age and by size.

Principles:
- **Age is event time, per tenant**: a tenant keeps the logs and metrics of its newest
  ``retention_hours`` of event time (behind the newest record the store holds for it). Event time,
  so a replay or a backfill of last month keeps its window instead of being deleted as it is written;
  per tenant, so one tenant's clock never expires another's data. A tenant that stops sending keeps
  its last window (until the size limit needs the room).
- **Size is shared fairly**: over ``max_mb``, the tenant that stores the most bytes loses its oldest
  logs first (max-min fairness): a small tenant is never trimmed while a larger one exists, so no
  tenant's history depends on another tenant's volume. Size is the logs' stored bytes counted per
  row (``store_schema.ROW_BYTES_SQL``) times ``INDEX_OVERHEAD``; SQLite reuses the freed pages, the
  file does not shrink (``VACUUM`` shrinks it).
- **Incidents are the record of what happened**: incident events, the incident list and anomalies
  are kept unless ``incident_retention_hours`` is set (then by event time, per tenant, as logs).
- **Incremental**: each pass deletes at most ``BATCH_ROWS`` rows per transaction and at most a
  budget proportional to what was just written, so a write never waits long and deletion keeps pace
  with ingest.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from connectors.store_schema import ROW_BYTES_SQL

HOUR_MS = 3_600_000
DEFAULT_RETENTION_HOURS = 168.0
"""Seven days of raw logs and metrics: a week of evidence around any incident and the console's
longest chart range, in the order of what hosted log products keep by default."""
DEFAULT_MAX_MB = 10_240.0
"""10 GiB: the store must never fill the disk of the single machine it runs on; at ~300 bytes per
row on disk (store_bench) this is ~35 million log lines."""
INDEX_OVERHEAD = 2.0
"""Stored row bytes -> file bytes: the row's indexes, text index and trace index roughly double it
(store_bench measures file bytes per record against the row bytes counted)."""
BATCH_ROWS = 2_000
"""Rows deleted per transaction: a few tens of ms of work (the text index 'delete' costs about an
insert), so a writer waiting for the lock waits no longer than that."""

_ENV = {
    "retention_hours": "LOGCLAW_STORE_RETENTION_HOURS",
    "max_mb": "LOGCLAW_STORE_MAX_MB",
    "incident_retention_hours": "LOGCLAW_STORE_INCIDENT_RETENTION_HOURS",
}


@dataclass(frozen=True)
class RetentionSettings:
    """0 switches a limit off. Hours are event time; megabytes are MiB of estimated store size."""

    retention_hours: float = DEFAULT_RETENTION_HOURS
    max_mb: float = DEFAULT_MAX_MB
    incident_retention_hours: float = 0.0

    @property
    def retention_ms(self) -> int:
        return int(self.retention_hours * HOUR_MS)

    @property
    def incident_retention_ms(self) -> int:
        return int(self.incident_retention_hours * HOUR_MS)

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 2**20)


NO_RETENTION = RetentionSettings(retention_hours=0.0, max_mb=0.0)
"""Every limit off: what a store opened to read (the console, the ticketing worker, tools) passes, so
that only the detection job, the one writer, deletes, by the settings it read once at start-up."""


def retention_from_env(env: Mapping[str, str] | None = None) -> RetentionSettings:
    """The settings from ``LOGCLAW_STORE_RETENTION_HOURS``, ``LOGCLAW_STORE_MAX_MB`` and
    ``LOGCLAW_STORE_INCIDENT_RETENTION_HOURS`` (defaults for unset or empty ones); a value that is not
    a number >= 0 raises ValueError naming the variable."""
    env = os.environ if env is None else env
    values: dict[str, float] = {}
    for field, name in _ENV.items():
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r}: not a number (hours or MiB; 0 switches the limit off)") from None
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{name}={raw!r}: must be a finite number >= 0 (0 switches the limit off)")
        values[field] = value
    return RetentionSettings(**values)


@dataclass
class Pass:
    """What one retention pass deleted."""

    logs: int = 0
    metrics: int = 0
    incidents: int = 0

    @property
    def total(self) -> int:
        return self.logs + self.metrics + self.incidents


def _delete_logs(conn: sqlite3.Connection, tenant: str, where: str, params: list[object], limit: int) -> int:
    """Delete up to ``limit`` of the tenant's oldest indexed logs matching ``where``: text index and
    trace index entries first (they need the row's values), then the rows, then the usage."""
    rows = conn.execute(
        f"SELECT rid, trace_id, body, exception_message, {ROW_BYTES_SQL} FROM logs"
        f" WHERE tenant = ? AND {where} AND rid <= (SELECT rid FROM index_progress)"
        f" AND rid < (SELECT max(rid) FROM logs) ORDER BY time_ms LIMIT ?",  # the newest rid stays: never reused
        [tenant, *params, limit]).fetchall()
    if not rows:
        return 0
    conn.executemany("INSERT INTO logs_fts (logs_fts, rowid, body, exception_message) VALUES ('delete', ?, ?, ?)",
                     [(r[0], r[2], r[3]) for r in rows])
    conn.executemany("DELETE FROM log_traces WHERE tenant = ? AND trace_id = ? AND rid = ?",
                     [(tenant, r[1], r[0]) for r in rows if r[1]])
    conn.executemany("DELETE FROM logs WHERE rid = ?", [(r[0],) for r in rows])
    conn.execute("UPDATE tenant_usage SET rows = rows - ?, bytes = bytes - ? WHERE tenant = ?",
                 (len(rows), sum(r[4] for r in rows), tenant))
    return len(rows)


def _delete_metrics(conn: sqlite3.Connection, tenant: str, before_ms: int, limit: int) -> int:
    cur = conn.execute("DELETE FROM metrics WHERE (tenant, service, bucket_ms) IN (SELECT tenant, service, bucket_ms"
                       " FROM metrics WHERE tenant = ? AND bucket_ms < ? LIMIT ?)", (tenant, before_ms, limit))
    return max(0, cur.rowcount)


def _delete_incidents(conn: sqlite3.Connection, tenant: str, before_ms: int, limit: int) -> int:
    """Incidents whose latest event is older than ``before_ms``, with their events; anomalies by time."""
    ids = [r[0] for r in conn.execute("SELECT incident_id FROM incidents WHERE tenant = ? AND detected_ms < ?"
                                      " LIMIT ?", (tenant, before_ms, limit))]
    for incident_id in ids:
        conn.execute("DELETE FROM incident_events WHERE tenant = ? AND incident_id = ?", (tenant, incident_id))
        conn.execute("DELETE FROM incidents WHERE tenant = ? AND incident_id = ?", (tenant, incident_id))
    cur = conn.execute("DELETE FROM anomalies WHERE (tenant, anomaly_id) IN (SELECT tenant, anomaly_id"
                       " FROM anomalies WHERE tenant = ? AND time_ms < ? LIMIT ?)", (tenant, before_ms, limit))
    return len(ids) + max(0, cur.rowcount)


def estimated_bytes(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT coalesce(sum(bytes), 0) FROM tenant_usage").fetchone()
    return int(row[0] * INDEX_OVERHEAD)


def one_batch(conn: sqlite3.Connection, settings: RetentionSettings, limit: int = BATCH_ROWS) -> Pass:
    """One transaction's worth of retention (the caller holds the write transaction): age first
    (every tenant, oldest data), then size (the largest tenant). Deletes at most about ``limit`` rows."""
    done = Pass()
    usage = conn.execute("SELECT tenant, newest_ms FROM tenant_usage ORDER BY tenant").fetchall()
    if settings.incident_retention_ms > 0:  # tenants with incidents only (no logs, no metrics) too
        known = {tenant for tenant, _ in usage}
        usage += [row for row in conn.execute("SELECT tenant, max(detected_ms) FROM incidents GROUP BY tenant")
                  if row[0] not in known]
    for tenant, newest_ms in usage:
        room = limit - done.total
        if room <= 0:
            return done
        if settings.retention_ms > 0:
            cutoff = newest_ms - settings.retention_ms
            done.logs += _delete_logs(conn, tenant, "time_ms < ?", [cutoff], room)
            done.metrics += _delete_metrics(conn, tenant, cutoff, max(1, limit - done.total))
        if settings.incident_retention_ms > 0 and done.total < limit:
            done.incidents += _delete_incidents(conn, tenant, newest_ms - settings.incident_retention_ms,
                                                limit - done.total)
    if settings.max_bytes > 0 and done.total < limit and estimated_bytes(conn) > settings.max_bytes:
        largest = conn.execute("SELECT tenant FROM tenant_usage ORDER BY bytes DESC, tenant LIMIT 1").fetchone()
        if largest is not None:
            over = estimated_bytes(conn) - settings.max_bytes
            # rows to free at this tenant's mean row size, never more than the batch allows
            mean = conn.execute("SELECT bytes * 1.0 / max(rows, 1) FROM tenant_usage WHERE tenant = ?",
                                largest).fetchone()[0] or 1.0
            want = min(limit - done.total, max(1, int(over / (mean * INDEX_OVERHEAD)) + 1))
            done.logs += _delete_logs(conn, largest[0], "1", [], want)
    return done
