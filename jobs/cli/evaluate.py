"""``logclaw eval``: run the detection engine and the baselines over labelled streams and report
recall, false alarms per hour, precision, root-cause accuracy and time-to-detect.

Streams: the OpenStack fault-injection development set (``--data``, default ../shared/data/openstack-dev
next to the project) and the scenario library (one labelled stream per scenario tenant, see
``udfs.evaluation.metrics.scenario_labels``). The engine runs in memory (udfs.engine: the same steps as the
Flink job); ``logclaw replay`` runs the Flink job itself. The baselines (``udfs.evaluation.baselines``) see the
same decoded records, so every engine number has a naive number beside it.

An OpenStack stream whose label lists a ``traces_file`` is judged on logs + spans (the spans fed before the
logs, as ``udfs.engine.run`` does); the engine also runs on its logs alone, and each such stream's line says
whether the spans changed anything, with the logs-only summary printed beside the reported one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.files import iter_lines
from connectors.otlp import decode_logs, decode_spans
from udfs import engine
from udfs.evaluation.baselines import BASELINES
from udfs.evaluation.metrics import (
    StreamResult,
    compare,
    events_of_tenant,
    incidents_per_case,
    judge_stream,
    scenario_labels,
    summarize_results,
)
from udfs.records import Level, LogRecord, Span
from udfs.scenarios import library as scenarios

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "openstack-dev"
DETECTORS = ("engine", *BASELINES)
LOGS_ONLY = "engine_logs_only"
"""The engine on the OpenStack logs alone (streams with spans are judged on logs + spans)."""
SCENARIO_SCALE = 0.25
"""Background phases of the fault scenarios at 1/4 (fault shapes never scale); "steady" runs 1 h."""

Progress = Callable[[str], object]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with labels.json and <test>/roundN.otlp.jsonl.gz"
    )
    parser.add_argument("--only", default="", help="substring filter on stream names")
    parser.add_argument("--json-out", type=Path, default=None, help="write per-stream results and the summary as JSON")
    parser.add_argument("--no-scenarios", action="store_true", help="skip the scenario library")


@dataclass
class StreamRun:
    """One stream through every detector: events per detector, record and decode-error counts."""

    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    records: int = 0
    decode_errors: int = 0
    engine_s: float = 0.0
    alarm_times_ms: list[int] = field(default_factory=list)
    """Event times of the error lines (ERROR and above, WARNING with a stack trace)."""
    spans: int = 0
    span_decode_errors: int = 0
    logs_only: list[dict[str, Any]] | None = None
    """The engine's events on the logs alone (streams with spans, when asked to compare)."""


def run_baselines(error_records: Sequence[LogRecord], into: StreamRun) -> None:
    for name, detect in BASELINES.items():
        into.events[name] = detect(error_records)


def read_spans(path: Path) -> tuple[list[Span], int]:
    """Every span of an OTLP/JSON-lines traces file, and how many could not be decoded."""
    spans: list[Span] = []
    errors = 0
    for line in iter_lines(path):
        decoded = decode_spans(line)
        spans.extend(decoded.spans)
        errors += len(decoded.errors)
    return spans, errors


def run_stream(path: Path, traces: Path | None = None, compare: bool = False) -> StreamRun:
    """Decode an OTLP/JSON-lines file once; feed the engine message by message (arrival order) and
    give the baselines the records at level >= ERROR (the only ones they look at). With ``traces``
    the engine gets that file's spans first (as ``udfs.engine.run``: the call graph known before the
    logs); ``compare`` also runs the engine on the logs alone (``StreamRun.logs_only``)."""
    eng = engine.Engine()
    run = StreamRun()
    spans, run.span_decode_errors = read_spans(traces) if traces is not None else ([], 0)
    run.spans = len(spans)
    alone = engine.Engine() if spans and compare else None
    if spans:
        started = time.process_time()
        eng.feed_spans(spans)
        run.engine_s += time.process_time() - started
    errors: list[LogRecord] = []
    for line in iter_lines(path):
        decoded = decode_logs(line)
        run.decode_errors += len(decoded.errors)
        if decoded.records:
            started = time.process_time()
            eng.feed(decoded.records)
            run.engine_s += time.process_time() - started
            if alone is not None:
                alone.feed(decoded.records)
            errors.extend(r for r in decoded.records if r.level >= Level.ERROR)
            run.alarm_times_ms.extend(
                r.time_unix_nano // 1_000_000
                for r in decoded.records
                if r.level >= Level.ERROR or (r.level >= Level.WARN and r.exception_stacktrace)
            )
    started = time.process_time()
    eng.finish()
    run.engine_s += time.process_time() - started
    run.events["engine"] = eng.events
    run.records = eng.counters.records
    if alone is not None:
        alone.finish()
        run.logs_only = alone.events
    run_baselines(errors, run)
    return run


