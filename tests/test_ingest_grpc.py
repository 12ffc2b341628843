"""The OTLP/gRPC receiver (``connectors.ingest.grpc_receiver``) beside the HTTP one, over the same intake.

The real gRPC server on a loopback port with recording producers, called with the generated
opentelemetry-proto stubs (and a raw-bytes channel for what a stub cannot send): tenancy from the
``x-logclaw-api-key`` metadata or ``authorization: Bearer``, partial success for logs and traces, and each
refusal's gRPC code and RetryInfo as the OTLP spec says; the refusals' WARNING lines and the Prometheus
counters. The SDK exporters against ``logclaw ingest`` and the real broker: ``tests/test_ingest_sdk.py``.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PbLogRecord
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from connectors.ingest import ProduceError
from connectors.ingest.grpc_receiver import RETRY_INFO_KEY, STATUS_DETAILS_KEY, GrpcReceiver
from connectors.otlp import decode_logs
from tests.ingest_fixtures import NOW, T0, Running, kv, pb_request, serve

KEY, GLOBEX_KEY = "key-acme-1-0123456789", "key-globex-2-0123456789"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


@dataclass
class Both:
    http: Running
    receiver: GrpcReceiver
    channel: grpc.Channel

    @property
    def logs(self) -> LogsServiceStub:
        return LogsServiceStub(self.channel)  # type: ignore[no-untyped-call]

    @property
    def traces(self) -> TraceServiceStub:
        return TraceServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def raw(self, method: str, body: bytes, metadata: list[tuple[str, str]]) -> bytes:
        call = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        return bytes(call(body, metadata=metadata, timeout=10))


@contextmanager
def running(**options: Any) -> Iterator[Both]:
    with serve(**options) as http:
        receiver = GrpcReceiver(http.server.intake, "127.0.0.1", 0)
        receiver.start()
        channel = grpc.insecure_channel(receiver.address)
        try:
            yield Both(http, receiver, channel)
        finally:
            channel.close()
            receiver.stop(1.0)


@pytest.fixture
def both() -> Iterator[Both]:
    with running() as value:
        yield value


def key_md(key: str = KEY) -> list[tuple[str, str]]:
    return [("x-logclaw-api-key", key)]


def rpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def spans_request(tenant_claim: str) -> ExportTraceServiceRequest:
    resource = Resource(attributes=[kv("service.name", "payment-api"), kv("tenant.id", tenant_claim)])
    ok = Span(trace_id=bytes(range(16)), span_id=bytes(range(8)), name="POST /pay", kind=Span.SPAN_KIND_SERVER,
              start_time_unix_nano=T0, end_time_unix_nano=T0 + 5_000_000, attributes=[kv("http.route", "/pay")])
    ahead = Span(trace_id=bytes(range(16)), span_id=bytes(range(1, 9)), name="from the future",
                 start_time_unix_nano=NOW + 3_600_000_000_000, end_time_unix_nano=NOW + 3_600_001_000_000)
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource,
                                                                   scope_spans=[ScopeSpans(spans=[ok, ahead])])])


# --- accepted ------------------------------------------------------------------------------------------------


def test_logs_export_over_grpc_is_one_message_of_the_keys_tenant(both: Both) -> None:
    request = pb_request("spoofed")
    response = both.logs.Export(request, metadata=key_md(), timeout=10)
    assert response == ExportLogsServiceResponse() and not response.HasField("partial_success")
    ((key, value, timestamp_ms),) = both.http.producer.sent
    assert key.split(b"/")[0] == b"acme" and timestamp_ms == NOW // 1_000_000
    got = decode_logs(value, fmt="proto").records
    honest = decode_logs(pb_request("acme").SerializeToString(), fmt="proto").records
    assert list(got) == list(honest)  # the whole request, tenant.id from the key


def test_bearer_authorization_is_accepted_and_the_api_key_header_decides_when_both_are_sent(both: Both) -> None:
    both.logs.Export(pb_request(None), metadata=[("authorization", f"Bearer {GLOBEX_KEY}")], timeout=10)
    both.logs.Export(pb_request(None), metadata=[("authorization", f"bearer {GLOBEX_KEY}")], timeout=10)
    both.logs.Export(pb_request(None), metadata=[*key_md(KEY), ("authorization", f"Bearer {GLOBEX_KEY}")], timeout=10)
    assert [k.split(b"/")[0] for k, _, _ in both.http.producer.sent] == [b"globex", b"globex", b"acme"]


def test_gzip_compressed_calls_are_accepted(both: Both) -> None:
    both.logs.Export(pb_request(None), metadata=key_md(), timeout=10, compression=grpc.Compression.Gzip)
    assert len(both.http.producer.sent) == 1


def test_trace_export_keeps_the_spans_whole_and_answers_partial_success_with_rejected_spans(both: Both) -> None:
    response = both.traces.Export(spans_request("spoofed"), metadata=key_md(GLOBEX_KEY), timeout=10)
    assert response.partial_success.rejected_spans == 1
    assert response.partial_success.error_message.startswith("1 of 2 spans rejected: future_timestamp x1 (record 1:")
    ((key, value, _),) = both.http.spans.sent
    assert key.split(b"/")[0] == b"globex" and both.http.producer.sent == []
    kept = ExportTraceServiceRequest.FromString(value)
    expected = spans_request("spoofed")
    del expected.resource_spans[0].scope_spans[0].spans[1]
    attributes = expected.resource_spans[0].resource.attributes
    del attributes[1]
    attributes.append(kv("tenant.id", "globex"))
    assert kept == expected  # span attributes and kind kept, the client's tenant.id replaced


def test_logs_partial_success_over_grpc(both: Both) -> None:
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=[kv("service.name", "cart")]),
        scope_logs=[ScopeLogs(log_records=[
            PbLogRecord(time_unix_nano=T0, body=AnyValue(string_value="ok")),
            PbLogRecord(time_unix_nano=NOW + 3_600_000_000_000, body=AnyValue(string_value="an hour ahead")),
        ])])])
    response = both.logs.Export(request, metadata=key_md(), timeout=10)
    assert response.partial_success.rejected_log_records == 1
    assert "future_timestamp x1" in response.partial_success.error_message
    assert [r.body for r in decode_logs(both.http.producer.sent[0][1], fmt="proto").records] == ["ok"]


def test_an_empty_request_is_a_success_without_a_message(both: Both) -> None:
    assert both.logs.Export(ExportLogsServiceRequest(), metadata=key_md(), timeout=10) == ExportLogsServiceResponse()
    empty_traces = both.traces.Export(ExportTraceServiceRequest(), metadata=key_md(), timeout=10)
    assert empty_traces == ExportTraceServiceResponse()
    assert both.http.producer.sent == both.http.spans.sent == []


# --- refused -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", [[], key_md("wrong-key-0123456789abc"), [("authorization", f"Basic {KEY}")],
                                      [("authorization", "Bearer ")]])
def test_missing_or_unknown_key_is_unauthenticated(both: Both, metadata: list[tuple[str, str]],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="connectors.ingest"):
        error = rpc_error(lambda: both.logs.Export(pb_request(None), metadata=metadata, timeout=10))
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, "missing or unknown API key "
                                               "(x-logclaw-api-key metadata or authorization: Bearer)")
    assert both.http.producer.sent == []
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith(f"ingest: refused {LOGS_METHOD} from ipv4:127.0.0.1:")
    assert line.endswith("-> UNAUTHENTICATED (unauthenticated): missing or unknown API key "
                         "(x-logclaw-api-key metadata or authorization: Bearer)")
    assert not [m for m in caplog.messages if KEY in m or "wrong-key" in m]


def test_an_unreadable_message_is_invalid_argument(both: Both) -> None:
    error = rpc_error(lambda: both.raw(LOGS_METHOD, b"\xff\x00garbage", key_md()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("not an OTLP ExportLogsServiceRequest (invalid_protobuf)")
    details = status_pb2.Status.FromString(dict(error.trailing_metadata())[STATUS_DETAILS_KEY])
    assert (details.code, details.message, list(details.details)) == (3, error.details(), [])  # no RetryInfo


def test_over_the_record_limit_is_invalid_argument_and_over_the_size_limit_resource_exhausted() -> None:
    with running(max_records=2) as both:
        error = rpc_error(lambda: both.logs.Export(pb_request(None), metadata=key_md(), timeout=10))
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "the request has 3 log records; "
                                                   "the limit is 2 per request: send smaller batches")
        big = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[
            PbLogRecord(body=AnyValue(string_value="x" * 70_000))])])])
        error = rpc_error(lambda: both.logs.Export(big, metadata=key_md(), timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # gRPC's own max_receive_message_length
        assert RETRY_INFO_KEY not in dict(error.trailing_metadata() or ())  # so not retryable, per the spec
        bomb = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[
            PbLogRecord(body=AnyValue(string_value=" " * 200_000))])])])
        assert len(gzip.compress(bomb.SerializeToString())) < 64 * 1024  # small on the wire, large inflated
        error = rpc_error(lambda: both.logs.Export(bomb, metadata=key_md(), timeout=10,
                                                   compression=grpc.Compression.Gzip))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert both.http.producer.sent == []


def retry_delay_s(error: grpc.RpcError) -> tuple[int, int]:
    """The RetryInfo's delay from the status details and from google.rpc.retryinfo-bin."""
    trailing = dict(error.trailing_metadata())
    details = status_pb2.Status.FromString(trailing[STATUS_DETAILS_KEY])
    [packed] = details.details
    info = error_details_pb2.RetryInfo()
    assert packed.Unpack(info)
    header = error_details_pb2.RetryInfo.FromString(trailing[RETRY_INFO_KEY])
    return info.retry_delay.seconds, header.retry_delay.seconds


