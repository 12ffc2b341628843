"""The spans path's Flink adapters (jobs/span_operators.py) driven without a JVM: keyed state, timers
and the watermark played by small strict stand-ins of Flink's (state per current key, a timer fires
once per (key, time) when the watermark reaches it, in time order). The sharded trace timeline and
the batched RED must end in the pure engine's RED state, key for key, whatever the batching."""

from __future__ import annotations

import collections
import heapq
from typing import Any

import pytest

from jobs.key_groups import MAX_PARALLELISM, key_group
from jobs.operators import MAX_CACHED, TRACE_SHARDS, FactBatch, PendingTimers, shard_elements, shard_key
from jobs.span_operators import SPAN_TIMINGS, SpanRed, TraceTimeline, _span_shard, _span_start_ms
from udfs import engine, red
from udfs.records import Span
from udfs.scenarios import latency
from udfs.scenarios.library import span_requests_of


class _Keyed:
    """Flink keyed state stand-in: one dict per state name, scoped by the current key."""

    def __init__(self) -> None:
        self.key = ""
        self.data: dict[tuple[str, str], Any] = {}


class _Value:
    def __init__(self, keyed: _Keyed, name: str) -> None:
        self.keyed, self.name = keyed, name

    def value(self) -> Any:
        return self.keyed.data.get((self.name, self.keyed.key))

    def update(self, v: Any) -> None:
        self.keyed.data[(self.name, self.keyed.key)] = v

    def clear(self) -> None:
        self.keyed.data.pop((self.name, self.keyed.key), None)


class _Map(_Value):
    def _m(self) -> dict[Any, Any]:
        return self.keyed.data.setdefault((self.name, self.keyed.key), {})  # type: ignore[no-any-return]

    def get(self, k: Any) -> Any:
        return self._m().get(k)

    def put(self, k: Any, v: Any) -> None:
        self._m()[k] = v

    def put_all(self, d: dict[Any, Any]) -> None:
        self._m().update(d)

    def remove(self, k: Any) -> None:
        self._m().pop(k, None)  # Flink's remove of a missing entry is a no-op

    def items(self) -> Any:
        return list(self._m().items())


class _Counter:
    def inc(self, n: int = 1) -> None:
        pass


class _Runtime:
    def __init__(self, keyed: _Keyed) -> None:
        self.keyed = keyed

    def get_state(self, desc: Any) -> _Value:
        return _Value(self.keyed, desc.get_name())

    def get_map_state(self, desc: Any) -> _Map:
        return _Map(self.keyed, desc.get_name())

    def get_metrics_group(self) -> Any:
        return type("G", (), {"counter": lambda self, name: _Counter()})()


