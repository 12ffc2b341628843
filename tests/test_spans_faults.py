"""Spans as signals (issue 12): CPU contention of one service and network delay on one edge, faults
that show in span durations and nowhere in the logs, through the pure engine."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from udfs import engine
from udfs.records import Span
from udfs.scenarios import latency
from udfs.scenarios.base import DEFAULT_BASE_MS, STEADY, _finish
from udfs.scenarios.library import requests_of
from udfs.scenarios.traffic import CLIENT, SERVER, Stream
from udfs.timefmt import parse_time_ms

SCALE = 0.5


def _run(name: str, scale: float = SCALE, seed: int = 0) -> tuple[Any, list[dict[str, Any]]]:
    sc = latency.SPAN_SCENARIOS[name](scale=scale, seed=seed)
    return sc, engine.run(requests_of(sc.records, 200), sc.spans)


def _final(events: list[dict[str, Any]], incident_id: str) -> dict[str, Any]:
    return [e for e in events if e["incident_id"] == incident_id and e["event"] != "resolved"][-1]


def _median_ms(spans: list[Span]) -> float:
    return statistics.median((s.end_unix_nano - s.start_unix_nano) / 1e6 for s in spans)


def _split(sc: Any, pick: Any) -> tuple[list[Span], list[Span]]:
    """Spans chosen by ``pick`` before the fault and during it (by start time)."""
    exp = sc.expectations[0]
    lo, hi = exp.fault_start_ms * 1_000_000, (exp.fault_start_ms + 180_000) * 1_000_000
    chosen = [s for s in sc.spans if pick(s)]
    return ([s for s in chosen if s.start_unix_nano < lo], [s for s in chosen if lo <= s.start_unix_nano < hi])


@pytest.mark.parametrize("name", ["cpu_contention", "network_delay"])
def test_fault_is_one_incident_rooted_at_trips_with_gateway_affected_and_pricing_left_out(name: str) -> None:
    sc, events = _run(name)
    exp = sc.expectations[0]
    opened = [e for e in events if e["event"] == "opened"]
    assert len(opened) == 1, [e["title"] for e in opened]
    last = _final(events, opened[0]["incident_id"])
    assert last["root_cause"]["service"] == exp.root_cause == "trips"
    assert set(last["affected_services"]) == exp.affected == {"gateway"}
    assert "pricing" not in {c["service"] for c in last["root_cause"]["candidates"]}
    assert exp.fault_start_ms <= parse_time_ms(opened[0]["detected_at"]) <= exp.fault_start_ms + exp.detect_within_ms
    top, second = last["root_cause"]["candidates"][:2]
    assert "its own spans are slow or failing" in " ".join(top["reasons"])
    assert second["service"] == "gateway" and "its spans wait for callees" in " ".join(second["reasons"])


def test_network_delay_names_the_edge_in_the_root_causes_evidence() -> None:
    _, events = _run("network_delay")
    last = _final(events, next(e["incident_id"] for e in events if e["event"] == "opened"))
    own = [r for r in last["root_cause"]["candidates"][0]["reasons"] if r.startswith("its own spans")]
    assert own and "self_time: POST pricing /api/quote self time" in own[0]
    assert {s["detail"].split(": ")[0] for s in last["signals"] if s["name"] == "self_time"} == {"trips"}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", ["cpu_contention", "network_delay"])
def test_fault_root_cause_holds_for_other_seeds_at_the_evaluation_scale(name: str, seed: int) -> None:
    _, events = _run(name, scale=0.25, seed=seed)
    opened = [e for e in events if e["event"] == "opened"]
    assert len(opened) == 1
    assert _final(events, opened[0]["incident_id"])["root_cause"]["service"] == "trips"


@pytest.mark.parametrize("name", ["cpu_contention", "network_delay"])
def test_fault_shows_in_spans_and_nowhere_in_the_logs(name: str) -> None:
    sc = latency.SPAN_SCENARIOS[name](scale=SCALE)
    assert engine.run(requests_of(sc.records, 200)) == []


def test_cpu_contention_slows_every_operation_of_trips_and_nothing_of_pricing() -> None:
    sc = latency.cpu_contention(scale=SCALE)
    for op in ("GET /api/trips/{id}", "GET /api/trips"):
        before, during = _split(sc, lambda s, op=op: s.service == "trips" and s.kind == SERVER and s.name == op)
        assert _median_ms(during) > 1.4 * _median_ms(before), op  # x3 self time, pricing's part unchanged
    before, during = _split(sc, lambda s: s.service == "pricing")
    assert _median_ms(during) == pytest.approx(_median_ms(before), rel=0.15)


def test_network_delay_is_on_the_client_span_of_one_edge_only() -> None:
    sc = latency.network_delay(scale=SCALE)
    before, during = _split(sc, lambda s: s.service == "trips" and s.kind == CLIENT)
    assert _median_ms(during) - _median_ms(before) == pytest.approx(latency.EDGE_DELAY_MS, abs=15)
    pricing = (lambda s: s.service == "pricing", lambda s: s.service == "gateway" and s.name.startswith("POST pricing"))
    for pick in pricing:
        before, during = _split(sc, pick)
        assert _median_ms(during) == pytest.approx(_median_ms(before), rel=0.15)


def test_routed_chain_with_client_spans_jitter_and_stalls_opens_no_incident_in_an_hour() -> None:
    stream = Stream(0)
    start = DEFAULT_BASE_MS * 1_000_000
    latency.chain(stream, "default", start, start + STEADY.ns(1.0), stalls=True, routes=True)
    sc = _finish("routed_steady", "", stream, [])
    assert {s.kind for s in sc.spans} == {SERVER, CLIENT}
    events = engine.run(requests_of(sc.records, 200), sc.spans)
    assert [e["title"] for e in events if e["event"] == "opened"] == []
