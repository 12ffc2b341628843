"""``logclaw eval``: run the detection engine over labelled streams and report recall, false alarms
per hour, precision, root-cause accuracy and time-to-detect.

Streams: the OpenStack fault-injection development set (``--data``, default ../shared/data/openstack-dev
next to the project) and the scenario library. The engine runs in memory (udfs.engine: the same steps
as the Flink job); ``logclaw replay`` runs the Flink job itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from connectors.files import iter_lines
from connectors.otlp import decode_logs
from udfs import engine, scenarios
from udfs.evaluation import StreamResult, judge_stream, summarize_results

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "openstack-dev"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with labels.json and <test>/roundN.otlp.jsonl.gz"
    )
    parser.add_argument("--only", default="", help="substring filter on stream names")
    parser.add_argument("--json-out", type=Path, default=None, help="write per-stream results and the summary as JSON")
    parser.add_argument("--no-scenarios", action="store_true", help="skip the scenario library")


def run_stream(path: Path) -> tuple[list[dict[str, Any]], int, int]:
    eng = engine.Engine()
    errors = 0
    for line in iter_lines(path):
        decoded = decode_logs(line)
        errors += len(decoded.errors)
        if decoded.records:
            eng.feed(decoded.records)
    eng.finish()
    return eng.events, eng.counters.records, errors


def evaluate_openstack(data: Path, only: str = "", progress: Any = print) -> list[StreamResult]:
    labels = json.loads((data / "labels.json").read_text())["streams"]
    results = []
    for name in sorted(labels):
        if only and only not in name:
            continue
        label = labels[name]
        path = data / label["test"] / f"{label['round']}.otlp.jsonl.gz"
        started = time.perf_counter()
        events, n, errors = run_stream(path)
        result = judge_stream(name, label, events)
        results.append(result)
        progress(
            f"{name:<42} records={n:>6} decode_errors={errors} incidents={result.opened}"
            f" detected={'-' if result.fault_free else result.detected}"
            f" rc={','.join(result.root_causes) or '-'} ({time.perf_counter() - started:.1f}s)"
        )
    return results


def evaluate_scenarios(progress: Any = print) -> list[dict[str, Any]]:
    rows = []
    for name in scenarios.SCENARIOS:
        sc = scenarios.build(name, scale=0.25 if name != "steady" else 1.0)
        events = engine.run(scenarios.requests_of(sc.records, 200), sc.spans)
        for exp in sc.expectations:
            mine = [e for e in events if e["event"] == "opened" and e["tenant"] == exp.tenant]
            ok = exp.min_incidents <= len(mine) <= exp.max_incidents
            rc = mine[0]["root_cause"]["service"] if mine else None
            if exp.root_cause is not None and mine:
                last = [e for e in events if e["incident_id"] == mine[0]["incident_id"] and e["event"] != "resolved"][
                    -1
                ]
                rc = last["root_cause"]["service"]
                ok = ok and rc == exp.root_cause
            rows.append(
                {
                    "scenario": name,
                    "tenant": exp.tenant,
                    "incidents": len(mine),
                    "expected": f"{exp.min_incidents}..{exp.max_incidents}",
                    "root_cause": rc,
                    "expected_root_cause": exp.root_cause,
                    "ok": ok,
                }
            )
            progress(f"scenario {name:<20} tenant={exp.tenant:<8} incidents={len(mine)} root_cause={rc} ok={ok}")
    return rows


def run(args: argparse.Namespace) -> int:
    if not (args.data / "labels.json").is_file():
        print(f"error: {args.data}/labels.json not found (pass --data)", file=sys.stderr)
        return 2
    results = evaluate_openstack(args.data, args.only)
    summary = summarize_results(results)
    print("\nOpenStack dev set:", json.dumps(summary, indent=2))
    scenario_rows = [] if args.no_scenarios else evaluate_scenarios()
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(
            json.dumps(
                {
                    "openstack": {"summary": summary, "streams": [r._asdict() for r in results]},
                    "scenarios": scenario_rows,
                },
                indent=2,
            )
        )
    return 0
