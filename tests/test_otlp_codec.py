"""Whole-object tests of the OTLP codec (``connectors.otlp``): protobuf and OTLP/JSON, logs and spans.

Requests are built with the generated opentelemetry-proto classes or read from ``tests/fixtures``
and real data; every decode is compared against the full expected list in one assert.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PbLogRecord
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from connectors.otlp import (
    decode_logs,
    decode_spans,
    encode_logs_json,
    encode_logs_proto,
    encode_spans_json,
    encode_spans_proto,
)
from udfs.records import Decoded, DecodedSpans, DecodeError, Level, LogRecord, Span, SpanStatus

FIXTURES = Path(__file__).parent / "fixtures"
OPENSTACK = Path("/work/shared/data/openstack-dev/Nova_Test_266/round1.otlp.jsonl.gz")
T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z in ns
TRACE = bytes(range(1, 17))
SPAN = bytes(range(1, 9))


def log(**fields: Any) -> LogRecord:
    """An expected record: the fields a test names, the codec's defaults for the rest."""
    base: dict[str, Any] = dict(
        tenant="default", service="unknown_service", service_namespace="", time_unix_nano=T0,
        observed_time_unix_nano=0, severity_number=0, level=Level.UNSPECIFIED, severity_text="", body="",
        body_truncated=False, trace_id="", span_id="", http_status=None, exception_type="",
        exception_message="", exception_stacktrace="", scope_name="", resource_attributes={},
        scope_attributes={}, attributes={},
    )  # fmt: skip
    base.update(fields)
    return LogRecord(**base)


def kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def any_value(value: Any) -> AnyValue:
    if value is None:
        return AnyValue()
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in value.items()]))


def pb_log(**fields: Any) -> PbLogRecord:
    return PbLogRecord(**fields)


def one_log_request(**record: Any) -> bytes:
    """A protobuf request with one resource, one scope and one log record."""
    request = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[PbLogRecord(**record)])])]
    )
    return bytes(request.SerializeToString())


def one_log_json(record: dict[str, Any], resource: Any = None) -> bytes:
    group: dict[str, Any] = {"scopeLogs": [{"logRecords": [record]}]}
    if resource is not None:
        group["resource"] = resource
    return json.dumps({"resourceLogs": [group]}).encode()


def whole(reason: str, decoded: Decoded | DecodedSpans) -> bool:
    """True when ``decoded`` is exactly one whole-message error with ``reason``."""
    return (
        not getattr(decoded, "records", getattr(decoded, "spans", ()))
        and len(decoded.errors) == 1
        and decoded.errors[0].reason == reason
        and decoded.errors[0].index == -1
    )


def reasons(decoded: Decoded | DecodedSpans) -> list[tuple[str, int]]:
    return [(e.reason, e.index) for e in decoded.errors]


# --------------------------------------------------------------------------------------------------
# Protobuf: a rich request against the whole expected list.


def rich_request() -> ExportLogsServiceRequest:
    every_kind = [
        kv("s", "text"), kv("b", True), kv("i", -7), kv("d", 1.5), kv("y", b"\x00\xff"),
        kv("arr", ["a", 1, False]), kv("kv", {"inner": {"x": 2}}), kv("none", None),
    ]  # fmt: skip
    acme = ResourceLogs(
        resource=Resource(attributes=[kv("tenant.id", "acme"), kv("service.name", "checkout"),
                                      kv("service.namespace", "shop"), kv("host.name", "h1")]),
        scope_logs=[
            ScopeLogs(
                scope=InstrumentationScope(name="app.http", version="1", attributes=[kv("scope.k", "v")]),
                log_records=[
                    pb_log(time_unix_nano=T0, observed_time_unix_nano=T0 + 5, severity_number=9,
                                severity_text="INFO", body=any_value("GET /cart 200"), trace_id=TRACE,
                                span_id=SPAN, attributes=[kv("http.request.method", "GET"),
                                                          kv("http.response.status_code", 200)]),
                    pb_log(observed_time_unix_nano=T0 + 10, severity_text="Warning", body=any_value(42),
                                attributes=[kv("http.status_code", "503"), *every_kind]),
                ],
            ),
            ScopeLogs(
                scope=InstrumentationScope(name="app.db"),
                log_records=[
                    pb_log(time_unix_nano=T0 + 20, severity_number=17, severity_text="ERROR",
                                body=any_value({"msg": "boom", "code": 7}), trace_id=bytes(16),
                                attributes=[kv("exception.type", "ConnectionError"),
                                            kv("exception.message", "pool exhausted"),
                                            kv("exception.stacktrace", "Traceback:\n  line 1"),
                                            kv("http.response.status_code", "500")]),
                    pb_log(time_unix_nano=T0 + 30, severity_number=23, body=any_value(b"\x01\x02\x03")),
                    pb_log(time_unix_nano=T0 + 40, body=any_value(["x", 1.25, False])),
                    pb_log(time_unix_nano=T0 + 50, severity_number=2, body=any_value(True)),
                ],
            ),
        ],
    )  # fmt: skip
    bare = ResourceLogs(scope_logs=[ScopeLogs(log_records=[
        pb_log(time_unix_nano=T0 + 60, severity_number=5, severity_text="debug", body=any_value(2.5)),
    ])])  # fmt: skip
    empty_tenant = ResourceLogs(
        resource=Resource(attributes=[kv("tenant.id", ""), kv("service.name", "billing")]),
        scope_logs=[ScopeLogs(log_records=[pb_log(time_unix_nano=T0 + 70, severity_text="crit")])],
    )
    return ExportLogsServiceRequest(resource_logs=[acme, bare, empty_tenant])


