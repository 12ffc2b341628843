"""The official OpenTelemetry SDK exporters against ``logclaw ingest`` (a subprocess) and the real local broker.

``LoggerProvider`` + ``OTLPLogExporter`` and ``TracerProvider`` + ``OTLPSpanExporter``, each over gRPC (:4317's
receiver) and over HTTP (:4318's), with the key in ``x-logclaw-api-key`` or in ``Authorization: Bearer``;
what they export is read back from the broker's topics (``otlp_logs`` / ``otlp_spans`` stand-ins with three
partitions) and compared whole. A wrong key is refused over both transports (nothing reaches a topic, one
WARNING line per refusal, never the key), and a tenant's resources spread over partitions.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from connectors.otlp import decode_logs, decode_spans
from tests.ingest_fixtures import ingest_process

pytestmark = [pytest.mark.broker, pytest.mark.integration, pytest.mark.timeout(180)]

ACME, GLOBEX = "sdk-acme-key-0123456789", "sdk-globex-key-0123456789"
PARTITIONS = 3


@dataclass
class Ingest:
    bootstrap: str
    logs_topic: str
    spans_topic: str
    http: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    output: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def ingest(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    from connectors.broker import free_port

    tag = uuid.uuid4().hex[:8]
    logs_topic, spans_topic = f"sdk-logs-{tag}", f"sdk-spans-{tag}"
    broker.create_topics([logs_topic, spans_topic], partitions=PARTITIONS)
    folder = tmp_path_factory.mktemp("ingest-sdk")
    keys = folder / "keys.yaml"
    keys.write_text(f"{ACME}: acme\n{GLOBEX}: globex\n")
    http_port, grpc_port = free_port(), free_port()
    output = folder / "ingest.out"
    with ingest_process(["--keys", str(keys), "--port", str(http_port), "--grpc-port", str(grpc_port), "--bootstrap",
                         broker.bootstrap, "--topic", logs_topic, "--spans-topic", spans_topic], output,
                        f"OTLP/gRPC listening on 127.0.0.1:{grpc_port}", timeout_s=60) as proc:
        yield Ingest(broker.bootstrap, logs_topic, spans_topic, f"http://127.0.0.1:{http_port}",
                     f"127.0.0.1:{grpc_port}", output, proc)


def consume(bootstrap: str, topic: str, until: Any, timeout_s: float = 30.0) -> list[Any]:
    """Every message of ``topic`` (all partitions, from the start) once ``until(messages)`` holds."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"peek-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(messages) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def log_exporter(ingest: Ingest, transport: str, headers: dict[str, str]) -> Any:
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

        return GrpcLogExporter(endpoint=ingest.grpc, insecure=True, headers=headers, timeout=10)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

    return HttpLogExporter(endpoint=f"{ingest.http}/v1/logs", headers=headers, timeout=10)


def span_exporter(ingest: Ingest, transport: str, headers: dict[str, str]) -> Any:
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter(endpoint=ingest.grpc, insecure=True, headers=headers, timeout=10)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(endpoint=f"{ingest.http}/v1/traces", headers=headers, timeout=10)


def emit_logs(exporter: Any, marker: str, count: int, *, instance: str = "i-1", tenant_claim: str = "spoofed") -> None:
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": "payment-api", "service.instance.id": instance,
                                                        "tenant.id": tenant_claim}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("com.shop.pay")
    base_ns = time.time_ns() - 1_000_000_000
    for i in range(count):
        logger.emit(timestamp=base_ns + i, severity_number=SeverityNumber.ERROR, severity_text="ERROR",
                    body=f"{marker} {i}", attributes={"attempt": i})
    provider.shutdown()


