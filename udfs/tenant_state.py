"""Keyed state of the tenant correlator: open incidents, the recent anomalies per service (blast
radius), the learned call graph and error precedence, and the pending buffer ordered by event time;
with its versioned codec (JSON-able dicts with ``SCHEMA_VERSION``, never pickle).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from udfs.anomaly import Sample, ServiceAnomaly, ServiceRecovered, SignalInfo, TemplateInfo, TraceFact
from udfs.scoring import Breakdown

SCHEMA_VERSION = 3
"""2 added ``known_templates``, ``discoveries``, ``age_buckets``, ``first_seen_ms`` and ``witnesses``;
3 added ``young`` and ``discoverers`` (``discoveries`` then holds mature services' discoveries only; a
layout-2 list, all discoveries, is read as mature ones); 1 and 2 are still read."""


@dataclass
class ServiceEntry:
    service: str
    namespace: str
    onset_ms: int
    last_ms: int
    breakdown: Breakdown
    score: float
    top_signal: str


@dataclass
class IncidentState:
    incident_id: str
    fingerprint: str
    tenant: str
    service: str
    path: str
    kind: str
    opened_at_ms: int
    detected_at_ms: int
    last_activity_ms: int
    services: dict[str, ServiceEntry] = field(default_factory=dict)
    breakdown: Breakdown = field(default_factory=Breakdown)
    score: float = 0.0
    severity: str = "low"
    signals: list[SignalInfo] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    templates: list[TemplateInfo] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    root: str = ""
    anomalies: int = 0


@dataclass
class TenantState:
    tenant: str
    incidents: dict[str, IncidentState] = field(default_factory=dict)
    recent: dict[str, int] = field(default_factory=dict)
    """service -> event time of its last anomaly (blast radius window)."""
    edges: dict[str, list[int]] = field(default_factory=dict)
    """"kind|caller|callee" -> [count, last_ms]; kind "call" (spans) or "edge" (learned)."""
    precedence: dict[str, list[int]] = field(default_factory=dict)
    """"a|b" -> [count, last_ms]: a's first failure preceded b's in a shared trace."""
    failing_traces: dict[str, list[str]] = field(default_factory=dict)
    """service -> recent trace ids where it failed after/before another service (evidence)."""
    suppressed: int = 0
    pending: dict[int, list[Pending]] = field(default_factory=dict)
    """Windowed anomalies, recoveries and trace facts waiting for the watermark, by event time ms."""
    known_templates: dict[str, int] = field(default_factory=dict)
    discoveries: list[int] = field(default_factory=list)
    """Event times of the discoveries the tenant's mature services reported (udfs.novelty; bounded)."""
    witnesses: dict[str, list[int]] = field(default_factory=dict)
    """service -> [onset_ms, at_ms] of its latest never-seen alarming template that was no incident
    on its own (a root-cause candidate for an incident around it)."""
    young: list[list[Any]] = field(default_factory=list)
    """[event time, template text, ...] of discoveries by services too young to judge them (udfs.novelty:
    start-up learning, routine only when shared), oldest first (bounded)."""
    discoverers: dict[str, list[Any]] = field(default_factory=dict)
    """Discovered template text -> [the first service that discovered it, 1 when another did too]."""
    first_seen_ms: int = -1
    """Event time the first of the tenant's services was first seen (from their "hello"), or -1."""
    age_buckets: int = 0
    """The longest service history reported (buckets): a lower bound of the tenant's age."""
    """Alarming template texts any service of the tenant has discovered -> last event time (ms)."""
    pending_heap: list[int] = field(default_factory=list)
    """Min-heap of ``pending``'s keys (derived; rebuilt on decode, never encoded)."""


Pending = ServiceAnomaly | ServiceRecovered | TraceFact


def new_state(tenant: str) -> TenantState:
    return TenantState(tenant=tenant)


def _incident_to_json(inc: IncidentState) -> dict[str, Any]:
    return {
        "incident_id": inc.incident_id,
        "fingerprint": inc.fingerprint,
        "tenant": inc.tenant,
        "service": inc.service,
        "path": inc.path,
        "kind": inc.kind,
        "opened_at_ms": inc.opened_at_ms,
        "detected_at_ms": inc.detected_at_ms,
        "last_activity_ms": inc.last_activity_ms,
        "services": {
            k: [e.service, e.namespace, e.onset_ms, e.last_ms, list(e.breakdown), e.score, e.top_signal]
            for k, e in inc.services.items()
        },
        "breakdown": list(inc.breakdown),
        "score": inc.score,
        "severity": inc.severity,
        "signals": [list(s) for s in inc.signals],
        "samples": [list(s) for s in inc.samples],
        "templates": [list(t) for t in inc.templates],
        "trace_ids": inc.trace_ids,
        "stats": inc.stats,
        "root": inc.root,
        "anomalies": inc.anomalies,
    }


