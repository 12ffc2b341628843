"""Request timelines per (tenant, trace id): which services a request passed through, in order, and
each service's first failure. Emits trace facts for the tenant's call graph and error precedence.

Bounded: at most ``max_services`` per trace and ``max_spans`` remembered span ids; the state expires
``ttl_ms`` of event time after the trace was last seen (the adapter registers that timer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from udfs.anomaly import TraceFact, TraceObservation
from udfs.records import Span

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TraceConfig:
    callee_logs_first: bool = True
    """How the call graph is learned without spans. Access logs are usually written when a request
    completes, so a callee's line comes before its caller's; set False for start-of-request logging.
    Spans, when given, always win over this guess."""
    max_services: int = 32
    max_spans: int = 256
    ttl_ms: int = 600_000


@dataclass
class TraceState:
    tenant: str
    trace_id: str
    services: list[list[Any]] = field(default_factory=list)
    """[service, first_ms, first_failure_ms (-1 = none)], ordered by first_ms."""
    emitted: list[str] = field(default_factory=list)
    """Facts already emitted, as "kind|a|b" (never emit twice)."""
    span_services: dict[str, str] = field(default_factory=dict)
    pending_children: list[list[str]] = field(default_factory=list)
    """[parent_span_id, child_service] for spans whose parent has not arrived yet."""
    last_ms: int = 0


class Step(NamedTuple):
    state: TraceState
    emit: tuple[TraceFact, ...]
    timer_at_ms: int
    """When to expire this trace's state (event time)."""


def new_state(tenant: str, trace_id: str) -> TraceState:
    return TraceState(tenant=tenant, trace_id=trace_id)


def _fact(state: TraceState, kind: str, a: str, b: str, at_ms: int, out: list[TraceFact]) -> None:
    key = f"{kind}|{a}|{b}"
    if a == b or key in state.emitted:
        return
    state.emitted.append(key)
    out.append(TraceFact(state.tenant, state.trace_id, kind, a, b, at_ms))


def on_observation(state: TraceState, obs: TraceObservation, cfg: TraceConfig) -> Step:
    """Fold one service's appearance (and first failure) in this trace into the timeline."""
    out: list[TraceFact] = []
    row = next((r for r in state.services if r[0] == obs.service), None)
    if row is None:
        if len(state.services) >= cfg.max_services:
            state.last_ms = max(state.last_ms, obs.first_ms)
            return Step(state, (), state.last_ms + cfg.ttl_ms)
        row = [obs.service, obs.first_ms, obs.first_failure_ms]
        state.services.append(row)
    else:
        row[1] = min(int(row[1]), obs.first_ms)
        if obs.first_failure_ms >= 0 and (row[2] < 0 or obs.first_failure_ms < row[2]):
            row[2] = obs.first_failure_ms
    state.services.sort(key=lambda r: (r[1], r[0]))
    state.last_ms = max(state.last_ms, obs.first_ms, obs.first_failure_ms)
    # Learned call graph: every ordered pair of first appearances (see TraceConfig.callee_logs_first).
    # All pairs rather than neighbours, so the facts do not depend on the order observations arrive in.
    for i, first in enumerate(state.services):
        for then in state.services[i + 1 :]:
            if first[1] < then[1]:
                caller, callee = (then[0], first[0]) if cfg.callee_logs_first else (first[0], then[0])
                _fact(state, "edge", str(caller), str(callee), max(int(first[1]), int(then[1])), out)
    # Error precedence: whose first failure came first in this request.
    failed = sorted((r for r in state.services if r[2] >= 0), key=lambda r: (r[2], r[0]))
    for i, earlier in enumerate(failed):
        for later in failed[i + 1 :]:
            if earlier[2] < later[2]:
                _fact(state, "precedes", str(earlier[0]), str(later[0]), int(later[2]), out)
    return Step(state, tuple(out), state.last_ms + cfg.ttl_ms)


def on_span(state: TraceState, span: Span, cfg: TraceConfig) -> Step:
    """Fold one span: parent/child spans in different services are a call edge (from spans)."""
    out: list[TraceFact] = []
    state.last_ms = max(state.last_ms, span.start_ms)
    if len(state.span_services) < cfg.max_spans:
        state.span_services[span.span_id] = span.service
    if span.parent_span_id:
        parent = state.span_services.get(span.parent_span_id)
        if parent is not None:
            _fact(state, "call", parent, span.service, state.last_ms, out)
        elif len(state.pending_children) < cfg.max_spans:
            state.pending_children.append([span.parent_span_id, span.service])
    still: list[list[str]] = []
    for parent_id, child in state.pending_children:
        parent = state.span_services.get(parent_id)
        if parent is None:
            still.append([parent_id, child])
        else:
            _fact(state, "call", parent, child, state.last_ms, out)
    state.pending_children = still
    return Step(state, tuple(out), state.last_ms + cfg.ttl_ms)


def encode_state(state: TraceState) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tenant": state.tenant,
        "trace_id": state.trace_id,
        "services": state.services,
        "emitted": state.emitted,
        "span_services": state.span_services,
        "pending_children": state.pending_children,
        "last_ms": state.last_ms,
    }


def decode_state(obj: Mapping[str, Any]) -> TraceState:
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"trace state: unsupported schema_version {obj.get('schema_version')!r}")
    return TraceState(
        tenant=str(obj["tenant"]),
        trace_id=str(obj["trace_id"]),
        services=[[str(r[0]), int(r[1]), int(r[2])] for r in obj["services"]],
        emitted=[str(x) for x in obj["emitted"]],
        span_services={str(k): str(v) for k, v in obj["span_services"].items()},
        pending_children=[[str(a), str(b)] for a, b in obj["pending_children"]],
        last_ms=int(obj["last_ms"]),
    )