def emit_spans(exporter: Any, marker: str) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "tenant.id": "spoofed"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop")
    with tracer.start_as_current_span(f"{marker} POST /checkout", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/checkout")
        with tracer.start_as_current_span(f"{marker} redis GET", kind=SpanKind.CLIENT):
            pass
    provider.shutdown()


def logs_with(ingest: Ingest, marker: str, count: int) -> tuple[list[Any], list[Any]]:
    """(messages, records) of the logs topic whose body starts with ``marker``."""
    def records_of(messages: list[Any]) -> list[Any]:
        return [r for m in messages for r in decode_logs(m.value(), fmt="proto").records if r.body.startswith(marker)]

    messages = consume(ingest.bootstrap, ingest.logs_topic, lambda got: len(records_of(got)) >= count)
    mine = [m for m in messages if records_of([m])]
    return mine, records_of(mine)


@pytest.mark.parametrize(("transport", "headers", "tenant"), [
    ("grpc", {"x-logclaw-api-key": ACME}, "acme"),
    ("grpc", {"authorization": f"Bearer {GLOBEX}"}, "globex"),
    ("http", {"x-logclaw-api-key": GLOBEX}, "globex"),
    ("http", {"Authorization": f"Bearer {ACME}"}, "acme"),
])
def test_sdk_log_exporter_records_arrive_in_the_logs_topic_under_the_keys_tenant(
    ingest: Ingest, transport: str, headers: dict[str, str], tenant: str
) -> None:
    marker = f"logs-{transport}-{uuid.uuid4().hex[:6]}"
    emit_logs(log_exporter(ingest, transport, headers), marker, 5)
    messages, records = logs_with(ingest, marker, 5)
    assert sorted((r.tenant, dict(r.resource_attributes)["tenant.id"], r.service, r.body, r.level.name,
                   dict(r.attributes)["attempt"]) for r in records) == [
        (tenant, tenant, "payment-api", f"{marker} {i}", "ERROR", i) for i in range(5)]
    assert {m.key().split(b"/")[0] for m in messages} == {tenant.encode()}
    assert all(m.timestamp()[1] >= max(r.time_ms for r in records) for m in messages)  # receive time


@pytest.mark.parametrize(("transport", "headers", "tenant"), [
    ("grpc", {"authorization": f"Bearer {ACME}"}, "acme"),
    ("http", {"x-logclaw-api-key": GLOBEX}, "globex"),
])
def test_sdk_span_exporter_spans_arrive_whole_in_the_spans_topic(
    ingest: Ingest, transport: str, headers: dict[str, str], tenant: str
) -> None:
    marker = f"spans-{transport}-{uuid.uuid4().hex[:6]}"
    emit_spans(span_exporter(ingest, transport, headers), marker)

    def spans_of(messages: list[Any]) -> list[Any]:
        return [s for m in messages for s in decode_spans(m.value(), fmt="proto").spans if s.name.startswith(marker)]

    messages = consume(ingest.bootstrap, ingest.spans_topic, lambda got: len(spans_of(got)) >= 2)
    spans = spans_of(messages)
    assert sorted((s.tenant, s.service, s.name, s.kind) for s in spans) == [
        (tenant, "checkout", f"{marker} POST /checkout", 2), (tenant, "checkout", f"{marker} redis GET", 3)]
    child = next(s for s in spans if s.kind == 3)
    parent = next(s for s in spans if s.kind == 2)
    assert (child.trace_id, child.parent_span_id) == (parent.trace_id, parent.span_id)
    whole = [span for m in messages for rs in ExportTraceServiceRequest.FromString(m.value()).resource_spans
             for ss in rs.scope_spans for span in ss.spans if span.name == f"{marker} POST /checkout"]
    assert [(a.key, a.value.string_value) for a in whole[0].attributes] == [("http.route", "/checkout")]


def test_a_wrong_key_is_refused_over_both_transports_and_logged_without_the_key(ingest: Ingest) -> None:
    wrong = "wrong-sdk-key-0123456789"
    marker = f"refused-{uuid.uuid4().hex[:6]}"
    for transport in ("grpc", "http"):
        emit_logs(log_exporter(ingest, transport, {"x-logclaw-api-key": wrong}), marker, 2)
        emit_spans(span_exporter(ingest, transport, {"authorization": f"Bearer {wrong}"}), marker)
    control = f"control-{uuid.uuid4().hex[:6]}"
    emit_logs(log_exporter(ingest, "grpc", {"x-logclaw-api-key": ACME}), control, 1)  # sent after the refused ones
    assert len(logs_with(ingest, control, 1)[1]) == 1  # the control arrived, so the refused ones had their turn
    everything = consume(ingest.bootstrap, ingest.logs_topic, lambda got: False, timeout_s=3)
    assert not [r for m in everything for r in decode_logs(m.value(), fmt="proto").records if marker in r.body]
    spans = consume(ingest.bootstrap, ingest.spans_topic, lambda got: False, timeout_s=3)
    assert not [s for m in spans for s in decode_spans(m.value(), fmt="proto").spans if marker in s.name]
    text = ingest.output.read_text()
    warnings = [line for line in text.splitlines() if " WARNING connectors.ingest: ingest: refused " in line]
    assert len([w for w in warnings if "(unauthenticated)" in w and "LogsService/Export" in w]) >= 1
    assert len([w for w in warnings if "(unauthenticated)" in w and "TraceService/Export" in w]) >= 1
    assert len([w for w in warnings if "(unauthenticated)" in w and "'/v1/logs'" in w]) >= 1
    assert len([w for w in warnings if "(unauthenticated)" in w and "'/v1/traces'" in w]) >= 1
    assert wrong not in text and ACME not in text and GLOBEX not in text


def test_a_tenants_resources_spread_over_partitions_and_each_keeps_its_own(ingest: Ingest) -> None:
    marker = f"spread-{uuid.uuid4().hex[:6]}"
    instances = [f"pod-{n}" for n in range(8)]
    for instance in instances:
        for _ in range(2):  # two requests per resource: the same key, so the same partition
            emit_logs(log_exporter(ingest, "grpc", {"x-logclaw-api-key": ACME}), f"{marker} {instance}", 1,
                      instance=instance)
    messages, records = logs_with(ingest, marker, 16)
    assert len(records) == 16
    partitions_of: dict[str, set[int]] = {}
    keys_of: dict[str, set[bytes]] = {}
    for m in messages:
        [record] = decode_logs(m.value(), fmt="proto").records
        instance = str(dict(record.resource_attributes)["service.instance.id"])
        partitions_of.setdefault(instance, set()).add(m.partition())
        keys_of.setdefault(instance, set()).add(m.key())
    assert all(len(p) == 1 for p in partitions_of.values()), partitions_of  # one resource, one partition
    assert all(len(k) == 1 and next(iter(k)).startswith(b"acme/") for k in keys_of.values())
    assert len({next(iter(k)) for k in keys_of.values()}) == len(instances)  # a key per resource
    assert len({next(iter(p)) for p in partitions_of.values()}) > 1  # one tenant, several partitions
