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


# -- schema 3: the stored row, ids, the tail past the batch-built indexes ---------------------------


def test_doc_ids_are_the_ids_earlier_versions_wrote() -> None:
    """The one-call hash gives the ids of the per-part hash stores and indexes already hold (a replay
    after an upgrade must map onto them)."""
    import hashlib

    def per_part(record: LogRecord, index: int) -> str:
        digest = hashlib.sha1(usedforsecurity=False)
        for part in (record.tenant, record.service, record.time_unix_nano, record.span_id, record.trace_id,
                     record.body, index):
            digest.update(str(part).encode("utf-8", "surrogatepass"))
            digest.update(b"\x1f")
        return digest.hexdigest()[:20]

    records = [make_record(), make_record(body="é \udcff x", tenant="t\x1fx"), make_record(span_id="", trace_id="")]
    assert [log_doc_id(r, i) for i, r in enumerate(records)] == [per_part(r, i) for i, r in enumerate(records)]


@pytest.mark.parametrize("overrides", [
    {},
    {"service_namespace": "", "severity_text": "", "span_id": "", "http_status": None, "exception_type": "",
     "exception_message": "", "exception_stacktrace": "", "attributes": MappingProxyType({})},
    {"severity_number": 0, "level": Level.WARN, "severity_text": "warning"},  # level from text: kept explicitly
    {"severity_number": 11, "level": Level.INFO, "severity_text": "INFO", "body_truncated": True},
    {"exception_stacktrace": "é" * 3000, "http_status": 0},
])
def test_stored_row_gives_back_the_whole_document(overrides: dict[str, Any]) -> None:
    from connectors.store import log_row, row_doc

    record = make_record(**overrides)
    row = log_row("x", record)
    assert row_doc(row[1:]) == log_doc(record)


def test_a_full_schema_2_document_reads_back_unchanged() -> None:
    import json

    from connectors.store import row_doc

    doc = log_doc(make_record())
    row = (doc["tenant"], doc["service"], doc["time_ms"], doc["severity_number"], doc["trace_id"], doc["body"],
           doc["exception_message"], json.dumps(doc))
    assert row_doc(row) == doc


def test_rows_past_the_indexes_are_found_as_indexed_rows_are(store: EmbeddedStore) -> None:
    """Text, trace and filtered searches give the same answers for the tail (before the batch) as for
    the indexed rows (after it), and the text index holds exactly the rows after the batch."""
    t1 = "1" * 32
    store.write_logs([
        make_record(time_unix_nano=T0_NS + 1_000_000, body="Redis connection POOL exhausted", trace_id=t1),
        make_record(time_unix_nano=T0_NS + 2_000_000, body="request served", exception_message="pool timeout"),
        make_record(time_unix_nano=T0_NS + 3_000_000, body="disk full", trace_id=t1, service="db"),
        make_record(time_unix_nano=T0_NS + 4_000_000, body="pool", tenant="globex", trace_id=t1),
    ])

    def answers() -> list[Any]:
        return [
            [d["body"] for d in store.search_logs("acme", [], 0, 2**62, text="pool")],
            [d["body"] for d in store.search_logs("acme", [], 0, 2**62, text="pool exhausted")],
            [d["body"] for d in store.search_logs("acme", ["db"], 0, 2**62)],
            [d["body"] for d in store.trace_logs("acme", [t1])],
            [d["body"] for d in store.trace_logs("globex", [t1])],
        ]

    expected = [["Redis connection POOL exhausted", "request served"], ["Redis connection POOL exhausted"],
                ["disk full"], ["Redis connection POOL exhausted", "disk full"], ["pool"]]
    assert store._query("SELECT rid FROM index_progress", []) == [(0,)]
    assert answers() == expected  # the tail
    assert store.build_indexes() == 4
    assert store._query("SELECT rid FROM index_progress", []) == [(4,)]
    assert answers() == expected  # the indexes
    fts_integrity(store)
    assert store.build_indexes() == 0  # nothing new: nothing done


def test_a_replayed_message_after_the_batch_is_not_indexed_twice(store: EmbeddedStore) -> None:
    batch = [make_record(time_unix_nano=T0_NS + i * 1_000_000, body=f"line {i}") for i in range(5)]
    store.write_logs(batch)
    store.build_indexes()
    store.write_logs(batch)  # replay from a checkpoint
    store.build_indexes()
    assert store.counts()["logs"] == 5
    assert len(store.trace_logs("acme", [batch[0].trace_id])) == 5
    assert store._query("SELECT COUNT(*) FROM log_traces", []) == [(5,)]
    fts_integrity(store)