def rich_expected() -> list[LogRecord]:
    acme = dict(
        tenant="acme", service="checkout", service_namespace="shop",
        resource_attributes={"tenant.id": "acme", "service.name": "checkout", "service.namespace": "shop",
                             "host.name": "h1"},
    )  # fmt: skip
    http = dict(acme, scope_name="app.http", scope_attributes={"scope.k": "v"})
    db = dict(acme, scope_name="app.db")
    every_kind = {
        "s": "text", "b": True, "i": -7, "d": 1.5, "y": b"\x00\xff", "arr": ("a", 1, False),
        "kv": {"inner": {"x": 2}}, "none": None,
    }  # fmt: skip
    return [
        log(**http, time_unix_nano=T0, observed_time_unix_nano=T0 + 5, severity_number=9, level=Level.INFO,
            severity_text="INFO", body="GET /cart 200", trace_id=TRACE.hex(), span_id=SPAN.hex(),
            http_status=200, attributes={"http.request.method": "GET", "http.response.status_code": 200}),
        log(**http, time_unix_nano=T0 + 10, observed_time_unix_nano=T0 + 10, severity_number=13,
            level=Level.WARN, severity_text="Warning", body="42", http_status=503,
            attributes={"http.status_code": "503", **every_kind}),
        log(**db, time_unix_nano=T0 + 20, severity_number=17, level=Level.ERROR, severity_text="ERROR",
            body='{"msg":"boom","code":7}', exception_type="ConnectionError",
            exception_message="pool exhausted", exception_stacktrace="Traceback:\n  line 1", http_status=500,
            attributes={"exception.type": "ConnectionError", "exception.message": "pool exhausted",
                        "exception.stacktrace": "Traceback:\n  line 1", "http.response.status_code": "500"}),
        log(**db, time_unix_nano=T0 + 30, severity_number=23, level=Level.FATAL, body="AQID"),
        log(**db, time_unix_nano=T0 + 40, body='["x",1.25,false]'),
        log(**db, time_unix_nano=T0 + 50, severity_number=2, level=Level.TRACE, body="True"),
        log(time_unix_nano=T0 + 60, severity_number=5, level=Level.DEBUG, severity_text="debug", body="2.5"),
        log(service="billing", time_unix_nano=T0 + 70, severity_number=21, level=Level.FATAL,
            severity_text="crit", resource_attributes={"tenant.id": "", "service.name": "billing"}),
    ]  # fmt: skip


def test_protobuf_request_decodes_to_the_whole_expected_list() -> None:
    decoded = decode_logs(rich_request().SerializeToString())
    assert decoded == Decoded(records=tuple(rich_expected()), errors=())


def test_protobuf_mappings_are_read_only_and_shared_per_resource_and_scope() -> None:
    records = decode_logs(rich_request().SerializeToString()).records
    for rec in records:
        for mapping in (rec.resource_attributes, rec.scope_attributes, rec.attributes):
            assert isinstance(mapping, MappingProxyType)
    assert records[0].resource_attributes is records[5].resource_attributes
    assert records[0].scope_attributes is records[1].scope_attributes
    assert isinstance(records[1].attributes["kv"], MappingProxyType)
    assert isinstance(records[1].attributes["kv"]["inner"], MappingProxyType)


def test_same_request_decodes_the_same_twice_from_warm_memos() -> None:
    data = rich_request().SerializeToString()
    assert decode_logs(data) == decode_logs(data) == decode_logs(data, fmt="proto")


# --------------------------------------------------------------------------------------------------
# OTLP/JSON: official example, spec variants, real data.


