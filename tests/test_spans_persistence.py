"""What the span adapters store is the whole state, after every call.

TraceTimeline and SpanRed (jobs/span_operators.py) keep decoded states in a per-key cache, trusted while
the stored revision is the one they last wrote, and write to Flink only what they think changed. A change
the cache holds but Flink never got is invisible until a restore (or a cache clear) reads the state
back: the job then diverges from the engine only after a failure. Here the real adapters run on the
Flink stand-ins of tests/test_spans_adapters.py and, after every element and every timer, what is stored
for the current key is decoded afresh and compared with the cache, and every stored trace and operation
must have its next wake-up stored as well (its trace id under its timer's time, a timer registered).

Input: logs (trace observations, log timings) and spans of the span scenarios, delivered out of event-time
order: neighbouring messages swapped (within the out-of-orderness bound) and every 40th span message held
back by a minute (beyond it: late at the timeline and late spans at RED).
"""

from __future__ import annotations

from typing import Any

import pytest

from jobs.operators import _obs_shard, _obs_time, _timing_shard, _timing_time, dumps, loads, shard_elements
from jobs.span_operators import CHUNKS_PER_TIME, SpanRed, TraceTimeline, route
from tests.test_spans_adapters import _Job, _Operator, _Runtime
from udfs import engine, log_timings, red, traces
from udfs.batch import summarize
from udfs.records import LogRecord, Span
from udfs.scenarios.library import build, requests_of, span_requests_of
from udfs.signals import SignalMatcher

HELD_BACK_MS = 60_000
"""Far beyond the out-of-orderness bound (5 s) and RED's allowed lateness (2 s): a held-back message's
spans are released by timers already in the past and counted late by RED."""


