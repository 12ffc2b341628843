"""Small requests that would cost the ingest far more than their size: gzip members, empty records,
resources repeated on re-encoding. Each is bounded: linear work, a record cap, a message-size cap.
"""

from __future__ import annotations

import gzip
import json
import time

import pytest
from google.rpc import code_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PbLogRecord
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from connectors.ingest import DEFAULT_MAX_RECORDS, inflate
from tests.ingest_fixtures import JS, T0, headers, kv, serve, status_of

EMPTY_MEMBER = gzip.compress(b"", mtime=0)  # 20 bytes that inflate to nothing


def test_many_empty_gzip_members_inflate_in_linear_time() -> None:
    bomb = EMPTY_MEMBER * (2 * 1024 * 1024 // len(EMPTY_MEMBER))  # 104 857 members in 2 MiB
    started = time.thread_time()
    assert inflate(bomb, "gzip", 4 * 1024 * 1024) == b""
    took = time.thread_time() - started
    assert took < 1.0, f"{took:.2f} CPU-s"  # measured: 5.7 CPU-s before (quadratic), ~0.2 after


def test_concatenated_gzip_members_are_all_read_whatever_their_sizes() -> None:
    parts = [b"", b"a", b"x" * 200_000, b"", bytes(range(256)) * 1000, b"end"]
    data = b"".join(gzip.compress(p, mtime=0) for p in parts)
    assert inflate(data, "gzip", 10**6) == b"".join(parts)
    with pytest.raises(OverflowError):
        inflate(data, "gzip", len(b"".join(parts)) - 1)


def empty_records_request(count: int) -> bytes:
    records = [PbLogRecord() for _ in range(count)]
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
                                    ).SerializeToString()


@pytest.mark.parametrize("content_type", ["proto", "json"])
def test_a_request_with_more_records_than_the_cap_is_413_before_decoding(content_type: str) -> None:
    count = 524_280  # 1 MiB of empty protobuf records: 10 CPU-s and 349 MiB to decode before the cap
    if content_type == "proto":
        body, kind = empty_records_request(count), "application/x-protobuf"
    else:
        body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{}] * count}]}]}).encode()
        kind = JS
    with serve(max_body_bytes=4 * 1024 * 1024) as running:
        started = time.monotonic()
        status, _, answer = running.post(body, headers(kind))
        took = time.monotonic() - started
        assert (status, status_of(answer, kind)) == (413, (
            code_pb2.RESOURCE_EXHAUSTED,
            f"the request has {count} log records; the limit is {DEFAULT_MAX_RECORDS} per request: "
            "send smaller batches"))
        assert running.producer.sent == []
        assert took < 2.0, f"{took:.2f} s"
        at_cap = empty_records_request(DEFAULT_MAX_RECORDS)
        assert running.post(at_cap, headers())[0] == 200  # records without a time get the receive time


def test_a_request_whose_re_encoding_exceeds_the_message_limit_is_413() -> None:
    """One big resource over many scopes: the re-encoding repeats the resource once per scope."""
    resource = Resource(attributes=[kv("service.name", "checkout"), kv("blob", "r" * 4000)])
    scopes = [ScopeLogs(scope=InstrumentationScope(name=f"scope-{i}"),
                        log_records=[PbLogRecord(time_unix_nano=T0, severity_text="INFO")]) for i in range(40)]
    body = ExportLogsServiceRequest(resource_logs=[ResourceLogs(resource=resource, scope_logs=scopes)]
                                    ).SerializeToString()
    with serve(max_body_bytes=64 * 1024, max_message_bytes=96 * 1024) as running:
        assert len(body) < 8 * 1024
        status, _, answer = running.post(body, headers())
        code, message = status_of(answer)
        assert (status, code, running.producer.sent) == (413, code_pb2.RESOURCE_EXHAUSTED, [])
        assert message.startswith("the request re-encoded for the logs topic exceeds 98304 bytes (40 resource/scope"
                                  " groups repeat their attributes): send smaller batches")
        assert running.post(ExportLogsServiceRequest(resource_logs=[ResourceLogs(
            resource=resource, scope_logs=scopes[:10])]).SerializeToString(), headers())[0] == 200