def test_official_example_logs_json() -> None:
    decoded = decode_logs((FIXTURES / "otlp-examples" / "logs.json").read_bytes())
    expected = log(
        service="my.service", time_unix_nano=1544712660300000000, observed_time_unix_nano=1544712660300000000,
        severity_number=10, level=Level.INFO, severity_text="Information", body="Example log record",
        trace_id="5b8efff798038103d269b633813fc60c", span_id="eee19b7ec3c1b174", scope_name="my.library",
        resource_attributes={"service.name": "my.service"},
        scope_attributes={"my.scope.attribute": "some scope attribute"},
        attributes={"string.attribute": "some string", "boolean.attribute": True, "int.attribute": 10,
                    "double.attribute": 637.704, "array.attribute": ("many", "values"),
                    "map.attribute": {"some.map.key": "some value"}},
    )  # fmt: skip
    assert decoded == Decoded(records=(expected,), errors=())


def test_json_snake_case_enum_names_numbers_nulls_and_unknown_fields() -> None:
    decoded = decode_logs((FIXTURES / "otlp_logs_variants.json").read_bytes())
    resource = dict(
        tenant="globex", service="payment-api", scope_name="payments.http",
        resource_attributes={"tenant.id": "globex", "service.name": "payment-api",
                             "deployment.environment": "prod"},
    )  # fmt: skip
    expected = (
        log(**resource, time_unix_nano=1700000000123000000, observed_time_unix_nano=1700000000124000000,
            severity_number=18, level=Level.ERROR, severity_text="E", body="charge failed: card declined",
            trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331", http_status=402,
            exception_type="CardDeclined",
            attributes={"http.response.status_code": 402, "exception.type": "CardDeclined",
                        "payload": b"\xde\xad\xbe\xef", "ratio": float("inf"), "retries": 2,
                        "tags": ("a", None), "nothing": None}),
        log(**resource, time_unix_nano=1700000001000000000, observed_time_unix_nano=1700000001000000000,
            severity_number=9, level=Level.INFO, severity_text="  Notice ",
            body='{"event":"refund","amount":12.5}', http_status=201, attributes={"http.status_code": "201"}),
    )  # fmt: skip
    assert decoded == Decoded(records=expected, errors=())


def _openstack_line(number: int) -> bytes:
    with gzip.open(OPENSTACK, "rb") as lines:
        for _ in range(number - 1):
            lines.readline()
        return lines.readline().rstrip(b"\n")


def _openstack(service: str, namespace: str, time: int, body: str, request: str, module: str, pid: int) -> LogRecord:
    return log(
        tenant="eval", service=service, service_namespace=namespace, time_unix_nano=time, severity_number=5,
        level=Level.DEBUG, severity_text="DEBUG", body=body, trace_id=request[4:].replace("-", ""),
        scope_name="logclaw-eval.convert",
        resource_attributes={"service.name": service, "service.namespace": namespace, "tenant.id": "eval"},
        attributes={"openstack.request_id": request, "code.namespace": module, "process.pid": pid},
    )  # fmt: skip


