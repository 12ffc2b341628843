"""Retention of the embedded store (issue 15 item 7): old logs and metrics go, recent ones stay,
incidents stay unless their own setting says otherwise, a tenant's history never depends on another
tenant's volume, and deletion is incremental. Pure SQLite tests on the real store file."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from connectors.logstore import MetricRow
from connectors.store import EmbeddedStore
from connectors.store_retention import (
    DEFAULT_MAX_MB,
    DEFAULT_RETENTION_HOURS,
    HOUR_MS,
    NO_RETENTION,
    RetentionSettings,
    estimated_bytes,
    retention_from_env,
)
from tests.test_store import T0_NS, incident_event, make_record

T0_MS = T0_NS // 1_000_000
OFF = NO_RETENTION


def logs_at(tenant: str, hours: list[float], body: str = "line") -> list[Any]:
    return [make_record(tenant=tenant, time_unix_nano=(T0_MS + int(h * HOUR_MS) + i) * 1_000_000,
                        body=f"{body} {tenant} {h} {i}", trace_id=f"{i % 3:032x}")
            for i, h in enumerate(hours)]


def bodies(store: EmbeddedStore, tenant: str) -> list[str]:
    return [d["body"] for d in store.search_logs(tenant, [], 0, 2**62, limit=10_000)]


def check_indexes(store: EmbeddedStore) -> None:
    """The text index and the trace index hold exactly the stored rows (no entry of a deleted row)."""
    store.build_indexes(retention=False)
    with sqlite3.connect(store.path) as conn:
        conn.execute("INSERT INTO logs_fts (logs_fts, rank) VALUES ('integrity-check', 1)")
        traced = conn.execute("SELECT COUNT(*) FROM logs WHERE trace_id != ''").fetchone()
        assert conn.execute("SELECT COUNT(*) FROM log_traces").fetchone() == traced
        orphans = conn.execute("SELECT COUNT(*) FROM log_traces WHERE rid NOT IN (SELECT rid FROM logs)").fetchone()
        assert orphans == (0,)


# -- settings --------------------------------------------------------------------------------------


def test_settings_from_env_with_defaults_and_errors_naming_the_variable() -> None:
    assert retention_from_env({}) == RetentionSettings(DEFAULT_RETENTION_HOURS, DEFAULT_MAX_MB, 0.0)
    assert retention_from_env({"LOGCLAW_STORE_RETENTION_HOURS": "24", "LOGCLAW_STORE_MAX_MB": " 512 ",
                               "LOGCLAW_STORE_INCIDENT_RETENTION_HOURS": "0"}) == RetentionSettings(24, 512, 0)
    assert retention_from_env({"LOGCLAW_STORE_MAX_MB": ""}).max_mb == DEFAULT_MAX_MB  # empty = unset
    for name, raw in [("LOGCLAW_STORE_RETENTION_HOURS", "a week"), ("LOGCLAW_STORE_MAX_MB", "-1"),
                      ("LOGCLAW_STORE_INCIDENT_RETENTION_HOURS", "nan"), ("LOGCLAW_STORE_MAX_MB", "inf")]:
        with pytest.raises(ValueError, match=f"^{name}="):
            retention_from_env({name: raw})


def test_the_store_takes_its_settings_from_its_caller_never_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job reads ``LOGCLAW_STORE_*`` once (``JobConfig.from_env``) and passes them; a store opened
    without them (a reader: console, ticketing worker, tools) deletes nothing, whatever the environment."""
    monkeypatch.setenv("LOGCLAW_STORE_RETENTION_HOURS", "1")
    monkeypatch.setenv("LOGCLAW_STORE_MAX_MB", "lots")  # would fail start-up, were it read here
    with EmbeddedStore(tmp_path / "s.db", retention=OFF) as store:
        store.write_logs([make_record(time_unix_nano=T0_NS + h * HOUR_MS * 1_000_000, body=f"h{h}")
                          for h in (0, 5)])
    with EmbeddedStore(tmp_path / "s.db") as reader:
        assert reader.retention == NO_RETENTION
        reader.build_indexes()  # a batch, then a retention pass
        assert reader.counts()["logs"] == 2  # deleted nothing
    with EmbeddedStore(tmp_path / "s.db", retention=RetentionSettings(retention_hours=1, max_mb=0)) as writer:
        writer.build_indexes()
        assert bodies(writer, "acme") == ["h5"]  # the store that was given a limit applies it


