"""Ticketing worker throughput (not a test): incident events/s through the real worker, ledger and
the local ``file`` destination, with the RCA deterministic or from litellm's ``mock_response``.

    python -m tests.bench.ticketing_bench [--incidents 200] [--out bench-out/ticketing_bench.json]

Each incident is three events (opened, updated, resolved); a second pass replays them all (every
event is then a ledger duplicate). Times are wall-clock processing time on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from connectors.ledger import TicketLedger
from connectors.llm import LlmModel, LlmRca
from connectors.tickets.file import FileClient
from jobs.ticketing import DeadLetter, Metrics, TicketingWorker
from tests.bench.table import Column, print_table
from udfs.routing import RoutingConfig

ANSWER = json.dumps({"root_cause": "connection pool exhausted in checkout", "impact": "payments fail",
                     "affected_services": ["checkout", "payment-api"],
                     "suggested_fix": "close connections in a finally block", "confidence": 0.8})


def events(n: int) -> list[str]:
    out = []
    for i in range(n):
        base = {
            "schema": "logclaw.incident/v1", "incident_id": f"inc-{i:08d}", "tenant": f"t{i % 3}",
            "fingerprint": f"fp-{i}", "severity": "critical", "score": 0.9, "path": "windowed",
            "opened_at": "2024-05-01T03:47:00.000Z", "service": "payment-api",
            "root_cause": {"service": "checkout", "confidence": 0.8, "chain": ["checkout", "payment-api"],
                           "candidates": [{"service": "checkout", "score": 0.8, "reasons": ["started first"]}]},
            "affected_services": ["payment-api", "order-service"],
            "signals": [{"name": "database", "weight": 0.75, "detail": "connection pool"}],
            "title": f"[critical] payment-api #{i}",
        }
        for kind, at in (("opened", "03:47:30"), ("updated", "03:49:00"), ("resolved", "03:59:00")):
            out.append(json.dumps({**base, "event": kind, "detected_at": f"2024-05-01T{at}.000Z"}))
    return out


def run(mode: str, n: int, root: Path) -> dict[str, Any]:
    routing = RoutingConfig.parse({"default": {"critical": ["file"]},
                                   "destinations": {"file": {"type": "file", "dir": str(root / "tickets")}}})
    llm = None
    if mode == "llm-mock":
        llm = LlmRca([LlmModel("gpt-4o-mini", extra={"mock_response": ANSWER})])
    ledger = TicketLedger(root / "ledger.sqlite", owner="bench")
    worker = TicketingWorker(routing, {"file": FileClient("file", root / "tickets")}, ledger,
                             DeadLetter(root / "dlq.jsonl"), llm=llm, metrics=Metrics())
    lines = events(n)
    result: dict[str, Any] = {"mode": mode, "incidents": n, "events": len(lines)}
    for phase in ("first", "replay"):
        start = time.perf_counter()
        for raw in lines:
            worker.handle(raw)
        seconds = time.perf_counter() - start
        result[f"{phase}_s"] = round(seconds, 3)
        result[f"{phase}_events_per_s"] = round(len(lines) / seconds, 1)
        result[f"{phase}_incidents_per_s"] = round(n / seconds, 1)
    result["counts"] = {f"{d}.{k}": v for (d, k), v in sorted(worker.metrics.counts.items())}
    ledger.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--out", default="bench-out/ticketing_bench.json")
    args = parser.parse_args()
    results = []
    for mode in ("deterministic", "llm-mock"):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run(mode, args.incidents, Path(tmp)))
    print_table([Column("mode", 14, "mode", left=True), Column("incidents", 10, "incidents"),
                 Column("events", 8, "events"), Column("first inc/s", 13, "first_incidents_per_s"),
                 Column("first ev/s", 12, "first_events_per_s"), Column("replay ev/s", 13, "replay_events_per_s")],
                results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"python": platform.python_version(), "machine": platform.machine(),
                               "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
