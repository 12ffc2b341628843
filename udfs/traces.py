"""Request timelines per (tenant, trace id): which services a request passed through, in order, and
each service's first failure. Emits trace facts for the tenant's call graph and error precedence,
and each span's timing with its self time (``SpanTiming``) for the RED state (udfs.red).

Self time: a span is held until the watermark passes its end (rounded up to ``settle_ms``); its
children started before it ended, so by then every child has arrived (bounded out-of-orderness),
and its self time is its duration minus the part of it its children cover. A child arriving first
waits for its parent as an orphan interval.

Bounded: at most ``max_services`` per trace, ``max_spans`` remembered span ids, held spans and
orphans (past that a span is counted at once, self time = duration), ``max_intervals`` child
intervals per held span; the state expires ``ttl_ms`` of event time after the trace was last seen
(rounded up likewise; the adapter registers that timer), or sooner when it waits for nothing
(``straggler_ms`` after its last release: see ``expired``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from udfs.anomaly import SpanTiming, TraceFact, TraceObservation
from udfs.records import Span, SpanStatus

SCHEMA_VERSION = 3


@dataclass(frozen=True)
class TraceConfig:
    callee_logs_first: bool = True
    """How the call graph is learned without spans. Access logs are usually written when a request
    completes, so a callee's line comes before its caller's; set False for start-of-request logging.
    Spans, when given, always win over this guess."""
    max_services: int = 32
    max_spans: int = 256
    max_intervals: int = 32
    ttl_ms: int = 600_000
    settle_ms: int = 10_000
    """Timers fall on multiples of this: held spans are released at the first one at or after their
    end, the state expires at the first one at or after its TTL. The RED bucket (udfs.red.RedConfig
    .bucket_ms, a multiple of this): RED needs a span only when its bucket closes, so releasing it
    later than its end changes nothing RED decides, and a trace needs one timer per bucket, not one
    per span (the adapter shares them between the traces of a shard)."""
    straggler_ms: int = 10_000
    """How long a trace of spans that waits for nothing stays after its last release (``expired``):
    at least the bounded out-of-orderness (``udfs.engine.EngineConfig`` raises it to that), within
    which a straggler (a child that started before its parent ended) still arrives."""


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
    held: dict[str, list[Any]] = field(default_factory=dict)
    """span id -> [service, operation, start_us, end_us, error, child_error, [[start_us, end_us], ...]]:
    spans waiting for the watermark to pass their end (self time needs all their children)."""
    orphans: dict[str, list[list[int]]] = field(default_factory=dict)
    """parent span id -> [[start_us, end_us, error], ...] of children that arrived before it."""
    released_ms: int = 0
    """The latest timer that released held spans (event time; 0 = none yet)."""


class Step(NamedTuple):
    state: TraceState
    emit: tuple[TraceFact | SpanTiming, ...]
    timer_at_ms: int
    """When to release held spans or expire this trace's state (event time)."""


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
    return Step(state, fold_observation(state, obs, cfg), next_timer(state, cfg))


def fold_observation(state: TraceState, obs: TraceObservation, cfg: TraceConfig) -> tuple[TraceFact, ...]:
    """``on_observation`` without the next timer (an adapter asks for it once per batch): the facts."""
    out: list[TraceFact] = []
    row = next((r for r in state.services if r[0] == obs.service), None)
    if row is None:
        if len(state.services) >= cfg.max_services:
            state.last_ms = max(state.last_ms, obs.first_ms)
            return ()
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
    return tuple(out)


def on_span(state: TraceState, span: Span, cfg: TraceConfig) -> Step:
    """Fold one span: parent/child spans in different services are a call edge (from spans), dated
    at the first ``settle_ms`` boundary at or after the trace's latest span start: the call graph
    only needs to know an edge exists (and for its TTL, of minutes, when it was last seen), so the
    correlator takes a settle interval's edges together, at one timer, not one per millisecond."""
    return Step(state, fold_span(state, span, cfg), next_timer(state, cfg))


def fold_span(state: TraceState, span: Span, cfg: TraceConfig) -> tuple[TraceFact | SpanTiming, ...]:
    """``on_span`` without the next timer (an adapter asks for it once per batch): facts, timings."""
    out: list[TraceFact] = []
    state.last_ms = max(state.last_ms, span.start_ms)
    at_ms = _settled(state.last_ms, cfg)
    if len(state.span_services) < cfg.max_spans:
        state.span_services[span.span_id] = span.service
    if span.parent_span_id:
        parent = state.span_services.get(span.parent_span_id)
        if parent is not None:
            _fact(state, "call", parent, span.service, at_ms, out)
        elif len(state.pending_children) < cfg.max_spans:
            state.pending_children.append([span.parent_span_id, span.service])
    still: list[list[str]] = []
    for parent_id, child in state.pending_children:
        parent = state.span_services.get(parent_id)
        if parent is None:
            still.append([parent_id, child])
        else:
            _fact(state, "call", parent, child, at_ms, out)
    state.pending_children = still
    timings = _hold(state, span, cfg)
    return (*out, *timings)