def _opened(events: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for e in events if e["event"] == "opened")


def spans_effect(with_spans: StreamResult, logs_only: StreamResult, same_events: bool) -> str:
    """What the spans changed in one stream's engine result, in a few words."""
    if same_events:
        return "no change"
    moved = [
        f"{what} {a}->{b}"
        for what, a, b in (
            ("incidents", logs_only.opened, with_spans.opened),
            ("detected", logs_only.detected, with_spans.detected),
            ("rc", ",".join(logs_only.root_causes) or "-", ",".join(with_spans.root_causes) or "-"),
        )
        if a != b
    ]
    return ", ".join(moved) or "same incidents, other events (span signals)"


def evaluate_openstack(data: Path, only: str = "", progress: Progress = print) -> dict[str, list[StreamResult]]:
    """Detector name -> one StreamResult per OpenStack stream (sorted by stream name). Streams with a
    ``traces_file`` are judged on logs + spans; ``engine_logs_only`` holds the engine on logs alone."""
    labels = json.loads((data / "labels.json").read_text())["streams"]
    results: dict[str, list[StreamResult]] = {d: [] for d in (*DETECTORS, LOGS_ONLY)}
    for name in sorted(labels):
        if only and only not in name:
            continue
        label = labels[name]
        path = data / label["test"] / f"{label['round']}.otlp.jsonl.gz"
        traces = data / label["traces_file"] if label.get("traces_file") else None
        run = run_stream(path, traces, compare=True)
        for det in DETECTORS:
            results[det].append(judge_stream(name, label, run.events[det], run.alarm_times_ms))
        eng = results["engine"][-1]
        alone = eng
        effect = "-"
        if run.logs_only is not None:
            alone = judge_stream(name, label, run.logs_only, run.alarm_times_ms)
            effect = spans_effect(eng, alone, run.logs_only == run.events["engine"])
        results[LOGS_ONLY].append(alone)
        others = " ".join(f"{d}={_opened(run.events[d])}" for d in BASELINES)
        spans = f" spans={run.spans} span_errors={run.span_decode_errors} spans_changed={effect}" if traces else ""
        progress(
            f"{name:<42} records={run.records:>6} decode_errors={run.decode_errors} incidents={eng.opened}"
            f" detected={'-' if eng.fault_free else eng.detected} rc={','.join(eng.root_causes) or '-'}"
            f" error_lines={'-' if eng.fault_free else eng.error_lines}"
            f" engine={run.engine_s:.1f}s{spans} | baselines opened: {others}"
        )
    return results