# -- age -------------------------------------------------------------------------------------------


def test_old_logs_and_metrics_go_recent_stay_incidents_stay(tmp_path: Any) -> None:
    with EmbeddedStore(tmp_path / "s.db", retention=RetentionSettings(retention_hours=24, max_mb=0)) as store:
        store.write_logs(logs_at("acme", [0, 1, 30, 49, 50]),
                         [MetricRow("acme", "svc", T0_MS + h * HOUR_MS, total=1) for h in (0, 1, 30, 49, 50)])
        old_incident = incident_event("inc-old", "opened", "2024-05-01T03:47:05Z")  # at T0: 50 h before the newest
        store.write_incident_events([old_incident])
        store.write_anomalies([{"tenant": "acme", "anomaly_id": "an-old", "service": "svc", "time_ms": T0_MS}])
        store.build_indexes()  # retention runs after the batch
        # newest log at T0 + 50 h: everything before T0 + 26 h goes
        assert [b.split()[2] for b in bodies(store, "acme")] == ["30", "49", "50"]
        assert [r[0] for r in store._query("SELECT bucket_ms FROM metrics ORDER BY 1", [])] == [
            T0_MS + h * HOUR_MS for h in (30, 49, 50)]
        assert store.incident_events("acme", "inc-old") == [old_incident]  # the record of what happened
        assert store.counts()["anomalies"] == 1
        assert store._query("SELECT rows FROM tenant_usage WHERE tenant = 'acme'", []) == [(3,)]
        check_indexes(store)


def test_incidents_expire_only_with_their_own_setting(tmp_path: Any) -> None:
    settings = RetentionSettings(retention_hours=0, max_mb=0, incident_retention_hours=24)
    with EmbeddedStore(tmp_path / "s.db", retention=settings) as store:
        old = incident_event("inc-old", "opened", "2024-05-01T03:47:05Z")
        recent = incident_event("inc-new", "opened", "2024-05-03T03:47:05Z")
        store.write_incident_events([old, recent])
        store.write_anomalies([{"tenant": "acme", "anomaly_id": "an-old", "service": "s", "time_ms": T0_MS},
                               {"tenant": "acme", "anomaly_id": "an-new", "service": "s",
                                "time_ms": T0_MS + 48 * HOUR_MS}])
        store.write_logs(logs_at("acme", [0, 48]))
        store.build_indexes()  # retention runs after the batch
        assert [e["incident_id"] for e in store.incidents("acme")] == ["inc-new"]
        assert store.incident_events("acme", "inc-old") == []
        assert store._query("SELECT incident_id FROM incidents", []) == [("inc-new",)]
        assert store._query("SELECT anomaly_id FROM anomalies", []) == [("an-new",)]
        assert len(bodies(store, "acme")) == 2  # logs: no age limit here


def test_age_is_each_tenants_own_event_time(tmp_path: Any) -> None:
    """A tenant replaying last month keeps its window; another tenant's newer clock expires nothing of it."""
    with EmbeddedStore(tmp_path / "s.db", retention=RetentionSettings(retention_hours=24, max_mb=0)) as store:
        store.write_logs(logs_at("backfill", [0, 10, 20]))  # a month before the live tenant
        store.write_logs(logs_at("live", [700, 730, 740]))
        store.build_indexes()
        assert len(bodies(store, "backfill")) == 3
        assert [b.split()[2] for b in bodies(store, "live")] == ["730", "740"]