class _Operator:
    """One keyed operator: its state, its timers (deduplicated per key and time, as Flink does)."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.keyed = fn, _Keyed()
        self.timers: list[tuple[int, str]] = []
        self.registered: set[tuple[int, str]] = set()
        self.calls = 0
        fn.open(_Runtime(self.keyed))

    def timer_service(self) -> Any:
        return self

    def register_event_time_timer(self, at_ms: int) -> None:
        self.calls += 1
        if (at_ms, self.keyed.key) not in self.registered:
            self.registered.add((at_ms, self.keyed.key))
            heapq.heappush(self.timers, (at_ms, self.keyed.key))

    def get_current_key(self) -> str:
        return self.keyed.key

    def element(self, key: str, value: Any) -> list[Any]:
        self.keyed.key = key
        out = list(self.fn.process_element(value, self) or ())
        self.after_call()
        return out

    def advance(self, watermark: int) -> list[Any]:
        out: list[Any] = []
        while self.timers and self.timers[0][0] <= watermark:
            at, key = heapq.heappop(self.timers)
            self.registered.discard((at, key))
            self.keyed.key = key
            out.extend(self.fn.on_timer(at, self) or ())
            self.after_call()
        return out

    def after_call(self) -> None:
        """Called after every element and every timer (a hook for checking subclasses)."""


class _Job:
    """The timeline and RED adapters wired as in jobs/detect.py (timings to RED, facts counted)."""

    def __init__(self) -> None:
        cfg = engine.EngineConfig()
        self.timeline, self.red = _Operator(TraceTimeline(cfg)), _Operator(SpanRed(cfg))
        self.facts = 0

    def _to_red(self, outputs: list[Any]) -> None:
        for item in outputs:
            if isinstance(item, FactBatch):
                self.facts += len(item.facts)
            else:
                tag, row = item
                assert tag is SPAN_TIMINGS
                self.red.element(row[0], row[1])

    def message(self, msg: list[Span]) -> int:
        latest = -(2**62)
        for row, ts in shard_elements(msg, _span_shard, _span_start_ms):
            self._to_red(self.timeline.element(row[0], row[1]))
            latest = max(latest, ts)
        return latest

    def advance(self, watermark: int) -> None:
        self._to_red(self.timeline.advance(watermark))  # a timeline's timers fire before RED's at a watermark
        self.red.advance(watermark)

    def red_states(self) -> dict[tuple[str, ...], Any]:
        out: dict[tuple[str, ...], Any] = {}
        for _, key in [k for k in self.red.keyed.data if k[0] == "red-core"]:
            self.red.keyed.key = key
            _, state = self.red.fn._load(key, None)
            if state is not None:
                out[red.key_of_state(state)] = red.encode_state(state)
        return out


def test_sharded_timeline_and_batched_red_keep_the_engines_red_state() -> None:
    """Spans message by message, the watermark after each (bounded out-of-orderness): the RED state
    of every operation equals the engine's, open buckets and baselines included."""
    sc = latency.SPAN_SCENARIOS["cpu_contention"](scale=0.25)
    eng, job = engine.Engine(), _Job()
    latest = -(2**62)
    for msg in span_requests_of(sc.spans, 200):
        eng.feed_spans(msg)
        latest = max(latest, job.message(msg))
        eng.advance(latest - eng.cfg.out_of_orderness_ms)
        job.advance(latest - eng.cfg.out_of_orderness_ms)
    want = {k: red.encode_state(s) for k, s in eng.red.items()}
    assert len(want) >= 10 and any(s["recent"] for s in want.values())
    assert job.red_states() == want
    assert job.facts > 0
    job.advance(engine.END_OF_TIME)  # every trace and operation expires: nothing is left behind
    left = [v for (name, _), v in job.timeline.keyed.data.items() if v and name != "trace-shard-revision"]
    assert left == [] and job.red_states() == {}  # (a revision number per shard stays: 16 per tenant)
    assert job.timeline.calls < len(sc.spans) / 4  # timers are per shard and time, not per span


def test_a_shard_past_its_cache_bound_reads_traces_back_one_by_one_and_keeps_the_engines_red_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``MAX_TRACES`` a shard's cache starts over without reading the whole shard back (too many
    to hold): each trace is read as it comes. Slower, and still the engine's RED state."""
    monkeypatch.setattr(TraceTimeline, "MAX_TRACES", 25)
    sc = latency.SPAN_SCENARIOS["cpu_contention"](scale=0.25)
    eng, job = engine.Engine(), _Job()
    latest = -(2**62)
    reads: list[int] = []
    original = _Map.items

    def counted(self: _Map) -> Any:
        if self.name == "trace-timelines":
            reads.append(len(self._m()))
        return original(self)

    monkeypatch.setattr(_Map, "items", counted)
    for msg in span_requests_of(sc.spans, 200):
        eng.feed_spans(msg)
        latest = max(latest, job.message(msg))
        eng.advance(latest - eng.cfg.out_of_orderness_ms)
        job.advance(latest - eng.cfg.out_of_orderness_ms)
    assert job.red_states() == {k: red.encode_state(s) for k, s in eng.red.items()}
    fn = job.timeline.fn
    assert max(len(c) for c in fn.cache.values()) <= 25
    assert any(shard not in fn.complete for shard in fn.cache)  # some shard went past the bound
    assert reads and set(reads) == {0}  # a shard read whole only when first seen, never once overgrown