@pytest.mark.skipif(not OPENSTACK.exists(), reason="shared OpenStack data set not present")
def test_openstack_first_lines() -> None:
    first = decode_logs(_openstack_line(1))
    assert first == Decoded(records=(_openstack(
        "cinder-volume", "cinder", 1530315473602000000,
        'CMD "sudo cinder-rootwrap /etc/cinder/rootwrap.conf env LC_ALL=C lvs --noheadings --unit=g -o '
        'vg_name,name,size --nosuffix cinder-volumes2" returned: 0 in 1.015s execute '
        "/usr/lib/python2.7/site-packages/oslo_concurrency/processutils.py:404",
        "req-2bf21318-c7bf-4856-bb8e-0c59bd881952", "oslo_concurrency.processutils", 9929,
    ),), errors=())  # fmt: skip
    second = decode_logs(_openstack_line(2))
    assert (len(second.records), second.errors) == (3, ())
    agent = "neutron.plugins.ml2.drivers.openvswitch.agent.ovs_neutron_agent"
    request = "req-effde6c4-6002-4141-9767-8b289cf718a3"
    prefix = "/usr/lib/python2.7/site-packages/neutron/plugins/ml2/drivers/openvswitch/agent/ovs_neutron_agent.py"
    assert (second.records[0], second.records[2]) == (
        _openstack("neutron-openvswitch-agent", "neutron", 1530315475147000000,
                   f"Agent rpc_loop - iteration:189 started rpc_loop {prefix}:1996", request, agent, 9658),
        _openstack("neutron-openvswitch-agent", "neutron", 1530315475154000000,
                   "Agent rpc_loop - iteration:189 completed. Processed ports statistics: {'regular': "
                   "{'updated': 0, 'added': 0, 'removed': 0}}. Elapsed:0.007 loop_count_and_wait "
                   f"{prefix}:1816", request, agent, 9658),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Round trips through the encoders.


def built_records() -> list[LogRecord]:
    """Records as the scenario generator builds them: attribute maps agree with the lifted fields."""
    shop = dict(tenant="acme", service="checkout", service_namespace="shop", scope_name="app",
                resource_attributes={"tenant.id": "acme", "service.name": "checkout",
                                     "service.namespace": "shop"})  # fmt: skip
    return [
        log(**shop, time_unix_nano=T0, observed_time_unix_nano=T0 + 1, severity_number=9, level=Level.INFO,
            severity_text="INFO", body="GET /cart 200 in 12ms", trace_id=TRACE.hex(), span_id=SPAN.hex(),
            http_status=200, attributes={"http.response.status_code": 200, "big": 2**62, "f": -0.5}),
        log(**shop, time_unix_nano=T0 + 2, severity_number=17, level=Level.ERROR, body="pool exhausted ✗",
            exception_type="PoolError", exception_message="no connection", exception_stacktrace="at x\nat y",
            attributes={"exception.type": "PoolError", "exception.message": "no connection",
                        "exception.stacktrace": "at x\nat y", "nested": {"a": (1, "b", b"\x00", None)}}),
        log(tenant="globex", service="api", time_unix_nano=T0 + 3, severity_number=13, level=Level.WARN,
            resource_attributes={"tenant.id": "globex", "service.name": "api"}, scope_name="s2",
            scope_attributes={"lib": "x"}),
        log(time_unix_nano=T0 + 4, severity_number=21, level=Level.FATAL, severity_text="FATAL", body="crash"),
    ]  # fmt: skip


@pytest.mark.parametrize("encode", [encode_logs_json, encode_logs_proto], ids=["json", "proto"])
def test_encode_then_decode_gives_back_equal_records(encode: Any) -> None:
    records = built_records()
    assert decode_logs(encode(records)) == Decoded(records=tuple(records), errors=())


@pytest.mark.parametrize("encode", [encode_logs_json, encode_logs_proto], ids=["json", "proto"])
def test_decoded_rich_request_survives_a_round_trip(encode: Any) -> None:
    decoded = decode_logs(rich_request().SerializeToString())
    assert decode_logs(encode(decoded.records)) == decoded


def test_encoders_group_by_resource_carry_lifted_fields_and_write_one_line() -> None:
    bare = log(tenant="t1", service="a", severity_number=0, level=Level.ERROR, http_status=504,
               exception_type="Timeout", trace_id="ab" * 16)  # fmt: skip
    records = [bare, log(tenant="t2", service="b", time_unix_nano=T0 + 1), bare._replace(time_unix_nano=T0 + 2)]
    data = encode_logs_json(records)
    assert b"\n" not in data
    doc = orjson.loads(data)
    assert [[kv["value"]["stringValue"] for kv in group["resource"]["attributes"]]
            for group in doc["resourceLogs"]] == [["t1", "a"], ["t2", "b"]]  # fmt: skip
    first = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert first == {
        "timeUnixNano": str(T0), "severityNumber": 17, "traceId": "ab" * 16,
        "attributes": [{"key": "http.response.status_code", "value": {"intValue": "504"}},
                       {"key": "exception.type", "value": {"stringValue": "Timeout"}}],
    }  # fmt: skip
    assert decode_logs(encode_logs_proto(records)) == decode_logs(data)


# --------------------------------------------------------------------------------------------------
# Normalization rules.


@pytest.mark.parametrize(
    ("number", "text", "level", "sent_number"),
    [
        (1, "", Level.TRACE, 1), (4, "", Level.TRACE, 4), (8, "", Level.DEBUG, 8), (12, "x", Level.INFO, 12),
        (16, "", Level.WARN, 16), (20, "", Level.ERROR, 20), (24, "", Level.FATAL, 24),
        (9, "ERROR", Level.INFO, 9), (0, "TRACE", Level.TRACE, 1), (0, "Debug", Level.DEBUG, 5),
        (0, "notice", Level.INFO, 9), (0, "WARN", Level.WARN, 13), (0, "err", Level.ERROR, 17),
        (0, "Critical", Level.FATAL, 21), (0, "emerg", Level.FATAL, 21), (0, "alert", Level.FATAL, 21),
        (0, "panic", Level.FATAL, 21), (0, "verbose", Level.UNSPECIFIED, 0), (0, "", Level.UNSPECIFIED, 0),
        (30, "error", Level.ERROR, 30),
    ],
)  # fmt: skip
def test_level_from_number_then_text(number: int, text: str, level: Level, sent_number: int) -> None:
    data = one_log_request(time_unix_nano=T0, severity_number=number, severity_text=text)
    assert decode_logs(data) == Decoded(
        (log(time_unix_nano=T0, severity_number=sent_number, level=level, severity_text=text),), ()
    )


def test_time_falls_back_to_observed_then_to_the_kafka_timestamp() -> None:
    observed = one_log_request(observed_time_unix_nano=T0 + 1)
    neither = one_log_request(severity_number=9)
    assert decode_logs(observed, default_time_unix_nano=T0 + 2).records[0][3:5] == (T0 + 1, T0 + 1)
    assert decode_logs(neither, default_time_unix_nano=T0 + 2).records[0][3:5] == (T0 + 2, 0)


def test_body_cap_cuts_on_a_character_boundary_and_marks_truncation() -> None:
    body = "ab€€€"  # 2 + 3 * 3 UTF-8 bytes
    data = one_log_request(time_unix_nano=T0, body=any_value(body))
    cut = [decode_logs(data, max_body_bytes=size).records[0][8:10] for size in (11, 10, 7, 5, 4, 0)]
    assert cut == [(body, False), ("ab€€", True), ("ab€", True), ("ab€", True), ("ab", True), ("", True)]
    as_json = one_log_json({"timeUnixNano": str(T0), "body": {"stringValue": body}})
    assert decode_logs(as_json, max_body_bytes=7).records[0][8:10] == ("ab€", True)


def test_http_status_prefers_the_new_name_and_accepts_numeric_strings_only() -> None:
    def status(*attrs: KeyValue) -> int | None:
        return decode_logs(one_log_request(time_unix_nano=T0, attributes=list(attrs))).records[0].http_status

    assert [
        status(kv("http.response.status_code", 201), kv("http.status_code", 500)),
        status(kv("http.status_code", "404")),
        status(kv("http.response.status_code", "abc"), kv("http.status_code", 502)),
        status(kv("http.response.status_code", "abc")),
        status(kv("http.response.status_code", True)),
        status(),
    ] == [201, 404, 502, None, None, None]


def test_auto_sniffs_protobuf_starting_with_newline_brace() -> None:
    # A first ResourceLogs of exactly 123 bytes makes the request start with b"\n{".
    body = ""
    for size in range(130):
        body = "x" * size
        data = one_log_request(time_unix_nano=T0, body=any_value(body))
        if data[:2] == b"\n{":
            break
    assert data[:2] == b"\n{"
    assert decode_logs(data) == Decoded((log(body=body),), ())


def test_auto_sniffs_json_after_bom_and_whitespace() -> None:
    data = b"\xef\xbb\xbf \r\n\t" + one_log_json({"timeUnixNano": str(T0), "severityNumber": 9})
    assert decode_logs(data) == Decoded((log(severity_number=9, level=Level.INFO),), ())


# --------------------------------------------------------------------------------------------------
# Every reason code.


def test_reason_empty() -> None:
    assert whole("empty", decode_logs(b""))
    assert whole("empty", decode_spans(b""))


def test_reason_invalid_protobuf_for_garbage_and_truncation() -> None:
    data = rich_request().SerializeToString()
    assert whole("invalid_protobuf", decode_logs(data[:-3]))
    assert whole("invalid_protobuf", decode_logs(b"\x0a\xff\xff\xff\x0f garbage"))
    assert whole("invalid_protobuf", decode_logs(b"\x08\x01"))  # parses, but only an unknown field
    assert whole("invalid_protobuf", decode_logs(b"{}", fmt="proto"))


def test_reason_invalid_json() -> None:
    assert whole("invalid_json", decode_logs(b'{"resourceLogs": [}'))
    assert whole("invalid_json", decode_logs(b"resource_logs { }", fmt="json"))
    assert whole("invalid_utf8", decode_logs(rich_request().SerializeToString(), fmt="json"))
    assert whole("invalid_json", decode_spans(b"{nope"))


def test_reason_invalid_utf8_in_json_is_whole_message() -> None:
    good = one_log_json({"timeUnixNano": str(T0), "body": {"stringValue": "caf\u00e9"}})
    assert whole("invalid_utf8", decode_logs(good.replace(b"caf\\u00e9", b"caf\xe9")))
    assert whole("invalid_utf8", decode_logs(good.replace(b"caf\\u00e9", b"\\ud800")))


def test_reason_invalid_utf8_in_protobuf_strings_is_per_record() -> None:
    def with_bad(**record: Any) -> bytes:
        ok = one_log_request(time_unix_nano=T0, **record)
        return ok.replace("é".encode(), b"\xff\xfe")  # same length: the framing stays valid

    bodies = [
        with_bad(body=any_value("é")),
        with_bad(severity_text="é"),
        with_bad(attributes=[kv("k", "é")]),
        with_bad(attributes=[kv("k", ["x", {"deep": "é"}])]),
    ]
    assert [reasons(decode_logs(b)) for b in bodies] == [[("invalid_utf8", 0)]] * 4
    request = rich_request()
    request.resource_logs[1].resource.attributes.append(kv("host.name", "é"))
    decoded = decode_logs(request.SerializeToString().replace("é".encode(), b"\xff\xfe"))
    assert (len(decoded.records), reasons(decoded)) == (7, [("invalid_utf8", 6)])


def test_reason_wrong_type_whole_message_and_per_record() -> None:
    assert whole("wrong_type", decode_logs(b'{"resourceLogs": "nope"}'))
    assert whole("wrong_type", decode_logs(b'{"resourceLogs": [{"scopeLogs": [{"logRecords": 5}]}]}'))
    assert whole("wrong_type", decode_logs(b"[1]", fmt="json"))
    records = [
        {"timeUnixNano": str(T0)},
        {"timeUnixNano": str(T0), "severityText": 5},
        [],
        {"timeUnixNano": True},
        {"timeUnixNano": str(T0), "body": {"stringValue": 1}},
        {"timeUnixNano": str(T0), "attributes": {"k": "v"}},
        {"timeUnixNano": str(T0), "body": {"stringValue": "a", "intValue": 1}},
        {"timeUnixNano": "12.5"},
    ]
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}
    decoded = decode_logs(json.dumps(doc).encode())
    assert (decoded.records, reasons(decoded)) == ((log(),), [("wrong_type", i) for i in range(1, 8)])