def _scenario_row(name: str, exp: scenarios.Expectation, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The scenario's own pass/fail check (its expectation), for the engine."""
    mine = [e for e in events if e["event"] == "opened" and e["tenant"] == exp.tenant]
    ok = exp.min_incidents <= len(mine) <= exp.max_incidents
    rc = mine[0]["root_cause"]["service"] if mine else None
    if exp.root_cause is not None and mine:
        last = [e for e in events if e["incident_id"] == mine[0]["incident_id"] and e["event"] != "resolved"][-1]
        rc = last["root_cause"]["service"]
        ok = ok and rc == exp.root_cause
    return {
        "scenario": name,
        "tenant": exp.tenant,
        "incidents": len(mine),
        "expected": f"{exp.min_incidents}..{exp.max_incidents}",
        "root_cause": rc,
        "expected_root_cause": exp.root_cause,
        "ok": ok,
    }


def evaluate_scenarios(
    progress: Progress = print, only: str = ""
) -> tuple[list[dict[str, Any]], dict[str, list[StreamResult]]]:
    """The engine's expectation rows, and detector name -> one StreamResult per scenario tenant."""
    rows = []
    results: dict[str, list[StreamResult]] = {d: [] for d in DETECTORS}
    for name in scenarios.SCENARIOS:
        if only and only not in name:
            continue
        sc = scenarios.build(name, scale=SCENARIO_SCALE if name != "steady" else 1.0)
        run = StreamRun(records=len(sc.records))
        started = time.process_time()
        run.events["engine"] = engine.run(scenarios.requests_of(sc.records, 200), sc.spans)
        run.engine_s = time.process_time() - started
        run_baselines([r for r in sc.records if r.level >= Level.ERROR], run)
        labels = scenario_labels(sc)
        for exp in sc.expectations:
            stream = next(k for k, v in labels.items() if v["tenant"] == exp.tenant)
            for det in DETECTORS:
                results[det].append(judge_stream(stream, labels[stream], events_of_tenant(run.events[det], exp.tenant)))
            row = _scenario_row(name, exp, run.events["engine"])
            rows.append(row)
            others = " ".join(f"{d}={_opened(events_of_tenant(run.events[d], exp.tenant))}" for d in BASELINES)
            progress(
                f"scenario {name:<20} tenant={exp.tenant:<8} incidents={row['incidents']}"
                f" root_cause={row['root_cause']} ok={row['ok']} engine={run.engine_s:.1f}s"
                f" | baselines opened: {others}"
            )
    return rows, results


def stream_json(result: StreamResult, compact: bool) -> dict[str, Any]:
    """A StreamResult as JSON; ``compact`` turns the root-cause list into counts (baselines open
    hundreds of incidents)."""
    row = result._asdict()
    if compact:
        row["root_causes"] = dict(Counter(result.root_causes).most_common())
    return row


def machine() -> dict[str, Any]:
    """nproc, CPU model and RAM of this machine (Linux /proc; '?' elsewhere)."""
    cpu, ram_gib = "?", 0.0
    try:
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
             if ln.startswith("model name")), "?")  # fmt: skip
        kib = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                   if ln.startswith("MemTotal:"))  # fmt: skip
        ram_gib = round(kib / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "ram_gib": ram_gib, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def _summary(results: Sequence[StreamResult]) -> dict[str, Any]:
    return summarize_results(results) | {"incidents_per_detected_case": incidents_per_case(results)}


def report_json(
    openstack: dict[str, list[StreamResult]],
    rows: list[dict[str, Any]],
    scen: dict[str, list[StreamResult]],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """eval.json: the engine's OpenStack results and scenario rows where they always were, plus
    every detector's summary and streams on both datasets under ``detectors``."""
    detectors = {}
    for det in DETECTORS:
        compact = det != "engine"
        detectors[det] = {
            "openstack": {"summary": _summary(openstack[det]),
                          "streams": [stream_json(r, compact) for r in openstack[det]]},
            "scenarios": {"summary": _summary(scen[det]),
                          "streams": [stream_json(r, compact) for r in scen[det]]},
        }  # fmt: skip
    return {
        "meta": meta,
        "openstack": {"summary": detectors["engine"]["openstack"]["summary"],
                      "streams": [r._asdict() for r in openstack["engine"]]},
        "scenarios": rows,
        "detectors": detectors,
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if not (args.data / "labels.json").is_file():
        print(f"error: {args.data}/labels.json not found (pass --data)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    openstack = evaluate_openstack(args.data, args.only)
    summary = summarize_results(openstack["engine"])
    print("\nOpenStack dev set (logs + spans where a stream has spans):", json.dumps(summary, indent=2))
    print(f"engine, logs only               {json.dumps(summarize_results(openstack.pop(LOGS_ONLY)))}")
    for det in BASELINES:
        print(f"baseline {det:<24} {json.dumps(summarize_results(openstack[det]))}")
    for det in BASELINES:
        verdict = compare(summary, summarize_results(openstack[det]))
        weaker, better, level = ("; ".join(verdict[k]) for k in ("weaker", "better", "level"))
        print(f"engine vs {det}: weaker on {weaker or 'nothing'} | better on {better or 'nothing'}"
              f" | level on {level or '-'}")
    rows, scen = ([], {d: [] for d in DETECTORS}) if args.no_scenarios else evaluate_scenarios()
    if scen["engine"]:
        print("\nScenarios:")
        for det in DETECTORS:
            print(f"{det:<24} {json.dumps(summarize_results(scen[det]))}")
    if args.json_out:
        meta = machine() | {
            "command": "logclaw " + " ".join(sys.argv[1:]),
            "data": str(args.data),
            "only": args.only,
            "scenario_scale": None if args.no_scenarios else SCENARIO_SCALE,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report_json(openstack, rows, scen, meta), indent=2))
        print(f"wrote {args.json_out}")
    return 0
