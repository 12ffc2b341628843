"""What the console's pages show, computed from what the reader returns: time ranges, chart series,
the incident timeline with what changed, signal explanations. No I/O here."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from connectors.logstore import MetricRow
from jobs.console.svg import Point
from udfs.timefmt import format_time_ms, parse_time_ms

RANGES_MS = {"15m": 15 * 60_000, "1h": 3_600_000, "6h": 6 * 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000}
DEFAULT_RANGE = "1h"
BUCKET_MS = 10_000
LEVELS = {"": 0, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}

SIGNAL_EXPLANATIONS = {
    "error_rate_spike": "the share of failing records in the last 30 s is far above this service's own "
                        "baseline (binomial tail test against its non-anomalous hour)",
    "velocity": "failures per bucket compared with the baseline rate: how fast things got worse",
    "novel_template": "failure lines with templates this service never logged before, judged by how often "
                      "its own history discovers new ones",
    "blast_radius": "how many services of the tenant are anomalous at once",
    "oom": "out-of-memory lines (OOMKilled, heap exhausted): opens at once on the immediate path",
    "crash": "process crashes (segfault, panic, exit codes): opens at once on the immediate path",
    "resource": "exhausted resources (disk full, too many open files): opens at once",
    "dependency": "failures calling another service (5xx from upstream, circuit open)",
    "database": "database or cache failures (pool exhausted, deadlock, connection refused)",
    "timeout": "operations that timed out",
    "connection": "connections refused or reset",
    "auth": "authentication and authorization failures",
}
CATEGORY_EXPLANATIONS = {
    "pattern": "failure patterns in the lines (the eight signal groups)",
    "statistical": "error rate and velocity against the service's own baseline",
    "context": "blast radius and novelty across the tenant",
    "http": "HTTP status codes (5xx)",
    "severity": "log levels (ERROR, FATAL)",
    "structural": "stack traces and exception fields",
}


def time_range(name: str, newest_ms: int | None) -> tuple[str, int, int]:
    """(range name, start, end) ending at the tenant's newest data (event time, so a replayed day
    shows as it happened), not at the wall clock."""
    if name not in RANGES_MS and name != "all":
        name = DEFAULT_RANGE
    end = (newest_ms if newest_ms is not None else 0) + BUCKET_MS
    start = 0 if name == "all" else end - RANGES_MS[name]
    return name, start, end


def series(rows: Iterable[MetricRow], start_ms: int, end_ms: int,
           max_points: int = 120) -> tuple[dict[str, list[Point]], int]:
    """Bucket rows summed into at most ``max_points`` steps per service; returns (points, step ms)."""
    step = BUCKET_MS
    while (end_ms - start_ms) / step > max_points:
        step *= 2 if step < 60_000 else 3
    acc: dict[str, dict[int, list[int]]] = {}
    for row in rows:
        slot = start_ms + (row.bucket_ms - start_ms) // step * step
        counts = acc.setdefault(row.service, {}).setdefault(slot, [0, 0, 0, 0])
        counts[0] += row.total
        counts[1] += row.failures
        counts[2] += row.spans
        counts[3] += row.span_ms_sum
    out: dict[str, list[Point]] = {}
    for service, slots in acc.items():
        out[service] = [Point(t, c[0], c[1] / c[0] if c[0] else 0.0, c[3] / c[2] if c[2] else None)
                        for t, c in sorted(slots.items())]
    return out, step


def incident_window(latest: Mapping[str, Any]) -> tuple[int, int]:
    opened = parse_time_ms(latest["opened_at"])
    end = latest.get("resolved_at") or latest["detected_at"]
    return opened, max(opened + BUCKET_MS, parse_time_ms(end))


def onset_by_service(events: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The earliest failure line of each service among the incident's evidence (its onset); the
    incident's own onset for the service that detected it."""
    onset: dict[str, int] = {}
    for event in events:
        for line in event.get("evidence") or ():
            if isinstance(line, Mapping) and line.get("time") and line.get("service"):
                t = parse_time_ms(str(line["time"]))
                service = str(line["service"])
                onset[service] = min(onset.get(service, t), t)
    if events:
        first = events[0]
        onset.setdefault(str(first["service"]), parse_time_ms(first["opened_at"]))
    return onset