def _incident_from_json(o: Mapping[str, Any]) -> IncidentState:
    return IncidentState(
        incident_id=o["incident_id"],
        fingerprint=o["fingerprint"],
        tenant=o["tenant"],
        service=o["service"],
        path=o["path"],
        kind=o["kind"],
        opened_at_ms=int(o["opened_at_ms"]),
        detected_at_ms=int(o["detected_at_ms"]),
        last_activity_ms=int(o["last_activity_ms"]),
        services={
            k: ServiceEntry(v[0], v[1], int(v[2]), int(v[3]), Breakdown(*v[4]), float(v[5]), v[6])
            for k, v in o["services"].items()
        },
        breakdown=Breakdown(*o["breakdown"]),
        score=float(o["score"]),
        severity=o["severity"],
        signals=[SignalInfo(*s) for s in o["signals"]],
        samples=[Sample(*s) for s in o["samples"]],
        templates=[TemplateInfo(*t) for t in o["templates"]],
        trace_ids=list(o["trace_ids"]),
        stats={k: float(v) for k, v in o["stats"].items()},
        root=o["root"],
        anomalies=int(o["anomalies"]),
    )


def encode_pending(item: Pending) -> list[Any]:
    """A buffered item as a JSON-able list (the same codec as the state's)."""
    if isinstance(item, TraceFact):
        return ["fact", *item]
    if isinstance(item, ServiceRecovered):
        return ["recovered", *item]
    return [
        "anomaly",
        *item[:8],
        list(item.breakdown),
        [list(x) for x in item.signals],
        [list(x) for x in item.stats],
        [list(x) for x in item.samples],
        [list(x) for x in item.templates],
    ]


def decode_pending(v: list[Any]) -> Pending:
    tag, rest = v[0], v[1:]
    if tag == "fact":
        return TraceFact(*rest)
    if tag == "recovered":
        return ServiceRecovered(*rest)
    if tag != "anomaly":
        raise ValueError(f"tenant state: unknown pending item {tag!r}")
    return ServiceAnomaly(
        anomaly_id=rest[0],
        tenant=rest[1],
        service=rest[2],
        namespace=rest[3],
        path=rest[4],
        kind=rest[5],
        at_ms=int(rest[6]),
        onset_ms=int(rest[7]),
        breakdown=Breakdown(*rest[8]),
        signals=tuple(SignalInfo(*x) for x in rest[9]),
        stats=tuple((str(k), float(x)) for k, x in rest[10]),
        samples=tuple(Sample(*x) for x in rest[11]),
        templates=tuple(TemplateInfo(*x) for x in rest[12]),
    )


def encode_state(state: TenantState) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tenant": state.tenant,
        "incidents": {k: _incident_to_json(v) for k, v in state.incidents.items()},
        "recent": state.recent,
        "edges": state.edges,
        "precedence": state.precedence,
        "failing_traces": state.failing_traces,
        "suppressed": state.suppressed,
        "known_templates": state.known_templates,
        "discoveries": state.discoveries,
        "age_buckets": state.age_buckets,
        "first_seen_ms": state.first_seen_ms,
        "witnesses": state.witnesses,
        "young": state.young,
        "discoverers": state.discoverers,
        "pending": [encode_pending(p) for at in sorted(state.pending) for p in state.pending[at]],
    }


def decode_state(obj: Mapping[str, Any]) -> TenantState:
    if obj.get("schema_version") not in (1, 2, SCHEMA_VERSION):
        raise ValueError(f"tenant state: unsupported schema_version {obj.get('schema_version')!r}")
    state = TenantState(
        tenant=str(obj["tenant"]),
        incidents={k: _incident_from_json(v) for k, v in obj["incidents"].items()},
        recent={str(k): int(v) for k, v in obj["recent"].items()},
        edges={str(k): [int(v[0]), int(v[1])] for k, v in obj["edges"].items()},
        precedence={str(k): [int(v[0]), int(v[1])] for k, v in obj["precedence"].items()},
        failing_traces={str(k): [str(x) for x in v] for k, v in obj["failing_traces"].items()},
        suppressed=int(obj["suppressed"]),
        known_templates={str(k): int(v) for k, v in obj.get("known_templates", {}).items()},
        discoveries=[int(t) for t in obj.get("discoveries", [])],
        age_buckets=int(obj.get("age_buckets", 0)),
        first_seen_ms=int(obj.get("first_seen_ms", -1)),
        witnesses={str(k): [int(v[0]), int(v[1])] for k, v in obj.get("witnesses", {}).items()},
        young=[[int(v[0]), *(str(t) for t in v[1:])] for v in obj.get("young", [])],
        discoverers={str(k): [str(v[0]), int(v[1])] for k, v in obj.get("discoverers", {}).items()},
    )
    for raw in obj.get("pending", []):
        hold(state, decode_pending(raw))
    return state


def hold(state: TenantState, item: Pending) -> None:
    """Buffer ``item`` under its event time ``at_ms`` until the watermark passes it."""
    bucket = state.pending.get(item.at_ms)
    if bucket is None:
        state.pending[item.at_ms] = bucket = []
        heapq.heappush(state.pending_heap, item.at_ms)
    bucket.append(item)