def test_rows_past_the_indexes_are_never_deleted(tmp_path: Any) -> None:
    """Retention deletes only indexed rows (their text and trace entries must go with them); a tail row
    waits for the next batch."""
    with EmbeddedStore(tmp_path / "s.db", retention=OFF) as store:
        store.write_logs(logs_at("acme", [100]))
        store.build_indexes()
        store.write_logs(logs_at("acme", [0, 1, 101]))  # two old ones, in the tail
        store.retention = RetentionSettings(retention_hours=24, max_mb=0)
        store.enforce_retention()
        assert len(bodies(store, "acme")) == 4
        store.build_indexes()
        assert [b.split()[2] for b in bodies(store, "acme")] == ["100", "101"]
        check_indexes(store)


# -- size ------------------------------------------------------------------------------------------


def test_size_limit_trims_the_largest_tenant_and_spares_the_small_one(tmp_path: Any) -> None:
    with EmbeddedStore(tmp_path / "s.db", retention=OFF) as store:
        store.write_logs(logs_at("quiet", [0, 1, 2, 3, 4]))
        noisy = [h / 100 for h in range(2_000)]
        for first in range(0, len(noisy), 200):
            store.write_logs(logs_at("noisy", noisy[first:first + 200], body="noise"))
        store.build_indexes()
        full = estimated_bytes(sqlite3.connect(store.path))
        cap_mb = full / 2 / 2**20  # room for about half of it
        store.retention = RetentionSettings(retention_hours=0, max_mb=cap_mb)
        store.enforce_retention()
        with sqlite3.connect(store.path) as conn:
            assert estimated_bytes(conn) <= store.retention.max_bytes
        assert len(bodies(store, "quiet")) == 5  # untouched: the other tenant was larger
        kept = bodies(store, "noisy")
        assert 800 <= len(kept) < 1_000
        assert kept[-1].startswith(f"noise noisy {noisy[-1]} ")  # the newest stay, the oldest went
        assert not any(b.startswith("noise noisy 0.0 ") for b in kept)
        check_indexes(store)


def test_a_tenant_keeps_the_same_history_whatever_another_tenant_sends(tmp_path: Any) -> None:
    """The same small tenant beside a small and beside a huge neighbour, under the same size limit:
    it keeps the same rows."""
    kept = []
    for volume in (50, 3_000):
        with EmbeddedStore(tmp_path / f"s{volume}.db", retention=OFF) as store:
            store.write_logs(logs_at("small", [h / 10 for h in range(50)]))
            store.build_indexes()
            small_bytes = estimated_bytes(sqlite3.connect(store.path))
            other = [h / 100 for h in range(volume)]
            for first in range(0, volume, 500):
                store.write_logs(logs_at("big", other[first:first + 500], body="noise"))
            store.retention = RetentionSettings(retention_hours=0, max_mb=3 * small_bytes / 2**20)
            store.build_indexes()
            store.enforce_retention()
            kept.append(bodies(store, "small"))
    assert kept[0] == kept[1] and len(kept[0]) == 50


# -- incremental -----------------------------------------------------------------------------------


def test_deletion_is_incremental_in_small_transactions(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.store_retention as retention

    monkeypatch.setattr(retention, "BATCH_ROWS", 100)
    with EmbeddedStore(tmp_path / "s.db", retention=OFF) as store:
        hours = [h / 1000 for h in range(1_000)] + [100.0]
        for first in range(0, len(hours), 250):
            store.write_logs(logs_at("acme", hours[first:first + 250]))
        store.build_indexes()
        store.retention = RetentionSettings(retention_hours=24, max_mb=0)
        commits: list[int] = []
        real = retention.one_batch

        def counted(conn: sqlite3.Connection, settings: RetentionSettings, limit: int = 100) -> Any:
            done = real(conn, settings, limit)
            commits.append(done.logs)
            return done

        monkeypatch.setattr(retention, "one_batch", counted)
        first = store.enforce_retention(budget=300)  # a write's share: three transactions
        assert first.logs == 300 and commits == [100, 100, 100]
        rest = store.enforce_retention()
        assert rest.logs == 700 and max(commits) <= 100
        assert len(bodies(store, "acme")) == 1
        check_indexes(store)
