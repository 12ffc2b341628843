"""The embedded SQLite + FTS5 store: round trip, replay, tenant isolation, search, schema guard."""

from __future__ import annotations

import sqlite3
from types import MappingProxyType
from typing import Any

import pytest

from connectors.logstore import log_doc, log_doc_id, log_doc_ids
from connectors.store import SCHEMA_VERSION, EmbeddedStore, StoreError, fts_query
from udfs.records import Level, LogRecord

T0_NS = 1_714_535_220_000_000_000  # 2024-05-01T03:47:00Z


def make_record(**overrides: Any) -> LogRecord:
    """A LogRecord with every field set to a distinctive value (override any by name)."""
    fields: dict[str, Any] = {
        "tenant": "acme",
        "service": "payment-api",
        "service_namespace": "shop",
        "time_unix_nano": T0_NS + 123_456_789,
        "observed_time_unix_nano": T0_NS + 200_000_000,
        "severity_number": 17,
        "level": Level.ERROR,
        "severity_text": "ERROR",
        "body": "connection pool exhausted: timeout after 30s",
        "body_truncated": False,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "http_status": 503,
        "exception_type": "redis.exceptions.ConnectionError",
        "exception_message": "Too many connections",
        "exception_stacktrace": "Traceback (most recent call last):\n  File \"pool.py\", line 1\n",
        "scope_name": "checkout.handler",
        "resource_attributes": MappingProxyType({"service.name": "payment-api", "tenant.id": "acme"}),
        "scope_attributes": MappingProxyType({}),
        "attributes": MappingProxyType({
            "http.route": "/pay", "retry": 3, "ok": False, "ratio": 0.5, "raw": b"\x00\x01",
            "tags": ("a", "b"), "nested": MappingProxyType({"k": "v"}), "nan": float("nan"),
        }),
    }
    fields.update(overrides)
    return LogRecord(**fields)


def expected_doc(record: LogRecord) -> dict[str, Any]:
    """The stored document written out by hand for the record built by ``make_record``."""
    return {
        "tenant": record.tenant,
        "service": record.service,
        "namespace": record.service_namespace,
        "time": "2024-05-01T03:47:00.123Z" if record.time_unix_nano == T0_NS + 123_456_789 else None,
        "time_ms": record.time_unix_nano // 1_000_000,
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
        "exception_stacktrace": record.exception_stacktrace,
        "attributes": {"http.route": "/pay", "retry": 3, "ok": False, "ratio": 0.5, "raw": "AAE=",
                       "tags": ["a", "b"], "nested": {"k": "v"}, "nan": "nan"},
    }


@pytest.fixture
def store(tmp_path: Any) -> Any:
    with EmbeddedStore(tmp_path / "logclaw.db") as opened:
        yield opened


def fts_integrity(store: EmbeddedStore) -> None:
    store.build_indexes()  # the text index covers the rows up to index_progress; bring it to all of them
    with sqlite3.connect(store.path) as conn:
        # rank 1: also check the index against the content table (stale entries of replaced rows)
        conn.execute("INSERT INTO logs_fts (logs_fts, rank) VALUES ('integrity-check', 1)")
        indexed = conn.execute("SELECT COUNT(*) FROM logs_fts WHERE logs_fts MATCH '\"line\"'").fetchone()
        stored = conn.execute("SELECT COUNT(*) FROM logs WHERE body LIKE 'line %'").fetchone()
        assert indexed == stored