def test_the_writer_builds_the_batch_every_n_rows(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.store as store_module

    monkeypatch.setattr(store_module, "INDEX_EVERY_ROWS", 10)
    monkeypatch.setattr(store_module, "INDEX_EVERY_S", 3600.0)
    with EmbeddedStore(tmp_path / "s.db") as store:
        for i in range(3):
            store.write_logs([make_record(time_unix_nano=T0_NS + (4 * i + j) * 1_000_000, body=f"l {i} {j}")
                              for j in range(4)])
        assert store._query("SELECT rid FROM index_progress", []) == [(12,)]  # after 12 >= 10 rows
        store.write_logs([make_record(body="one more")])
        assert store._query("SELECT rid FROM index_progress", []) == [(12,)]
    with EmbeddedStore(tmp_path / "s.db") as store:  # close built the rest
        assert store._query("SELECT rid FROM index_progress", []) == [(13,)]


def test_bucket_counts_are_folded_in_batches_and_read_before_it(tmp_path: Any) -> None:
    from connectors.console_read import SqliteConsoleReader
    from connectors.logstore import MetricRow

    path = tmp_path / "s.db"
    bucket = T0_NS // 1_000_000 // 10_000 * 10_000
    store = EmbeddedStore(path)
    store.write_logs([make_record()], [MetricRow("acme", "pay", bucket, total=1, failures=1)])
    store.write_metrics([MetricRow("acme", "pay", bucket, spans=2, span_ms_sum=40),
                         MetricRow("acme", "pay", bucket + 10_000, total=3)])
    reader = SqliteConsoleReader(path)
    try:
        expected = [MetricRow("acme", "pay", bucket, 1, 1, 0, 2, 0, 40), MetricRow("acme", "pay", bucket + 10_000, 3)]
        assert store._query("SELECT COUNT(*) FROM metrics", []) == [(0,)]  # pending: not folded yet
        assert reader.metrics("acme", [], 0, 2**62) == expected
        assert reader.newest_ms("acme") == bucket + 10_000
        assert reader.tenants() == ["acme"]
        store.build_indexes()
        assert store._query("SELECT COUNT(*) FROM metrics_pending", []) == [(0,)]
        assert reader.metrics("acme", [], 0, 2**62) == expected
        store.write_logs([make_record(body="again")], [MetricRow("acme", "pay", bucket, total=1)])
        assert reader.metrics("acme", ["pay"], bucket, bucket + 1)[0].total == 2  # folded + pending
        assert reader.metrics("globex", [], 0, 2**62) == []
    finally:
        reader.close()
        store.close()


_V2_EXTRA = """
CREATE INDEX logs_tenant_trace ON logs (tenant, trace_id);
CREATE TRIGGER logs_fts_insert AFTER INSERT ON logs BEGIN
    INSERT INTO logs_fts (rowid, body, exception_message) VALUES (new.rid, new.body, new.exception_message);
END;
CREATE TRIGGER logs_fts_delete AFTER DELETE ON logs BEGIN
    INSERT INTO logs_fts (logs_fts, rowid, body, exception_message)
    VALUES ('delete', old.rid, old.body, old.exception_message);
END;
"""


def test_a_schema_2_file_is_migrated_and_its_rows_stay_found(tmp_path: Any) -> None:
    """A file as version 2 wrote it (whole documents, per-row text-index triggers, a trace index):
    opened by this version, its rows are found by text and trace, a replay does not duplicate them,
    and new rows are indexed by the batch."""
    import json

    from connectors import store_schema

    path = tmp_path / "v2.db"
    old = [make_record(time_unix_nano=T0_NS + i * 1_000_000, body=f"line old {i}") for i in range(3)]
    with sqlite3.connect(path) as conn:
        for statement in store_schema.statements(store_schema.logs_table(2) + store_schema._COMMON + store_schema._V2
                                                 + _V2_EXTRA):
            conn.execute(statement)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (2)")
        conn.executemany("INSERT INTO logs (id, tenant, service, time_ms, severity_number, trace_id, body,"
                         " exception_message, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [(i, d["tenant"], d["service"], d["time_ms"], d["severity_number"], d["trace_id"],
                           d["body"], d["exception_message"], json.dumps(d))
                          for i, d in zip(log_doc_ids(old), map(log_doc, old), strict=True)])
    with EmbeddedStore(path) as store:
        assert [d["body"] for d in store.search_logs("acme", [], 0, 2**62, text="old line")] == [
            "line old 0", "line old 1", "line old 2"]
        assert store.search_logs("acme", [], 0, 2**62)[0] == log_doc(old[0])
        assert len(store.trace_logs("acme", [old[0].trace_id])) == 3
        store.write_logs(old)  # a replay: the same ids
        store.write_logs([make_record(time_unix_nano=T0_NS + 9_000_000, body="line new")])
        store.build_indexes()
        assert store.counts()["logs"] == 4
        assert len(store.search_logs("acme", [], 0, 2**62, text="line")) == 4
        fts_integrity(store)
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "logs_fts_insert" not in names and "logs_tenant_trace" not in names and "log_traces" in names
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)


