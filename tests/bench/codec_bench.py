"""Benchmark (not a test): OTLP decode throughput of ``connectors.otlp`` in records per second.

Run: ``python -m tests.bench.codec_bench [--records N] [--runs R] [--json-out FILE]``.

Builds realistic requests (100-500 records each, ~95% INFO with short bodies, a few attributes,
a trace id per record), encodes them as protobuf and OTLP/JSON with the codec's own encoders, then
decodes every request ``--runs`` times in this single process and keeps the best run per case.
Two attribute profiles: ``shared`` (attribute values from a small vocabulary, as HTTP access logs
have) and ``unique`` (plus a distinct request id on every record, which defeats attribute reuse).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType

from connectors.otlp import decode_logs, encode_logs_json, encode_logs_proto
from tests.bench.table import Column, print_table
from udfs.records import Level, LogRecord

_BASE_NS = 1_700_000_000_000_000_000
_SERVICES = ("checkout", "payment-api", "order-service", "inventory", "frontend", "email-service")
_ROUTES = tuple(f"/api/v1/{name}" for name in ("items", "cart", "orders", "users", "pay", "ship", "search"))
_LEVELS = ((Level.INFO, "INFO", 95), (Level.WARN, "WARN", 3), (Level.ERROR, "ERROR", 2))


def _record(rng: random.Random, tenant: str, service: str, n: int, unique: bool) -> LogRecord:
    level, text = rng.choices([(lv, tx) for lv, tx, _ in _LEVELS], [w for _, _, w in _LEVELS])[0]
    route, method = rng.choice(_ROUTES), rng.choice(("GET", "GET", "GET", "POST"))
    status = 200 if level == Level.INFO else (429 if level == Level.WARN else 503)
    attrs: dict[str, object] = {"http.request.method": method, "http.route": route,
                                "http.response.status_code": status}  # fmt: skip
    if unique:
        attrs["request.id"] = f"req-{rng.getrandbits(64):016x}"
    return LogRecord(
        tenant=tenant, service=service, service_namespace="shop", time_unix_nano=_BASE_NS + n * 1_000_000,
        observed_time_unix_nano=_BASE_NS + n * 1_000_000 + 5_000, severity_number=int(level), level=level,
        severity_text=text, body=f"{method} {route} {status} in {rng.randint(1, 900)}ms",
        body_truncated=False,
        trace_id=f"{rng.getrandbits(128):032x}", span_id=f"{rng.getrandbits(64):016x}", http_status=status,
        exception_type="", exception_message="", exception_stacktrace="", scope_name="app.http",
        resource_attributes=MappingProxyType({"tenant.id": tenant, "service.name": service,
                                              "service.namespace": "shop"}),
        scope_attributes=MappingProxyType({}), attributes=MappingProxyType(attrs),  # type: ignore[arg-type]
    )  # fmt: skip


def build_requests(total: int, unique: bool, seed: int = 7) -> list[list[LogRecord]]:
    """Requests of 100-500 records, each from one tenant and 1-3 services, ``total`` records in all."""
    rng = random.Random(seed)
    requests: list[list[LogRecord]] = []
    made = 0
    while made < total:
        size = min(rng.randint(100, 500), total - made)
        tenant = rng.choice(("acme", "globex", "initech"))
        services = rng.sample(_SERVICES, rng.randint(1, 3))
        records = [_record(rng, tenant, services[k % len(services)], made + k, unique) for k in range(size)]
        requests.append(sorted(records, key=lambda r: services.index(r.service)))
        made += size
    return requests


def _rates(payloads: Sequence[bytes], fmt: str, runs: int, expect: int) -> tuple[list[float], list[float]]:
    """Records per CPU-second and per wall-second of each run (every payload decoded once per run).

    CPU time of this process is the per-core figure; wall time also counts waiting for a core on a
    shared machine.
    """
    cpu_rates, wall_rates = [], []
    for _ in range(runs):
        cpu, wall = time.process_time(), time.perf_counter()
        count = 0
        for payload in payloads:
            count += len(decode_logs(payload, fmt=fmt).records)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if count != expect:
            raise SystemExit(f"decoded {count} records, expected {expect}")
        cpu_rates.append(count / max(cpu, 1e-9))
        wall_rates.append(count / wall)
    return cpu_rates, wall_rates


def run_bench(total: int, runs: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    encoders: dict[str, Callable[[Sequence[LogRecord]], bytes]] = {
        "proto": encode_logs_proto,
        "json": encode_logs_json,
    }
    for profile in ("shared", "unique"):
        requests = build_requests(total, unique=profile == "unique")
        for fmt, encode in encoders.items():
            payloads = [encode(records) for records in requests]
            cpu_rates, wall_rates = _rates(payloads, fmt, runs, total)
            rows.append({
                "format": fmt, "attributes": profile, "records": total, "requests": len(payloads),
                "mean_bytes_per_record": round(sum(map(len, payloads)) / total, 1),
                "best_records_per_cpu_s": round(max(cpu_rates)),
                "best_records_per_wall_s": round(max(wall_rates)),
                "first_run_records_per_cpu_s": round(cpu_rates[0]),
                "best_cpu_us_per_record": round(1e6 / max(cpu_rates), 3),
            })  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.codec_bench", description=__doc__)
    parser.add_argument("--records", type=int, default=100_000, help="records per case (default 100000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per case; the best is kept (default 5)")
    parser.add_argument("--json-out", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.records < 100 or args.runs < 1:
        parser.error("--records must be >= 100 and --runs >= 1")
    from tests.bench.engine_bench import command, machine

    started = machine()  # load average before the runs
    rows = run_bench(args.records, args.runs)
    print_table([Column("format", 7, "format", left=True), Column("attributes", 11, "attributes", left=True),
                 Column("records", 9, "records"), Column("B/record", 10, "mean_bytes_per_record"),
                 Column("rec/cpu-s", 11, "best_records_per_cpu_s"), Column("rec/wall-s", 12, "best_records_per_wall_s"),
                 Column("1st run rec/cpu-s", 19, "first_run_records_per_cpu_s"),
                 Column("cpu us/rec", 12, "best_cpu_us_per_record")], rows)
    if args.json_out:
        meta = started | {"machine": platform.machine(), "runs": args.runs,
                            "command": command("tests.bench.codec_bench", sys.argv[1:] if argv is None else argv),
                            "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
        with open(args.json_out, "w", encoding="utf-8") as out:
            json.dump({"meta": meta, "results": rows}, out, indent=2)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
