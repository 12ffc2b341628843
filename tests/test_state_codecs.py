"""Every keyed state's versioned codec round-trips (hypothesis), and every keyed state is bounded."""

from __future__ import annotations

import json
from types import MappingProxyType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs import correlate, engine, tenant_state, traces, window_state
from udfs.records import Level, LogRecord
from udfs.templates import TemplateMiner

BASE_NS = 1_767_225_600_000 * 1_000_000
BODIES = (
    "GET /api/orders/{n} 200 in {n}ms",
    "user {n} logged in",
    "redis connection pool exhausted (max=50, in_use={n})",
    "upstream request timed out after 30s",
    "java.lang.OutOfMemoryError: Java heap space",
    "payment declined by processor",
    "connection reset by peer",
    "room {n} booked",
)
LEVELS = (Level.INFO, Level.INFO, Level.INFO, Level.WARN, Level.ERROR, Level.FATAL, Level.DEBUG)
EMPTY = MappingProxyType({})


def record(tenant: str, service: str, t_ms: int, level: Level, body: str, trace: str, http: int | None) -> LogRecord:
    ns = BASE_NS + t_ms * 1_000_000
    return LogRecord(
        tenant,
        service,
        "shop",
        ns,
        ns,
        int(level),
        level,
        level.name,
        body,
        False,
        trace,
        "",
        http,
        "",
        "",
        "",
        "",
        EMPTY,
        EMPTY,
        EMPTY,
    )


event = st.tuples(
    st.integers(0, 1),  # tenant
    st.integers(0, 3),  # service
    st.integers(0, 1_500),  # seconds after start (25 min: windows, baselines, timers)
    st.sampled_from(LEVELS),
    st.integers(0, len(BODIES) - 1),
    st.integers(0, 99),  # number in the body
    st.integers(-1, 5),  # trace id (-1: none)
    st.sampled_from((None, 200, 404, 503)),
)


def stream(events: list[tuple[int, int, int, Level, int, int, int, int | None]]) -> list[list[LogRecord]]:
    recs = sorted(
        (
            record(
                f"t{t}",
                f"svc{s}",
                sec * 1000 + i % 1000,
                lvl,
                BODIES[b].format(n=n),
                f"{tr:032x}" if tr >= 0 else "",
                http,
            )
            for i, (t, s, sec, lvl, b, n, tr, http) in enumerate(events)
        ),
        key=lambda r: r.time_unix_nano,
    )
    return [recs[i : i + 7] for i in range(0, len(recs), 7)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, min_size=1, max_size=250), st.integers(0, 40))
def test_engine_state_round_trips_and_behaves_the_same_after_restore(events: list, cut: int) -> None:
    messages = stream(events)
    cut = min(cut, len(messages))
    eng = engine.Engine()
    for m in messages[:cut]:
        eng.feed(m)
    snap = eng.snapshot()
    restored = engine.Engine.restore(snap)
    assert restored.snapshot() == snap  # decode(encode(s)) encodes identically
    restored.events = list(eng.events)
    for target in (eng, restored):
        for m in messages[cut:]:
            target.feed(m)
        target.finish()
    assert restored.events == eng.events


@settings(max_examples=40, deadline=None)
@given(st.lists(event, min_size=1, max_size=200))
def test_each_state_codec_is_json_and_rejects_unknown_versions(events: list) -> None:
    eng = engine.Engine()
    for m in stream(events):
        eng.feed(m)
    for s in eng.services.values():
        obj = json.loads(json.dumps(window_state.encode_state(s)))
        assert window_state.encode_state(window_state.decode_state(obj)) == window_state.encode_state(s)
    for tr in eng.traces.values():
        obj = json.loads(json.dumps(traces.encode_state(tr)))
        assert traces.encode_state(traces.decode_state(obj)) == traces.encode_state(tr)
    for c in eng.tenants.values():
        obj = json.loads(json.dumps(tenant_state.encode_state(c)))
        assert tenant_state.encode_state(tenant_state.decode_state(obj)) == tenant_state.encode_state(c)
    for decode, encode_any in (
        (window_state.decode_state, window_state.encode_state),
        (traces.decode_state, traces.encode_state),
        (tenant_state.decode_state, tenant_state.encode_state),
    ):
        states = {
            window_state.decode_state: eng.services,
            traces.decode_state: eng.traces,
            tenant_state.decode_state: eng.tenants,
        }[decode]
        for s in list(states.values())[:1]:
            bad = dict(encode_any(s), schema_version=99)  # type: ignore[arg-type]
            try:
                decode(bad)
            except ValueError as exc:
                assert "schema_version" in str(exc)
            else:
                raise AssertionError("an unknown schema_version must be refused")