def test_broker_failure_is_unavailable_with_retry_info(both: Both) -> None:
    both.http.producer.fail = ProduceError("Local: Message timed out")
    error = rpc_error(lambda: both.logs.Export(pb_request(None), metadata=key_md(), timeout=10))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.UNAVAILABLE, "the log broker did not acknowledge; retry later (Local: Message timed out)")
    assert retry_delay_s(error) == (7, 7)  # serve(): retry_after_s=7


def test_saturated_is_unavailable_with_retry_info_and_a_slot_comes_back(both: Both) -> None:
    slots = both.http.server.inflight
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    try:
        error = rpc_error(lambda: both.traces.Export(spans_request("x"), metadata=key_md(), timeout=10))
        assert (error.code(), error.details(), retry_delay_s(error)) == (
            grpc.StatusCode.UNAVAILABLE, "receiver saturated", (7, 7))
    finally:
        for _ in range(taken):
            slots.release()
    assert both.traces.Export(spans_request("x"), metadata=key_md(), timeout=10).partial_success.rejected_spans == 1


def test_unknown_method_is_unimplemented(both: Both) -> None:
    error = rpc_error(lambda: both.raw("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", b"",
                                       key_md()))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_two_receivers_cannot_share_a_port(both: Both) -> None:
    with pytest.raises(OSError):
        GrpcReceiver(both.http.server.intake, "127.0.0.1", both.receiver.port)


