"""``logclaw simulate``: generate a named scenario as OTLP/JSON lines or produce it to Kafka.

Each output message is one ``ExportLogsServiceRequest`` of at most ``--per-message`` records of one
(tenant, service) within 1 s of event time (``udfs.scenarios.library.requests_of``), as a Collector batches.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from udfs.scenarios.library import (
    DEFAULT_BASE_MS,
    SCENARIOS,
    Expectation,
    Scenario,
    build,
    requests_of,
    span_requests_of,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", metavar="NAME", help=f"one of: {', '.join(SCENARIOS)}")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--out", metavar="FILE", help="write OTLP/JSON lines (gzip when FILE ends in .gz)")
    parser.add_argument("--spans-out", metavar="FILE", help="write the scenario's spans as OTLP/JSON lines")
    parser.add_argument("--per-message", type=int, default=200, metavar="N", help="records per message")
    parser.add_argument("--format", choices=("json", "proto"), default="json",
                        help="Kafka message encoding (files are always OTLP/JSON)")
    parser.add_argument("--kafka", metavar="BOOTSTRAP", help="produce to this Kafka bootstrap server list")
    parser.add_argument("--topic", default="otlp_logs", help="Kafka topic (default: otlp_logs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="shorten (<1) or lengthen (>1) the background phases; fault shapes keep size")
    parser.add_argument("--base-time", default=None, metavar="TIME",
                        help="event time of the scenario start: RFC 3339 or Unix ms "
                        "(default 2026-01-01T00:00:00Z)")


def parse_base_time(text: str | None) -> int:
    """RFC 3339 (with an offset or Z) or Unix milliseconds -> Unix milliseconds."""
    if text is None:
        return DEFAULT_BASE_MS
    if text.strip().lstrip("-").isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if parsed.tzinfo is None:
        raise ValueError(f"--base-time {text!r} has no UTC offset (RFC 3339 needs 'Z' or '+hh:mm')")
    return int(parsed.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(expectation: Expectation) -> str:
    parts = [f"{expectation.tenant}: {expectation.min_incidents}..{expectation.max_incidents} incident(s)"]
    if expectation.root_cause:
        parts.append(f"root {expectation.root_cause}")
    if expectation.affected:
        parts.append(f"affected {','.join(sorted(expectation.affected))}")
    if expectation.fault_start_ms is not None:
        within = expectation.detect_within_ms
        parts.append(f"fault {_iso(expectation.fault_start_ms)}"
                     + (f" detect<={within / 1000:g}s" if within is not None else ""))
    if expectation.immediate:
        parts.append("immediate")
    return " ".join(parts)


def summary(scenario: Scenario, messages: int) -> str:
    first, last = scenario.records[0].time_ms, scenario.records[-1].time_ms
    expect = "; ".join(describe(e) for e in scenario.expectations)
    return (f"{scenario.name}: {len(scenario.records)} records, {len(scenario.spans)} spans, "
            f"{messages} messages, {_iso(first)} .. {_iso(last)} ({(last - first) / 1000:.0f} s); "
            f"expect {expect}")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, builder in SCENARIOS.items():
            print(f"{name:20} {(builder.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if not args.scenario or not (args.out or args.kafka or args.spans_out):
        print("simulate: need --scenario NAME and at least one of --out, --spans-out, --kafka "
              "(or --list)", file=sys.stderr)
        return 2
    if args.format == "proto" and not args.kafka:
        print("simulate: --format proto applies to --kafka only (files are OTLP/JSON)", file=sys.stderr)
        return 2
    try:
        base_ms = parse_base_time(args.base_time)
        scenario = build(args.scenario, seed=args.seed, base_ms=base_ms, scale=args.scale)
        # SASL/TLS from LOGCLAW_KAFKA_* (a ConfigError is a ValueError); --kafka names the servers
        if args.kafka:
            from jobs.settings import kafka_client_config  # pydantic: only when producing

            security = kafka_client_config(os.environ)
    except (KeyError, ValueError) as exc:
        print(f"simulate: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    from connectors import otlp, simulate_io  # the codec is heavy-ish; --list and --help stay fast

    batches = requests_of(scenario.records, args.per_message)
    if args.out:
        simulate_io.write_jsonl(args.out, (otlp.encode_logs_json(b) for b in batches))
    if args.spans_out:
        span_batches = span_requests_of(scenario.spans, args.per_message)
        simulate_io.write_jsonl(args.spans_out, (otlp.encode_spans_json(b) for b in span_batches))
    print(summary(scenario, len(batches)))
    if args.kafka:
        encode = otlp.encode_logs_proto if args.format == "proto" else otlp.encode_logs_json
        messages = (
            simulate_io.KafkaMessage(f"{b[0].tenant}/{b[0].service}".encode(), encode(b), b[0].time_ms)
            for b in batches
        )
        produced = simulate_io.produce_messages(args.kafka, args.topic, messages, client_config=security)
        print(f"produced {produced} {args.format} messages to {args.topic} at {args.kafka}")
    return 0