def test_reason_wrong_type_in_a_resource_spoils_each_of_its_records() -> None:
    data = one_log_json({"timeUnixNano": str(T0)}, resource={"attributes": "tenant"})
    assert reasons(decode_logs(data)) == [("wrong_type", 0)]


def test_reason_missing_and_absurd_timestamp() -> None:
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {}, {"timeUnixNano": "631152000000000000"}, {"observedTimeUnixNano": "7258118400000000000"},
        {"timeUnixNano": "-5"}, {"timeUnixNano": str(T0)},
    ]}]}]}  # fmt: skip
    decoded = decode_logs(json.dumps(doc).encode())
    assert (decoded.records, reasons(decoded)) == (
        (log(),),
        [("missing_timestamp", 0), ("absurd_timestamp", 1), ("absurd_timestamp", 2), ("absurd_timestamp", 3)],
    )
    assert reasons(decode_logs(one_log_request(severity_number=9))) == [("missing_timestamp", 0)]
    assert reasons(decode_logs(one_log_request(time_unix_nano=5))) == [("absurd_timestamp", 0)]


def test_reason_bad_trace_id_in_json_and_protobuf() -> None:
    ids: list[dict[str, Any]] = [
        {"traceId": "5B8EFFF798038103D269B633813FC6"}, {"traceId": "zz8efff798038103d269b633813fc60c"},
        {"spanId": "eee19b7ec3c1b17"}, {"traceId": "W4j/95gDgQPSabYzgT/GDA=="}, {"spanId": 12},
        {"traceId": "5b8efff7 98038103d269b633813fc60"},
    ]  # fmt: skip
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [dict(i, timeUnixNano=str(T0)) for i in ids]}]}]}
    assert reasons(decode_logs(json.dumps(doc).encode())) == [("bad_trace_id", i) for i in range(6)]
    assert reasons(decode_logs(one_log_request(time_unix_nano=T0, trace_id=b"\x01" * 8))) == [("bad_trace_id", 0)]
    assert reasons(decode_logs(one_log_request(time_unix_nano=T0, span_id=b"\x01" * 16))) == [("bad_trace_id", 0)]


