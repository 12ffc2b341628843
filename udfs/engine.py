"""The whole detection graph run in memory over messages, with the same pure steps and the same
event-time semantics as the Flink job (keyed state per key, timers fired as the watermark passes
them, bounded out-of-orderness). Used by tests, evaluation and benchmarks; the Flink job is the
production runner of the same steps.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from udfs import correlate, log_timings, red, tenant_state, traces, window, window_state
from udfs.anomaly import ServiceAnomaly, ServiceRecovered, SpanTiming, TraceFact, TraceObservation
from udfs.batch import summarize
from udfs.records import LogRecord, Span
from udfs.signals import SignalMatcher

END_OF_TIME = 2**62
_T = TypeVar("_T", TraceObservation, Span)


@dataclass(frozen=True)
class EngineConfig:
    window: window.WindowConfig = field(default_factory=window.WindowConfig)
    correlate: correlate.CorrelateConfig = field(default_factory=correlate.CorrelateConfig)
    traces: traces.TraceConfig = field(default_factory=traces.TraceConfig)
    red: red.RedConfig = field(default_factory=red.RedConfig)
    out_of_orderness_ms: int = 5_000
    max_notables: int = 64
    trace_sample: int = 16

    def __post_init__(self) -> None:
        if self.traces.straggler_ms < self.out_of_orderness_ms:  # see udfs.traces.expired
            object.__setattr__(self, "traces", replace(self.traces, straggler_ms=self.out_of_orderness_ms))


@dataclass
class Counters:
    records: int = 0
    messages: int = 0
    late_records: int = 0
    spans: int = 0
    anomalies_spans: int = 0
    anomalies_immediate: int = 0
    anomalies_windowed: int = 0
    incidents_opened: int = 0
    incidents_updated: int = 0
    incidents_resolved: int = 0


class Engine:
    """Feed messages in arrival order; collect incident events (contract dicts) as they happen."""

    def __init__(self, cfg: EngineConfig | None = None) -> None:
        self.cfg = cfg or EngineConfig()
        self.matcher = SignalMatcher()
        self.services: dict[tuple[str, str], window_state.ServiceState] = {}
        self.traces: dict[tuple[str, str], traces.TraceState] = {}
        self.tenants: dict[str, tenant_state.TenantState] = {}
        self.red: dict[tuple[str, ...], red.RedState] = {}
        self._timers: list[tuple[int, int, str, tuple[str, ...]]] = []
        self._registered: set[tuple[int, str, tuple[str, ...]]] = set()
        self.max_event_ms = -(2**62)
        self.watermark_ms = -(2**62)
        self.counters = Counters()
        self.events: list[dict[str, Any]] = []

    # ---- inputs ------------------------------------------------------------------------------

    def feed(self, records: Sequence[LogRecord]) -> list[dict[str, Any]]:
        """One message (a batch of records): summarize once, step the keyed states, advance the
        watermark to max event time - out_of_orderness and fire due timers."""
        out: list[dict[str, Any]] = []
        summary = summarize(
            records,
            self.matcher,
            bucket_ms=self.cfg.window.bucket_ms,
            max_notables=self.cfg.max_notables,
            trace_sample=self.cfg.trace_sample,
        )
        self.counters.records += summary.records
        self.counters.messages += 1
        for batch in summary.batches:
            key = (batch.tenant, batch.service)
            state = self.services.get(key) or window_state.new_state(batch.tenant, batch.service, batch.namespace)
            late_before = state.late_records
            step = window.on_batch(state, batch, self.cfg.window, self.watermark_ms)
            self.services[key] = step.state
            self.counters.late_records += step.state.late_records - late_before
            self._register(step.timer_at_ms, "service", key)
            out.extend(self._to_tenant(step.emit))
            self.max_event_ms = max(self.max_event_ms, batch.max_time_ms)
        out.extend(self._to_traces(summary.traces, traces.on_observation))
        out.extend(self._timings(log_timings.timings_of(records)))  # logs that state a duration: RED (no spans needed)
        out.extend(self.advance(self.max_event_ms - self.cfg.out_of_orderness_ms))
        return out

    def feed_spans(self, spans: Iterable[Span]) -> list[dict[str, Any]]:
        """One message of spans (or all of them): step the trace timelines. The watermark is the
        logs' (``feed``) or the caller's (``advance``): spans never move it here, as in the job,
        where the logs' and the spans' watermarks are each their own stream's."""
        items = list(spans)
        self.counters.spans += len(items)
        return self._to_traces(items, traces.on_span)

    def advance(self, watermark_ms: int) -> list[dict[str, Any]]:
        """Move the watermark forward (never back) and fire every timer at or before it."""
        out: list[dict[str, Any]] = []
        if watermark_ms <= self.watermark_ms:
            return out
        self.watermark_ms = watermark_ms
        while self._timers and self._timers[0][0] <= watermark_ms:
            at, _, kind, key = heapq.heappop(self._timers)
            self._registered.discard((at, kind, key))
            out.extend(self._fire(at, kind, key))
        return out

    def finish(self) -> list[dict[str, Any]]:
        """End of a bounded input: the watermark jumps to the end of time (as in Flink)."""
        return self.advance(END_OF_TIME)

    # ---- plumbing ----------------------------------------------------------------------------

    # Timers due at the same time fire upstream first: in Flink an operator's timer at T fires once
    # every upstream operator has fired its own timers at T and sent what they emitted.
    # Within a stage, timers due together fire in key order: never in registration order, which a
    # restore does not keep (a snapshot stores the timers, not the order they were made in).
    _STAGE = {"service": 0, "trace": 0, "red": 1, "tenant": 2}

    def _register(self, at: int | None, kind: str, key: tuple[str, ...]) -> None:
        if at is None or (at, kind, key) in self._registered:
            return
        self._registered.add((at, kind, key))
        heapq.heappush(self._timers, (at, self._STAGE[kind], kind, key))

    def _fire(self, at: int, kind: str, key: tuple[str, ...]) -> list[dict[str, Any]]:
        if kind == "service":
            sstate = self.services.get((key[0], key[1]))
            if sstate is None:
                return []
            sstep = window.on_timer(sstate, self.cfg.window, at)
            self._register(sstep.timer_at_ms, "service", key)
            return self._to_tenant(sstep.emit)
        if kind == "trace":
            tstate = self.traces.get((key[0], key[1]))
            if tstate is None:
                return []
            tstep = traces.on_timer(tstate, at, self.cfg.traces)
            if traces.expired(tstate, at, self.cfg.traces):
                del self.traces[(key[0], key[1])]  # eviction rule (traces.expired)
            else:
                self._register(tstep.timer_at_ms, "trace", key)
            return self._timings(tstep.emit)
        if kind == "red":
            rstate = self.red.get(key)
            if rstate is None:
                return []
            rstep = red.on_timer(rstate, at, self.cfg.red)
            if red.expired(rstate, at, self.cfg.red):
                del self.red[key]  # eviction rule: event-time TTL after the operation's last span
            else:
                self._register(rstep.timer_at_ms, "red", key)
            return self._to_tenant(rstep.emit)
        cstate = self.tenants.get(key[0])
        if cstate is None:
            return []
        cstep = correlate.on_timer(cstate, at, self.cfg.correlate)
        self._register(cstep.timer_at_ms, "tenant", key)
        return self._record(cstep.emit)

    def _tenant(self, tenant: str) -> tenant_state.TenantState:
        state = self.tenants.get(tenant)
        if state is None:
            state = self.tenants[tenant] = tenant_state.new_state(tenant)
        return state

    def _to_tenant(self, items: Iterable[ServiceAnomaly | ServiceRecovered]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in items:
            state = self._tenant(item.tenant)
            if isinstance(item, ServiceAnomaly) and item.path == "immediate":
                self.counters.anomalies_immediate += 1
                step = correlate.on_anomaly(state, item, self.cfg.correlate)
            else:
                if isinstance(item, ServiceAnomaly) and item.path == "windowed":  # not hellos, not reports
                    self.counters.anomalies_windowed += 1
                if isinstance(item, ServiceAnomaly):
                    self.counters.anomalies_spans += item.kind in ("latency", "span_errors")
                step = correlate.enqueue(state, item, self.cfg.correlate)
            self._register(step.timer_at_ms, "tenant", (item.tenant, ""))
            out.extend(self._record(step.emit))
        return out

    def _to_traces(
        self, items: Iterable[_T], step_fn: Callable[[traces.TraceState, _T, traces.TraceConfig], traces.Step]
    ) -> list[dict[str, Any]]:
        """Step the (tenant, trace id) timelines with observations or spans; facts go to the tenant."""
        out: list[dict[str, Any]] = []
        for item in items:
            key = (item.tenant, item.trace_id)
            state = self.traces.get(key) or traces.new_state(*key)
            step = step_fn(state, item, self.cfg.traces)
            self.traces[key] = step.state
            self._register(step.timer_at_ms, "trace", key)
            out.extend(self._timings(step.emit))
        return out

    def _timings(self, items: Iterable[TraceFact | SpanTiming]) -> list[dict[str, Any]]:
        """Span timings to their (tenant, service, operation) RED state; trace facts to the tenant."""
        out: list[dict[str, Any]] = []
        facts: list[TraceFact] = []
        for item in items:
            if isinstance(item, TraceFact):
                facts.append(item)
                continue
            key = red.key_of(item)
            rstate = self.red.get(key) or red.new_state(*key)
            rstep = red.on_timing(rstate, item, self.cfg.red)
            self.red[key] = rstep.state
            self._register(rstep.timer_at_ms, "red", key)
        out.extend(self._facts(facts))
        return out

    def _facts(self, facts: Iterable[TraceFact]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for fact in facts:
            step = correlate.enqueue(self._tenant(fact.tenant), fact, self.cfg.correlate)
            self._register(step.timer_at_ms, "tenant", (fact.tenant, ""))
            out.extend(self._record(step.emit))
        return out

    def _record(self, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        out = list(events)
        for e in out:
            if e["event"] == "opened":
                self.counters.incidents_opened += 1
            elif e["event"] == "updated":
                self.counters.incidents_updated += 1
            else:
                self.counters.incidents_resolved += 1
        self.events.extend(out)
        return out

    # ---- checkpoint (proves the codecs carry everything) --------------------------------------

    def snapshot(self) -> str:
        """All keyed state and timers as JSON (the versioned codecs; never pickle)."""
        return json.dumps(
            {
                "services": [window_state.encode_state(s) for s in self.services.values()],
                "traces": [traces.encode_state(s) for s in self.traces.values()],
                "red": [red.encode_state(s) for s in self.red.values()],
                "tenants": [tenant_state.encode_state(s) for s in self.tenants.values()],
                "timers": sorted([at, kind, list(key)] for at, _, kind, key in self._timers),
                "max_event_ms": self.max_event_ms,
                "watermark_ms": self.watermark_ms,
            },
            sort_keys=True,
        )

    @classmethod
    def restore(cls, snapshot: str, cfg: EngineConfig | None = None) -> Engine:
        obj = json.loads(snapshot)
        eng = cls(cfg)
        for s in obj["services"]:
            st = window_state.decode_state(s)
            eng.services[(st.tenant, st.service)] = st
        for s in obj["traces"]:
            tt = traces.decode_state(s)
            eng.traces[(tt.tenant, tt.trace_id)] = tt
        for s in obj.get("red", []):
            rt = red.decode_state(s)
            eng.red[red.key_of_state(rt)] = rt
        for s in obj["tenants"]:
            ct = tenant_state.decode_state(s)
            eng.tenants[ct.tenant] = ct
        for at, kind, key in obj["timers"]:
            eng._register(int(at), str(kind), tuple(str(k) for k in key))
        eng.max_event_ms = int(obj["max_event_ms"])
        eng.watermark_ms = int(obj["watermark_ms"])
        return eng


def run(
    messages: Iterable[Sequence[LogRecord]], spans: Iterable[Span] = (), cfg: EngineConfig | None = None
) -> list[dict[str, Any]]:
    """Replay ``messages`` (spans first, so the call graph is known) and return every event."""
    eng = Engine(cfg)
    eng.feed_spans(spans)
    for msg in messages:
        eng.feed(msg)
    eng.finish()
    return eng.events
