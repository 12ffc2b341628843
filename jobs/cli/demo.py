"""``logclaw demo`` (``make demo``): the whole product on a laptop with no servers.

Generates the seed cascade (redis pool exhausted in checkout -> payment-api -> order-service ->
notification-service) as OTLP/JSON lines, runs the real detection job on the local Flink MiniCluster
(the same graph as production, reading files instead of Kafka), keeps logs and incidents in the
embedded store, then lets the ticketing worker file Markdown tickets into a folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from connectors.otlp import encode_logs_json, encode_spans_json
from connectors.simulate_io import write_jsonl
from jobs.cli import positive_float
from jobs.cli.replay import describe, replay, write_incidents
from jobs.config import ConfigError, JobConfig
from udfs.scenarios import library as scenarios


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    parser.add_argument("--scenario", default="cascade", choices=sorted(scenarios.SCENARIOS))
    parser.add_argument("--scale", type=positive_float, default=0.25, help="background length factor (default 0.25)")


def _generate(name: str, scale: float, out: Path) -> tuple[Path, Path | None, int]:
    sc = scenarios.build(name, scale=scale)
    logs = out / f"{name}.otlp.jsonl.gz"
    messages = scenarios.requests_of(sc.records, 200)
    write_jsonl(logs, (encode_logs_json(m) for m in messages))
    spans = None
    if sc.spans:
        spans = out / f"{name}.spans.otlp.jsonl.gz"
        write_jsonl(spans, (encode_spans_json(m) for m in scenarios.span_requests_of(sc.spans, 200)))
    print(
        f"demo: generated '{name}': {len(sc.records)} log records in {len(messages)} messages"
        f"{f', {len(sc.spans)} spans' if sc.spans else ''} -> {logs}",
        flush=True,
    )
    return logs, spans, len(messages)


def _tickets(out: Path, incidents: Path) -> int:
    from jobs.ticketing import build_worker, run_once
    from jobs.ticketing_config import TicketingConfig

    cfg = TicketingConfig(data_dir=str(out))
    worker, ledger = build_worker(cfg)
    try:
        run_once(worker, incidents, 3)
    finally:
        ledger.close()
    tickets = sorted(Path(cfg.tickets_dir).rglob("*.md"))
    print(worker.metrics.table())
    for t in tickets:
        print(f"demo: ticket {t}")
    if tickets:
        print("\n" + "\n".join(tickets[0].read_text(encoding="utf-8").splitlines()[:40]))
    return 1 if worker.metrics.failed() else 0


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("incidents.jsonl", "dead-letter.jsonl", "store.sqlite", "tickets-ledger.sqlite"):
        (out / stale).unlink(missing_ok=True)
    shutil.rmtree(out / "tickets", ignore_errors=True)  # a fresh run files fresh tickets
    logs, spans, n = _generate(args.scenario, args.scale, out)
    try:
        cfg = JobConfig.from_env(
            mode="files", log_files=(str(logs),), trace_files=(str(spans),) if spans else (), out_dir=str(out)
        )
    except ConfigError as exc:  # a bad LOGCLAW_* value: one line naming it
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    print("demo: running the detection job on the local Flink MiniCluster (first start takes ~10 s)", flush=True)
    events = replay(
        cfg, n, on_event=lambda e: print("  " + describe(e), flush=True), progress=lambda s: print(s, flush=True)
    )
    write_incidents(events, out / "incidents.jsonl")
    opened = [e for e in events if e["event"] == "opened"]
    print(f"\ndemo: {len(opened)} incident(s) -> {out / 'incidents.jsonl'}; store {cfg.resolved_store_path}")
    for inc in opened:
        last = [e for e in events if e["incident_id"] == inc["incident_id"] and e["event"] != "resolved"][-1]
        print(f"  {last['title']}\n  {last['summary']}")
    code = _tickets(out, out / "incidents.jsonl")
    print(f"\ndemo: done in {time.monotonic() - started:.0f}s")
    print(f"\nopen the console on this store:\n  .venv/bin/logclaw ui --store {cfg.resolved_store_path}")
    return code
