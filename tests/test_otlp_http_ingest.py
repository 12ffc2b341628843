"""The OTLP/HTTP logs endpoint (``connectors.ingest``, ``logclaw ingest``).

Unit level: the real server on a loopback port with a recording fake producer; requests built with the
generated opentelemetry-proto classes (protobuf) or as OTLP/JSON, sent with ``http.client`` so every
header is under the test's control, and with the official Python SDK exporter. What reached the
producer is decoded and compared, whole, with what the client would have sent had it named the right
tenant itself.

End to end (``broker``/``flink``/``integration``): the official SDK -> ``logclaw ingest`` (subprocess) ->
the local broker -> the detection job in Kafka mode on the MiniCluster -> an ``opened`` incident.
"""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceResponse,
)

from connectors.ingest import IngestServer, ProduceError, load_api_keys
from connectors.otlp import decode_logs
from tests.ingest_fixtures import (
    JS,
    KEYS,
    NOW,
    PB,
    T0,
    RecordingProducer,
    Running,
    emit_oom_burst,
    headers,
    honest,
    ingest_process,
    json_request,
    pb_request,
    produced_records,
    record,
    sdk_provider,
    serve,
    status_of,
)
from udfs.records import LogRecord


@pytest.fixture
def ingest() -> Iterator[Running]:
    with serve() as running:
        yield running


# --- accepted requests ----------------------------------------------------------------------------------------