# --- both transports, one set of counters ----------------------------------------------------------------------


def metric_lines(both: Both) -> set[str]:
    status, headers, body = both.http.post(b"", {}, path="/metrics", method="GET")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    return {line for line in body.decode().splitlines() if line and not line.startswith("#")}


def test_metrics_count_both_transports_by_signal_outcome_reason_and_key_file_tenant(both: Both) -> None:
    both.logs.Export(pb_request(None), metadata=key_md(), timeout=10)
    both.traces.Export(spans_request("x"), metadata=key_md(GLOBEX_KEY), timeout=10)
    rpc_error(lambda: both.logs.Export(pb_request(None), metadata=key_md("wrong-key-0123456789abc"), timeout=10))
    assert both.http.post(pb_request(None).SerializeToString(), {"Content-Type": "application/x-protobuf",
                                                                 "Authorization": f"Bearer {KEY}"})[0] == 200
    assert both.http.post(b"{}", {"Content-Type": "application/json"}, path="/v1/traces")[0] == 401
    lines = metric_lines(both)
    for expected in (
        'logclaw_ingest_requests_total{outcome="ok",signal="logs",transport="grpc"} 1.0',
        'logclaw_ingest_requests_total{outcome="partial",signal="traces",transport="grpc"} 1.0',
        'logclaw_ingest_requests_total{outcome="refused",signal="logs",transport="grpc"} 1.0',
        'logclaw_ingest_requests_total{outcome="ok",signal="logs",transport="http"} 1.0',
        'logclaw_ingest_requests_total{outcome="refused",signal="traces",transport="http"} 1.0',
        'logclaw_ingest_records_total{result="accepted",signal="logs",tenant="acme"} 6.0',
        'logclaw_ingest_records_total{result="accepted",signal="traces",tenant="globex"} 1.0',
        'logclaw_ingest_records_total{result="rejected",signal="traces",tenant="globex"} 1.0',
        'logclaw_ingest_messages_total{signal="logs"} 2.0',
        'logclaw_ingest_messages_total{signal="traces"} 1.0',
        'logclaw_ingest_refusals_total{reason="unauthenticated",transport="grpc"} 1.0',
        'logclaw_ingest_refusals_total{reason="unauthenticated",transport="http"} 1.0',
    ):
        assert expected in lines, (expected, sorted(lines))
    received = [line for line in lines if line.startswith("logclaw_ingest_received_bytes_total{")]
    assert len(received) == 3 and all(float(line.split()[-1]) > 0 for line in received)  # grpc logs/traces, http logs
    assert not [line for line in lines if "wrong-key" in line or KEY in line]


def test_grpc_and_http_share_the_processing_slots() -> None:
    with running(max_inflight=1) as both:
        assert both.http.server.inflight is both.http.server.intake.inflight
        gate = threading.Event()
        entered = threading.Event()
        original = both.http.producer.send

        def slow_send(key: bytes, value: bytes, timestamp_ms: int) -> None:
            entered.set()
            gate.wait(10)
            original(key, value, timestamp_ms)

        both.http.producer.send = slow_send  # type: ignore[method-assign]
        first = threading.Thread(target=lambda: both.logs.Export(pb_request(None), metadata=key_md(), timeout=20))
        first.start()
        try:
            assert entered.wait(10)
            status, headers, _ = both.http.post(pb_request(None).SerializeToString(),
                                                {"Content-Type": "application/x-protobuf", "x-logclaw-api-key": KEY})
            assert (status, headers["retry-after"]) == (503, "7")
        finally:
            gate.set()
            first.join(20)
        assert len(both.http.producer.sent) == 1