def test_reason_invalid_base64_and_too_deep() -> None:
    bad_bytes = one_log_json({"timeUnixNano": str(T0), "attributes": [{"key": "y", "value": {"bytesValue": "*"}}]})
    assert reasons(decode_logs(bad_bytes)) == [("invalid_base64", 0)]
    deep: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(80):
        deep = {"arrayValue": {"values": [deep]}}
    assert reasons(decode_logs(one_log_json({"timeUnixNano": str(T0), "body": deep}))) == [("too_deep", 0)]


def test_bad_fmt_and_negative_cap_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        decode_logs(b"{}", fmt="xml")
    with pytest.raises(ValueError):
        decode_logs(b"{}", max_body_bytes=-1)


def test_empty_requests_are_not_errors() -> None:
    assert decode_logs(b"{}") == Decoded((), ())
    assert decode_logs(b'{"resourceLogs": [{"scopeLogs": [{}]}]}') == Decoded((), ())
    assert decode_logs(ExportLogsServiceRequest(resource_logs=[ResourceLogs()]).SerializeToString()) == Decoded(
        (), ()
    )


# --------------------------------------------------------------------------------------------------
# Spans.

EXPECTED_SPANS = (
    Span("acme", "checkout", "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "", "POST /checkout", 2,
         1544712660000000000, 1544712661000000000, SpanStatus.ERROR, "upstream 503"),
    Span("acme", "checkout", "5b8efff798038103d269b633813fc60c", "1111111111111111", "eee19b7ec3c1b174",
         "redis GET", 3, 1544712660100000000, 1544712660200000000, SpanStatus.OK, ""),
    Span("acme", "checkout", "5b8efff798038103d269b633813fc60c", "2222222222222222", "", "no status", 0,
         1544712660300000000, 1544712660400000000, SpanStatus.UNSET, ""),
    Span("default", "unknown_service", "00112233445566778899aabbccddeeff", "0011223344556677", "", "orphan", 1,
         1544712662000000000, 1544712662000000001, SpanStatus.OK, ""),
)  # fmt: skip


