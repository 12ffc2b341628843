"""Set-up shared by the ingest tests (``tests/test_otlp_http_ingest.py``, ``test_ingest_*.py``): the real
OTLP/HTTP server on a loopback port with recording producers and a fixed clock, OTLP requests built with
the generated opentelemetry-proto classes or as OTLP/JSON, the official SDK exporter, and ``logclaw ingest``
as a subprocess.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_ERROR, SEVERITY_NUMBER_INFO, ResourceLogs, ScopeLogs
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PbLogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from connectors.ingest import API_KEY_HEADER, IngestServer, ProduceError
from connectors.otlp import decode_logs
from udfs.records import LogRecord

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
NOW = T0 + 90_000_000_000  # the server's clock in these tests
KEYS = {"key-acme-1-0123456789": "acme", "key-globex-2-0123456789": "globex"}
PB, JS = "application/x-protobuf", "application/json"


# --- the server and its fake producer ------------------------------------------------------------------------


class RecordingProducer:
    """Keeps every (key, value, timestamp_ms); raises ``fail`` instead when it is set."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, int]] = []
        self.fail: ProduceError | None = None

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((key, value, timestamp_ms))


class Running:
    def __init__(self, server: IngestServer, producer: RecordingProducer, spans: RecordingProducer) -> None:
        self.server, self.producer, self.spans = server, producer, spans
        self.port = int(server.server_address[1])

    def post(self, body: bytes, headers: Mapping[str, str], path: str = "/v1/logs",
             method: str = "POST") -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@contextmanager
def serve(**options: Any) -> Iterator[Running]:
    """The real server on a loopback port with recording producers (logs, spans); ``options`` go to
    ``IngestServer``."""
    producer, spans = RecordingProducer(), RecordingProducer()
    server = IngestServer(("127.0.0.1", 0), keys=KEYS, producer=producer, spans_producer=spans,
                          **{"max_body_bytes": 64 * 1024, "retry_after_s": 7, "clock_ns": lambda: NOW, **options})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Running(server, producer, spans)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def headers(content_type: str = PB, key: str | None = "key-acme-1-0123456789", **extra: str) -> dict[str, str]:
    out = {"Content-Type": content_type, **extra}
    if key is not None:
        out[API_KEY_HEADER] = key
    return out


# --- requests -------------------------------------------------------------------------------------------------


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def pb_request(tenant: str | None) -> ExportLogsServiceRequest:
    """Two resources of one service on two hosts (the client claims ``tenant``), three records."""

    def resource(host: str) -> Resource:
        attrs = [kv("service.name", "checkout"), kv("host.name", host)]
        if tenant is not None:
            attrs.insert(0, kv("tenant.id", tenant))
        return Resource(attributes=attrs)

    scope = InstrumentationScope(name="jvm", attributes=[kv("lib", "logback")])
    oom = PbLogRecord(time_unix_nano=T0 + 2_000_000_000, severity_number=SEVERITY_NUMBER_ERROR, severity_text="ERROR",
                      body=AnyValue(string_value="java.lang.OutOfMemoryError: Java heap space"),
                      attributes=[kv("exception.type", "java.lang.OutOfMemoryError")],
                      trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)))
    info = PbLogRecord(time_unix_nano=T0 + 1_000_000_000, observed_time_unix_nano=T0 + 1_500_000_000,
                       severity_number=SEVERITY_NUMBER_INFO, body=AnyValue(string_value="GET /cart 200"))
    late = PbLogRecord(time_unix_nano=T0 + 5_000_000_000, severity_text="WARN",
                       body=AnyValue(string_value="slow GC"))
    return ExportLogsServiceRequest(resource_logs=[
        ResourceLogs(resource=resource("a"), scope_logs=[ScopeLogs(scope=scope, log_records=[oom, info])]),
        ResourceLogs(resource=resource("b"), scope_logs=[ScopeLogs(scope=scope, log_records=[late])]),
    ])


def json_request(tenant: str | None, records: list[dict[str, Any]]) -> dict[str, Any]:
    attrs = [{"key": "service.name", "value": {"stringValue": "payments"}}]
    if tenant is not None:
        attrs.append({"key": "tenant.id", "value": {"stringValue": tenant}})
    return {"resourceLogs": [{"resource": {"attributes": attrs},
                              "scopeLogs": [{"scope": {"name": "app"}, "logRecords": records}]}]}


def record(ns: int | None, body: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"severityNumber": 17, "body": {"stringValue": body}, **extra}
    if ns is not None:
        out["timeUnixNano"] = str(ns)
    return out


def produced_records(running: Running) -> list[LogRecord]:
    assert len(running.producer.sent) == 1
    decoded = decode_logs(running.producer.sent[0][1], fmt="proto")
    assert decoded.errors == ()
    return list(decoded.records)


def honest(request_bytes: bytes, fmt: str = "proto") -> list[LogRecord]:
    """What the job would decode had the client sent the right tenant itself."""
    decoded = decode_logs(request_bytes, fmt=fmt)
    assert decoded.errors == ()
    return list(decoded.records)


def status_of(body: bytes, content_type: str = PB) -> tuple[int, str]:
    status = status_pb2.Status()
    if content_type == JS:
        got = json.loads(body)
        return got.get("code", 0), got["message"]
    status.ParseFromString(body)
    return status.code, status.message


# --- the official SDK exporter against the endpoint -----------------------------------------------------------


def sdk_provider(endpoint: str, key: str, service: str, tenant_claim: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource as SdkResource

    provider = LoggerProvider(resource=SdkResource.create({"service.name": service, "tenant.id": tenant_claim}))
    exporter = OTLPLogExporter(endpoint=endpoint, headers={API_KEY_HEADER: key}, compression=Compression.Gzip,
                               timeout=10)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=100))
    return provider


def emit_oom_burst(provider: Any, count: int, base_ns: int) -> None:
    from opentelemetry._logs import SeverityNumber

    logger = provider.get_logger("com.shop.jvm")
    for i in range(count):
        logger.emit(timestamp=base_ns + i * 100_000_000, severity_number=SeverityNumber.ERROR, severity_text="ERROR",
                    body="java.lang.OutOfMemoryError: Java heap space",
                    attributes={"exception.type": "java.lang.OutOfMemoryError", "thread.name": f"worker-{i}"})


# --- logclaw ingest as a subprocess ---------------------------------------------------------------------------


@contextmanager
def ingest_process(args: Sequence[str], out: Path, ready: str, *, err: Path | None = None,
                   timeout_s: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """``logclaw ingest ARGS`` (``PYFLINK_*`` dropped from its environment), stdout (and stderr unless
    ``err``) into ``out``, until ``ready`` is in its output (asserted, within ``timeout_s`` wall clock);
    SIGTERM on exit, SIGKILL to its group if it has not ended 30 s later. Its exit code is
    ``proc.returncode`` after the block."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYFLINK_")} | {"PYTHONPATH": str(ROOT)}
    with out.open("wb") as stdout, (err or out).open("ab") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "ingest", *args], cwd=ROOT, stdout=stdout,
                                stderr=subprocess.STDOUT if err is None else stderr, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while ready not in out.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready in out.read_text(), out.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
