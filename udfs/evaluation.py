"""Detection metrics over labelled streams, with the definitions of shared/data/openstack-dev/README.md:
a case is detected by an incident opened or detected in [inject_time - 60 s, window end]; recall
over rounds whose workload failed; false alarms per hour on fault-free rounds; precision of opened
incidents; root cause = the sub-system (service.namespace) of the named root-cause service, top-1
and top-3; time-to-detect = detected_at - inject_time."""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple


def parse_time_ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


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


def judge_stream(stream: str, label: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> StreamResult:
    """Score one stream's incident events against its label."""
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
        "ttd_median_s": round(statistics.median(ttds) / 1000, 1) if ttds else None,
        "ttd_p90_s": round((_pct(ttds, 0.9) or 0) / 1000, 1) if ttds else None,
    }