def test_spans_json_fixture_decodes_to_the_whole_expected_list() -> None:
    decoded = decode_spans((FIXTURES / "otlp_spans.json").read_bytes())
    assert decoded == DecodedSpans(spans=EXPECTED_SPANS, errors=())


def test_spans_protobuf_request_decodes_to_the_whole_expected_list() -> None:
    request = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=Resource(attributes=[kv("tenant.id", "acme"), kv("service.name", "checkout")]),
                      scope_spans=[ScopeSpans(spans=[
                          PbSpan(trace_id=TRACE, span_id=SPAN, parent_span_id=bytes(8), name="GET /",
                                 kind=PbSpan.SPAN_KIND_SERVER, start_time_unix_nano=T0, end_time_unix_nano=T0 + 9,
                                 status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
                                 attributes=[kv("http.method", "GET")], events=[PbSpan.Event(name="e")]),
                          PbSpan(trace_id=TRACE, span_id=b"\x02" * 8, parent_span_id=SPAN, name="db",
                                 kind=PbSpan.SPAN_KIND_CLIENT, start_time_unix_nano=T0 + 1,
                                 end_time_unix_nano=T0 + 2),
                          PbSpan(trace_id=TRACE[:4], span_id=SPAN, start_time_unix_nano=T0),
                          PbSpan(trace_id=TRACE, span_id=SPAN, name="é", start_time_unix_nano=T0),
                          PbSpan(trace_id=TRACE, span_id=SPAN),
                      ])]),
    ])  # fmt: skip
    data = request.SerializeToString().replace("é".encode(), b"\xff\xfe")
    assert decode_spans(data) == DecodedSpans(
        spans=(
            Span("acme", "checkout", TRACE.hex(), SPAN.hex(), "", "GET /", 2, T0, T0 + 9, SpanStatus.ERROR, "boom"),
            Span("acme", "checkout", TRACE.hex(), "02" * 8, SPAN.hex(), "db", 3, T0 + 1, T0 + 2, SpanStatus.UNSET, ""),
        ),
        errors=(
            DecodeError("bad_trace_id", "traceId has 4 bytes, not 16", 2),
            DecodeError("invalid_utf8", "span name or status message is not valid UTF-8", 3),
            DecodeError("missing_timestamp", "no timestamp: every candidate field is 0", 4),
        ),
    )  # fmt: skip


@pytest.mark.parametrize("encode", [encode_spans_json, encode_spans_proto], ids=["json", "proto"])
def test_spans_round_trip(encode: Any) -> None:
    assert decode_spans(encode(EXPECTED_SPANS)) == DecodedSpans(EXPECTED_SPANS, ())


def test_spans_bad_input_reasons() -> None:
    assert whole("invalid_protobuf", decode_spans(b"\x0a\x05\x01"))
    assert whole("wrong_type", decode_spans(b'{"resourceSpans": {}}'))
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"startTimeUnixNano": str(T0), "traceId": "00"}, "x", {"startTimeUnixNano": str(T0), "kind": "BOGUS"},
        {"startTimeUnixNano": "1"},
    ]}]}]}  # fmt: skip
    assert reasons(decode_spans(json.dumps(doc).encode())) == [
        ("bad_trace_id", 0), ("wrong_type", 1), ("wrong_type", 2), ("absurd_timestamp", 3)
    ]


# --------------------------------------------------------------------------------------------------
# Properties: bad input never raises, and every input record is accounted for.


