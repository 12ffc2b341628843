"""Spans as signals (issue 12): the duration sketch, self time, the RED state and its codecs, and the
span scenarios through the pure engine."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from udfs import engine, red, traces
from udfs import spans_sketch as sk
from udfs.anomaly import SpanTiming, TraceFact, TraceObservation
from udfs.records import Span, SpanStatus
from udfs.scenarios import latency
from udfs.scenarios.library import requests_of

# ---- sketch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "bimodal"])
def test_sketch_quantiles_are_within_the_stated_relative_error(dist: str) -> None:
    rng = random.Random(dist)
    draw = {
        "lognormal": lambda: rng.lognormvariate(9.0, 1.5),
        "uniform": lambda: rng.uniform(5.0, 5_000_000.0),
        "bimodal": lambda: rng.choice((rng.gauss(2_000, 100), rng.gauss(900_000, 5_000))),
    }[dist]
    values = sorted(max(2.0, draw()) for _ in range(20_000))
    sketch = sk.of(values)
    for q in (0.01, 0.25, 0.5, 0.9, 0.99, 0.999):
        exact = values[max(0, int(q * len(values) + 0.5) - 1)]
        assert abs(sk.quantile(sketch, q) - exact) <= sk.RELATIVE_ACCURACY * exact + 1e-9, (q, exact)


def test_sketch_merge_is_the_sketch_of_the_union_in_any_order_and_subtracts_exactly() -> None:
    rng = random.Random(1)
    a = [rng.lognormvariate(8, 1) for _ in range(500)]
    b = [rng.lognormvariate(10, 0.5) for _ in range(700)]
    ab, ba = sk.of(a), sk.of(b)
    sk.merge(ab, sk.of(b))
    sk.merge(ba, sk.of(a))
    assert ab == ba == sk.of(a + b)
    sk.merge(ab, sk.of(b), -1.0)
    assert ab == sk.of(a)
    assert sk.decode(json.loads(json.dumps(sk.encode(ab)))) == ab


def test_sketch_memory_is_bounded_and_the_slow_tail_stays_exact() -> None:
    values = [1.5**i for i in range(1, 60)]  # 1.5 µs .. ~2 days: far more than MAX_BINS bins at 2 %
    sketch = sk.of(v for v in values for _ in range(3))
    assert len(sketch) <= sk.MAX_BINS
    assert sk.total(sketch) == 3 * len(values)
    assert abs(sk.quantile(sketch, 0.99) - values[-1]) <= sk.RELATIVE_ACCURACY * values[-1]


# ---- self time ----------------------------------------------------------------------------------

MS = 1_000_000


def _span(sid: str, parent: str, service: str, start_ms: float, end_ms: float, error: bool = False) -> Span:
    return Span("t", service, "a" * 32, sid, parent, f"op-{service}", 2, int(start_ms * MS), int(end_ms * MS),
                SpanStatus.ERROR if error else SpanStatus.UNSET, "boom" if error else "")


def _release(spans: list[Span], cfg: traces.TraceConfig | None = None) -> dict[str, SpanTiming]:
    cfg = cfg or traces.TraceConfig()
    state = traces.new_state("t", "a" * 32)
    out: list[Any] = []
    for s in spans:
        out.extend(traces.on_span(state, s, cfg).emit)
    out.extend(traces.on_timer(state, 2**62, cfg).emit)
    return {t.service: t for t in out if isinstance(t, SpanTiming)}


def test_self_time_is_duration_minus_the_childrens_union_clipped_to_the_span_in_any_arrival_order() -> None:
    spans = [
        _span("p", "", "gateway", 1_000, 1_100),
        _span("c1", "p", "trips", 1_010, 1_050),  # 40 ms
        _span("c2", "p", "users", 1_040, 1_060),  # overlaps c1 by 10 ms: 10 ms more
        _span("c3", "p", "audit", 1_090, 1_300, error=True),  # async, outlives the parent: 10 ms inside
        _span("g", "c1", "pricing", 1_020, 1_045),
    ]
    want = {"gateway": 100_000 - 60_000, "trips": 40_000 - 25_000, "users": 20_000, "audit": 210_000, "pricing": 25_000}
    for order in (spans, spans[::-1], [spans[4], spans[2], spans[0], spans[3], spans[1]]):
        got = _release(order)
        assert {s: t.self_us for s, t in got.items()} == want
        assert {s: t.duration_us for s, t in got.items()}["gateway"] == 100_000
        assert (got["audit"].error, got["audit"].own_error) == (True, True)
        assert (got["gateway"].error, got["gateway"].own_error) == (False, False)


def test_a_failure_passed_up_from_a_callee_is_not_the_callers_own_error() -> None:
    got = _release([_span("p", "", "trips", 0, 50, error=True), _span("c", "p", "pricing", 10, 40, error=True)])
    assert (got["trips"].error, got["trips"].own_error) == (True, False)
    assert (got["pricing"].error, got["pricing"].own_error) == (True, True)


def test_held_spans_wait_for_the_watermark_past_their_end_then_the_trace_expires() -> None:
    cfg = traces.TraceConfig(ttl_ms=60_000)
    state = traces.new_state("t", "a" * 32)
    step = traces.on_span(state, _span("p", "", "gateway", 1_000, 1_500), cfg)
    assert step.emit == () and step.timer_at_ms == 10_000  # the end, rounded up to the RED bucket's end
    assert traces.on_timer(state, 9_999, cfg).emit == ()
    released = traces.on_timer(state, 10_000, cfg)
    # a trace whose every span found its parent waits for nothing: it stays straggler_ms past its
    # last release (10 s), for a straggler, then goes
    assert [t.service for t in released.emit] == ["gateway"] and released.timer_at_ms == 20_000
    assert not traces.expired(state, 19_999, cfg) and traces.expired(state, 20_000, cfg)


def test_a_parent_within_the_straggler_interval_finds_its_children_and_logs_keep_the_ttl() -> None:
    """A child that came before its parent (an orphan interval) waits for it ``straggler_ms`` past
    its own release; a trace with a service known from its logs keeps ``ttl_ms``."""
    cfg = traces.TraceConfig(ttl_ms=60_000)
    state = traces.new_state("t", "a" * 32)
    traces.on_span(state, _span("c", "p", "pricing", 1_000, 1_200), cfg)
    released = traces.on_timer(state, 10_000, cfg)
    assert [t.service for t in released.emit] == ["pricing"] and released.timer_at_ms == 20_000
    traces.on_span(state, _span("p", "", "gateway", 900, 12_000), cfg)  # the parent, before 20 s
    (parent,) = traces.on_timer(state, 20_000, cfg).emit
    assert parent.self_us == (12_000 - 900 - 200) * 1_000  # the orphan's interval was kept for it
    assert traces.next_timer(state, cfg) == 30_000 and traces.expired(state, 30_000, cfg)

    logged = traces.new_state("t", "b" * 32)
    traces.on_observation(logged, TraceObservation("t", "b" * 32, "gateway", 1_000, -1), cfg)
    traces.on_span(logged, _span("p", "", "gateway", 1_000, 1_500), cfg)
    assert traces.on_timer(logged, 10_000, cfg).timer_at_ms == 70_000 and not traces.expired(logged, 60_000, cfg)

    logged = traces.new_state("t", "b" * 32)
    traces.on_observation(logged, TraceObservation("t", "b" * 32, "gateway", 1_000, -1), cfg)
    traces.on_span(logged, _span("p", "", "gateway", 1_000, 1_500), cfg)
    assert traces.on_timer(logged, 10_000, cfg).timer_at_ms == 70_000 and not traces.expired(logged, 60_000, cfg)


def test_a_straggler_within_the_out_of_orderness_still_finds_its_trace() -> None:
    """The engine raises ``straggler_ms`` to the bounded out-of-orderness: a child that started before
    its parent ended and arrives that late still finds the trace (its call edge, not a new trace)."""
    ecfg = engine.EngineConfig(out_of_orderness_ms=30_000)
    assert ecfg.traces.straggler_ms == 30_000 and engine.EngineConfig().traces.straggler_ms == 10_000
    cfg = ecfg.traces
    state = traces.new_state("t", "a" * 32)
    traces.on_span(state, _span("p", "", "gateway", 1_000, 1_500), cfg)
    traces.on_timer(state, 10_000, cfg)
    assert not traces.expired(state, 30_000, cfg) and traces.next_timer(state, cfg) == 40_000
    facts = traces.fold_span(state, _span("c", "p", "pricing", 1_100, 1_400), cfg)
    assert [(f.kind, f.a, f.b) for f in facts if isinstance(f, TraceFact)] == [("call", "gateway", "pricing")]


def test_held_spans_are_released_before_the_red_bucket_of_their_end_closes() -> None:
    """Releasing a span at its bucket's end, not its own, changes nothing RED decides: the bucket of
    its end closes ``allowed_lateness_ms`` later."""
    tcfg, rcfg = traces.TraceConfig(), red.RedConfig()
    assert rcfg.bucket_ms % tcfg.settle_ms == 0
    for end in (10_000.0, 10_000.001, 19_999.999, 20_000.0):
        state = traces.new_state("t", "a" * 32)
        released_at = traces.on_span(state, _span("p", "", "gateway", 1_000, end), tcfg).timer_at_ms
        (timing,) = traces.on_timer(state, released_at, tcfg).emit
        assert isinstance(timing, SpanTiming)
        bucket_close = timing.end_ms - timing.end_ms % rcfg.bucket_ms + rcfg.bucket_ms + rcfg.allowed_lateness_ms
        assert end <= released_at < bucket_close


def test_trace_state_codec_round_trips_with_held_spans_and_reads_version_1() -> None:
    state = traces.new_state("t", "a" * 32)
    cfg = traces.TraceConfig()
    traces.on_span(state, _span("c", "p", "trips", 1_010, 1_050), cfg)
    traces.on_span(state, _span("q", "", "gateway", 2_000, 2_100), cfg)
    enc = traces.encode_state(state)
    assert traces.decode_state(json.loads(json.dumps(enc))) == state
    v1 = {k: v for k, v in enc.items() if k not in ("held", "orphans")} | {"schema_version": 1}
    assert traces.decode_state(v1).held == {}


# ---- RED state ----------------------------------------------------------------------------------


def _timing(end_ms: int, dur_ms: float, error: bool = False, self_ms: float | None = None) -> SpanTiming:
    d = int(dur_ms * 1_000)
    return SpanTiming("t", "pricing", "POST /quote", end_ms, d, int((self_ms or dur_ms) * 1_000), error, error)


def _drive(state: red.RedState, cfg: red.RedConfig, timings: list[SpanTiming], until_ms: int) -> list[Any]:
    out: list[Any] = []
    for t in timings:
        red.on_timing(state, t, cfg)
    out.extend(red.on_timer(state, until_ms, cfg).emit)
    return out


def test_red_latency_departure_enters_at_significance_and_says_what_moved() -> None:
    cfg = red.RedConfig()
    state = red.new_state("t", "pricing", "POST /quote")
    rng = random.Random(3)
    normal = [_timing(i * 100, 30 * rng.lognormvariate(0, 0.3)) for i in range(6_000)]  # 10 min at 10/s
    assert _drive(state, cfg, normal, 600_000 + 12_000) == []
    slow = [_timing(600_000 + i * 100, 150 * rng.lognormvariate(0, 0.3)) for i in range(300)]
    emitted = _drive(state, cfg, slow, 630_000 + 12_000)
    assert emitted and {a.kind for a in emitted} == {"latency"}
    first = emitted[0]
    assert 600_000 <= first.onset_ms < 610_000
    assert first.signals[0].name == "latency" and "POST /quote p99" in first.signals[0].detail
    assert "baseline" in first.signals[0].detail
    assert dict(first.stats)["p_value"] < cfg.alpha_enter


def test_red_one_slow_burst_in_one_bucket_is_not_a_departure() -> None:
    cfg = red.RedConfig()
    state = red.new_state("t", "pricing", "POST /quote")
    rng = random.Random(4)
    normal = [_timing(i * 100, 30 * rng.lognormvariate(0, 0.3)) for i in range(6_000)]
    burst = [_timing(600_000 + i * 100, 300.0) for i in range(60)]  # 6 s of stall, one bucket
    after = [_timing(606_000 + i * 100, 30 * rng.lognormvariate(0, 0.3)) for i in range(600)]
    assert _drive(state, cfg, normal + burst + after, 700_000) == []


def test_red_span_errors_are_judged_against_the_operations_own_rate() -> None:
    cfg = red.RedConfig()
    state = red.new_state("t", "users", "GET /users/{id}")
    rng = random.Random(5)
    # 5 % expected 404s for ten minutes: the operation's normal, never an anomaly
    normal = [_timing(i * 100, 10, error=rng.random() < 0.05) for i in range(6_000)]
    assert _drive(state, cfg, normal, 612_000) == []
    worse = [_timing(600_000 + i * 100, 10, error=rng.random() < 0.4) for i in range(300)]
    emitted = _drive(state, cfg, worse, 642_000)
    assert emitted and {a.kind for a in emitted} == {"span_errors"}
    assert [s.name for s in emitted[-1].signals] == ["span_errors", "own_span_errors"]


def test_red_state_codec_round_trips_and_the_state_expires_after_its_ttl() -> None:
    cfg = red.RedConfig(ttl_ms=120_000)
    state = red.new_state("t", "pricing", "POST /quote")
    rng = random.Random(6)
    _drive(state, cfg, [_timing(i * 100, 30 * rng.lognormvariate(0, 0.3), rng.random() < 0.1) for i in range(600)],
           72_000)
    red.on_timing(state, _timing(95_000, 31.0), cfg)
    assert state.open and state.recent and state.base_duration
    enc = json.loads(json.dumps(red.encode_state(state)))
    assert red.decode_state(enc) == state
    assert red.next_timer(state, cfg) == 102_000
    red.on_timer(state, 102_000, cfg)
    assert not red.expired(state, 214_999, cfg) and red.expired(state, 215_000, cfg)
    with pytest.raises(ValueError, match="schema_version"):
        red.decode_state(enc | {"schema_version": 99})


# ---- scenarios through the pure engine -----------------------------------------------------------


def _run(name: str, scale: float) -> tuple[Any, list[dict[str, Any]]]:
    sc = latency.SPAN_SCENARIOS[name](scale=scale)
    return sc, engine.run(requests_of(sc.records, 200), sc.spans)


def _final(events: list[dict[str, Any]], incident_id: str) -> dict[str, Any]:
    return [e for e in events if e["incident_id"] == incident_id and e["event"] != "resolved"][-1]


@pytest.mark.parametrize("name", ["latency_chain", "span_errors_chain"])
def test_span_fault_is_one_incident_rooted_at_the_failing_callee_with_callers_affected(name: str) -> None:
    sc, events = _run(name, 0.5)
    exp = sc.expectations[0]
    opened = [e for e in events if e["event"] == "opened"]
    assert len(opened) == 1, [e["title"] for e in opened]
    last = _final(events, opened[0]["incident_id"])
    assert last["root_cause"]["service"] == exp.root_cause == "pricing"
    assert set(last["affected_services"]) == exp.affected
    detected = int(engine_ms(opened[0]["detected_at"]))
    assert exp.fault_start_ms is not None and exp.detect_within_ms is not None
    assert exp.fault_start_ms <= detected <= exp.fault_start_ms + exp.detect_within_ms
    kinds = {s["name"] for s in last["signals"]}
    assert ("latency" if name == "latency_chain" else "span_errors") in kinds
    reasons = " ".join(last["root_cause"]["candidates"][0]["reasons"])
    assert "its own spans are slow or failing" in reasons


def engine_ms(stamp: str) -> int:
    from udfs.timefmt import parse_time_ms

    return parse_time_ms(stamp)


def test_latency_only_fault_shows_in_spans_and_nowhere_in_the_logs() -> None:
    sc = latency.latency_chain(scale=0.5)
    assert engine.run(requests_of(sc.records, 200)) == []


def test_span_steady_traffic_with_jitter_stalls_and_expected_404s_opens_no_incident() -> None:
    _, events = _run("span_steady", 1.0)
    assert [e["title"] for e in events if e["event"] == "opened"] == []


def test_engine_snapshot_mid_run_with_spans_gives_the_same_events() -> None:
    sc = latency.latency_chain(scale=0.5)
    messages = requests_of(sc.records, 200)
    whole = engine.run(messages, sc.spans)
    eng = engine.Engine()
    eng.feed_spans(sc.spans)
    half = len(messages) // 2
    for m in messages[:half]:
        eng.feed(m)
    again = engine.Engine.restore(eng.snapshot())
    again.events = list(eng.events)
    for m in messages[half:]:
        again.feed(m)
    again.finish()
    assert again.events == whole


def test_partial_buckets_end_as_one_span_at_a_time_whatever_the_grouping() -> None:
    """The job's RED state is fed partial buckets (``red.partials``, one per operation and bucket of
    what a timeline timer releases); the engine counts span by span. Both must end equal, also when a
    bucket's durations span more than MAX_BINS sketch bins (the collapse is order-free) and when some
    spans are late."""


    cfg = red.RedConfig()
    rnd = random.Random(7)
    ops = [("t", "pricing", "POST /quote"), ("t", "pricing", "GET /"), ("t", "cart", "GET /cart")]
    timings = [
        SpanTiming(*rnd.choice(ops), end_ms=rnd.randrange(0, 60_000), duration_us=int(1.07 ** rnd.randrange(0, 400)),
                   self_us=rnd.randrange(0, 5_000), error=(e := rnd.random() < 0.2), own_error=e and rnd.random() < 0.5)
        for _ in range(9_000)
    ]  # fmt: skip
    one = {k: red.new_state(*k) for k in ops}
    grouped = {k: red.new_state(*k) for k in ops}
    for state in [*one.values(), *grouped.values()]:
        state.closed_until_ms = 10_000  # spans ending before 10 s are late
    for t in timings:
        red.count(one[red.key_of(t)], t, cfg)
    i = 0
    while i < len(timings):
        n = rnd.randrange(1, 200)
        for key, parts in red.partials(timings[i : i + n], cfg).items():
            for part in rnd.sample(parts, len(parts)):
                red.add_partial(grouped[key], part)
        i += n
    assert max(len(b.duration) for s in one.values() for b in s.open.values()) == sk.MAX_BINS  # collapse happened
    for key in ops:
        assert red.encode_state(grouped[key]) == red.encode_state(one[key])