def test_a_message_reaches_the_timeline_as_one_element_per_shard_in_order() -> None:
    sc = latency.SPAN_SCENARIOS["cpu_contention"](scale=0.25)
    spans = sorted(sc.spans, key=lambda s: s.start_unix_nano)
    msg = span_requests_of(spans, 200, max_span_ms=2**40)[3]  # full messages of one service, as span_bench's
    elements = list(shard_elements(msg, _span_shard, _span_start_ms))
    assert len(elements) <= 16 < len({s.trace_id for s in msg})
    assert sorted((s for row, _ in elements for s in row[1]), key=msg.index) == msg
    for row, ts in elements:
        assert {shard_key(s.tenant, s.trace_id) for s in row[1]} == {row[0]}
        assert list(row[1]) == [s for s in msg if shard_key(s.tenant, s.trace_id) == row[0]]  # message order
        assert ts == max(s.start_unix_nano // 1_000_000 for s in row[1])


def test_pending_timers_skip_only_a_timer_already_registered_and_not_fired() -> None:
    calls: list[int] = []
    ctx = type("Ctx", (), {"timer_service": lambda self: self,
                           "register_event_time_timer": lambda self, t: calls.append(t)})()  # fmt: skip
    timers = PendingTimers()
    timers.register(ctx, "k", 10)
    timers.register(ctx, "k", 10)
    timers.register(ctx, "j", 10)
    assert calls == [10, 10]
    timers.fired("k", 10)
    timers.register(ctx, "k", 10)  # fired: Flink dropped it, so it is registered again
    timers.forget("j")
    timers.register(ctx, "j", 10)
    assert calls == [10, 10, 10, 10]
    for i in range(MAX_CACHED):
        timers.register(ctx, f"x{i}", 1)
    timers.register(ctx, "k", 10)  # past the bound the memory starts over: registered again, never lost
    assert calls[-1] == 10 and len(calls) == 4 + MAX_CACHED + 1


def test_each_tenants_trace_shards_spread_evenly_over_any_parallelism_dividing_their_number() -> None:
    for tenant in ("default", "acme", "ténant-7", "bench-start-p0"):
        groups = [key_group(shard_key(tenant, f"{i:032x}")) for i in range(4096)]
        assert len(set(groups)) == TRACE_SHARDS
        for parallelism in (p for p in (1, 2, 4, 8, 16) if p <= TRACE_SHARDS):
            per_instance = collections.Counter(g * parallelism // MAX_PARALLELISM for g in set(groups))
            assert sorted(per_instance.values()) == [TRACE_SHARDS // parallelism] * parallelism, (tenant, parallelism)


@pytest.mark.flink
def test_python_key_groups_are_flinks_for_the_jobs_row_keys() -> None:
    """jobs.key_groups against Flink's KeyGroupRangeAssignment on Rows of one string, as jobs.event_time keys."""
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    jvm = gateway.jvm
    keys = ["", "default\x1f0.8", "acme\x1f15.3", "ténant\x1f2.0", "日本\x1f1.1", "😀 emoji", "a" * 300]
    keys += [f"tenant-{i}\x1f{i % 16}.{i}" for i in range(200)]
    for key in keys:
        fields = gateway.new_array(jvm.java.lang.Object, 1)
        fields[0] = key
        row = jvm.org.apache.flink.types.Row.of(fields)
        want = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignToKeyGroup(row, MAX_PARALLELISM)
        assert key_group(key) == want, repr(key)


def test_a_restore_into_the_same_instances_reads_the_state_back_instead_of_trusting_their_memory() -> None:
    """Checkpoint, process more, restore the checkpointed state and timers under the same function
    objects (the worst case: Flink makes new ones), replay from the checkpoint: the RED state ends as
    the engine's over an uninterrupted input. Caches and remembered timers hold only while the stored
    revision is the one the instance wrote."""
    import copy

    sc = latency.SPAN_SCENARIOS["cpu_contention"](scale=0.25)
    messages = span_requests_of(sc.spans, 200)
    eng, job = engine.Engine(), _Job()
    latest = -(2**62)

    def operators() -> list[_Operator]:
        return [job.timeline, job.red]

    def step(msg: list[Span]) -> None:
        nonlocal latest
        latest = max(latest, job.message(msg))
        job.advance(latest - eng.cfg.out_of_orderness_ms)

    k, m = len(messages) // 2, len(messages) // 2 + 20
    for msg in messages[:k]:
        step(msg)
    checkpoint = [copy.deepcopy((op.keyed.data, op.timers, op.registered)) for op in operators()], latest
    for msg in messages[k:m]:
        step(msg)  # processed, then lost with the failure
    for op, (data, timers, registered) in zip(operators(), copy.deepcopy(checkpoint[0]), strict=True):
        op.keyed.data, op.timers, op.registered = data, timers, registered
    latest = checkpoint[1]
    for msg in messages[k:]:
        step(msg)
    latest = -(2**62)
    for msg in messages:  # the engine over the same input, uninterrupted, the watermark after each message
        eng.feed_spans(msg)
        latest = max(latest, *(s.start_unix_nano // 1_000_000 for s in msg))
        eng.advance(latest - eng.cfg.out_of_orderness_ms)
    assert job.red_states() == {key: red.encode_state(s) for key, s in eng.red.items()}


def test_the_correlator_stores_a_settle_intervals_call_facts_compactly_and_applies_them_as_the_engine() -> None:
    """Call facts alike but for their trace ids are stored as one pending entry with a count (layout 2),
    a layout-1 entry (a fact per item) still reads, and the tenant ends in the engine's state."""
    import random

    from jobs.operators import Correlate, dumps, loads
    from udfs import correlate, tenant_state
    from udfs.anomaly import TraceFact

    rng = random.Random(7)
    services = ["gateway", "trips", "pricing", "users"]
    batches: list[tuple[TraceFact, ...]] = []
    for i in range(300):
        at = 1_767_225_600_000 + (i // 60) * 10_000
        batch = []
        for _ in range(rng.randint(1, 4)):
            a, b = rng.sample(services, 2)
            kind = rng.choice(["call", "call", "call", "precedes", "edge"])
            batch.append(TraceFact("t", f"{rng.getrandbits(64):016x}", kind, a, b, at + (0 if kind == "call" else i)))
        batches.append(tuple(batch))
    op = _Operator(Correlate(engine.EngineConfig()))
    legacy = [tenant_state.encode_pending(f) for f in batches[0]]
    op.keyed.key = "t"
    op.keyed.data[("tenant-pending", "t")] = {batches[0][0].at_ms: dumps(legacy)}  # layout 1, as stored before
    op.register_event_time_timer(batches[0][0].at_ms)
    pure = tenant_state.new_state("t")
    cfg = engine.EngineConfig().correlate
    for batch in batches[1:]:
        op.element("t", FactBatch("t", batch))
    stored = [v for raw in op.keyed.data[("tenant-pending", "t")].values() for v in loads(raw)]
    assert any(v[0] == "calls" and v[1] > 1 for v in stored)
    assert len(stored) < sum(len(b) for b in batches) / 2
    for batch in batches:
        for fact in batch:
            correlate.enqueue(pure, fact, cfg)
    for at in sorted({f.at_ms for b in batches for f in b}):
        correlate.on_timer(pure, at, cfg)
    op.advance(engine.END_OF_TIME - 1)
    got = tenant_state.decode_state(loads(op.keyed.data[("tenant-incidents", "t")]))
    assert got.edges and got.precedence and got.failing_traces
    assert tenant_state.encode_state(got) == tenant_state.encode_state(pure)


def test_a_message_without_trace_observations_sends_a_tick_that_moves_the_trace_watermark() -> None:
    """The trace-observation stream carries its own watermark (jobs.event_time). A message whose
    records fail nothing sends no observation, so without a tick that watermark, and the correlator's
    with it, waited for the stream's idleness (24 s lag after bucket close in job_bench). The tick is
    timed like the message's logs; the timeline ignores it and stores nothing."""
    from connectors.otlp.encode import encode_logs_json
    from jobs.config import JobConfig
    from jobs.operators import TICK_KEY, TRACE_OBSERVATIONS, DecodeAndSummarize
    from udfs.engine import EngineConfig
    from udfs.scenarios.library import build

    records = [r for r in build("steady", scale=0.25).records if r.level < 13][:50]  # INFO/DEBUG: no failure
    decode = DecodeAndSummarize(JobConfig(index_logs=False), EngineConfig())
    decode.open(_Runtime(_Keyed()))
    out = list(decode.process_element(encode_logs_json(records).decode(), None))
    ticks = [v for v in out if isinstance(v, tuple) and v[0] is TRACE_OBSERVATIONS]
    assert [(row[0], row[1]) for _, (row, _) in ticks] == [(TICK_KEY, ())]
    assert ticks[0][1][1] == max(r.time_unix_nano for r in records) // 1_000_000  # the logs' latest event time

    failing = [r for r in build("cascade", scale=0.25).records if r.level >= 17 and r.trace_id][:5]
    out = list(decode.process_element(encode_logs_json(failing).decode(), None))
    keys = [v[1][0][0] for v in out if isinstance(v, tuple) and v[0] is TRACE_OBSERVATIONS]
    assert keys and TICK_KEY not in keys  # real observations move the watermark themselves

    timeline = _Operator(TraceTimeline(engine.EngineConfig()))
    assert timeline.element(TICK_KEY, ()) == [] and timeline.keyed.data == {} and timeline.timers == []


def test_the_span_path_makes_the_interpreter_collect_less_often_and_never_more() -> None:
    import gc

    from jobs.span_operators import COLLECT_EVERY, collect_less_often

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        _Operator(TraceTimeline(engine.EngineConfig()))
        assert gc.get_threshold() == (COLLECT_EVERY, 10, 10)
        gc.set_threshold(COLLECT_EVERY * 2, 10, 10)  # set higher by someone else: left alone
        collect_less_often()
        assert gc.get_threshold()[0] == COLLECT_EVERY * 2
    finally:
        gc.set_threshold(*before)