def _root(event: Mapping[str, Any]) -> Mapping[str, Any]:
    root = event.get("root_cause")
    return root if isinstance(root, Mapping) else {}


def changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """What an incident event changed against the previous one, in words."""
    if before is None:
        chain = " → ".join(_root(after).get("chain") or [str(after["service"])])
        return [f"opened on the {after['path']} path: {after['severity']}, score {float(after['score']):.2f}",
                f"root cause {_root(after).get('service', '?')}; chain {chain}"]
    out = []
    if before.get("severity") != after.get("severity"):
        out.append(f"severity {before.get('severity')} → {after.get('severity')}")
    if abs(float(before.get("score") or 0) - float(after.get("score") or 0)) >= 0.005:
        out.append(f"score {float(before.get('score') or 0):.2f} → {float(after.get('score') or 0):.2f}")
    if _root(before).get("service") != _root(after).get("service"):
        out.append(f"root cause {_root(before).get('service')} → {_root(after).get('service')}")
    if list(_root(before).get("chain") or []) != list(_root(after).get("chain") or []):
        out.append("chain now " + " → ".join(_root(after).get("chain") or []))
    added = [s for s in after.get("affected_services") or () if s not in (before.get("affected_services") or ())]
    if added:
        out.append("now affects " + ", ".join(added))
    had = {s["name"] for s in before.get("signals") or ()}
    new_signals = sorted({s["name"] for s in after.get("signals") or ()} - had)
    if new_signals:
        out.append("new signals: " + ", ".join(new_signals))
    if after["event"] == "resolved":
        out.append(f"resolved at {after.get('resolved_at') or after['detected_at']}")
    return out or ["no change in severity, score, root cause or services"]


def timeline(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out, previous = [], None
    for event in events:
        out.append({"event": event["event"], "at": event["detected_at"], "changes": changes(previous, event)})
        previous = event
    return out


def signal_rows(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for sig in event.get("signals") or ():
        name = str(sig.get("name", ""))
        rows.append({"name": name, "weight": float(sig.get("weight") or 0), "detail": str(sig.get("detail") or ""),
                     "explanation": SIGNAL_EXPLANATIONS.get(name, "")})
    return sorted(rows, key=lambda r: -r["weight"])


def breakdown_rows(event: Mapping[str, Any], weights: Mapping[str, float]) -> list[dict[str, Any]]:
    """Score contribution per category: ``score_breakdown`` holds weighted values (they sum to the score)."""
    got = event.get("score_breakdown") or {}
    return [{"category": c, "value": float(got.get(c) or 0.0), "weight": w,
             "explanation": CATEGORY_EXPLANATIONS.get(c, "")} for c, w in weights.items()]


def duration(ms: int | float | None) -> str:
    if ms is None:
        return "-"
    s = int(ms // 1000)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def when(ms: int | None) -> str:
    return "-" if ms is None else format_time_ms(int(ms)).replace("T", " ").removesuffix("Z")


CSV_COLUMNS = ("incident_id", "tenant", "severity", "state", "service", "root_service", "score", "opened_at",
               "resolved_at", "duration_s", "services", "title")


def incidents_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """The incident list as CSV; cells that a spreadsheet would run as a formula are prefixed with '."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = [row["incident_id"], row["tenant"], row["severity"], row["state"], row["service"],
                  row["root_service"], f"{float(row['score']):.3f}", format_time_ms(int(row["opened_ms"])),
                  format_time_ms(int(row["resolved_ms"])) if row.get("resolved_ms") is not None else "",
                  "" if row.get("duration_ms") is None else str(int(row["duration_ms"]) // 1000),
                  " ".join(row.get("services") or ()), row["title"]]
        writer.writerow([_cell(v) for v in values])
    return buf.getvalue()


def _cell(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
