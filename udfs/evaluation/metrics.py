"""Detection metrics over labelled streams, with the definitions of shared/data/openstack-dev/README.md:
a case is detected by an incident opened or detected in [inject_time - 60 s, window end]; recall
over rounds whose workload failed; false alarms per hour on fault-free rounds; precision of opened
incidents; root cause = the sub-system (service.namespace) of the named root-cause service, top-1
and top-3; time-to-detect = detected_at - inject_time.

The scenario library is judged the same way: ``scenario_labels`` gives each scenario tenant a label
of the same shape (see there). Detectors (the engine and ``udfs.evaluation.baselines``) are interchangeable:
the judge reads only the keys both emit."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from udfs.incidents import rfc3339
from udfs.records import Level, LogRecord
from udfs.scenarios.library import Scenario
from udfs.timefmt import parse_time_ms as parse_time_ms  # re-exported for evaluation callers


class StreamResult(NamedTuple):
    stream: str
    fault_free: bool
    failure: bool | None
    failure_kind: str
    hours: float
    opened: int
    detected: bool
    true_incidents: int
    false_incidents: int
    ttd_ms: int | None
    rc_top1: bool | None
    rc_top3: bool | None
    root_causes: tuple[str, ...]
    error_lines: int = -1
    """Records at ERROR or above, or WARNING with a stack trace, in the case window (-1: not counted)."""


def judge_stream(
    stream: str,
    label: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    alarm_times_ms: Sequence[int] | None = None,
) -> StreamResult:
    """Score one stream's incident events against its label; ``alarm_times_ms`` (event times of the
    stream's error lines) lets the result say whether the case had any error line at all."""
    opened = [e for e in events if e["event"] == "opened"]
    t0, t1 = (parse_time_ms(x) for x in label["time_range"])
    hours = max(1e-9, (t1 - t0) / 3_600_000)
    namespace_of: Mapping[str, str] = label.get("service_namespace", {})
    cases = label.get("cases") or []
    case = cases[0] if cases else None
    if label.get("fault_free") or case is None:
        return StreamResult(
            stream,
            True,
            None,
            "",
            hours,
            len(opened),
            False,
            0,
            len(opened),
            None,
            None,
            None,
            tuple(e["root_cause"]["service"] for e in opened),
        )
    inject = parse_time_ms(case["inject_time"]) if case.get("inject_time") else t0
    w0, w1 = case.get("window") or [case.get("inject_time"), label["time_range"][1]]
    start = (parse_time_ms(w0) if w0 else t0) - 60_000
    end = parse_time_ms(w1)
    error_lines = -1 if alarm_times_ms is None else sum(1 for t in alarm_times_ms if start <= t <= end)
    inside = [
        e
        for e in opened
        if start <= parse_time_ms(e["opened_at"]) <= end or start <= parse_time_ms(e["detected_at"]) <= end
    ]
    ttd: int | None = None
    top1: bool | None = None
    top3: bool | None = None
    if inside:
        first = min(inside, key=lambda e: parse_time_ms(e["detected_at"]))
        ttd = parse_time_ms(first["detected_at"]) - inject
        want = case.get("root_cause_service")
        # The ranking can change as the incident grows: judge the incident's last state.
        last = [e for e in events if e["incident_id"] == first["incident_id"] and e["event"] != "resolved"][-1]
        ranked = [namespace_of.get(c["service"], c["service"]) for c in last["root_cause"]["candidates"]]
        top1 = bool(ranked) and ranked[0] == want
        top3 = want in ranked[:3]
    return StreamResult(
        stream=stream,
        fault_free=False,
        failure=bool(case.get("failure")),
        failure_kind=str(case.get("failure_kind", "")),
        hours=hours,
        opened=len(opened),
        detected=bool(inside),
        true_incidents=len(inside),
        false_incidents=len(opened) - len(inside),
        ttd_ms=ttd,
        rc_top1=top1,
        rc_top3=top3,
        root_causes=tuple(e["root_cause"]["service"] for e in opened),
        error_lines=error_lines,
    )