def _release_ms(end_us: int, cfg: TraceConfig) -> int:
    return _settled(-(-end_us // 1_000), cfg)


def _settled(at_ms: int, cfg: TraceConfig) -> int:
    return -(-at_ms // cfg.settle_ms) * cfg.settle_ms


def _hold(state: TraceState, span: Span, cfg: TraceConfig) -> tuple[SpanTiming, ...]:
    """Hold ``span`` until its children are known; give its interval to a held parent."""
    start_us, end_us = span.start_unix_nano // 1_000, max(span.end_unix_nano // 1_000, span.start_unix_nano // 1_000)
    error = int(span.status == SpanStatus.ERROR)
    parent = state.held.get(span.parent_span_id) if span.parent_span_id else None
    if parent is not None:
        _add_child(parent, start_us, end_us, error, cfg)
    elif span.parent_span_id and (span.parent_span_id in state.orphans or len(state.orphans) < cfg.max_spans):
        waiting = state.orphans.setdefault(span.parent_span_id, [])
        if len(waiting) < cfg.max_intervals:
            waiting.append([start_us, end_us, error])
    row: list[Any] = [span.service, span.name, start_us, end_us, error, 0, []]
    for child in state.orphans.pop(span.span_id, []):
        _add_child(row, child[0], child[1], child[2], cfg)
    if span.span_id in state.held or len(state.held) >= cfg.max_spans:
        return (_timing(state, row),)
    state.held[span.span_id] = row
    return ()


def _add_child(row: list[Any], start_us: int, end_us: int, error: int, cfg: TraceConfig) -> None:
    lo, hi = max(start_us, int(row[2])), min(end_us, int(row[3]))
    row[5] = int(row[5]) | error
    if hi <= lo:
        return
    intervals: list[list[int]] = row[6]
    intervals.append([lo, hi])
    if len(intervals) > cfg.max_intervals:
        row[6] = _union(intervals)[: cfg.max_intervals]


def _union(intervals: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def _timing(state: TraceState, row: list[Any]) -> SpanTiming:
    duration = int(row[3]) - int(row[2])
    covered = sum(hi - lo for lo, hi in _union(row[6]))
    error = bool(row[4])
    return SpanTiming(
        tenant=state.tenant,
        service=str(row[0]),
        operation=str(row[1]),
        end_ms=int(row[3]) // 1_000,
        duration_us=duration,
        self_us=max(0, duration - covered),
        error=error,
        own_error=error and not row[5],
    )


def next_timer(state: TraceState, cfg: TraceConfig) -> int:
    """The earliest release of a held span, else the expiry of the trace (event time)."""
    due = [_release_ms(int(r[3]), cfg) for r in state.held.values()]
    return min(due, default=_settled(_expires_ms(state, cfg), cfg))


def _expires_ms(state: TraceState, cfg: TraceConfig) -> int:
    if _done(state):
        return max(state.last_ms, state.released_ms) + cfg.straggler_ms
    return state.last_ms + cfg.ttl_ms


def _done(state: TraceState) -> bool:
    """A trace of spans that holds nothing: every span released, no service known from its logs."""
    return not (state.held or state.services)


def on_timer(state: TraceState, timer_ms: int, cfg: TraceConfig) -> Step:
    """Release every held span whose end the watermark has passed, in (end, span id) order."""
    due = sorted((int(r[3]), sid) for sid, r in state.held.items() if _release_ms(int(r[3]), cfg) <= timer_ms)
    out = tuple(_timing(state, state.held.pop(sid)) for _, sid in due)
    if out:
        state.released_ms = max(state.released_ms, timer_ms)
    return Step(state, out, next_timer(state, cfg))


def expired(state: TraceState, timer_ms: int, cfg: TraceConfig) -> bool:
    """Eviction rule: nothing held and ``ttl_ms`` of event time since the trace was last seen, or,
    for a trace of spans (no service known from its logs), ``straggler_ms`` since its last release
    or its last span's start, whichever came later.

    ``ttl_ms`` bounds how long a request's logs keep coming. Spans are timed by their start and
    sent at their end, and the job assumes each arrives within the bounded out-of-orderness: a
    parent starts before its children, so one that has not come by the time the watermark passes
    its children's release by ``straggler_ms`` (at least that bound) is late by the job's own
    measure, or was never sent (an uninstrumented caller of the trace's first span). Such a parent
    still counts (a fresh timeline, its self time its whole duration); waiting ``ttl_ms`` for it
    held the last ten minutes of requests in state: at 10,000 requests/s, six million traces."""
    return not state.held and _expires_ms(state, cfg) <= timer_ms


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
        "held": state.held,
        "orphans": state.orphans,
        "released_ms": state.released_ms,
    }


def decode_state(obj: Mapping[str, Any]) -> TraceState:
    if obj.get("schema_version") not in (1, 2, SCHEMA_VERSION):  # v1: no held spans, no orphans; v2: no release time
        raise ValueError(f"trace state: unsupported schema_version {obj.get('schema_version')!r}")
    return TraceState(
        tenant=str(obj["tenant"]),
        trace_id=str(obj["trace_id"]),
        services=[[str(r[0]), int(r[1]), int(r[2])] for r in obj["services"]],
        emitted=[str(x) for x in obj["emitted"]],
        span_services={str(k): str(v) for k, v in obj["span_services"].items()},
        pending_children=[[str(a), str(b)] for a, b in obj["pending_children"]],
        last_ms=int(obj["last_ms"]),
        held={str(k): _held_row(r) for k, r in obj.get("held", {}).items()},
        orphans={str(k): [[int(a), int(b), int(e)] for a, b, e in v] for k, v in obj.get("orphans", {}).items()},
        released_ms=int(obj.get("released_ms", 0)),
    )


def _held_row(r: list[Any]) -> list[Any]:
    return [str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), [[int(a), int(b)] for a, b in r[6]]]
