"""Console benchmark (not a test): server time per request of the incident list over 100,000 incidents
and of log searches over 5 million lines in the embedded store.

    python -m tests.bench.console_bench [--incidents 100000] [--logs 5000000] [--repeat 20]
        [--store PATH (kept, reused when it exists)] [--out bench-out/console_bench.json]

The store is filled through ``EmbeddedStore`` (the job's own write path: logs with their bucket
metrics, incident events with the list table), 20 services, one tenant plus a small second one.
Each request goes through the whole ASGI app in process (Starlette's TestClient: routing, the
reader's SQL, Jinja2 rendering); the figure is the wall time of one request, median and p95.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from connectors.logstore import metric_rows
from connectors.store import EmbeddedStore
from udfs.anomaly import BucketAgg, ServiceBatch
from udfs.records import Level, LogRecord

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SERVICES = [f"svc-{i:02d}" for i in range(20)]
WORDS = ("request served", "cache miss for key", "user logged in", "payment accepted", "order shipped",
         "retrying upstream call", "connection reset by peer", "slow query on table orders")


def _record(i: int, rng: random.Random) -> LogRecord:
    error = rng.random() < 0.02
    service = SERVICES[i % len(SERVICES)]
    body = ("redis connection pool exhausted (max=50)" if error and rng.random() < 0.3
            else f"{rng.choice(WORDS)} {rng.randrange(10**6)}")
    return LogRecord(
        tenant="default", service=service, service_namespace="shop", time_unix_nano=(T0_MS + i * 20) * 1_000_000,
        observed_time_unix_nano=0, severity_number=17 if error else 9, level=Level.ERROR if error else Level.INFO,
        severity_text="ERROR" if error else "INFO", body=body, body_truncated=False,
        trace_id=f"{rng.getrandbits(128):032x}", span_id="", http_status=None, exception_type="",
        exception_message="", exception_stacktrace="", scope_name="", resource_attributes={},
        scope_attributes={}, attributes={})


def fill(path: Path, n_logs: int, n_incidents: int) -> None:
    rng = random.Random(7)
    started = time.monotonic()
    with EmbeddedStore(path) as store:
        batch = 2000
        for first in range(0, n_logs, batch):
            records = [_record(i, rng) for i in range(first, min(n_logs, first + batch))]
            buckets: dict[tuple[str, int], list[int]] = {}
            for r in records:
                key = (r.service, r.time_ms - r.time_ms % 10_000)
                counts = buckets.setdefault(key, [0, 0])
                counts[0] += 1
                counts[1] += r.level >= Level.ERROR
            batches = [ServiceBatch("default", s, "shop", (BucketAgg(b, c[0], c[1], 0, (), 0, 0, 0, -1),), (), b)
                       for (s, b), c in buckets.items()]
            store.write_logs(records, metric_rows(batches))
            if first % 500_000 == 0:
                print(f"  logs {first:,} ({time.monotonic() - started:.0f} s)", flush=True)
        events = []
        for i in range(n_incidents):
            events.extend(_incident(i, rng))
            if len(events) >= 3000:
                store.write_incident_events(events)
                events = []
        store.write_incident_events(events)
    print(f"filled {path} in {time.monotonic() - started:.0f} s", flush=True)


def _incident(i: int, rng: random.Random) -> list[dict[str, Any]]:
    from udfs.timefmt import format_time_ms

    opened = T0_MS + i * 1000
    service = rng.choice(SERVICES)
    severity = rng.choice(("critical", "high", "medium", "low"))
    base = {"schema": "logclaw.incident/v1", "incident_id": f"inc-bench{i:012d}", "tenant": "default",
            "fingerprint": f"{service}.error_rate.{i:08x}", "severity": severity, "score": round(rng.random(), 3),
            "path": "windowed", "opened_at": format_time_ms(opened), "service": service,
            "root_cause": {"service": service, "confidence": 0.8, "candidates": [{"service": service, "score": 0.9}],
                           "chain": [service]},
            "affected_services": [rng.choice(SERVICES)], "signals": [{"name": "database", "weight": 0.75}],
            "title": f"[{severity}] {service} — composite score at {i}: database",
            "summary": f"Likely root cause: {service}. First error: redis connection pool exhausted"}
    out = [{**base, "event": "opened", "detected_at": format_time_ms(opened + 10_000), "resolved_at": None}]
    if rng.random() < 0.8:
        out.append({**base, "event": "resolved", "detected_at": format_time_ms(opened + 600_000),
                    "resolved_at": format_time_ms(opened + 590_000)})
    return out


def measure(client: Any, url: str, repeat: int) -> dict[str, Any]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    times.sort()
    return {"url": url, "median_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1), "bytes": len(response.content)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--logs", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from starlette.testclient import TestClient

    from connectors.console_read import open_reader
    from jobs.console.app import build_app

    path = args.store or Path(tempfile.mkdtemp(prefix="console-bench-")) / "store.sqlite"
    if not path.exists():
        fill(path, args.logs, args.incidents)
    reader = open_reader(store=path)
    urls = ["/incidents", "/incidents?severity=critical&state=resolved", "/incidents?q=redis+pool",
            "/incidents?service=svc-07", "/incidents?page=1000", "/logs?q=redis+pool+exhausted",
            "/logs?q=connection+reset&service=svc-03", "/logs?level=ERROR&range=1h", "/logs",
            "/services?range=24h", f"/incidents/inc-bench{args.incidents // 2:012d}"]
    with TestClient(build_app(reader)) as client:
        results = [measure(client, url, args.repeat) for url in urls]
    reader.close()
    size = path.stat().st_size
    print(f"store {path}: {args.incidents:,} incidents, {args.logs:,} log lines, {size / 2**30:.2f} GiB")
    for r in results:
        print(f"{r['median_ms']:>8.1f} ms median {r['p95_ms']:>8.1f} ms p95  {r['url']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": platform.platform(), "incidents": args.incidents,
                                        "logs": args.logs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