def test_round_trip_keeps_every_field(store: EmbeddedStore) -> None:
    record = make_record()
    assert store.write_logs([record]) == 1
    docs = store.search_logs("acme", ["payment-api"], T0_NS // 1_000_000, T0_NS // 1_000_000 + 1000)
    assert docs == [expected_doc(record)]
    assert log_doc(record) == expected_doc(record)


def test_stacktrace_is_cut_to_4_kib_on_a_character_boundary() -> None:
    record = make_record(exception_stacktrace="é" * 3000)  # 6000 bytes of UTF-8
    cut = log_doc(record)["exception_stacktrace"]
    assert cut == "é" * 2048 and len(cut.encode()) == 4096


def test_doc_id_is_deterministic_and_sensitive_to_identity_fields() -> None:
    record = make_record()
    same = make_record(attributes=MappingProxyType({}), severity_text="whatever")
    assert log_doc_id(record) == log_doc_id(same)
    assert len(log_doc_id(record)) == 20
    variants = [make_record(tenant="other"), make_record(service="x"), make_record(time_unix_nano=T0_NS + 1),
                make_record(span_id="0" * 16), make_record(trace_id="1" * 32), make_record(body="other")]
    ids = {log_doc_id(record), log_doc_id(record, 1), *(log_doc_id(v) for v in variants)}
    assert len(ids) == 2 + len(variants)
    assert log_doc_ids([record, same, make_record(body="b")]) == [
        log_doc_id(record, 0), log_doc_id(record, 1), log_doc_id(make_record(body="b"), 0)]


def test_replay_overwrites_instead_of_duplicating(store: EmbeddedStore) -> None:
    batch = [make_record(time_unix_nano=T0_NS + i * 1_000_000, body=f"line {i}") for i in range(5)]
    batch.append(batch[0])  # a genuine repeat inside the batch is its own doc
    event = incident_event("inc-00000001", "opened", "2024-05-01T03:47:05Z")
    anomaly = {"tenant": "acme", "anomaly_id": "an-1", "service": "payment-api", "time_ms": 1, "score": 0.9}
    for _ in range(2):
        assert store.write_logs(batch) == 6
        store.write_anomalies([anomaly])
        store.write_incident_events([event])
    assert store.counts() == {"logs": 6, "anomalies": 1, "incident_events": 1, "incidents": 1}
    fts_integrity(store)
    found = store.search_logs("acme", [], 0, 2**62, text="line 3")
    assert [doc["body"] for doc in found] == ["line 3"]


def test_tenants_never_mix(store: EmbeddedStore) -> None:
    for tenant in ("acme", "globex"):
        store.write_logs([make_record(tenant=tenant, body=f"{tenant} pool exhausted")])
        store.write_incident_events([incident_event("inc-00000001", "opened", "2024-05-01T03:47:05Z",
                                                    tenant=tenant)])
    trace = make_record().trace_id
    for tenant in ("acme", "globex"):
        docs = store.search_logs(tenant, ["payment-api"], 0, 2**62)
        assert [doc["body"] for doc in docs] == [f"{tenant} pool exhausted"]
        assert [d["tenant"] for d in store.search_logs(tenant, [], 0, 2**62, text="exhausted")] == [tenant]
        assert [d["tenant"] for d in store.trace_logs(tenant, [trace])] == [tenant]
        assert [e["tenant"] for e in store.incident_events(tenant, "inc-00000001")] == [tenant]
        assert [e["tenant"] for e in store.incidents(tenant)] == [tenant]
    assert store.search_logs("initech", [], 0, 2**62) == []


def test_filters_sort_and_limit(store: EmbeddedStore) -> None:
    ms = 1_000_000
    records = [
        make_record(time_unix_nano=T0_NS + 5 * ms, body="b", severity_number=9, level=Level.INFO),
        make_record(time_unix_nano=T0_NS + 1 * ms, body="a", severity_number=17),
        make_record(time_unix_nano=T0_NS + 9 * ms, body="c", severity_number=21, level=Level.FATAL),
        make_record(time_unix_nano=T0_NS + 3 * ms, body="d", service="order-service"),
        make_record(time_unix_nano=T0_NS + 20 * ms, body="late"),
    ]
    store.write_logs(records)
    start = T0_NS // ms

    def bodies(docs: list[dict[str, Any]]) -> list[str]:
        return [doc["body"] for doc in docs]

    assert bodies(store.search_logs("acme", ["payment-api"], start, start + 10)) == ["a", "b", "c"]
    assert bodies(store.search_logs("acme", [], start, start + 10)) == ["a", "d", "b", "c"]
    assert bodies(store.search_logs("acme", [], start + 1, start + 9)) == ["a", "d", "b"]  # end exclusive
    assert bodies(store.search_logs("acme", [], start, start + 10, min_severity_number=17)) == ["a", "d", "c"]
    assert bodies(store.search_logs("acme", [], start, start + 100, limit=2)) == ["a", "d"]


def test_text_search_uses_fts_over_body_and_exception_message(store: EmbeddedStore) -> None:
    store.write_logs([
        make_record(time_unix_nano=T0_NS + 1_000_000, body="Redis connection pool exhausted",
                    exception_message=""),
        make_record(time_unix_nano=T0_NS + 2_000_000, body="request served",
                    exception_message="pool timeout"),
        make_record(time_unix_nano=T0_NS + 3_000_000, body="disk full", exception_message=""),
    ])

    def search(text: str) -> list[str]:
        return [d["body"] for d in store.search_logs("acme", [], 0, 2**62, text=text)]

    assert search("pool") == ["Redis connection pool exhausted", "request served"]
    assert search("POOL exhausted") == ["Redis connection pool exhausted"]
    assert search("timeout") == ["request served"]
    assert search('"exhausted (* NEAR(') == []  # FTS5 syntax is never interpreted: NEAR is a plain word
    assert search('"exhausted (*') == ["Redis connection pool exhausted"]
    assert search("pool OR disk") == []  # every word must occur
    assert search("nothing-like-this") == []
    assert search("  ...  ") == []
    assert fts_query('say "hi" OR') == '"say" "hi" "OR"'


def test_trace_logs_returns_the_trace_in_time_order(store: EmbeddedStore) -> None:
    t1, t2 = "1" * 32, "2" * 32
    store.write_logs([
        make_record(trace_id=t1, time_unix_nano=T0_NS + 3_000_000, body="t1 third", service="order-service"),
        make_record(trace_id=t1, time_unix_nano=T0_NS + 1_000_000, body="t1 first"),
        make_record(trace_id=t2, time_unix_nano=T0_NS + 2_000_000, body="t2"),
        make_record(trace_id="", time_unix_nano=T0_NS, body="no trace"),
    ])
    assert [d["body"] for d in store.trace_logs("acme", [t1])] == ["t1 first", "t1 third"]
    assert [d["body"] for d in store.trace_logs("acme", [t2, t1])] == ["t1 first", "t2", "t1 third"]
    assert [d["body"] for d in store.trace_logs("acme", [t1, t2], limit=1)] == ["t1 first"]
    assert store.trace_logs("acme", [""]) == []


def incident_event(incident_id: str, event: str, detected_at: str, *, tenant: str = "acme",
                   score: float = 0.9) -> dict[str, Any]:
    return {
        "schema": "logclaw.incident/v1", "incident_id": incident_id, "event": event, "tenant": tenant,
        "fingerprint": f"fp-{incident_id}", "severity": "critical", "score": score, "path": "windowed",
        "opened_at": "2024-05-01T03:47:00Z", "detected_at": detected_at, "service": "payment-api",
        "root_cause": {"service": "checkout", "confidence": 0.8, "candidates": [{"service": "checkout",
                                                                                  "score": 0.8}]},
        "affected_services": ["payment-api"], "signals": [{"name": "error_rate", "weight": 0.7}],
        "title": f"{incident_id} {event}",
    }


def test_incident_events_in_order_and_latest_per_incident(store: EmbeddedStore) -> None:
    a_opened = incident_event("inc-aaaaaaaa", "opened", "2024-05-01T03:47:05Z")
    a_updated = incident_event("inc-aaaaaaaa", "updated", "2024-05-01T03:52:05.500Z", score=0.95)
    a_resolved = incident_event("inc-aaaaaaaa", "resolved", "2024-05-01T04:02:05Z")
    b_opened = incident_event("inc-bbbbbbbb", "opened", "2024-05-01T03:50:00+00:00")
    b_updated = incident_event("inc-bbbbbbbb", "updated", "2024-05-01T03:50:00Z")  # same instant
    store.write_incident_events([a_resolved, b_updated, a_opened])
    store.write_incident_events([b_opened, a_updated])
    assert store.incident_events("acme", "inc-aaaaaaaa") == [a_opened, a_updated, a_resolved]
    assert store.incident_events("acme", "inc-bbbbbbbb") == [b_opened, b_updated]
    assert store.incidents() == [a_resolved, b_updated]
    assert store.incidents("acme") == [a_resolved, b_updated]
    assert store.incidents("globex") == []
    assert store.incident_events("acme", "inc-missing") == []


def test_missing_required_fields_are_refused(store: EmbeddedStore) -> None:
    with pytest.raises(ValueError, match="anomaly_id"):
        store.write_anomalies([{"tenant": "acme", "service": "x", "time_ms": 1}])
    with pytest.raises(ValueError, match="detected_at"):
        store.write_incident_events([{"tenant": "acme", "incident_id": "inc-1", "event": "opened"}])
    assert store.counts()["anomalies"] == 0


def test_unknown_newer_schema_version_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "logclaw.db"
    EmbeddedStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1} is newer than .* "
                       rf"\({SCHEMA_VERSION}\); upgrade LogClaw"):
        EmbeddedStore(path)