def _check_timeline(op: _Operator) -> int:
    fn: TraceTimeline = op.fn
    shard = op.keyed.key
    rev = op.keyed.data.get(("trace-shard-revision", shard))
    due: dict[str, set[int]] = {}
    for key, raw in op.keyed.data.get(("trace-timer-chunks", shard), {}).items():
        for trace_id in loads(raw):
            due.setdefault(trace_id, set()).add(key // CHUNKS_PER_TIME)
    cached = fn.cache.get(shard, {}) if fn.written.get(shard) == rev else {}
    fresh = TraceTimeline(engine.EngineConfig())  # as after a restore: the stored traces and the log replayed
    fresh.open(_Runtime(op.keyed))
    _, back = fresh._begin(shard)
    assert shard in fresh.complete  # every trace alive after a restore is in ``back``
    if cached and shard in fn.complete:
        assert set(back) == set(cached), (shard, set(back) ^ set(cached))
    for trace_id, state in cached.items():
        assert trace_id in back, (shard, trace_id, "cached, never written")
        assert traces.encode_state(back[trace_id]) == traces.encode_state(state), (shard, trace_id)
    for trace_id, state in back.items():
        wake = traces.next_timer(state, fn.cfg)
        assert wake in due.get(trace_id, ()), (shard, trace_id, wake, "stored trace without its next timer stored")
        assert (wake, shard) in op.registered or wake <= op.fired_up_to, (shard, trace_id, wake, "no timer")
    return len(cached)


def _check_red(op: _Operator) -> int:
    fn: SpanRed = op.fn
    key = op.keyed.key
    cached = fn.cache.get(key)
    fresh = SpanRed(engine.EngineConfig())  # as after a restore: nothing cached, everything read back
    fresh.open(_Runtime(op.keyed))
    rev, stored = fresh._load(key, None)
    if stored is None:
        assert rev == 0 and cached is None, key
        return 0
    if cached is None or cached[0] != rev:
        return 0
    assert red.encode_state(stored) == red.encode_state(cached[1]), key
    wake = red.next_timer(cached[1], fn.cfg)
    assert (wake, key) in op.registered or wake <= op.fired_up_to, (key, wake, "no timer")
    return 1


class _CheckedOperator(_Operator):
    """The stand-in operator, checking the stored state against the cache after every call; timers
    fire when the watermark rises (as in Flink: a timer registered at or before the current watermark
    fires with the next one)."""

    def __init__(self, fn: Any) -> None:
        super().__init__(fn)
        self.check = _check_timeline if isinstance(fn, TraceTimeline) else _check_red
        self.checked = self.calls_seen = 0
        self.fired_up_to = -(2**62)

    def after_call(self) -> None:
        """After every call; the timeline's after every third (reading a shard back reads all of it)."""
        self.calls_seen += 1
        if isinstance(self.fn, SpanRed) or self.calls_seen % 3 == 0:
            self.checked += self.check(self)

    def advance(self, watermark: int) -> list[Any]:
        if watermark <= self.fired_up_to:
            return []
        self.fired_up_to = watermark
        return super().advance(watermark)


class _CheckedJob(_Job):
    def __init__(self) -> None:
        cfg = engine.EngineConfig()
        self.timeline, self.red = _CheckedOperator(TraceTimeline(cfg)), _CheckedOperator(SpanRed(cfg))
        self.facts = 0
        self.matcher = SignalMatcher()

    def logs(self, msg: list[LogRecord]) -> int:
        """As DecodeAndSummarize sends a log message's trace observations and log timings on."""
        summary = summarize(msg, self.matcher, trace_sample=engine.EngineConfig().trace_sample)
        latest = max(r.time_unix_nano // 1_000_000 for r in msg)
        for row, _ in shard_elements(summary.traces, _obs_shard, _obs_time):
            self._to_red(self.timeline.element(row[0], row[1]))
        for row, _ in shard_elements(log_timings.timings_of(msg), _timing_shard, _timing_time):
            self._to_red(self.timeline.element(row[0], row[1]))
        return latest


def _delivery(records: list[LogRecord], spans: list[Span]) -> list[tuple[str, Any]]:
    """Log and span messages by first event time; neighbours swapped; every 40th span message later."""
    messages: list[tuple[int, str, Any]] = [(m[0].time_unix_nano, "logs", m) for m in requests_of(records, 200)]
    messages += [(m[0].start_unix_nano, "spans", m) for m in span_requests_of(spans, 200)]
    messages.sort(key=lambda m: (m[0], m[1]))
    held: list[tuple[int, str, Any]] = []
    ordered: list[tuple[int, str, Any]] = []
    n_spans = 0
    for m in messages:
        if m[1] == "spans":
            n_spans += 1
            if n_spans % 40 == 0:
                held.append((m[0] + HELD_BACK_MS * 1_000_000, *m[1:]))
                continue
        while held and held[0][0] <= m[0]:
            ordered.append(held.pop(0))
        ordered.append(m)
    ordered += held
    for i in range(0, len(ordered) - 1, 2):
        ordered[i], ordered[i + 1] = ordered[i + 1], ordered[i]
    return [(kind, msg) for _, kind, msg in ordered]


@pytest.mark.parametrize("name", ["latency_chain", "cpu_contention", "network_delay_pod", "span_steady", "cascade"])
def test_what_the_span_adapters_store_reads_back_as_their_state_after_every_call(name: str) -> None:
    sc = build(name, scale=0.25)
    assert sc.spans, name
    job = _CheckedJob()
    ooo = engine.EngineConfig().out_of_orderness_ms
    latest = -(2**62)
    for kind, msg in _delivery(list(sc.records), list(sc.spans)):
        latest = max(latest, job.logs(msg) if kind == "logs" else job.message(msg))
        job.advance(latest - ooo)
    late = sum(s.late_spans for s in (job.red.fn.cache[k][1] for k in job.red.fn.cache))
    assert job.timeline.checked > 300 and job.red.checked > 200 and late > 0, (
        job.timeline.checked,
        job.red.checked,
        late,
    )
    job.advance(engine.END_OF_TIME)  # everything expires: nothing is left behind
    left = [k for k, v in job.timeline.keyed.data.items() if v and k[0] != "trace-shard-revision"]
    assert left == [] and job.red_states() == {}


def test_red_state_stored_in_layout_1_is_read_back_and_moves_to_layout_2() -> None:
    """Layout 1 (a LONG revision, the clock only in the core) as a savepoint of the previous job holds it:
    read as it was, then written with the clock, the old revision cleared."""
    from udfs.anomaly import SpanTiming

    op = _Operator(SpanRed(engine.EngineConfig()))
    key = "t\x1fsvc\x1fGET /"
    timing = SpanTiming("t", "svc", "GET /", 25_000, 1_200, 800, False, False)
    state = red.new_state("t", "svc", "GET /")
    red.on_timing(state, timing, engine.EngineConfig().red)
    state.late_spans = 3
    op.keyed.data.update({
        ("red-core", key): dumps(red.encode_core(state)),
        ("red-open-buckets", key): {20_000: dumps(red.encode_bucket(state.open[20_000]))},
        ("red-revision", key): 7,
    })  # fmt: skip
    ((_, row),) = list(route([timing._replace(end_ms=26_000)], engine.EngineConfig().red))  # as the timeline sends it
    op.element(row[0], row[1])
    red.on_timing(state, timing._replace(end_ms=26_000), engine.EngineConfig().red)
    assert ("red-revision", key) not in op.keyed.data
    assert loads(op.keyed.data[("red-clock", key)]) == [8, 26_000, 3]
    assert red.encode_state(_red_loaded(op, key)) == red.encode_state(state)


def _red_loaded(op: _Operator, key: str) -> red.RedState:
    fresh = SpanRed(engine.EngineConfig())
    fresh.open(_Runtime(op.keyed))
    _, state = fresh._load(key, None)
    assert state is not None
    return state


def test_timeline_timer_lists_stored_in_layout_2_are_still_read_when_their_timer_fires() -> None:
    """Layout 2 kept a timer's trace ids as one entry per time (rewritten by every element), and a
    version-2 trace state (no release time): a savepoint of the previous job. Its timer still
    releases the trace's held span to RED and removes the old entry."""
    import heapq

    from jobs.operators import shard_key
    from jobs.span_operators import SPAN_TIMINGS
    from udfs.records import SpanStatus

    cfg = engine.EngineConfig()
    trace_id = "ab" * 16
    shard = shard_key("t", trace_id)
    span = Span("t", "svc", trace_id, "s1", "", "GET /", 2, 1_000 * 1_000_000, 1_500 * 1_000_000, SpanStatus.UNSET, "")
    state = traces.new_state("t", trace_id)
    at_ms = traces.on_span(state, span, cfg.traces).timer_at_ms
    stored = traces.encode_state(state)
    del stored["released_ms"]
    stored["schema_version"] = 2
    op = _Operator(TraceTimeline(cfg))
    op.keyed.data.update({
        ("trace-timelines", shard): {trace_id: dumps(stored)},
        ("trace-timers", shard): {at_ms: dumps([trace_id])},
        ("trace-shard-revision", shard): 5,
    })  # fmt: skip
    heapq.heappush(op.timers, (at_ms, shard))
    op.registered.add((at_ms, shard))
    out = op.advance(at_ms)
    sent = [row for tag, row in (x for x in out if isinstance(x, tuple) and x and x[0] is SPAN_TIMINGS)]
    assert [row[1][0] for row in sent] == [("t", "svc", "GET /")]
    assert not op.keyed.data[("trace-timers", shard)]
    fresh = TraceTimeline(cfg)  # and what it stored reads back: the trace, released, due at its expiry
    fresh.open(_Runtime(op.keyed))
    _, back = fresh._begin(shard)
    assert back[trace_id].held == {} and back[trace_id].released_ms == at_ms