def test_protobuf_request_goes_to_the_topic_as_one_message_with_the_key_tenant_overriding_the_client(
    ingest: Running,
) -> None:
    status, got_headers, body = ingest.post(pb_request("spoofed").SerializeToString(), headers())
    assert (status, got_headers["content-type"], body) == (200, PB, b"")  # full success: empty response message
    ((key, _, timestamp_ms),) = ingest.producer.sent
    assert (key.split(b"/")[0], timestamp_ms) == (b"acme", NOW // 1_000_000)  # the receive time, never an event time
    # Whole records: tenant.id replaced, each host keeps its own resource, scope and ids preserved.
    assert produced_records(ingest) == honest(pb_request("acme").SerializeToString())
    assert [dict(r.resource_attributes)["host.name"] for r in produced_records(ingest)] == ["a", "a", "b"]


def test_tenant_is_set_when_the_client_sends_none_and_keys_map_to_their_own_tenant(ingest: Running) -> None:
    status, _, _ = ingest.post(pb_request(None).SerializeToString(), headers(key="key-globex-2-0123456789"))
    assert status == 200
    got = produced_records(ingest)
    assert got == [r._replace(tenant="globex", resource_attributes={**r.resource_attributes, "tenant.id": "globex"})
                   for r in honest(pb_request(None).SerializeToString())]
    assert ingest.producer.sent[0][0].split(b"/")[0] == b"globex"  # tenant/<hash of the resources>


def test_gzip_json_request_is_accepted_and_answered_in_json(ingest: Running) -> None:
    records = [record(T0, "java.lang.OutOfMemoryError: Java heap space"), record(T0 + 10**9, "second")]
    raw = json.dumps(json_request("evil", records)).encode()
    status, got_headers, body = ingest.post(gzip.compress(raw), headers(JS, **{"Content-Encoding": "gzip"}))
    assert (status, got_headers["content-type"], json.loads(body)) == (200, JS, {})
    assert produced_records(ingest) == honest(json.dumps(json_request("acme", records)).encode(), "json")


def test_deflate_is_accepted_too(ingest: Running) -> None:
    raw = pb_request("acme").SerializeToString()
    status, _, _ = ingest.post(zlib.compress(raw), headers(**{"Content-Encoding": "deflate"}))
    assert status == 200
    assert produced_records(ingest) == honest(raw)


def test_records_without_timestamps_get_the_receive_time(ingest: Running) -> None:
    status, _, _ = ingest.post(json.dumps(json_request(None, [record(None, "no time")])).encode(), headers(JS))
    assert status == 200
    expected = honest(json.dumps(json_request("acme", [record(NOW, "no time")])).encode(), "json")
    assert produced_records(ingest) == expected
    assert ingest.producer.sent[0][2] == NOW // 1_000_000


def test_partial_success_counts_and_explains_rejected_records_json(ingest: Running) -> None:
    good = record(T0, "kept")
    bad = [record(T0, "x", traceId="abc"), record(17, "ancient"), record(T0, "too big", attributes=[
        {"key": "n", "value": {"intValue": str(2**70)}}])]
    status, _, body = ingest.post(json.dumps(json_request("acme", [bad[0], good, bad[1], bad[2]])).encode(),
                                  headers(JS))
    assert status == 200
    partial = json.loads(body)["partialSuccess"]
    assert partial["rejectedLogRecords"] == "3"  # proto3 JSON: int64 as a string
    assert partial["errorMessage"] == (
        "3 of 4 log records rejected: bad_trace_id x1 (record 0: traceId is not 32 hex digits); "
        "absurd_timestamp x1 (record 2: 17 ns is outside 2000-01-01..2100-01-01); "
        "int_out_of_range x1 (record 3: intValue has 22 digits: outside -9223372036854775808..9223372036854775807)")
    assert produced_records(ingest) == honest(json.dumps(json_request("acme", [good])).encode(), "json")


def test_partial_success_in_protobuf(ingest: Running) -> None:
    request = pb_request("acme")
    request.resource_logs[0].scope_logs[0].log_records[1].trace_id = b"\x01\x02"
    status, _, body = ingest.post(request.SerializeToString(), headers())
    assert status == 200
    response = ExportLogsServiceResponse.FromString(body)
    assert (response.partial_success.rejected_log_records, response.partial_success.error_message) == (
        1, "1 of 3 log records rejected: bad_trace_id x1 (record 1: traceId has 2 bytes, not 16)")
    assert len(produced_records(ingest)) == 2


def test_all_records_rejected_answers_200_and_produces_nothing(ingest: Running) -> None:
    status, _, body = ingest.post(json.dumps(json_request("acme", [record(17, "old")])).encode(), headers(JS))
    assert (status, json.loads(body)["partialSuccess"]["rejectedLogRecords"]) == (200, "1")
    assert ingest.producer.sent == []


def test_empty_request_is_a_success_without_a_message(ingest: Running) -> None:
    for content_type, body in ((PB, b""), (JS, b"{}"), (JS, b'{"resourceLogs": []}')):
        status, _, answer = ingest.post(body, headers(content_type))
        assert (status, answer) == (200, b"" if content_type == PB else b"{}")
    assert ingest.producer.sent == []


# --- refused requests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "key-acme-1-0123456789x", "KEY-ACME-1-0123456789", "key-acme-1"])
def test_missing_or_unknown_api_key_is_401(ingest: Running, key: str | None) -> None:
    status, _, body = ingest.post(pb_request("acme").SerializeToString(), headers(key=key))
    assert (status, status_of(body)) == (401, (code_pb2.UNAUTHENTICATED, "missing or unknown API key (x-logclaw-api-key"
                                                                        " header or Authorization: Bearer)"))
    assert ingest.producer.sent == []


def test_body_over_the_limit_is_413_compressed_and_decompressed(ingest: Running) -> None:
    big = json.dumps(json_request("acme", [record(T0, "x" * 70_000)])).encode()
    status, _, body = ingest.post(big, headers(JS))
    assert (status, status_of(body, JS)) == (413, (code_pb2.RESOURCE_EXHAUSTED,
                                                   f"body of {len(big)} bytes exceeds the limit of 65536 bytes"))
    bomb = gzip.compress(b"{" + b" " * 10_000_000 + b"}")  # ~10 KB that inflates to 10 MB
    assert len(bomb) < 65536
    status, _, body = ingest.post(bomb, headers(JS, **{"Content-Encoding": "gzip"}))
    assert (status, status_of(body, JS)) == (413, (code_pb2.RESOURCE_EXHAUSTED,
                                                   "decompressed body exceeds the limit of 65536 bytes"))
    assert ingest.producer.sent == []


@pytest.mark.parametrize(("body", "extra", "message"), [
    (b"\xff\x00garbage", {}, "not an OTLP ExportLogsServiceRequest (invalid_protobuf): not an ExportLogsServiceRequest:"
                            " Error parsing message with type 'opentelemetry.proto.logs.v1.LogsData'"),
    (b"not gzip at all", {"Content-Encoding": "gzip"}, "body is not valid gzip: Error -3 while decompressing data: "
                                                       "incorrect header check"),
    (gzip.compress(b"x" * 100)[:20], {"Content-Encoding": "gzip"}, "body is truncated gzip"),
])
def test_bad_payload_is_400_with_a_message(ingest: Running, body: bytes, extra: dict[str, str], message: str) -> None:
    status, _, answer = ingest.post(body, headers(**extra))
    assert (status, status_of(answer)) == (400, (code_pb2.INVALID_ARGUMENT, message))


def test_bad_json_is_400_in_json(ingest: Running) -> None:
    status, got_headers, answer = ingest.post(b'{"resourceLogs": [', headers(JS))
    assert (status, got_headers["content-type"]) == (400, JS)
    code, message = status_of(answer, JS)
    assert code == code_pb2.INVALID_ARGUMENT
    assert message.startswith("not an OTLP ExportLogsServiceRequest (invalid_json)")


def test_unknown_content_type_or_encoding_is_415(ingest: Running) -> None:
    raw = pb_request("acme").SerializeToString()
    assert ingest.post(raw, headers("text/plain"))[0] == 415
    assert ingest.post(raw, headers(**{"Content-Encoding": "br"}))[0] == 415
    assert ingest.post(raw, headers("application/x-protobuf; charset=binary"))[0] == 200  # parameters ignored


def test_wrong_path_is_404_and_wrong_method_405(ingest: Running) -> None:
    raw = pb_request("acme").SerializeToString()
    status, _, body = ingest.post(raw, headers(), path="/v1/metrics")
    assert (status, status_of(body)) == (404, (code_pb2.NOT_FOUND,
                                               "no such path; logs go to /v1/logs, traces to /v1/traces"))
    status, got_headers, body = ingest.post(b"", headers(), method="GET")
    assert (status, got_headers["allow"], status_of(body)) == (
        405, "POST", (code_pb2.UNIMPLEMENTED, "GET is not allowed on /v1/logs; use POST"))
    assert ingest.post(b"", {}, method="PUT", path="/v1/logs?x=1")[0] == 405
    assert ingest.producer.sent == []


def test_broker_failure_is_503_with_retry_after_and_nothing_is_acknowledged(ingest: Running) -> None:
    ingest.producer.fail = ProduceError("Local: Message timed out")
    status, got_headers, body = ingest.post(pb_request("acme").SerializeToString(), headers())
    assert (status, got_headers["retry-after"], status_of(body)) == (503, "7", (
        code_pb2.UNAVAILABLE, "the log broker did not acknowledge; retry later (Local: Message timed out)"))
    ingest.producer.fail = ProduceError("Broker: Message size too large", too_large=True)
    status, got_headers, _ = ingest.post(pb_request("acme").SerializeToString(), headers())
    assert (status, "retry-after" in got_headers) == (413, False)
    ingest.producer.fail = None
    assert ingest.post(pb_request("acme").SerializeToString(), headers())[0] == 200  # the retry goes through
    assert len(ingest.producer.sent) == 1
    stats = ingest.server.stats
    assert (dict(stats.by_status), stats.accepted, stats.messages) == ({503: 1, 413: 1, 200: 1}, 3, 1)


def test_unreachable_broker_is_503_within_the_ack_timeout_with_the_real_producer() -> None:
    from connectors.broker import free_port
    from connectors.ingest import KafkaLogsProducer

    producer = KafkaLogsProducer(f"127.0.0.1:{free_port()}", "otlp_logs", timeout_s=1.0)
    server = IngestServer(("127.0.0.1", 0), keys=KEYS, producer=producer, retry_after_s=3)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        status, got_headers, body = Running(server, RecordingProducer(), RecordingProducer()).post(
            pb_request("acme").SerializeToString(), headers())
        took = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        producer.close()
    assert (status, got_headers["retry-after"], status_of(body)) == (503, "3", (
        code_pb2.UNAVAILABLE, "the log broker did not acknowledge; retry later (otlp_logs: Local: Message timed out)"))
    assert took < 6.5


def test_a_refused_request_closes_the_connection_and_the_client_reconnects(ingest: Running) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", ingest.port, timeout=10)
    try:
        raw = pb_request("acme").SerializeToString()
        conn.request("POST", "/v1/logs", body=raw, headers=headers(key="nope"))
        first = conn.getresponse()
        first.read()
        conn.request("POST", "/v1/logs", body=raw, headers=headers())  # http.client opens a new connection
        second = conn.getresponse()
        second.read()
        assert (first.status, first.getheader("Connection"), second.status) == (401, "close", 200)
    finally:
        conn.close()


def test_keep_alive_connection_survives_a_request_refused_after_its_body_was_read(ingest: Running) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", ingest.port, timeout=10)
    try:
        conn.request("POST", "/v1/logs", body=b"\xff\x00garbage", headers=headers())
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        conn.request("POST", "/v1/logs", body=pb_request("acme").SerializeToString(), headers=headers())
        second = conn.getresponse()
        second.read()
        assert (first.status, second.status, conn.sock is sock) == (400, 200, True)
    finally:
        conn.close()


def test_official_sdk_exporter_delivers_through_the_endpoint(ingest: Running) -> None:
    provider = sdk_provider(ingest.server.url, "key-globex-2-0123456789", "inventory", "acme")
    emit_oom_burst(provider, 5, T0)
    assert provider.force_flush(10_000)
    provider.shutdown()
    got = [m for _, v, _ in ingest.producer.sent for m in decode_logs(v, fmt="proto").records]
    assert [(r.tenant, dict(r.resource_attributes)["tenant.id"], r.service, r.level.name, r.body, r.time_unix_nano,
             r.exception_type, r.scope_name) for r in got] == [
        ("globex", "globex", "inventory", "ERROR", "java.lang.OutOfMemoryError: Java heap space", T0 + i * 10**8,
         "java.lang.OutOfMemoryError", "com.shop.jvm") for i in range(5)]
    assert {k.split(b"/")[0] for k, _, _ in ingest.producer.sent} == {b"globex"}


# --- api keys file --------------------------------------------------------------------------------------------


def test_keys_file_json_and_yaml(tmp_path: Path) -> None:
    abc, def_ = "abc-0123456789abcdef", "def-0123456789abcdef"
    (tmp_path / "k.json").write_text(f'{{"{abc}": "acme", " {def_} ": "globex"}}')
    (tmp_path / "k.yaml").write_text(f"# keys\n{abc}: acme\n{def_}: globex\n")
    assert load_api_keys(tmp_path / "k.json") == load_api_keys(tmp_path / "k.yaml") == {abc: "acme", def_: "globex"}
    for bad in ("[]", "{}", "abc: ''", "abc: [1]", "a: b: c"):
        (tmp_path / "bad.yaml").write_text(bad)
        with pytest.raises(ValueError, match=r"bad\.yaml"):
            load_api_keys(tmp_path / "bad.yaml")


def test_ingest_command_refuses_a_bad_keys_file(tmp_path: Path) -> None:
    from jobs import cli

    (tmp_path / "keys.json").write_text("[]")
    assert cli.main(["ingest", "--keys", str(tmp_path / "keys.json"), "--port", "0"]) == 2
    assert cli.main(["ingest", "--keys", str(tmp_path / "missing.json"), "--port", "0"]) == 2


# --- end to end: SDK -> logclaw ingest -> broker -> detection job ---------------------------------------------


@pytest.mark.broker
@pytest.mark.flink
@pytest.mark.integration
@pytest.mark.timeout(240)
def test_sdk_oom_burst_through_ingest_and_broker_opens_an_immediate_incident_against_local_broker(
    broker: Any, tmp_path: Path
) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from connectors.broker import free_port
    from jobs.config import JobConfig
    from jobs.detect import build_pipeline, configure, sources
    from jobs.runtime import local_env

    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    logs_topic, incidents_topic, dead_topic = (f"ingest-{n}-{tag}" for n in ("logs", "incidents", "dead"))
    broker.create_topics([logs_topic, incidents_topic, dead_topic], partitions=1)
    keys = tmp_path / "keys.yaml"
    keys.write_text("secret-key-7-0123456789: tenant-seven\n")
    port = free_port()
    out = tmp_path / "ingest.out"
    client = None
    consumers: list[Any] = []
    with ingest_process(["--port", str(port), "--grpc-port", "0", "--keys", str(keys), "--bootstrap", broker.bootstrap,
                         "--topic", logs_topic], out, f"ingest: listening on http://127.0.0.1:{port}/v1/logs") as proc:
        try:
            deadline = time.monotonic() + 30
            base_ns = time.time_ns() - 5_000_000_000
            provider = sdk_provider(f"http://127.0.0.1:{port}/v1/logs", "secret-key-7-0123456789", "payment-api",
                                    "someone-else")
            emit_oom_burst(provider, 20, base_ns)
            assert provider.force_flush(20_000)
            provider.shutdown()

            logs = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"peek-{tag}",
                             "enable.auto.commit": False})
            consumers.append(logs)
            logs.assign([TopicPartition(logs_topic, 0, 0)])
            messages: list[Any] = []
            records: list[LogRecord] = []
            while len(records) < 20 and time.monotonic() < deadline:
                msg = logs.poll(0.5)
                if msg is not None and msg.error() is None:
                    messages.append(msg)
                    records.extend(decode_logs(msg.value() or b"", fmt="proto").records)
            assert [(r.tenant, r.service, r.time_unix_nano) for r in records] == [
                ("tenant-seven", "payment-api", base_ns + i * 100_000_000) for i in range(20)]
            assert {(m.key() or b"").split(b"/")[0] for m in messages} == {b"tenant-seven"}
            sent_until_ms = time.time_ns() // 1_000_000
            assert all(base_ns // 1_000_000 <= m.timestamp()[1] <= sent_until_ms for m in messages)  # receive time
            assert all(m.timestamp()[1] > max(r.time_ms for r in decode_logs(m.value() or b"", fmt="proto").records)
                       for m in messages)  # the SDK's records are dated before they were sent

            cfg = JobConfig.from_env({}, mode="kafka", bootstrap_servers=broker.bootstrap, logs_topic=logs_topic,
                                     incidents_topic=incidents_topic, dead_letter_topic=dead_topic,
                                     group_id=f"ingest-job-{tag}", store_path=str(tmp_path / "logclaw.db"),
                                     checkpoint_interval_ms=0, parallelism=1)
            env = local_env(cfg, with_kafka=True)
            configure(env, cfg)
            logs_stream, spans = sources(env, cfg)
            build_pipeline(env, cfg, logs_stream, spans)
            client = env.execute_async("logclaw-ingest-e2e")
            incidents = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"inc-{tag}",
                                  "enable.auto.commit": False})
            consumers.append(incidents)
            incidents.assign([TopicPartition(incidents_topic, 0, 0)])
            events: list[dict[str, Any]] = []
            deadline = time.monotonic() + 150
            while not events and time.monotonic() < deadline:
                msg = incidents.poll(0.5)
                if msg is not None and msg.error() is None:
                    events.append(json.loads(msg.value() or b"null"))
        finally:
            if client is not None:
                client.cancel().result()
            for consumer in consumers:
                consumer.close()
    code = proc.returncode
    assert events, "no incident event within the deadline"
    opened = events[0]
    assert (opened["event"], opened["path"], opened["tenant"], opened["service"]) == (
        "opened", "immediate", "tenant-seven", "payment-api")
    assert code == 0
    n = len(messages)
    assert out.read_text().splitlines()[-1] == (
        f"ingest: stopped; {n} messages, 20 records accepted, 0 rejected; responses {{200: {n}}}")
    print(f"\nSDK -> ingest -> broker -> job: {len(messages)} messages, first event {opened['event']}/{opened['path']} "
          f"in {time.monotonic() - started:.0f} s")