def test_reopen_and_second_process_connection_see_the_same_data(tmp_path: Any) -> None:
    path = tmp_path / "logclaw.db"
    writer = EmbeddedStore(path)
    reader = EmbeddedStore(path)  # a second connection, as the ticketing worker's process would open
    writer.write_logs([make_record()])
    assert len(reader.search_logs("acme", [], 0, 2**62)) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    writer.close()
    reader.close()
    with EmbeddedStore(path) as again:
        assert again.counts()["logs"] == 1


def test_version_1_file_gains_metrics_and_the_incident_list_when_opened(tmp_path: Any) -> None:
    from connectors.logstore import MetricRow

    path = tmp_path / "logclaw.db"
    event = {"schema": "logclaw.incident/v1", "tenant": "acme", "incident_id": "inc-1", "event": "opened",
             "detected_at": "2024-05-01T03:47:10Z", "opened_at": "2024-05-01T03:47:00Z", "severity": "high",
             "score": 0.8, "service": "pay", "root_cause": {"service": "db"}, "affected_services": ["pay"],
             "title": "pool exhausted", "summary": "s"}
    with EmbeddedStore(path) as store:
        store.write_incident_events([event])
    with sqlite3.connect(path) as conn:  # make it look like a version-1 file
        for table in ("incidents_fts", "incidents", "metrics"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE schema_version SET version = 1")
    with EmbeddedStore(path) as store:
        bucket = T0_NS // 1_000_000 // 10_000 * 10_000  # near the record's time: retention keeps it
        store.write_metrics([MetricRow("acme", "pay", bucket, total=2),
                             MetricRow("acme", "pay", bucket, total=3, failures=1)])
        store.write_logs([make_record()], [MetricRow("acme", "pay", bucket, total=1)])
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("SELECT incident_id, state, root_service FROM incidents").fetchall() == [
            ("inc-1", "open", "db")]
        assert conn.execute("SELECT total, failures FROM metrics").fetchall() == [(6, 1)]  # upserts add


def test_incident_list_keeps_the_latest_event_even_when_an_older_one_is_replayed(tmp_path: Any) -> None:
    base = {"schema": "logclaw.incident/v1", "tenant": "acme", "incident_id": "inc-1",
            "opened_at": "2024-05-01T03:47:00Z", "severity": "high", "score": 0.8, "service": "pay",
            "root_cause": {"service": "pay"},
            "affected_services": [], "title": "t", "summary": "s"}
    opened = {**base, "event": "opened", "detected_at": "2024-05-01T03:47:10Z"}
    resolved = {**base, "event": "resolved", "detected_at": "2024-05-01T03:57:10Z",
                "resolved_at": "2024-05-01T03:57:00Z"}
    with EmbeddedStore(tmp_path / "s.db") as store:
        store.write_incident_events([opened, resolved])
        store.write_incident_events([opened])  # a replay from a checkpoint
        rows = store._query("SELECT state, duration_ms FROM incidents", [])
    assert rows == [("resolved", 600_000)]
