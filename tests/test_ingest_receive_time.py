"""Receive time at the ingest edge (issue 13 item 4): the Kafka timestamp of a message is the wall clock
when its request arrived, never a record's event time, and a record dated more than the configured skew
after that is rejected with OTLP partial success (``future_timestamp``), as the job's decoder does.

In process: the real server with the recording producer of ``tests/ingest_fixtures.py`` (server clock ``NOW``).
End to end (``broker``): the official SDK and a raw client -> ``logclaw ingest`` (subprocess) -> the local
broker; a record dated 2099 never reaches the topic and every message carries the receive time.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from connectors.ingest import (
    API_KEY_HEADER,
    DEFAULT_MAX_FUTURE_SKEW_MS,
    IngestLimits,
    IngestServer,
    KafkaLogsProducer,
    prepare,
)
from connectors.otlp import MAX_MESSAGE_BYTES, decode_logs
from jobs.config import JobConfig
from tests.ingest_fixtures import (
    JS,
    KEYS,
    NOW,
    T0,
    RecordingProducer,
    headers,
    honest,
    ingest_process,
    json_request,
    produced_records,
    record,
    sdk_provider,
    serve,
)

YEAR_2099_NS = 4_070_908_800 * 10**9  # 2099-01-01T00:00:00Z


def latest_ns(skew_ms: int, now_ns: int = NOW) -> int:
    return (now_ns // 1_000_000 + skew_ms) * 1_000_000


def test_the_kafka_timestamp_is_the_receive_time_not_the_newest_event_time() -> None:
    with serve() as running:
        records = [record(T0, "past"), record(NOW + 60_000_000_000, "a minute ahead: within the skew")]
        status, _, body = running.post(json.dumps(json_request("acme", records)).encode(), headers(JS))
        assert (status, json.loads(body)) == (200, {})
        ((key, _, timestamp_ms),) = running.producer.sent
        assert (key.split(b"/")[0], timestamp_ms) == (b"acme", NOW // 1_000_000)
        assert len(produced_records(running)) == 2


def test_a_record_dated_2099_is_rejected_with_partial_success_and_never_produced() -> None:
    with serve() as running:
        records = [record(YEAR_2099_NS, "from 2099"), record(T0, "kept")]
        status, _, body = running.post(json.dumps(json_request("acme", records)).encode(), headers(JS))
        latest = latest_ns(DEFAULT_MAX_FUTURE_SKEW_MS)
        assert (status, json.loads(body)) == (200, {"partialSuccess": {"rejectedLogRecords": "1", "errorMessage": (
            f"1 of 2 log records rejected: future_timestamp x1 (record 0: {YEAR_2099_NS} ns is "
            f"{(YEAR_2099_NS - latest) // 1_000_000} ms past the latest accepted event time {latest} ns "
            "(receive time + the maximum future skew))")}})
        assert produced_records(running) == honest(json.dumps(json_request("acme", [records[1]])).encode(), "json")
        assert running.producer.sent[0][2] == NOW // 1_000_000
        assert (running.server.stats.accepted, running.server.stats.rejected) == (1, 1)


def test_only_future_records_means_nothing_is_produced() -> None:
    with serve() as running:
        body = json.dumps(json_request("acme", [record(YEAR_2099_NS, "a"), record(YEAR_2099_NS, "b")])).encode()
        status, _, answer = running.post(body, headers(JS))
        assert (status, json.loads(answer)["partialSuccess"]["rejectedLogRecords"]) == (200, "2")
        assert running.producer.sent == []


def test_the_skew_is_configurable_and_its_bound_inclusive() -> None:
    with serve(max_future_skew_ms=60_000) as running:
        at_bound, past_bound = latest_ns(60_000), latest_ns(60_000) + 1_000_000
        body = json.dumps(json_request("acme", [record(at_bound, "at"), record(past_bound, "past")])).encode()
        status, _, answer = running.post(body, headers(JS))
        assert status == 200
        assert json.loads(answer)["partialSuccess"]["errorMessage"].startswith(
            f"1 of 2 log records rejected: future_timestamp x1 (record 1: {past_bound} ns is 1 ms past")
        assert [r.body for r in produced_records(running)] == ["at"]


def test_prepare_stamps_the_receive_time_and_applies_the_skew() -> None:
    body = json.dumps(json_request(None, [record(T0, "old"), record(T0 + 10 * 60 * 10**9, "ten minutes ahead")]))
    ready = prepare(body.encode(), tenant="acme", fmt="json", received_unix_nano=T0 + 7 * 10**9,
                    max_body_bytes=65536, max_future_skew_ms=300_000)
    assert (ready.timestamp_ms, ready.accepted, ready.rejected) == ((T0 + 7 * 10**9) // 1_000_000, 1, 1)
    assert ready.error_message.startswith("1 of 2 log records rejected: future_timestamp x1 (record 1: ")


def test_the_default_skew_and_its_range_are_the_jobs_setting() -> None:
    assert DEFAULT_MAX_FUTURE_SKEW_MS == JobConfig().max_future_skew_ms == IngestLimits().max_future_skew_ms
    for bad in (999, 86_400_001):
        with pytest.raises(ValueError, match="max_future_skew_ms"):
            IngestLimits(max_future_skew_ms=bad)


def test_the_producer_and_the_message_cap_use_the_one_message_size_limit() -> None:
    producer = KafkaLogsProducer("127.0.0.1:1", "otlp_logs", timeout_s=0.5)
    try:
        assert producer.max_message_bytes == MAX_MESSAGE_BYTES
    finally:
        producer.close()
    # Whatever the body limit, the re-encoded message stays within what the topic and the job accept.
    server = IngestServer(("127.0.0.1", 0), keys=KEYS, producer=RecordingProducer(), max_body_bytes=MAX_MESSAGE_BYTES)
    try:
        assert server.limits.max_message_bytes < MAX_MESSAGE_BYTES
    finally:
        server.server_close()


# --- end to end: clients -> logclaw ingest -> broker --------------------------------------------------------


@pytest.mark.broker
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_2099_record_never_reaches_kafka_and_messages_carry_the_receive_time_against_local_broker(
    broker: Any, tmp_path: Path
) -> None:
    from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, TopicPartition
    from opentelemetry._logs import SeverityNumber

    from connectors.broker import free_port

    tag = uuid.uuid4().hex[:8]
    topic = f"ingest-time-{tag}"
    broker.create_topics([topic], partitions=1)
    keys = tmp_path / "keys.yaml"
    keys.write_text("mallory-key-0123456789: mallory\nvictim-key-0123456789: victim\n")
    out = tmp_path / "ingest.out"
    port = free_port()
    with ingest_process(["--port", str(port), "--keys", str(keys), "--bootstrap", broker.bootstrap, "--topic", topic],
                        out, "ingest: listening on"):
        url = f"http://127.0.0.1:{port}/v1/logs"
        sent_from_ms = time.time_ns() // 1_000_000
        now_ns = time.time_ns() - 2_000_000_000
        # The attacker's SDK: one INFO record dated 2099 and one honest record.
        attacker = sdk_provider(url, "mallory-key-0123456789", "clock-skewed", "victim")
        logger = attacker.get_logger("app")
        logger.emit(timestamp=YEAR_2099_NS, severity_number=SeverityNumber.INFO, body="hello from 2099")
        logger.emit(timestamp=now_ns, severity_number=SeverityNumber.INFO, body="hello from now")
        assert attacker.force_flush(10_000)
        attacker.shutdown()
        # The same by hand, to read the answer.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            body = json.dumps(json_request(None, [record(YEAR_2099_NS, "2099 again"), record(now_ns, "now again")]))
            conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": JS, API_KEY_HEADER:
                                                                 "mallory-key-0123456789"})
            resp = conn.getresponse()
            answer = (resp.status, json.loads(resp.read()))
        finally:
            conn.close()
        victim = sdk_provider(url, "victim-key-0123456789", "checkout", "victim")
        for i in range(3):
            victim.get_logger("app").emit(timestamp=now_ns + i, severity_number=SeverityNumber.ERROR, body=f"e{i}")
        assert victim.force_flush(10_000)
        victim.shutdown()
        sent_until_ms = time.time_ns() // 1_000_000

        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"peek-{tag}",
                             "enable.auto.commit": False})
        try:
            consumer.assign([TopicPartition(topic, 0, 0)])
            messages: list[Any] = []
            records: list[Any] = []
            deadline = time.monotonic() + 30
            while len(records) < 5 and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    messages.append(msg)
                    records.extend(decode_logs(msg.value() or b"", fmt="proto").records)
            extra = consumer.poll(1.0)
        finally:
            consumer.close()
    assert answer[0] == 200
    assert answer[1]["partialSuccess"]["rejectedLogRecords"] == "1"
    assert answer[1]["partialSuccess"]["errorMessage"].startswith(
        f"1 of 2 log records rejected: future_timestamp x1 (record 0: {YEAR_2099_NS} ns is ")
    assert extra is None or extra.error() is not None
    assert sorted((r.tenant, r.body) for r in records) == [
        ("mallory", "hello from now"), ("mallory", "now again"), ("victim", "e0"), ("victim", "e1"), ("victim", "e2")]
    assert all(r.time_unix_nano < sent_until_ms * 1_000_000 for r in records)
    for msg in messages:
        kind, timestamp_ms = msg.timestamp()
        assert kind == TIMESTAMP_CREATE_TIME
        assert sent_from_ms <= timestamp_ms <= sent_until_ms, (sent_from_ms, timestamp_ms, sent_until_ms)
    assert out.read_text().splitlines()[-1].startswith(
        f"ingest: stopped; {len(messages)} messages, 5 records accepted, 2 rejected; ")
