"""Benchmark (not a test): what one ``logclaw ingest`` process takes, over OTLP/HTTP and OTLP/gRPC.

Run: ``python -m tests.bench.ingest_bench [--records 512] [--requests 400] [--clients 4] [--broker]
[--json-out FILE]``.

The receivers (``IngestServer`` and ``GrpcReceiver`` over one intake, as ``logclaw ingest`` runs them) in this
process; ``--clients`` threads send ``--requests`` log requests of ``--records`` records each (the SDK's batch
size by default; protobuf, ~95 % INFO, a trace id per record, 8 resources per tenant), over HTTP with
``http.client`` on kept-alive connections and over gRPC with the generated stub. Without ``--broker`` the
producer only counts (the receiver's own cost: read, decode, stamp, re-encode); with it, messages go to the
local broker (tansu, started here) and each answer waits for its acknowledgement. Reports requests/s and
records/s per transport, and the process's CPU-seconds per 100k records. The clients run in the same
process, so the figures are a lower bound of the receiver alone.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from connectors.ingest import IngestServer
from connectors.ingest.grpc_receiver import GrpcReceiver

KEY = "bench-ingest-key-0123456789"
BASE_NS = 1_700_000_000_000_000_000


class CountingProducer:
    def __init__(self) -> None:
        self.messages = 0
        self._lock = threading.Lock()

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        with self._lock:
            self.messages += 1


def request_bytes(records: int, instance: int) -> bytes:
    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    resource = Resource(attributes=[kv("service.name", "checkout"), kv("service.instance.id", f"pod-{instance}")])
    items = [LogRecord(time_unix_nano=time.time_ns() - 1_000_000_000 + i, severity_number=9 if i % 20 else 17,
                       severity_text="INFO" if i % 20 else "ERROR", trace_id=i.to_bytes(16, "big"),
                       body=AnyValue(string_value=f"GET /api/v1/cart/{i % 97} 200 in {i % 13} ms"),
                       attributes=[kv("http.route", "/api/v1/cart"), kv("http.request.method", "GET")])
             for i in range(records)]
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(resource=resource, scope_logs=[
        ScopeLogs(log_records=items)])]).SerializeToString()


def run_clients(clients: int, requests: int, send: Any) -> float:
    """Wall seconds for ``clients`` threads to send ``requests`` in all with ``send(client, n)``."""
    per_client = [requests // clients + (1 if c < requests % clients else 0) for c in range(clients)]
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            for n in range(per_client[c]):
                send(c, n)
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def measure(records: int, requests: int, clients: int, producer: Any) -> dict[str, Any]:
    server = IngestServer(("127.0.0.1", 0), keys={KEY: "bench"}, producer=producer, max_inflight=32)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    serving.start()
    receiver = GrpcReceiver(server.intake, "127.0.0.1", 0)
    receiver.start()
    bodies = [request_bytes(records, i) for i in range(8)]
    port = int(server.server_address[1])
    import grpc

    results: dict[str, Any] = {}
    try:
        connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(clients)]

        def http_send(c: int, n: int) -> None:
            connections[c].request("POST", "/v1/logs", body=bodies[n % len(bodies)],
                                   headers={"Content-Type": "application/x-protobuf", "x-logclaw-api-key": KEY})
            response = connections[c].getresponse()
            response.read()
            assert response.status == 200, response.status

        channels = [grpc.insecure_channel(receiver.address) for _ in range(clients)]
        stubs = [LogsServiceStub(ch) for ch in channels]  # type: ignore[no-untyped-call]
        parsed = [ExportLogsServiceRequest.FromString(b) for b in bodies]

        def grpc_send(c: int, n: int) -> None:
            stubs[c].Export(parsed[n % len(parsed)], metadata=[("x-logclaw-api-key", KEY)], timeout=30)

        for name, send in (("http", http_send), ("grpc", grpc_send)):
            send(0, 0)  # warm up: connection, first decode
            cpu = time.process_time()
            wall = run_clients(clients, requests, send)
            cpu = time.process_time() - cpu
            results[name] = {"requests_per_s": round(requests / wall, 1),
                             "records_per_s": round(requests * records / wall),
                             "cpu_s_per_100k_records": round(cpu / (requests * records) * 100_000, 3),
                             "wall_s": round(wall, 2)}
        for conn in connections:
            conn.close()
        for ch in channels:
            ch.close()
    finally:
        receiver.stop(1.0)
        server.shutdown()
        server.server_close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ingest_bench", description=__doc__)
    parser.add_argument("--records", type=int, default=512, help="records per request (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=400, help="requests per transport (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default: %(default)s)")
    parser.add_argument("--broker", action="store_true", help="produce to the local broker (tansu) and wait for acks")
    parser.add_argument("--json-out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    if args.broker:
        from connectors.broker import LocalBroker
        from connectors.ingest import KafkaLogsProducer

        with LocalBroker() as broker:
            broker.create_topics(["bench-ingest-logs"], partitions=2)
            kafka = KafkaLogsProducer(broker.bootstrap, "bench-ingest-logs")
            results = measure(args.records, args.requests, args.clients, kafka)
            kafka.close()
    else:
        results = measure(args.records, args.requests, args.clients, CountingProducer())
    figures = {"records_per_request": args.records, "requests": args.requests, "clients": args.clients,
               "broker": args.broker, "load_average_before": list(load), "transports": results,
               "machine": platform.processor() or platform.machine()}
    for name, row in results.items():
        print(f"{name:>4}: {row['requests_per_s']:>8} requests/s  {row['records_per_s']:>9} records/s  "
              f"{row['cpu_s_per_100k_records']} CPU-s per 100k records")
    print(f"(load average before: {' '.join(f'{x:.2f}' for x in load)}; clients in the same process)")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
