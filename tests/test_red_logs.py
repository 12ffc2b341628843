"""RED from log records that state a duration (issue 12 item 4): logs without spans still feed the
latency test. Pure: the codec-free parsing, then the whole engine over the span scenarios' access
logs with their spans dropped."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from udfs import engine, log_timings
from udfs.anomaly import SpanTiming
from udfs.records import EMPTY_ATTRIBUTES, Level, LogRecord
from udfs.scenarios import latency
from udfs.scenarios.base import Scenario
from udfs.scenarios.library import requests_of


def _record(attrs: dict[str, Any], service: str = "trips", t_ms: int = 1_000) -> LogRecord:
    return LogRecord("acme", service, "shop", t_ms * 1_000_000, t_ms * 1_000_000, 9, Level.INFO, "INFO", "done",
                     False, "", "", None, "", "", "", "", EMPTY_ATTRIBUTES, EMPTY_ATTRIBUTES,
                     MappingProxyType(attrs))  # fmt: skip


def test_a_duration_is_read_only_where_its_unit_is_known() -> None:
    records = [
        _record({"duration_ms": 412, "http.route": "/api/trips", "http.request.method": "GET"}),
        _record({"http.server.request.duration": 0.25, "http.route": "/quote"}),  # semconv: seconds
        _record({"http.server.duration": 12.5, "rpc.service": "Pricing", "rpc.method": "Quote"}),  # old: ms
        _record({"request_time": "0.031"}),  # nginx: seconds, as a string
        _record({"elapsed": "1.5s", "url.path": "/users/8812"}),  # a unit-less name with its unit: read
        _record({"elapsed": 1500}),  # a bare number under a unit-less name: ambiguous, skipped
        _record({"duration": "soon"}),
        _record({"duration_ms": -3}),
        _record({"duration_ms": float("nan")}),
        _record({"duration_ms": True}),
        _record({"duration_ms": 2 * 86_400_000}),  # longer than a day: not a request
        _record({"duration_us": 800, "elapsed": "9ms"}),  # the first readable name in the table wins
        _record({}),
    ]
    got = list(log_timings.timings_of(records))

    def timing(operation: str, us: int) -> SpanTiming:
        return SpanTiming("acme", "trips", operation, 1_000, us, 0, False, False)

    assert got == [
        timing("log: GET /api/trips", 412_000),
        timing("log: /quote", 250_000),
        timing("log: Pricing/Quote", 12_500),
        timing("log: (records)", 31_000),
        timing("log: (records)", 1_500_000),  # a raw path never names the operation (one key per id)
        timing("log: (records)", 800),
    ]


def _access_logs_only(sc: Scenario) -> list[LogRecord]:
    """The scenario's access lines with the duration and route an access log states, and no spans."""
    spans = {s.span_id: s for s in sc.spans}
    out = []
    for rec in sc.records:
        span = spans.get(rec.span_id)
        if span is not None and rec.attributes.get("url.path"):
            attrs = dict(rec.attributes)
            attrs["http.route"] = attrs["url.path"]
            attrs["duration_ms"] = (span.end_unix_nano - span.start_unix_nano) / 1_000_000
            rec = rec._replace(attributes=MappingProxyType(attrs))
        out.append(rec)
    return out


def test_a_latency_fault_seen_only_in_access_logs_opens_one_incident_with_a_latency_signal() -> None:
    sc = latency.SPAN_SCENARIOS["latency_chain"](scale=0.5)
    events = engine.run(requests_of(_access_logs_only(sc), 200))
    opened = [e for e in events if e["event"] == "opened"]
    assert len(opened) == 1
    signals = {s["name"] for e in events for s in e.get("signals", [])}
    assert "latency" in signals, signals
    detected = [e for e in events if e["event"] != "resolved"]
    assert any("log: POST /api/quote" in s.get("detail", "") for e in detected for s in e.get("signals", []))


def test_without_durations_the_same_logs_open_nothing() -> None:
    """The fault is in no log line but the durations: the engine sees it only through them."""
    sc = latency.SPAN_SCENARIOS["latency_chain"](scale=0.5)
    assert [e for e in engine.run(requests_of(sc.records, 200)) if e["event"] == "opened"] == []


@pytest.mark.parametrize("seed", [0, 1])
def test_steady_access_logs_with_jitter_and_stalls_open_no_incident(seed: int) -> None:
    sc = latency.SPAN_SCENARIOS["span_steady"](seed=seed, scale=0.5)
    assert [e for e in engine.run(requests_of(_access_logs_only(sc), 200)) if e["event"] == "opened"] == []


def test_log_timings_never_claim_self_time_or_errors() -> None:
    """A log line knows nothing of its callees (self time 0) and its failures are the service
    window's already (no span errors from logs)."""
    rec = _record({"duration_ms": 30, "http.route": "/x"})._replace(http_status=503, level=Level.ERROR)
    t = log_timings.timing_of(rec)
    assert t is not None and (t.self_us, t.error, t.own_error) == (0, False, False)

