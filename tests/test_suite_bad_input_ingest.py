"""Issue 13's standing suite "bad input through the whole path", in-suite size: generated and mutated
OTLP/HTTP requests (protobuf and JSON, gzip or not, some with a fault in the request head) POSTed to a
real ``logclaw ingest`` (subprocess) in front of the local broker while the detection job (MiniCluster)
reads the topic. Every record sent is accepted, rejected with a reason (partial success) or refused with
a reason (4xx); what ingest accepted is what reached the topic, and the job indexed or dead-lettered all
of it without a restart. The 10^5 version: ``python -m tests.bench.bad_input_bench --payloads 0 --ingest``.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.broker import LocalBroker
from connectors.ingest import IngestServer
from tests.bench.bad_input_bench import HTTP_FAULTS, INGEST_KEYS, ingest_ok, run_ingest

REQUESTS = 2_000


@pytest.mark.flink
@pytest.mark.broker
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_mutated_requests_through_ingest_broker_and_job_are_all_accounted_for_with_no_restart(
    broker: LocalBroker, tmp_path: Path
) -> None:
    sent, job = run_ingest(21, REQUESTS, broker, str(tmp_path), timeout_s=150, clients=16)
    print(f"\nwhole path: {sent.figures()}\njob: {job}")
    assert sent.requests == REQUESTS and sent.unanswered == 0 and sent.without_reason == 0
    assert sent.count_mismatches == 0
    assert sent.records_sent == sent.accepted + sent.rejected + sent.refused
    assert f" {sent.accepted} records accepted, {sent.rejected} rejected;" in sent.ingest_summary
    assert sent.accepted == sent.topic_records  # nothing lost or added between the answer and the topic
    assert set(sent.by_fault) == set(HTTP_FAULTS)
    assert {f: set(c) for f, c in sent.by_fault.items()} == {
        "no_key": {401}, "unknown_key": {401}, "text_content_type": {415}, "not_gzip": {400}, "brotli": {415}}
    assert (job.indexed, job.dead_letters, job.dead_records) == (
        job.expected_indexed, job.expected_dead_letters, job.expected_dead_records)
    assert job.restarts == job.failures == 0 and job.status.endswith("RUNNING")
    # The mix is what the suite claims: every kind of answer, and enough of each.
    assert sent.accepted > 3_000 and sent.rejected > 300 and sent.refused_unreadable > 300
    assert {200, 400, 401, 415} <= set(sent.by_status) and sent.gzipped > REQUESTS // 3
    assert sent.json_bodies > REQUESTS // 4 and REQUESTS - sent.json_bodies > REQUESTS // 4
    assert ingest_ok(sent, job)


class _Acknowledged:
    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        pass


@pytest.fixture
def ingest_server() -> Iterator[IngestServer]:
    server = IngestServer(("127.0.0.1", 0), keys=dict(INGEST_KEYS), producer=_Acknowledged())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_kept_alive_exporter_gets_each_answer_without_a_delayed_ack_stall(ingest_server: IngestServer) -> None:
    """Found by the whole-path suite: 500 requests on 4 connections took 22 s, each answer ~44 ms (headers
    and body in two sends without TCP_NODELAY: Nagle held the body until the client's delayed ACK)."""
    conn = http.client.HTTPConnection("127.0.0.1", ingest_server.server_address[1], timeout=10)
    headers = {"Content-Type": "application/x-protobuf", "x-logclaw-api-key": next(iter(INGEST_KEYS))}
    took = []
    for _ in range(30):
        started = time.monotonic()
        conn.request("POST", "/v1/logs", body=b"\x01garbage", headers=headers)  # 400 with a Status body
        response = conn.getresponse()
        response.read()
        took.append(time.monotonic() - started)
        assert response.status == 400
    conn.close()
    assert statistics.median(took) < 0.010, f"median {statistics.median(took) * 1000:.1f} ms per answer"