def test_cached_time_texts_equal_the_formatter() -> None:
    import random
    from datetime import UTC, datetime, timedelta

    from connectors.logstore import doc_time, format_time_ms, utc_day

    rng = random.Random(5)
    for t in [0, 1, 999, 1000, -1, -1000, -1001, T0_NS // 1_000_000, 253_402_300_799_999,
              *(rng.randrange(-10**12, 10**13) for _ in range(20_000))]:
        assert doc_time(t) == format_time_ms(t)
        assert utc_day(t) == (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=t)).strftime("%Y.%m.%d")


def test_the_console_reader_finds_tail_rows_as_indexed_ones(tmp_path: Any) -> None:
    from connectors.console_read import SqliteConsoleReader

    path = tmp_path / "s.db"
    store = EmbeddedStore(path)
    t1 = "1" * 32
    store.write_logs([make_record(time_unix_nano=T0_NS + 1_000_000, body="Pool exhausted", trace_id=t1),
                      make_record(time_unix_nano=T0_NS + 2_000_000, body="served", exception_message="pool timeout"),
                      make_record(time_unix_nano=T0_NS + 3_000_000, body="pool", tenant="globex", trace_id=t1)])
    reader = SqliteConsoleReader(path)
    try:
        def answers() -> list[Any]:
            return [[d["body"] for d in reader.search_logs("acme", text="pool")],
                    [d["body"] for d in reader.search_logs("acme", text="pool timeout")],
                    [d["body"] for d in reader.trace_logs("acme", t1)],
                    [d["body"] for d in reader.log_context("acme", "payment-api", T0_NS // 1_000_000 + 2)]]

        expected = [["served", "Pool exhausted"], ["served"], ["Pool exhausted"], ["Pool exhausted", "served"]]
        assert answers() == expected  # newest first in searches
        store.build_indexes()
        assert answers() == expected
    finally:
        reader.close()
        store.close()


def test_two_writers_on_one_file_index_every_row_once(tmp_path: Any) -> None:
    """Two connections (two decode subtasks, or decode and spans) append and build the batch in turns:
    every row is indexed once, whichever writer's batch picks it up."""
    from connectors.logstore import MetricRow

    path = tmp_path / "s.db"
    first, second = EmbeddedStore(path), EmbeddedStore(path)
    bucket = T0_NS // 1_000_000 // 10_000 * 10_000
    try:
        for i in range(6):
            writer = first if i % 2 else second
            writer.write_logs([make_record(time_unix_nano=T0_NS + (10 * i + j) * 1_000_000, body=f"line {i} {j}")
                               for j in range(10)], [MetricRow("acme", "pay", bucket, total=10)])
            if i in (1, 4):
                (second if i % 2 else first).build_indexes()  # the other writer's batch
        first.build_indexes()
        second.build_indexes()
        assert first.counts()["logs"] == 60
        assert second._query("SELECT COUNT(*) FROM log_traces", []) == [(60,)]
        assert first._query("SELECT total FROM metrics", []) == [(60,)]
        assert first._query("SELECT rows FROM tenant_usage", []) == [(60,)]
        assert len(second.search_logs("acme", [], 0, 2**62, text="line", limit=1000)) == 60
        fts_integrity(first)
    finally:
        first.close()
        second.close()


def test_store_bench_writes_what_the_decode_operator_writes(tmp_path: Any) -> None:
    """The benchmark's input is messages of records with their bucket counts; one run keeps every
    record once and counts the bucket totals the messages carried."""
    from tests.bench.store_bench import messages, write_once

    msgs = messages(2_000, 200)
    assert [len(m[0]) for m in msgs] == [200] * 10
    row = write_once(msgs, tmp_path / "b.db")
    assert row["records"] == row["rows_kept"] == 2_000 and row["row_bytes_counted"] > 0
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert conn.execute("SELECT sum(total) FROM metrics").fetchone() == (2_000,)
