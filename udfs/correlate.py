"""Tenant-level correlation, keyed by tenant: blast radius, grouping of concurrent anomalies into one
incident, the shared cooldown/dedup state per (tenant, fingerprint), the incident life cycle
(opened -> updated -> resolved) and root-cause ranking.

Decisions (principles, not tuned to cases):
- an immediate-path anomaly (OOM, crash, resource) always opens or joins an incident, scored at
  least 0.9 x its signal weight, because such a signal demands action on its own;
- a windowed anomaly opens an incident only when its composite score (with the tenant's blast
  radius) reaches the threshold; anomalies below it still count for blast radius;
- anomalies of a tenant within ``correlation_ms`` of an open incident's last activity join it (one
  outage, one ticket); the fingerprint stays that of the opening anomaly, so dedup is stable;
- an incident resolves once no anomaly has joined it for ``quiet_ms`` of event time; until then
  the same fingerprint is the same incident (this is the cooldown);
- ``updated`` is emitted only when something an on-call engineer acts on changes: a service
  joins, the severity band rises, or the top root-cause candidate changes.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from udfs import novelty
from udfs.anomaly import ServiceAnomaly, ServiceRecovered, TraceFact
from udfs.incidents import to_contract
from udfs.rootcause import OWN, WAITS, Ranking, ServiceFacts, rank, shared_end
from udfs.scoring import Breakdown, ScoreConfig, blast_radius_score
from udfs.tenant_state import IncidentState, Pending, ServiceEntry, TenantState, hold


@dataclass(frozen=True)
class CorrelateConfig:
    score: ScoreConfig = field(default_factory=ScoreConfig)
    correlation_ms: int = 300_000
    quiet_ms: int = 300_000
    blast_window_ms: int = 300_000
    immediate_floor: float = 0.9
    max_open_incidents: int = 50
    max_edges: int = 2_000
    max_precedence: int = 2_000
    fact_ttl_ms: int = 3_600_000
    max_samples: int = 10
    max_traces: int = 10
    learned_edge_min: int = 2
    witness_ms: int = 30_000
    """A never-seen error that opened no incident is a root-cause candidate of an incident whose onset
    follows it within the recent window the service step judges (3 buckets of 10 s)."""
    novelty_max_p: float = 0.25
    """The tenant-level counterpart of ``WindowConfig.novelty_max_p`` (the same odds of 3 to 1)."""
    max_known_templates: int = 2_000
    """Discovered template texts remembered per tenant (bounded; least recently seen forgotten)."""


class Step(NamedTuple):
    state: TenantState
    emit: tuple[dict[str, Any], ...]
    """Incident events per the contract, rendered when they happened."""
    timer_at_ms: int | None


def fingerprint(tenant: str, service: str, kind: str) -> str:
    """Dedup key; the tenant is hashed in, so two tenants never share one."""
    digest = hashlib.sha1(f"{tenant}\x1f{service}\x1f{kind}".encode()).hexdigest()[:12]
    return f"{service}.{kind}.{digest}"


def incident_id(tenant: str, fp: str, opened_at_ms: int) -> str:
    return "inc-" + hashlib.sha1(f"{tenant}\x1f{fp}\x1f{opened_at_ms}".encode()).hexdigest()[:20]


def _order(item: Pending) -> tuple[int, int, str, str, str]:
    """Event time first; ties broken by content, so arrival order across subtasks never matters."""
    if isinstance(item, TraceFact):
        return (item.at_ms, 0, item.kind, f"{item.a}|{item.b}", item.trace_id)
    if isinstance(item, ServiceRecovered):
        return (item.at_ms, 2, item.service, "", "")
    return (item.at_ms, 1, item.service, item.kind, item.anomaly_id)


def enqueue(state: TenantState, item: Pending, cfg: CorrelateConfig) -> Step:
    """Hold a windowed anomaly, recovery or trace fact until the watermark passes ``at_ms``.

    Keyed steps upstream run in parallel, so their outputs reach this key in no particular order;
    processing them on event-time timers makes the outcome independent of that order. Immediate
    anomalies skip the buffer (``on_anomaly``): their latency budget is under a second.
    """
    hold(state, item)
    return Step(state, (), item.at_ms)


def on_anomaly(state: TenantState, a: ServiceAnomaly, cfg: CorrelateConfig) -> Step:
    judged = novelty.judge(state, a, max_p=cfg.novelty_max_p, max_known=cfg.max_known_templates)
    if judged is None:
        for svc in [s for s, (_, at) in state.witnesses.items() if at < a.at_ms - cfg.correlation_ms]:
            del state.witnesses[svc]
        return Step(state, tuple(_witnessed(state, a, cfg)), _next_timer(state, cfg))
    a = judged
    state.recent[a.service] = max(state.recent.get(a.service, a.at_ms), a.at_ms)
    _expire_recent(state, a.at_ms, cfg)
    blast = blast_radius_score(len(state.recent))
    b = a.breakdown._replace(context=max(a.breakdown.context, blast))
    score = cfg.score.composite(b)
    if a.path == "immediate":
        floor = cfg.immediate_floor * a.breakdown.pattern
        score = max(score, round(floor, 4))
    target = _joinable(state, a, cfg)
    events: list[dict[str, Any]] = []
    if target is None:
        if a.path != "immediate" and score < cfg.score.threshold:
            return Step(state, (), _next_timer(state, cfg))
        if len(state.incidents) >= cfg.max_open_incidents:
            state.suppressed += 1
            return Step(state, (), _next_timer(state, cfg))
        target = _open(state, a, b, score, cfg)
        events.append(to_contract("opened", target, _ranking(state, target, cfg), a.at_ms, cfg.score))
    else:
        before = (set(target.services), target.severity, target.root)
        _join(target, a, b, score, cfg)
        ranking = _ranking(state, target, cfg)
        target.root = ranking.chain[0] if ranking.chain else target.root
        _rescore(state, target, cfg)
        after = (set(target.services), target.severity, target.root)
        grew = after[0] != before[0]
        severer = _band(after[1]) > _band(before[1])
        if grew or severer or after[2] != before[2]:
            events.append(to_contract("updated", target, ranking, a.at_ms, cfg.score))
    return Step(state, tuple(events), _next_timer(state, cfg))


def _witnessed(state: TenantState, a: ServiceAnomaly, cfg: CorrelateConfig) -> list[dict[str, Any]]:
    """A never-seen error that was no incident on its own may still be where an open incident
    started: rank again, and say so when the root cause changes."""
    events: list[dict[str, Any]] = []
    if state.witnesses.get(a.service, [0, -1])[1] != a.at_ms:  # not a witness of this anomaly
        return events
    for fp in sorted(state.incidents):
        inc = state.incidents[fp]
        if a.service in inc.services or not _covers(inc, a.onset_ms, cfg):
            continue
        ranking = _ranking(state, inc, cfg)
        root = ranking.chain[0] if ranking.chain else inc.root
        if root != inc.root:
            inc.root = root
            events.append(to_contract("updated", inc, ranking, a.at_ms, cfg.score))
    return events


def _covers(inc: IncidentState, onset_ms: int, cfg: CorrelateConfig) -> bool:
    return inc.opened_at_ms - cfg.witness_ms <= onset_ms <= inc.last_activity_ms


def on_fact(state: TenantState, f: TraceFact, cfg: CorrelateConfig) -> Step:
    if f.kind in ("edge", "call"):
        _bump(state.edges, f"{f.kind}|{f.a}|{f.b}", f.at_ms, cfg.max_edges)
    elif f.kind == "precedes":
        _bump(state.precedence, f"{f.a}|{f.b}", f.at_ms, cfg.max_precedence)
        for svc in (f.a, f.b):
            ids = state.failing_traces.setdefault(svc, [])
            if f.trace_id not in ids:
                ids.append(f.trace_id)
                del ids[: max(0, len(ids) - cfg.max_traces)]
    return Step(state, (), _next_timer(state, cfg))


def on_timer(state: TenantState, timer_ms: int, cfg: CorrelateConfig, due: list[Pending] | None = None) -> Step:
    """Apply buffered items up to ``timer_ms`` in event-time order, then resolve incidents quiet for
    ``quiet_ms`` and expire old graph facts (event time).

    ``due``: the items due now when the caller keeps the buffer itself (the Flink adapter keeps it in
    MapState by event time, so appending never rewrites the tenant's state); None = ``state.pending``.
    """
    events: list[dict[str, Any]] = []
    if due is None:
        due = []
        heap = state.pending_heap
        while heap and heap[0] <= timer_ms:
            due.extend(state.pending.pop(heapq.heappop(heap)))
    if due:
        for item in sorted(due, key=_order):
            if isinstance(item, ServiceAnomaly):
                events.extend(on_anomaly(state, item, cfg).emit)
            elif isinstance(item, TraceFact):
                on_fact(state, item, cfg)
        events = _one_update_per_instant(events)
    for fp in sorted(state.incidents):
        inc = state.incidents[fp]
        if inc.last_activity_ms + cfg.quiet_ms <= timer_ms:
            ranking = _ranking(state, inc, cfg)
            del state.incidents[fp]
            events.append(to_contract("resolved", inc, ranking, timer_ms, cfg.score))
    horizon = timer_ms - cfg.fact_ttl_ms
    for table in (state.edges, state.precedence):
        for key in [k for k, v in table.items() if v[1] < horizon]:
            del table[key]
    _expire_recent(state, timer_ms, cfg)
    return Step(state, tuple(events), _next_timer(state, cfg))


def _one_update_per_instant(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several anomalies of one incident applied at the same event time are one change for the
    on-call engineer: one event per (incident, event time), showing the state after all of them.
    An incident opened at that instant opens with that state (simultaneous anomalies are applied in
    a fixed order, so the first one alone says little); otherwise the last "updated" stays. Every
    event is then identified by (incident id, event, detected_at)."""
    final: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        if e["event"] == "updated":
            final[(e["incident_id"], e["detected_at"])] = e
    opened = {(e["incident_id"], e["detected_at"]) for e in events if e["event"] == "opened"}
    out = []
    for e in events:
        key = (e["incident_id"], e["detected_at"])
        if e["event"] == "opened":
            out.append({**final[key], "event": "opened"} if key in final else e)
        elif e["event"] != "updated" or (key not in opened and final[key] is e):
            out.append(e)
    return out


def _band(severity: str) -> int:
    return {"low": 0, "medium": 1, "high": 2, "critical": 3}[severity]


EVICT_SHARE = 8
"""A full table frees its least recently seen eighth at once: one sort per cap/8 new keys keeps the
eviction O(log n) per key amortized (a scan per new key made a tenant with many call edges crawl)."""


def _bump(table: dict[str, list[int]], key: str, at_ms: int, cap: int) -> None:
    row = table.get(key)
    if row is None:
        if len(table) >= cap:
            excess = len(table) - cap + 1 + cap // EVICT_SHARE
            for oldest in sorted(table, key=lambda k: (table[k][1], k))[:excess]:
                del table[oldest]
        table[key] = [1, at_ms]
    else:
        row[0] += 1
        row[1] = max(row[1], at_ms)


def _expire_recent(state: TenantState, now_ms: int, cfg: CorrelateConfig) -> None:
    for svc in [s for s, t in state.recent.items() if t < now_ms - cfg.blast_window_ms]:
        del state.recent[svc]


def _joinable(state: TenantState, a: ServiceAnomaly, cfg: CorrelateConfig) -> IncidentState | None:
    """The oldest open incident this anomaly belongs to: same service, or concurrent with it."""
    joinable = [
        inc
        for inc in state.incidents.values()
        if a.service in inc.services or a.at_ms - inc.last_activity_ms <= cfg.correlation_ms
    ]
    return min(joinable, key=lambda inc: (inc.opened_at_ms, inc.fingerprint), default=None)


def _top_signal(a: ServiceAnomaly) -> str:
    best = max(a.signals, key=lambda s: s.weight, default=None)
    return f"{best.name} {best.weight:.2f}" if best is not None else ""


def _open(state: TenantState, a: ServiceAnomaly, b: Breakdown, score: float, cfg: CorrelateConfig) -> IncidentState:
    fp = fingerprint(state.tenant, a.service, a.kind)
    inc = IncidentState(
        incident_id=incident_id(state.tenant, fp, a.onset_ms),
        fingerprint=fp,
        tenant=state.tenant,
        service=a.service,
        path=a.path,
        kind=a.kind,
        opened_at_ms=a.onset_ms,
        detected_at_ms=a.at_ms,
        last_activity_ms=a.at_ms,
        root=a.service,
    )
    state.incidents[fp] = inc
    _join(inc, a, b, score, cfg)
    _rescore(state, inc, cfg)
    return inc


def _join(inc: IncidentState, a: ServiceAnomaly, b: Breakdown, score: float, cfg: CorrelateConfig) -> None:
    inc.anomalies += 1
    inc.last_activity_ms = max(inc.last_activity_ms, a.at_ms)
    entry = inc.services.get(a.service)
    if entry is None:
        inc.services[a.service] = ServiceEntry(a.service, a.namespace, a.onset_ms, a.at_ms, b, score, _top_signal(a))
    else:
        entry.onset_ms = min(entry.onset_ms, a.onset_ms)
        entry.last_ms = max(entry.last_ms, a.at_ms)
        entry.breakdown = entry.breakdown.merge(b)
        if score > entry.score:
            entry.score, entry.top_signal = score, _top_signal(a)
    # One signal per (name, service): the strongest seen, with its latest detail.
    for s in a.signals:
        tagged = s._replace(detail=f"{a.service}: {s.detail}" if s.detail else a.service)
        i = next(
            (k for k, old in enumerate(inc.signals) if old.name == s.name and old.detail.split(":", 1)[0] == a.service),
            None,
        )
        if i is None:
            if len(inc.signals) < 16 or s.name in SPAN_EVIDENCE:  # root-cause evidence is never crowded out
                inc.signals.append(tagged)
        elif s.weight >= inc.signals[i].weight:
            inc.signals[i] = tagged
    for sample in a.samples:
        if len(inc.samples) < cfg.max_samples and sample not in inc.samples:
            inc.samples.append(sample)
    known = {t.template_id for t in inc.templates}
    for t in a.templates:
        if t.template_id not in known and len(inc.templates) < 10:
            inc.templates.append(t)
            known.add(t.template_id)
    for sample in a.samples:
        if sample.trace_id and sample.trace_id not in inc.trace_ids and len(inc.trace_ids) < cfg.max_traces:
            inc.trace_ids.append(sample.trace_id)
    if a.stats and a.service == inc.service:
        inc.stats = dict(a.stats)


def _rescore(state: TenantState, inc: IncidentState, cfg: CorrelateConfig) -> None:
    merged = Breakdown()
    floor = 0.0
    for e in inc.services.values():
        merged = merged.merge(e.breakdown)
        floor = max(floor, e.score)
    merged = merged._replace(context=max(merged.context, blast_radius_score(len(inc.services))))
    inc.breakdown = merged
    inc.score = max(cfg.score.composite(merged), floor)
    inc.severity = cfg.score.severity(inc.score)
    for svc in inc.services:
        for tid in state.failing_traces.get(svc, ()):
            if tid not in inc.trace_ids and len(inc.trace_ids) < cfg.max_traces:
                inc.trace_ids.append(tid)


def call_graph(state: TenantState, cfg: CorrelateConfig) -> dict[str, set[str]]:
    """Caller -> callees. Spans win when the tenant has any; else learned edges that are seen at
    least ``learned_edge_min`` times and at least twice as often as their reverse."""
    graph: dict[str, set[str]] = {}
    span_edges = [k.split("|")[1:] for k in state.edges if k.startswith("call|")]
    if span_edges:
        for a, b in span_edges:
            graph.setdefault(a, set()).add(b)
        return graph
    for key, (count, _) in state.edges.items():
        _, a, b = key.split("|")
        back = state.edges.get(f"edge|{b}|{a}", [0, 0])[0]
        if count >= cfg.learned_edge_min and count >= 2 * back:
            graph.setdefault(a, set()).add(b)
    return graph


SPAN_EVIDENCE = frozenset({"latency", "span_errors", "self_time", "own_span_errors"})
"""Signal names of span anomalies (udfs.red); at most one per (name, service) in an incident."""


def _span_evidence(inc: IncidentState) -> dict[str, tuple[str, str]]:
    """Service -> (OWN or WAITS, what moved), from the incident's span signals (udfs.red): its self
    time or own span errors rose, or only its latency or span errors did."""
    own: dict[str, str] = {}
    moved: dict[str, str] = {}
    for s in inc.signals:
        svc, _, detail = s.detail.partition(": ")
        if s.name in ("self_time", "own_span_errors"):
            own.setdefault(svc, f"{s.name}: {detail}")
        elif s.name in ("latency", "span_errors"):
            moved.setdefault(svc, f"{s.name}: {detail}")
    out = {svc: (WAITS, detail) for svc, detail in moved.items()}
    out.update((svc, (OWN, detail)) for svc, detail in own.items())
    return out


def _ranking(state: TenantState, inc: IncidentState, cfg: CorrelateConfig) -> Ranking:
    spans = _span_evidence(inc)
    facts = [
        ServiceFacts(e.service, e.onset_ms, e.score, e.top_signal, *spans.get(e.service, ("", "")))
        for e in inc.services.values()
    ]
    facts += [
        ServiceFacts(svc, onset, 0.0, "never-seen error, no incident on its own")
        for svc, (onset, _) in sorted(state.witnesses.items())
        if svc not in inc.services and _covers(inc, onset, cfg)
    ]
    prec: dict[tuple[str, str], int] = {}
    for key, (count, _) in state.precedence.items():
        a, b = key.split("|")
        prec[(a, b)] = count
    graph = call_graph(state, cfg)
    return rank(shared_end(facts, graph), graph, prec)


def _next_timer(state: TenantState, cfg: CorrelateConfig) -> int | None:
    due = [inc.last_activity_ms + cfg.quiet_ms for inc in state.incidents.values()]
    if state.pending_heap:
        due.append(state.pending_heap[0])
    return min(due, default=None)


# ---- codec -------------------------------------------------------------------------------------
