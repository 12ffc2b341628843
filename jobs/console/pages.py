"""One function per console page: read through the tenant-scoped reader, shape with ``views``,
render. Each runs in a worker thread (``app._run``) and takes (console, request, tenant)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from connectors.console_read import SEVERITIES, STATES, IncidentQuery, tickets
from jobs.console import svg, views
from udfs.rca import deterministic_rca
from udfs.scoring import DEFAULT_WEIGHTS
from udfs.timefmt import parse_time_ms

if TYPE_CHECKING:
    from jobs.console.app import Console

PAGE_SIZE = 50


class NotFound(Exception):
    pass


class BadInput(Exception):
    pass


def _int(request: Request, name: str, default: int, lo: int = 0, hi: int = 2**62) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    try:
        return max(lo, min(hi, int(raw)))
    except ValueError:
        raise BadInput(f"{name} must be an integer") from None


def _choice(request: Request, name: str, allowed: Any) -> str:
    value = request.query_params.get(name, "")
    return value if value in allowed else ""


def _query(console: Console, request: Request, tenant: str) -> tuple[IncidentQuery, str]:
    name, start, end = views.time_range(request.query_params.get("range", "all"),
                                        console.reader.newest_ms(tenant))
    page = _int(request, "page", 1, 1, 10_000)
    query = IncidentQuery(tenant=tenant, severity=_choice(request, "severity", SEVERITIES),
                          state=_choice(request, "state", STATES),
                          service=request.query_params.get("service", "")[:200],
                          start_ms=None if name == "all" else start, end_ms=None if name == "all" else end,
                          text=request.query_params.get("q", "")[:500], offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    return query, name


def incidents(console: Console, request: Request, tenant: str) -> Response:
    query, range_name = _query(console, request, tenant)
    result = console.reader.incidents(query)
    page = query.offset // PAGE_SIZE + 1
    rows = []
    for row in result.rows:
        found = tickets(console.ledger_path, tenant, _fingerprint(console, tenant, row["incident_id"]))
        rows.append({**row, "tickets": found})
    return console.render("incidents.html.j2", request, tenant, q=query, range=range_name, result=result, rows=rows,
                          page=page, pages=max(1, -(-result.total // PAGE_SIZE)), severities=SEVERITIES,
                          states=STATES, views=views)


def _fingerprint(console: Console, tenant: str, incident_id: str) -> str:
    if console.ledger_path is None or not console.ledger_path.exists():
        return ""
    events = console.reader.incident_events(tenant, incident_id)
    return str(events[-1]["fingerprint"]) if events else ""


def incidents_csv(console: Console, request: Request, tenant: str) -> Response:
    query, _ = _query(console, request, tenant)
    rows: list[dict[str, Any]] = []
    offset = 0
    while len(rows) < 10_000:
        result = console.reader.incidents(IncidentQuery(**{**query.__dict__, "offset": offset, "limit": 500}))
        rows.extend(result.rows)
        offset += 500
        if len(result.rows) < 500:
            break
    return Response(views.incidents_csv(rows), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": 'attachment; filename="incidents.csv"'})


def incident(console: Console, request: Request, tenant: str) -> Response:
    incident_id = request.path_params["incident_id"]
    events = console.reader.incident_events(tenant, incident_id)
    if not events:
        raise NotFound(f"no incident {incident_id} for tenant {tenant}")
    latest = [e for e in events if e["event"] != "resolved"][-1] if any(
        e["event"] != "resolved" for e in events) else events[-1]
    last = events[-1]
    root = latest.get("root_cause") or {}
    candidates = root.get("candidates") or []
    chain = list(root.get("chain") or [root.get("service", latest["service"])])
    affected = list(dict.fromkeys([*chain, *latest.get("affected_services", [])]))
    window = views.incident_window(last)
    start, end = window[0] - 10 * 60_000, window[1] + 5 * 60_000
    points, step = views.series(console.reader.metrics(tenant, affected, start, end), start, end)
    onsets = views.onset_by_service(events)
    charts = [{"service": s, "svg": svg.chart(s, points.get(s, []), start, end, window=window,
                                             onset_ms=onsets.get(s), step_ms=step)} for s in affected]
    evidence = []
    for line in latest.get("evidence") or ():
        if isinstance(line, Mapping):
            t = parse_time_ms(str(line["time"])) if line.get("time") else 0
            evidence.append({**line, "time_ms": t})
    rca = deterministic_rca(latest)
    return console.render(
        "incident.html.j2", request, tenant, events=events, latest=latest, last=last, root=root,
        candidates=candidates, graph=svg.graph(chain, latest.get("affected_services", []), str(root.get("service", "")),
                                               {c["service"]: float(c["score"]) for c in candidates}),
        charts=charts, timeline=views.timeline(events), signals=views.signal_rows(latest),
        breakdown=views.breakdown_rows(latest, DEFAULT_WEIGHTS), evidence=evidence, rca=rca,
        tickets=tickets(console.ledger_path, tenant, str(latest["fingerprint"])), views=views,
        state="resolved" if last["event"] == "resolved" else "open")


def services(console: Console, request: Request, tenant: str) -> Response:
    name, start, end = views.time_range(request.query_params.get("range", ""), console.reader.newest_ms(tenant))
    points, step = views.series(console.reader.metrics(tenant, (), start, end), start, end, max_points=60)
    recent = console.reader.incidents(IncidentQuery(tenant=tenant, limit=200)).rows
    anomalies = console.reader.anomalies(tenant, start, end)
    rows = []
    for service in sorted(points):
        pts = points[service]
        total = sum(p.volume for p in pts)
        latency = [p.latency_ms or 0.0 for p in pts]
        rows.append({
            "service": service, "total": total,
            "error_rate": sum(p.error_rate * p.volume for p in pts) / total if total else 0.0,
            "volume": svg.sparkline([p.volume for p in pts]),
            "errors": svg.sparkline([p.error_rate for p in pts], "#c0392b"),
            "latency": svg.sparkline(latency, "#7d3c98") if any(latency) else None,
            "anomalies": [a for a in anomalies if a.get("service") == service][:3],
            "incidents": [i for i in recent if service in i["services"]][:3],
        })
    return console.render("services.html.j2", request, tenant, rows=rows, range=name, step=step, views=views)


def logs(console: Console, request: Request, tenant: str) -> Response:
    name, start, end = views.time_range(request.query_params.get("range", "all"), console.reader.newest_ms(tenant))
    service = request.query_params.get("service", "")[:200]
    level = _choice(request, "level", views.LEVELS)
    text = request.query_params.get("q", "")[:500]
    found = console.reader.search_logs(tenant, services=[service] if service else [], start_ms=start, end_ms=end,
                                       min_severity_number=views.LEVELS[level], text=text, limit=200)
    return console.render("logs.html.j2", request, tenant, lines=found, q=text, service=service, level=level,
                          range=name, levels=views.LEVELS, views=views)


def context(console: Console, request: Request, tenant: str) -> Response:
    service = request.query_params.get("service", "")[:200]
    t = _int(request, "t", -1)
    if not service or t < 0:
        raise BadInput("context needs service and t (event time, ms)")
    lines = console.reader.log_context(tenant, service, t, n=_int(request, "n", 15, 1, 200))
    return console.render("context.html.j2", request, tenant, lines=lines, service=service, t=t, views=views)


def trace(console: Console, request: Request, tenant: str) -> Response:
    trace_id = request.path_params["trace_id"][:64]
    lines = console.reader.trace_logs(tenant, trace_id)
    if not lines:
        raise NotFound(f"no log records of trace {trace_id} for tenant {tenant}")
    t0, t1 = int(lines[0]["time_ms"]), int(lines[-1]["time_ms"])
    rows = [(str(d["service"]), f"{d['level']} {str(d['body'])[:200]}", int(d["time_ms"]), 0,
             int(d.get("severity_number") or 0) >= 17) for d in lines]
    return console.render("trace.html.j2", request, tenant, trace_id=trace_id, lines=lines,
                          waterfall=svg.waterfall(rows, t0, max(t1, t0 + 1)), views=views)


def health(console: Console, request: Request, tenant: str) -> Response:
    from jobs.console.app import flink_jobs

    newest = console.reader.newest_ms(tenant)
    _, start, end = views.time_range("1h", newest)
    rows = console.reader.metrics(tenant, (), start, end)
    points, _ = views.series(rows, start, end, max_points=60)
    per_step: dict[int, int] = {}
    for pts in points.values():
        for p in pts:
            per_step[p.t_ms] = per_step.get(p.t_ms, 0) + p.volume
    recent = console.reader.incidents(IncidentQuery(tenant=tenant, limit=1)).rows
    lag = None
    if recent:
        events = console.reader.incident_events(tenant, recent[0]["incident_id"])
        if events and events[-1].get("emitted_at"):
            last = events[-1]
            lag = {"detected_minus_opened_ms": parse_time_ms(last["detected_at"]) - parse_time_ms(last["opened_at"]),
                   "emitted_minus_detected_ms": parse_time_ms(last["emitted_at"]) - parse_time_ms(last["detected_at"]),
                   "incident_id": last["incident_id"]}
    dead = _dead_letters(console) if console.keys is None else None
    return console.render("health.html.j2", request, tenant, jobs=flink_jobs(console.flink_url),
                          records_hour=sum(per_step.values()), records_spark=svg.sparkline(
                              [v for _, v in sorted(per_step.items())]), newest=newest, lag=lag, dead=dead,
                          services=len(points), views=views)


def _dead_letters(console: Console) -> dict[str, Any] | None:
    """Counts by reason (never payloads: dead letters are not tenant-scoped) of the replay's file."""
    path = console.dead_letters_path
    if path is None or not path.exists():
        return None
    reasons: dict[str, int] = {}
    total = 0
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            total += 1
            try:
                errors = json.loads(line).get("errors") or [{}]
            except ValueError:
                errors = [{"reason": "unreadable dead letter"}]
            reason = str(errors[0].get("reason", "?"))
            reasons[reason] = reasons.get(reason, 0) + 1
    return {"path": str(path), "total": total, "reasons": sorted(reasons.items(), key=lambda kv: -kv[1])}