def strict_count(data: bytes) -> int | None:
    """Log records in ``data`` per the generated class, or None when it does not parse."""
    try:
        request = ExportLogsServiceRequest.FromString(data)
    except Exception:
        return None
    return sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)


def assert_accounted(decoded: Decoded, expected_count: int | None) -> None:
    """Exactly one whole-message error, or every record once (errors with distinct in-range indexes)."""
    assert all(e.reason != "internal_error" for e in decoded.errors), decoded.errors
    if decoded.errors and decoded.errors[0].index == -1:
        assert decoded.records == () and len(decoded.errors) == 1
        assert not expected_count, "a message the generated class reads must not fail as a whole"
        return
    total = len(decoded.records) + len(decoded.errors)
    indexes = [e.index for e in decoded.errors]
    assert len(set(indexes)) == len(indexes) and all(0 <= i < total for i in indexes)
    if expected_count is not None:
        assert total == expected_count


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=300), fmt=st.sampled_from(["auto", "proto", "json"]))
def test_arbitrary_bytes_never_raise(data: bytes, fmt: str) -> None:
    decoded = decode_logs(data, fmt=fmt)
    assert_accounted(decoded, strict_count(data) if fmt == "proto" and data else None)
    spans = decode_spans(data, fmt=fmt)
    assert all(e.reason != "internal_error" for e in spans.errors)


VALID_PROTO = rich_request().SerializeToString()
VALID_JSON = encode_logs_json(decode_logs(VALID_PROTO).records)


@PROPERTY_SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID_PROTO) - 1), st.integers(0, 7)), max_size=4),
       cut=st.integers(0, len(VALID_PROTO)))  # fmt: skip
def test_mutated_protobuf_never_raises_and_accounts_for_every_record(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(VALID_PROTO[:cut] if cut % 3 == 0 else VALID_PROTO)
    for pos, bit in flips:
        if pos < len(data):
            data[pos] ^= 1 << bit
    decoded = decode_logs(bytes(data), fmt="proto")
    assert_accounted(decoded, strict_count(bytes(data)))


@PROPERTY_SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID_JSON) - 1), st.integers(0, 7)), min_size=1, max_size=3))
def test_bit_flipped_json_never_raises_and_accounts_for_every_record(flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID_JSON)
    for pos, bit in flips:
        data[pos] ^= 1 << bit
    decoded = decode_logs(bytes(data))
    assert_accounted(decoded, json_count(bytes(data)))


def json_count(data: bytes) -> int | None:
    """Log records in an OTLP/JSON request, or None when its envelope is not lists of objects."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None

    def items(obj: Any, camel: str, snake: str) -> list[Any] | None:
        if not isinstance(obj, dict):
            return None
        value = obj.get(camel)
        value = obj.get(snake) if value is None else value
        return [] if value is None else value if isinstance(value, list) else None

    groups = items(doc, "resourceLogs", "resource_logs")
    count = 0
    for group in groups or []:
        scoped_list = items(group, "scopeLogs", "scope_logs")
        for scoped in scoped_list or []:
            records = items(scoped, "logRecords", "log_records")
            if records is None:
                return None
            count += len(records)
        if scoped_list is None:
            return None
    return None if groups is None else count


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for pos, value in enumerate(node):
            found += _paths(value, (*path, pos))
    return found


JSON_DOC = orjson.loads(VALID_JSON)
JSON_PATHS = _paths(JSON_DOC)[1:]
SWAPS: list[Any] = [None, True, 0, -1, 1.5, "", "x", "AQID", [], [{}], {}, {"stringValue": 3}, 2**70]


@PROPERTY_SETTINGS
@given(edits=st.lists(st.tuples(st.sampled_from(JSON_PATHS), st.sampled_from(SWAPS)), min_size=1, max_size=3))
def test_json_field_type_swaps_never_raise_and_account_for_every_record(edits: list[tuple[Any, Any]]) -> None:
    doc = orjson.loads(VALID_JSON)
    for path, value in edits:
        node = doc
        try:
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = copy.deepcopy(value)  # SWAPS entries are shared between examples
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed this path
    data = json.dumps(doc).encode()
    decoded = decode_logs(data)
    assert_accounted(decoded, json_count(data))
    count = json_count(data)
    if count is not None:
        assert not (decoded.errors and decoded.errors[0].index == -1)


def test_property_helpers_see_the_valid_payloads_whole() -> None:
    assert strict_count(VALID_PROTO) == json_count(VALID_JSON) == len(rich_expected()) == 8
    assert json_count(b'{"resourceLogs": [{"scopeLogs": [{"logRecords": 5}]}]}') is None
    assert json_count(b'{"resource_logs": [{"scopeLogs": null}, {"scope_logs": [{"logRecords": [1, 2]}]}]}') == 2