# ---- every keyed state has an eviction rule or a TTL -------------------------------------------


def test_trace_state_is_evicted_after_its_event_time_ttl() -> None:
    eng = engine.Engine()
    msgs = stream([(0, s, 10, Level.ERROR, 3, 1, 1, 503) for s in range(3)])
    for m in msgs:
        eng.feed(m)
    assert eng.traces
    # last seen at ~10 s; the expiry falls on the next multiple of settle_ms
    eng.advance(BASE_NS // 1_000_000 + 10_000 + traces.TraceConfig().ttl_ms + traces.TraceConfig().settle_ms)
    assert eng.traces == {}


def test_trace_state_is_bounded_per_trace() -> None:
    cfg = traces.TraceConfig(max_services=4)
    state = traces.new_state("t", "x" * 32)
    from udfs.anomaly import TraceObservation

    for i in range(20):
        state = traces.on_observation(state, TraceObservation("t", "x" * 32, f"s{i}", i, i), cfg).state
    assert len(state.services) == 4


def test_template_miner_evicts_least_recently_seen_past_its_cap() -> None:
    miner = TemplateMiner("t", "s", max_templates=5)
    for i in range(50):
        miner.add(f"distinct template number {'x' * (i % 13)} {'y' * i} ok", i)
    assert len(miner) <= 5


def test_tenant_graph_and_precedence_tables_are_capped_and_expire() -> None:
    cfg = correlate.CorrelateConfig(max_edges=10, max_precedence=10, fact_ttl_ms=1_000)
    state = tenant_state.new_state("t")
    from udfs.anomaly import TraceFact

    for i in range(100):
        correlate.on_fact(state, TraceFact("t", "x", "edge", f"a{i}", f"b{i}", i), cfg)
        correlate.on_fact(state, TraceFact("t", "x", "precedes", f"a{i}", f"b{i}", i), cfg)
    assert len(state.edges) <= 10 and len(state.precedence) <= 10
    assert "edge|a99|b99" in state.edges and "a99|b99" in state.precedence  # the least recently seen go
    assert all(int(k.split("|")[1][1:]) >= 85 for k in state.edges)
    correlate.on_timer(state, 10_000, cfg)
    assert state.edges == {} and state.precedence == {}


def test_flink_adapters_put_a_ttl_on_every_keyed_state() -> None:
    import inspect

    from jobs import operators

    src = inspect.getsource(operators)
    assert "ValueStateDescriptor(" in src and "MapStateDescriptor(" in src
    assert src.count("StateDescriptor(") == src.count("enable_time_to_live(STATE_TTL)")
    assert "get_state(" not in src.replace("ctx.get_state(desc)", "")  # every state goes through _value_state


def test_closed_bucket_history_is_stored_by_columns_with_zero_runs_and_reads_back_whole() -> None:
    rows = [[1_000 + i * 10_000, (i * 7) % 5 if i < 40 else 0, 1 if i in (3, 17) else 0, 1 if i == 17 else 0]
            for i in range(360)]
    stored = window_state.encode_history(rows)
    assert stored["start"] == 1_000 and stored["step"] == 10_000 and stored["anomalous"] == [17]
    assert stored["total"][-1] == -320  # the idle 53 minutes: one number
    assert window_state.decode_history(json.loads(json.dumps(stored))) == rows
    idle = [[i * 10_000, 0, 0, 0] for i in range(360)]
    assert len(json.dumps(window_state.encode_history(idle), separators=(",", ":"))) < 80
    assert window_state.decode_history(window_state.encode_history(idle)) == idle
    uneven = [[0, 1, 0, 0], [10_000, 2, 0, 0], [30_000, 3, 1, 1]]
    assert window_state.encode_history(uneven) == uneven  # kept as rows
    assert window_state.encode_history([[0, -1, 0, 0], [10_000, 0, 0, 0]]) == [[0, -1, 0, 0], [10_000, 0, 0, 0]]
    assert window_state.decode_history(uneven) == uneven  # and schema 1/2 rows read as before
    assert window_state.encode_history([]) == [] and window_state.decode_history([]) == []


def test_a_schema_2_service_state_with_history_rows_still_decodes() -> None:
    state = window_state.new_state("t", "s")
    state.history = [[0, 5, 1, 0], [10_000, 0, 0, 0], [20_000, 9, 4, 1]]
    stored = window_state.encode_state(state)
    assert stored["schema_version"] == 4
    old = {**stored, "schema_version": 2, "history": state.history}
    assert window_state.decode_state(json.loads(json.dumps(old))).history == state.history
    assert window_state.decode_state(json.loads(json.dumps(stored))).history == state.history


def test_a_schema_3_core_with_its_template_history_inside_still_decodes_from_stored_parts() -> None:
    """Schema 4 stores the template history ("memory") apart from the core; a job restored from a
    schema-3 checkpoint has no memory part, and its core carries the history inside."""
    eng = engine.Engine()
    for m in stream([(0, 0, s, Level.ERROR, s % len(BODIES), s, -1, None) for s in range(0, 120, 3)]):
        eng.feed(m)
    eng.finish()
    state = next(iter(eng.services.values()))
    assert state.memory.seen  # it remembered alarming templates
    core3 = {**window_state.encode_part(state, "core"), "schema_version": 3,
             "memory": window_state.encode_part(state, "memory")}
    tpl = window_state.encode_part(state, "templates")
    read = window_state.decode_parts(json.loads(json.dumps(core3)), {}, tpl)
    assert window_state.encode_part(read, "memory") == window_state.encode_part(state, "memory")
    new = window_state.decode_parts(window_state.encode_part(state, "core"), {}, tpl,
                                    window_state.encode_part(state, "memory"))
    assert window_state.encode_state(new) == window_state.encode_state(state)


def test_a_service_idle_for_an_hour_of_its_tenants_traffic_keeps_under_one_kib_of_state() -> None:
    """Issue 16: an idle service costs at most 1 KiB of keyed state (a million in ~1 GiB). Five start-up
    lines, an hour without a record while its tenant's other services keep the watermark moving, one
    line at the end: its history is an hour of zero buckets (zero-filled when that line's bucket
    closes), which the codec stores as a run."""
    from udfs.scenarios import library as scenarios

    sc = scenarios.build("steady", seed=0, scale=1.0)
    first, last = sc.records[0], sc.records[-1]
    quiet = [first._replace(service="idle-svc", time_unix_nano=first.time_unix_nano + i * 1_000_000_000,
                            body=f"started worker {i}") for i in range(5)]
    quiet.append(last._replace(service="idle-svc", body="heartbeat"))
    eng = engine.Engine()
    for message in scenarios.requests_of(sorted([*sc.records, *quiet], key=lambda r: r.time_unix_nano), 200):
        eng.feed(message)
    eng.finish()
    state = eng.services[("default", "idle-svc")]
    assert len(state.history) >= 350  # the hour is there, as zero rows
    parts = [window_state.encode_part(state, p) for p in ("core", "memory", "open", "templates")]
    assert sum(len(json.dumps(p, separators=(",", ":"))) for p in parts) <= 1024
