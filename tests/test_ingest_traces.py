"""``POST /v1/traces`` on the HTTP receiver and the traces payload (``connectors.ingest.traces``), and the
Kafka message key of both signals (``payload.message_key``)."""

from __future__ import annotations

import json
from typing import Any

from google.rpc import code_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from connectors.ingest import prepare, prepare_traces
from connectors.ingest.payload import message_key
from connectors.otlp import decode_spans
from tests.ingest_fixtures import JS, NOW, PB, T0, Running, headers, json_request, record, serve, status_of

TRACE = "5b8efff798038103d269b633813fc60c"


def json_traces(spans: list[dict[str, Any]], service: str = "checkout") -> dict[str, Any]:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}},
                               {"key": "tenant.id", "value": {"stringValue": "spoofed"}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "shop"}, "spans": spans}]}]}


def json_span(span_id: str, name: str, start_ns: int, **extra: Any) -> dict[str, Any]:
    return {"traceId": TRACE.upper(), "spanId": span_id, "name": name, "kind": 2, "startTimeUnixNano": str(start_ns),
            "endTimeUnixNano": str(start_ns + 1_000_000), **extra}


def sent_request(running: Running) -> ExportTraceServiceRequest:
    ((_, value, _),) = running.spans.sent
    return ExportTraceServiceRequest.FromString(value)


def test_json_traces_keep_ids_attributes_and_links_and_answer_partial_success_in_json() -> None:
    link = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}
    spans = [json_span("eee19b7ec3c1b174", "POST /checkout", T0, attributes=[
                 {"key": "http.route", "value": {"stringValue": "/checkout"}}], links=[link]),
             json_span("eee19b7ec3c1b175", "too far ahead", NOW + 3_600_000_000_000),
             json_span("not-hex", "bad id", T0)]
    with serve() as running:
        status, got_headers, body = running.post(json.dumps(json_traces(spans)).encode(), headers(JS),
                                                 path="/v1/traces")
        assert (status, got_headers["content-type"]) == (200, JS)
        answer = json.loads(body)["partialSuccess"]
        assert answer["rejectedSpans"] == "2"  # int64 in JSON: a string
        assert answer["errorMessage"].startswith("2 of 3 spans rejected: ")
        assert "future_timestamp x1" in answer["errorMessage"]
        kept = sent_request(running)
        assert running.producer.sent == []
    [resource_spans] = kept.resource_spans
    assert [(a.key, a.value.string_value) for a in resource_spans.resource.attributes] == [
        ("service.name", "checkout"), ("tenant.id", "acme")]
    [span] = resource_spans.scope_spans[0].spans
    assert (span.trace_id.hex(), span.span_id.hex(), span.name, span.kind) == (
        TRACE, "eee19b7ec3c1b174", "POST /checkout", 2)
    assert [(a.key, a.value.string_value) for a in span.attributes] == [("http.route", "/checkout")]
    assert [(x.trace_id.hex(), x.span_id.hex()) for x in span.links] == [(link["traceId"], link["spanId"])]
    assert resource_spans.scope_spans[0].scope.name == "shop"


def test_protobuf_traces_and_the_empty_request_and_bad_bodies() -> None:
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="cart"))]),
        scope_spans=[ScopeSpans(spans=[Span(trace_id=bytes(range(16)), span_id=bytes(range(8)), name="GET /cart",
                                            start_time_unix_nano=T0, end_time_unix_nano=T0 + 10)])])])
    with serve() as running:
        status, _, body = running.post(request.SerializeToString(), headers(PB, key="key-globex-2-0123456789"),
                                       path="/v1/traces")
        assert (status, body) == (200, b"")
        [span] = decode_spans(running.spans.sent[0][1], fmt="proto").spans
        assert (span.tenant, span.service, span.name) == ("globex", "cart", "GET /cart")
        assert running.post(b"", headers(PB), path="/v1/traces")[:3:2] == (200, b"")
        status, _, body = running.post(b"\xff\x00garbage", headers(PB), path="/v1/traces")
        assert (status, status_of(body)[0]) == (400, code_pb2.INVALID_ARGUMENT)
        assert status_of(body)[1].startswith("not an OTLP ExportTraceServiceRequest (invalid_protobuf)")
        assert len(running.spans.sent) == 1
    with serve(max_records=1) as running:
        status, _, body = running.post(json.dumps(json_traces([json_span("eee19b7ec3c1b174", "a", T0),
                                                               json_span("eee19b7ec3c1b175", "b", T0)])).encode(),
                                       headers(JS), path="/v1/traces")
        assert (status, status_of(body, JS)) == (413, (code_pb2.RESOURCE_EXHAUSTED, "the request has 2 spans; the "
                                                       "limit is 1 per request: send smaller batches"))


def test_a_request_the_generated_classes_refuse_is_re_encoded_from_what_the_job_reads() -> None:
    doc = json_traces([json_span("eee19b7ec3c1b174", "GET /cart", T0, droppedAttributesCount="lots",
                                 attributes=[{"key": "k", "value": {"stringValue": "v"}}])], service="cart")
    ready = prepare_traces(json.dumps(doc).encode(), tenant="acme", fmt="json", received_unix_nano=NOW,
                           max_body_bytes=65536)
    assert (ready.accepted, ready.rejected) == (1, 0)  # the job reads the span; the protobuf JSON mapping does not
    [span] = decode_spans(ready.payload, fmt="proto").spans
    assert (span.tenant, span.service, span.name, span.trace_id) == ("acme", "cart", "GET /cart", TRACE)
    [kept] = ExportTraceServiceRequest.FromString(ready.payload).resource_spans[0].scope_spans[0].spans
    assert list(kept.attributes) == []  # what the job does not read is not carried on this path
    assert ready.key.startswith(b"acme/")


def test_the_message_key_is_the_tenant_and_a_hash_of_the_requests_resources() -> None:
    def logs_key(service: str, host: str) -> bytes:
        doc = json_request(None, [record(T0, "x")])
        doc["resourceLogs"][0]["resource"]["attributes"] += [{"key": "host.name", "value": {"stringValue": host}}]
        doc["resourceLogs"][0]["resource"]["attributes"][0]["value"]["stringValue"] = service
        return prepare(json.dumps(doc).encode(), tenant="acme", fmt="json", received_unix_nano=NOW,
                       max_body_bytes=65536).key

    assert logs_key("cart", "a") == logs_key("cart", "a")  # one resource: one key, one partition, its order kept
    assert len({logs_key("cart", h) for h in "abcdefgh"}) == 8  # its instances: keys to spread over partitions
    assert all(k.startswith(b"acme/") and len(k) == len(b"acme/") + 8 for k in (logs_key("x", "y"),))
    assert message_key("acme", [b"r1", b"r2"]) != message_key("acme", [b"r1r2"])
    assert message_key("globex", [b"r1"]).startswith(b"globex/")
