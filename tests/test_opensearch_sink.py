"""OpenSearchSink / OpenSearchReader against the strict in-process stand-in (no server runs here)."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.logstore import log_doc, log_doc_id
from connectors.opensearch import (
    DeadLetter,
    OpenSearchReader,
    OpenSearchSink,
    RetryPolicy,
    SinkError,
    index_tenant,
    load_templates,
)
from connectors.store import EmbeddedStore
from tests.standins.opensearch import OpenSearchStandin
from tests.test_store import T0_NS, incident_event, make_record
from udfs.records import Level

DAY_MS = 86_400_000
T0_MS = T0_NS // 1_000_000  # 2024-05-01T03:47:00Z


@pytest.fixture
def standin() -> Iterator[OpenSearchStandin]:
    with OpenSearchStandin().running() as running:
        yield running
    assert running.violations == [], "the sink/reader sent a request the stand-in refused"


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_sink(standin: OpenSearchStandin, sleeps: list[float], **kwargs: Any) -> OpenSearchSink:
    kwargs.setdefault("retry", RetryPolicy(max_attempts=4, backoff_base_s=0.1, backoff_cap_s=0.3))
    return OpenSearchSink([standin.url], sleep=sleeps.append, rng=random.Random(7), **kwargs)


def bulk_requests(standin: OpenSearchStandin) -> list[Any]:
    return [r for r in standin.requests if r.method == "POST" and r.path == "/_bulk"]


def bulk_ids(request: Any) -> list[str]:
    lines = request.body.decode().splitlines()
    return [json.loads(line)["index"]["_id"] for line in lines[0::2]]


def records_for(tenant: str, count: int, *, day: int = 0, service: str = "payment-api") -> list[Any]:
    return [make_record(tenant=tenant, service=service, body=f"{tenant} line {i}",
                        time_unix_nano=(T0_MS + day * DAY_MS + i) * 1_000_000) for i in range(count)]


def test_bulk_request_shape_and_index_per_tenant_and_event_date_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    acme = records_for("acme", 3) + records_for("acme", 2, day=1)
    weird = records_for("Weird Tenant/1", 2)
    sink = make_sink(standin, sleeps)
    assert sink.write_logs(acme + weird) == 7
    assert bulk_requests(standin) == []  # buffered until flush
    sink.flush()
    (request,) = bulk_requests(standin)
    assert request.headers["content-type"] == "application/x-ndjson"
    assert request.body.endswith(b"\n")
    lines = request.body.decode().split("\n")[:-1]
    assert len(lines) == 14
    weird_index = f"weird_tenant_1_{index_tenant('Weird Tenant/1')[-8:]}"
    expected: dict[str, dict[str, Any]] = {
        "logclaw-logs-acme-2024.05.01": {log_doc_id(r): log_doc(r) for r in acme[:3]},
        "logclaw-logs-acme-2024.05.02": {log_doc_id(r): log_doc(r) for r in acme[3:]},
        f"logclaw-logs-{weird_index}-2024.05.01": {log_doc_id(r): log_doc(r) for r in weird},
    }
    assert standin.indices == expected
    assert [json.loads(line) for line in lines[0::2]] == [
        {"index": {"_index": index, "_id": doc_id}} for index, docs in expected.items() for doc_id in docs]
    assert sink.stats.docs_written == 7 and sink.stats.requests == 1


def test_tenant_index_names_are_legal_and_never_shared() -> None:
    tenants = ["acme", "Acme", "ACME", "a-b", "a_b", "a b", "", "x" * 300, "x" * 301, "café",
               "a_b_" + index_tenant("a-b")[-8:], index_tenant("Acme")]
    names = [index_tenant(t) for t in tenants]
    assert len(set(names)) == len(tenants)
    assert [index_tenant(t) for t in ("acme", "a_b", "default")] == ["acme", "a_b", "default"]
    for name in names:
        assert name and name == name.lower() and "-" not in name and len(name) <= 89
        assert all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in name)


def test_replay_overwrites_same_docs_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    records = [*records_for("acme", 5), records_for("acme", 1)[0]]  # one genuine repeat
    sink = make_sink(standin, sleeps)
    for _ in range(3):
        sink.write_logs(records)
        sink.write_anomalies([{"tenant": "acme", "anomaly_id": "an-1", "service": "payment-api",
                               "time_ms": T0_MS, "score": 0.8}])
        sink.write_incident_events([incident_event("inc-00000001", "opened", "2024-05-01T03:47:05Z")])
        sink.flush()
    assert standin.doc_count() == 6 + 1 + 1 + 1  # logs, anomaly, incident event, incident list row
    assert sink.stats.docs_written == 3 * 9
    assert standin.indices["logclaw-anomalies-acme-2024.05.01"] == {"an-1": {
        "tenant": "acme", "anomaly_id": "an-1", "service": "payment-api", "time_ms": T0_MS, "score": 0.8,
        "time": "2024-05-01T03:47:00.000Z"}}
    assert list(standin.indices["logclaw-incidents-acme"]) == ["inc-00000001:opened:2024-05-01T03:47:05Z"]


def test_templates_installed_with_opensearch_keys_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    names = ["logclaw-logs", "logclaw-anomalies", "logclaw-incidents", "logclaw-incident_state", "logclaw-metrics"]
    assert make_sink(standin, sleeps).ensure_templates() == names
    puts = [r.path for r in standin.requests if r.method == "PUT"]
    assert puts == [f"/_index_template/{name}" for name in names]
    templates = standin.templates
    assert {name: t["index_patterns"] for name, t in templates.items()} == {name: [f"{name}-*"] for name in names}
    assert all(isinstance(t["priority"], int) and t["priority"] > 0 for t in templates.values())
    logs = templates["logclaw-logs"]["template"]["mappings"]["properties"]
    assert {k: logs[k]["type"] for k in ("tenant", "service", "trace_id", "time", "time_ms", "body",
                                          "severity_number")} == {
        "tenant": "keyword", "service": "keyword", "trace_id": "keyword", "time": "date", "time_ms": "long",
        "body": "text", "severity_number": "integer"}
    # every field of the log doc is mapped explicitly
    assert set(logs) == set(log_doc(make_record()))
    incidents = templates["logclaw-incidents"]["template"]["mappings"]["properties"]
    assert incidents["detected_at"]["type"] == "date" and incidents["incident_id"]["type"] == "keyword"
    other = load_templates("acme-prod")
    assert other["acme-prod-logs"]["index_patterns"] == ["acme-prod-logs-*"]


def test_whole_request_retried_on_429_and_503_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    sink = make_sink(standin, sleeps)
    standin.fail_next(2, 429)
    standin.fail_next(1, 503)
    sink.write_logs(records_for("acme", 4))
    sink.flush()
    assert standin.doc_count() == 4
    assert [r.status for r in bulk_requests(standin)] == [429, 429, 503, 200]
    assert sink.stats.request_retries == 3 and sink.stats.docs_written == 4
    assert len(sleeps) == 3
    for retry_number, delay in enumerate(sleeps, start=1):
        ceiling = min(0.3, 0.1 * 2 ** (retry_number - 1))
        assert ceiling / 2 <= delay <= ceiling


def test_gives_up_with_sink_error_and_keeps_docs_buffered_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    sink = make_sink(standin, sleeps)
    standin.fail_next(4, 503)
    sink.write_logs(records_for("acme", 3))
    with pytest.raises(SinkError, match="still failing after 4 attempts"):
        sink.flush()
    assert len(bulk_requests(standin)) == 4 and standin.doc_count() == 0
    assert sink.stats.failures == 1
    sink.flush()  # the docs were kept, not dropped: a later flush writes them
    assert standin.doc_count() == 3


def test_non_retryable_request_error_fails_at_once_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    sink = make_sink(standin, sleeps)
    standin.fail_next(1, 403)
    sink.write_logs(records_for("acme", 1))
    with pytest.raises(SinkError, match=r"refused the request \(403\)"):
        sink.flush()
    assert sleeps == [] and len(bulk_requests(standin)) == 1


def test_connection_errors_are_retried_then_raise(sleeps: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = OpenSearchSink([f"http://127.0.0.1:{port}"], sleep=sleeps.append, timeout_s=2,
                          retry=RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_cap_s=0.02))
    sink.write_logs(records_for("acme", 1))
    with pytest.raises(SinkError, match="still failing after 3 attempts"):
        sink.flush()
    assert len(sleeps) == 2 and sink.stats.requests == 3


def test_partial_failures_resend_only_the_rejected_items_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    records = records_for("acme", 5)
    ids = [log_doc_id(r) for r in records]
    standin.fail_item(ids[1], 429, "es_rejected_execution_exception", times=2)
    standin.fail_item(ids[3], 503, "unavailable_shards_exception", times=1)
    sink = make_sink(standin, sleeps)
    sink.write_logs(records)
    sink.flush()
    assert [bulk_ids(r) for r in bulk_requests(standin)] == [ids, [ids[1], ids[3]], [ids[1]]]
    assert standin.indices == {"logclaw-logs-acme-2024.05.01": {log_doc_id(r): log_doc(r) for r in records}}
    assert sink.stats.item_retries == 3 and sink.stats.docs_written == 5 and sink.dead_letters == []


def test_mapping_errors_go_to_the_dead_letter_with_reason_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    records = records_for("acme", 4)
    bad = records[2]
    standin.fail_item(log_doc_id(bad), 400, "mapper_parsing_exception", times=None)
    standin.fail_item(log_doc_id(records[0]), 429, "es_rejected_execution_exception", times=1)
    received: list[DeadLetter] = []
    sink = make_sink(standin, sleeps, dead_letter=received.append)
    sink.write_logs(records)
    sink.flush()
    expected = DeadLetter(index="logclaw-logs-acme-2024.05.01", doc_id=log_doc_id(bad), status=400,
                          error_type="mapper_parsing_exception", reason="programmed mapper_parsing_exception",
                          source=json.dumps(log_doc(bad), ensure_ascii=False, separators=(",", ":")))
    assert received == [expected] and sink.dead_letters == [expected]
    # nothing dropped: every doc is either stored or dead-lettered, and the bad one is not resent
    assert standin.doc_count() == 3 == sink.stats.docs_written
    assert sink.stats.docs_written + sink.stats.dead_lettered == len(records)
    assert [len(bulk_ids(r)) for r in bulk_requests(standin)] == [4, 1]


def test_items_still_rejected_after_max_attempts_raise_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    records = records_for("acme", 2)
    standin.fail_item(log_doc_id(records[1]), 429, "es_rejected_execution_exception", times=None)
    sink = make_sink(standin, sleeps)
    sink.write_logs(records)
    with pytest.raises(SinkError, match="1 docs still rejected after 4 attempts"):
        sink.flush()
    assert standin.doc_count() == 1 and len(bulk_requests(standin)) == 4


def test_buffer_and_request_size_bounds_are_respected_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    sink = make_sink(standin, sleeps, max_buffer_docs=7)
    sink.write_logs(records_for("acme", 50))
    assert sink.stats.max_buffered_docs == 7
    assert [len(bulk_ids(r)) for r in bulk_requests(standin)] == [7] * 7  # write_logs blocked on flushes
    sink.close()
    assert standin.doc_count() == 50

    by_bytes = make_sink(standin, sleeps, max_batch_bytes=4000)
    by_bytes.write_logs(records_for("globex", 40))
    by_bytes.flush()
    sizes = [len(r.body) for r in bulk_requests(standin)[8:]]
    assert max(sizes) <= 4000 and sum(len(bulk_ids(r)) for r in bulk_requests(standin)[8:]) == 40
    assert len(sizes) > 3 and by_bytes.stats.max_request_bytes == max(sizes)
    assert standin.doc_count() == 90


def seed_two_tenants(standin: OpenSearchStandin, sleeps: list[float]) -> list[Any]:
    ms = 1_000_000
    records = []
    for tenant in ("acme", "globex"):
        records += [
            make_record(tenant=tenant, time_unix_nano=T0_NS + 5 * ms, body=f"{tenant} b", severity_number=9,
                        level=Level.INFO, trace_id="1" * 32),
            make_record(tenant=tenant, time_unix_nano=T0_NS + 1 * ms, body=f"{tenant} pool exhausted",
                        trace_id="1" * 32),
            make_record(tenant=tenant, time_unix_nano=T0_NS + 9 * ms, body=f"{tenant} c", severity_number=21,
                        level=Level.FATAL, exception_message="pool timeout", trace_id="2" * 32),
            make_record(tenant=tenant, time_unix_nano=T0_NS + 3 * ms, body=f"{tenant} d",
                        service="order-service", trace_id=""),
            make_record(tenant=tenant, time_unix_nano=T0_NS + DAY_MS * ms, body=f"{tenant} next day"),
        ]
    sink = make_sink(standin, sleeps)
    sink.write_logs(records)
    sink.write_incident_events([
        incident_event("inc-aaaaaaaa", "resolved", "2024-05-01T04:02:05Z"),
        incident_event("inc-aaaaaaaa", "opened", "2024-05-01T03:47:05Z"),
        incident_event("inc-aaaaaaaa", "updated", "2024-05-01T03:47:05Z"),
        incident_event("inc-aaaaaaaa", "opened", "2024-05-01T03:47:05Z", tenant="globex"),
    ])
    sink.close()
    return records


QUERIES: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("search_logs", (["payment-api"], T0_MS, T0_MS + 10), {}),
    ("search_logs", ([], T0_MS, T0_MS + 10), {}),
    ("search_logs", ([], T0_MS + 1, T0_MS + 9), {}),
    ("search_logs", ([], T0_MS, T0_MS + 2 * DAY_MS), {"min_severity_number": 17}),
    ("search_logs", ([], T0_MS, T0_MS + 2 * DAY_MS), {"limit": 2}),
    ("search_logs", ([], 0, 2**62), {"text": "POOL"}),
    ("search_logs", ([], 0, 2**62), {"text": "pool exhausted"}),
    ("search_logs", ([], 0, 2**62), {"text": "..."}),
    ("trace_logs", (["1" * 32],), {}),
    ("trace_logs", (["2" * 32, "1" * 32],), {"limit": 2}),
    ("trace_logs", ([""],), {}),
]


def test_reader_agrees_with_the_embedded_store_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float], tmp_path: Any) -> None:
    records = seed_two_tenants(standin, sleeps)
    reader = OpenSearchReader([standin.url])
    with EmbeddedStore(tmp_path / "logclaw.db") as store:
        store.write_logs(records)
        for tenant in ("acme", "globex"):
            for method, args, kwargs in QUERIES:
                expected = getattr(store, method)(tenant, *args, **kwargs)
                assert getattr(reader, method)(tenant, *args, **kwargs) == expected, (method, args, kwargs)
                assert all(doc["tenant"] == tenant for doc in expected)
    # the fixture data make the comparisons meaningful (not all empty)
    assert [d["body"] for d in reader.search_logs("acme", [], 0, 2**62, text="pool")] == [
        "acme pool exhausted", "acme c"]


def test_reader_always_filters_by_tenant_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    seed_two_tenants(standin, sleeps)
    # a globex doc planted in acme's index must still never reach an acme read
    intruder = log_doc(make_record(tenant="globex", body="intruder", trace_id="1" * 32))
    standin.indices["logclaw-logs-acme-2024.05.01"]["intruder"] = intruder
    reader = OpenSearchReader([standin.url])
    for method, args, kwargs in QUERIES:
        for doc in getattr(reader, method)("acme", *args, **kwargs):
            assert doc["tenant"] == "acme" and doc["body"] != "intruder"
    assert reader.incident_events("globex", "inc-aaaaaaaa") == [
        incident_event("inc-aaaaaaaa", "opened", "2024-05-01T03:47:05Z", tenant="globex")]
    assert reader.search_logs("initech", [], 0, 2**62) == []
    assert len(standin.searches) == (len(QUERIES) - 2) + 2  # "..." and [""] send no request
    for target, body in standin.searches:
        tenant = "initech" if "initech" in target else "globex" if "globex" in target else "acme"
        assert target in (f"logclaw-logs-{tenant}-*", f"logclaw-incidents-{tenant}")
        assert body["query"]["bool"]["filter"][0] == {"term": {"tenant": tenant}}


def test_incident_events_read_back_in_order_without_helper_fields_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    seed_two_tenants(standin, sleeps)
    reader = OpenSearchReader([standin.url])
    assert reader.incident_events("acme", "inc-aaaaaaaa") == [
        incident_event("inc-aaaaaaaa", "opened", "2024-05-01T03:47:05Z"),
        incident_event("inc-aaaaaaaa", "updated", "2024-05-01T03:47:05Z"),
        incident_event("inc-aaaaaaaa", "resolved", "2024-05-01T04:02:05Z"),
    ]
    assert reader.incident_events("acme", "inc-missing") == []
    assert OpenSearchReader([standin.url]).incident_events("nobody", "inc-aaaaaaaa") == []  # no index


def test_reader_retries_transient_errors_against_local_standin(
        standin: OpenSearchStandin, sleeps: list[float]) -> None:
    seed_two_tenants(standin, sleeps)
    reader = OpenSearchReader([standin.url], sleep=sleeps.append)
    standin.fail_next(2, 503)
    assert len(reader.trace_logs("acme", ["1" * 32])) == 2
    assert reader.stats.request_retries == 2