def _pct(values: Sequence[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return float(ordered[k])


def summarize_results(results: Sequence[StreamResult]) -> dict[str, Any]:
    failing = [r for r in results if not r.fault_free and r.failure]
    free = [r for r in results if r.fault_free]
    detected = [r for r in failing if r.detected]
    ttds = [r.ttd_ms for r in detected if r.ttd_ms is not None]
    silent = [r for r in failing if r.error_lines == 0]
    opened = sum(r.opened for r in results)
    true = sum(r.true_incidents for r in results if not r.fault_free)
    return {
        "fault_cases": len(failing),
        "detected": len(detected),
        "recall": round(len(detected) / len(failing), 3) if failing else None,
        "fault_free_rounds": len(free),
        "fault_free_hours": round(sum(r.hours for r in free), 3),
        "fault_free_incidents": sum(r.opened for r in free),
        "false_per_hour": round(sum(r.opened for r in free) / sum(r.hours for r in free), 2) if free else None,
        "incidents_opened": opened,
        "precision": round(true / opened, 3) if opened else None,
        "rc_top1": round(sum(1 for r in detected if r.rc_top1) / len(detected), 3) if detected else None,
        "rc_top3": round(sum(1 for r in detected if r.rc_top3) / len(detected), 3) if detected else None,
        # Right root cause (top-1) over *all* failing rounds: a missed round counts as wrong.
        "rc_top1_all": round(sum(1 for r in detected if r.rc_top1) / len(failing), 3) if failing else None,
        "no_error_line_cases": len(silent),
        "no_error_line_detected": sum(1 for r in silent if r.detected),
        "ttd_median_s": round(statistics.median(ttds) / 1000, 1) if ttds else None,
        "ttd_p90_s": round((_pct(ttds, 0.9) or 0) / 1000, 1) if ttds else None,
    }


# ---- the scenario library as labelled streams -----------------------------------------------------


def scenario_stream_name(scenario: str, tenant: str) -> str:
    return f"scenario-{scenario}-{tenant}"


def scenario_labels(sc: Scenario) -> dict[str, dict[str, Any]]:
    """One labelled stream per expectation (tenant) of a scenario, shaped like the OpenStack labels:
    ``fault_free`` when the expectation names no root cause; else one case with inject time =
    ``fault_start_ms`` (the first record of the tenant when absent), ``root_cause_service`` = the
    expected service (no namespaces: services are compared by name), ``failure`` true and the
    window [inject time, last record of the tenant]. ``time_range`` spans the tenant's records."""
    out: dict[str, dict[str, Any]] = {}
    for exp in sc.expectations:
        times = [r.time_ms for r in sc.records if r.tenant == exp.tenant]
        t0, t1 = (min(times), max(times)) if times else (0, 0)
        name = scenario_stream_name(sc.name, exp.tenant)
        label: dict[str, Any] = {
            "stream": name,
            "dataset": "scenarios",
            "test": sc.name,
            "tenant": exp.tenant,
            "fault_free": exp.root_cause is None,
            "time_range": [rfc3339(t0), rfc3339(t1)],
            "service_namespace": {},
            "expected_incidents": [exp.min_incidents, exp.max_incidents],
            "cases": [],
        }
        if exp.root_cause is not None:
            inject = exp.fault_start_ms if exp.fault_start_ms is not None else t0
            label["cases"] = [
                {
                    "case_id": name,
                    "inject_time": rfc3339(inject),
                    "root_cause_service": exp.root_cause,
                    "window": [rfc3339(inject), rfc3339(t1)],
                    "failure": True,
                    "failure_kind": "immediate" if exp.immediate else "scenario",
                    "detect_within_ms": exp.detect_within_ms,
                }
            ]
        out[name] = label
    return out


def events_of_tenant(events: Iterable[Mapping[str, Any]], tenant: str) -> list[Mapping[str, Any]]:
    return [e for e in events if e["tenant"] == tenant]


def error_rates(
    records: Iterable[LogRecord], tenant: str, bucket_ms: int = 10_000
) -> dict[str, list[tuple[int, float]]]:
    """Per service of ``tenant``: (bucket start ms, error share of the bucket's records) for every
    ``bucket_ms`` event-time bucket from the tenant's first to last record, zero-filled (a bucket
    without records has share 0). Errors are records at level >= ERROR."""
    total: dict[tuple[str, int], int] = {}
    errors: dict[tuple[str, int], int] = {}
    services: set[str] = set()
    lo, hi = None, None
    for r in records:
        if r.tenant != tenant:
            continue
        b = r.time_ms - r.time_ms % bucket_ms
        lo = b if lo is None else min(lo, b)
        hi = b if hi is None else max(hi, b)
        services.add(r.service)
        total[(r.service, b)] = total.get((r.service, b), 0) + 1
        if r.level >= Level.ERROR:
            errors[(r.service, b)] = errors.get((r.service, b), 0) + 1
    if lo is None or hi is None:
        return {}
    buckets = range(lo, hi + 1, bucket_ms)
    return {
        s: [(b, errors.get((s, b), 0) / total[(s, b)] if total.get((s, b)) else 0.0) for b in buckets]
        for s in sorted(services)
    }


def incidents_per_case(results: Sequence[StreamResult]) -> float | None:
    """Mean incidents opened inside the window per detected failing case: 1.0 is one ticket per
    fault; the README's precision counts every such incident as true, so this shows the flood."""
    detected = [r for r in results if not r.fault_free and r.failure and r.detected]
    return round(sum(r.true_incidents for r in detected) / len(detected), 1) if detected else None


COLUMNS: tuple[tuple[str, bool], ...] = (
    ("recall", True),
    ("fault_free_incidents", False),
    ("precision", True),
    ("rc_top1_all", True),
    ("rc_top3", True),
    ("no_error_line_detected", True),
    ("ttd_median_s", False),
)
"""The columns two detectors are compared on, and whether higher is better."""


def compare(engine: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, list[str]]:
    """Column by column, where ``engine`` is better, worse or level with ``baseline`` (summaries of
    ``summarize_results``); a column either lacks (no detection, no time) is left out. Each entry
    names the column and both values, e.g. ``"ttd_median_s 8.5 vs 0.0"``."""
    out: dict[str, list[str]] = {"better": [], "weaker": [], "level": []}
    for column, higher in COLUMNS:
        a, b = engine.get(column), baseline.get(column)
        if a is None or b is None:
            continue
        verdict = "level" if a == b else ("better" if (a > b) == higher else "weaker")
        out[verdict].append(f"{column} {a} vs {b}")
    return out
