"""The scenario generator (udfs.scenarios) and ``logclaw simulate`` (jobs.cli.simulate)."""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import re
import time
import uuid
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path
from types import MappingProxyType

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from connectors import otlp
from connectors.broker import LocalBroker
from jobs import cli
from jobs.cli import simulate as simulate_cmd
from udfs.records import DEFAULT_TENANT, Level, LogRecord, Span, SpanStatus
from udfs.scenarios.cascade import ORDER_BODY, PAYMENT_BODY, POOL_BODY
from udfs.scenarios.library import DEFAULT_BASE_MS, SCENARIOS, Scenario, build, requests_of, span_requests_of

MIN_MS = 60_000
SMALL = 0.25
FAULT_TEXT = {
    "checkout": POOL_BODY,
    "payment-api": PAYMENT_BODY,
    "order-service": ORDER_BODY,
    "notification-service": "notification queue backing up, depth=",
}
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


@cache
def small(name: str, seed: int = 0) -> Scenario:
    return build(name, seed=seed, scale=SMALL)


def errors(records: list[LogRecord] | tuple[LogRecord, ...]) -> list[LogRecord]:
    return [r for r in records if r.level >= Level.ERROR]


def fault_start(s: Scenario, tenant: str = DEFAULT_TENANT) -> int:
    [exp] = [e for e in s.expectations if e.tenant == tenant]
    assert exp.fault_start_ms is not None
    return exp.fault_start_ms


def is_fault_line(r: LogRecord) -> bool:
    return r.service in FAULT_TEXT and r.body.startswith(FAULT_TEXT[r.service])


# ---------------------------------------------------------------------------------------- all scenarios


def test_scenario_names_are_the_documented_ones() -> None:
    assert list(SCENARIOS) == [
        "steady", "room_booked", "error_spike", "oom_burst", "cascade", "two_tenants", "quiet_single_error",
        "recurring_errors", "novel_exception", "latency_chain", "span_errors_chain", "span_steady", "cpu_contention",
        "network_delay", "network_delay_pod",
    ]
    with pytest.raises(KeyError, match="unknown scenario 'nope'"):
        build("nope")
    with pytest.raises(ValueError, match="scale"):
        build("steady", scale=0)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_seed_gives_identical_scenario_and_another_seed_differs(name: str) -> None:
    first, again, other = small(name), build(name, seed=0, scale=SMALL), small(name, seed=1)
    assert again == first
    assert other.records != first.records
    assert [r.body for r in other.records[:50]] != [r.body for r in first.records[:50]]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_records_are_time_sorted_and_fully_formed(name: str) -> None:
    s = small(name)
    times = [r.time_unix_nano for r in s.records]
    assert times == sorted(times)
    assert times[0] >= DEFAULT_BASE_MS * 1_000_000
    assert [x.start_unix_nano for x in s.spans] == sorted(x.start_unix_nano for x in s.spans)
    for r in s.records:
        assert r.observed_time_unix_nano == r.time_unix_nano
        assert r.severity_number == int(r.level) and r.severity_text == r.level.name
        assert r.level in (Level.DEBUG, Level.INFO, Level.WARN, Level.ERROR)
        assert isinstance(r.attributes, MappingProxyType)
        assert isinstance(r.resource_attributes, MappingProxyType)
        assert r.resource_attributes["service.name"] == r.service
        assert r.resource_attributes.get("tenant.id", DEFAULT_TENANT) == r.tenant
        assert r.http_status == r.attributes.get("http.response.status_code")
        assert r.trace_id == "" or HEX32.fullmatch(r.trace_id)
        assert (r.span_id == "") == (r.trace_id == "") and (r.span_id == "" or HEX16.fullmatch(r.span_id))
        assert not r.body_truncated and r.body


def test_base_ms_shifts_every_time_and_changes_nothing_else() -> None:
    a, b = small("error_spike"), build("error_spike", scale=SMALL, base_ms=DEFAULT_BASE_MS + 3_600_000)
    shift = 3_600_000 * 1_000_000
    moved = [r._replace(time_unix_nano=r.time_unix_nano + shift,
                        observed_time_unix_nano=r.time_unix_nano + shift) for r in a.records]
    assert moved == list(b.records)
    assert fault_start(b) == fault_start(a) + 3_600_000


def test_scale_shortens_background_but_not_the_fault_shape() -> None:
    full, quick = build("cascade"), small("cascade")
    assert fault_start(full) - DEFAULT_BASE_MS == 15 * MIN_MS
    assert fault_start(quick) - DEFAULT_BASE_MS == 6 * MIN_MS  # the 6 min floor
    for s in (full, quick):
        faults = [r.time_ms - fault_start(s) for r in s.records
                  if r.service == "checkout" and is_fault_line(r)]
        assert 0 <= faults[0] < 5_000 and 3.8 * MIN_MS < faults[-1] <= 4 * MIN_MS
    assert quick.records[-1].time_ms - fault_start(quick) > 8.9 * MIN_MS  # 4 min fault + >= 5 min tail
    assert full.records[-1].time_ms - fault_start(full) >= 13.9 * MIN_MS


# -------------------------------------------------------------------------------------------- steady


def test_steady_is_an_hour_of_eight_services_with_half_a_percent_mixed_errors() -> None:
    started = time.perf_counter()
    s = build("steady")
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"steady took {elapsed:.2f}s to build"
    by_service = Counter(r.service for r in s.records)
    assert len(by_service) == 8
    duration_s = (s.records[-1].time_ms - s.records[0].time_ms) / 1000
    assert 59 * 60 < duration_s <= 60 * 60
    assert all(1.0 < n / duration_s < 5.0 for n in by_service.values()), by_service
    err = errors(s.records)
    assert 0.003 < len(err) / len(s.records) < 0.007
    kinds = Counter(
        "timeout" if r.body == "upstream request timed out after 30s"
        else "reset" if r.body == "connection reset by peer"
        else "validation" if "validation failed" in r.body and r.http_status in (400, 422)
        else r.body
        for r in s.records if r.level >= Level.ERROR or (r.http_status or 0) >= 400
    )
    assert set(kinds) == {"timeout", "reset", "validation"} and min(kinds.values()) > 30
    levels = Counter(r.level for r in s.records)
    assert levels[Level.INFO] > 0.6 * len(s.records)
    assert levels[Level.DEBUG] > 1000 and levels[Level.WARN] > 500
    assert {e.tenant: e.max_incidents for e in s.expectations} == {DEFAULT_TENANT: 1}


def test_request_lines_share_trace_ids_across_services_and_carry_http_status() -> None:
    s = small("steady")
    services_of: defaultdict[str, set[str]] = defaultdict(set)
    for r in s.records:
        if r.trace_id:
            services_of[r.trace_id].add(r.service)
    assert sum(1 for v in services_of.values() if len(v) >= 2) > 1000
    assert sum(1 for v in services_of.values() if len(v) >= 3) > 100
    request_lines = [r for r in s.records if re.fullmatch(r"(GET|POST) \S+ \d{3} in \d+ms", r.body)]
    assert len(request_lines) > 0.4 * len(s.records)
    assert all(r.trace_id and r.http_status == int(r.body.split()[2]) for r in request_lines)
    assert len({r.body for r in request_lines}) > 0.5 * len(request_lines)  # ids and latencies vary


# --------------------------------------------------------------------------------------- room / quiet


def test_room_booked_has_exactly_600_booking_info_lines_within_5_minutes() -> None:
    s = small("room_booked")
    rooms = [r for r in s.records if re.fullmatch(r"room \d+ booked", r.body)]
    assert len(rooms) == 600
    assert {(r.service, r.level) for r in rooms} == {("booking", Level.INFO)}
    assert rooms[-1].time_ms - rooms[0].time_ms <= 5 * MIN_MS
    assert len({r.body for r in rooms}) > 300
    assert Counter(r.service for r in s.records if r.service != "booking")  # steady background around it
    assert [(e.tenant, e.max_incidents) for e in s.expectations] == [(DEFAULT_TENANT, 0)]


def test_quiet_single_error_has_one_error_among_info_lines() -> None:
    s = build("quiet_single_error")
    assert Counter(r.level for r in s.records).keys() == {Level.INFO, Level.ERROR}
    [err] = errors(s.records)
    assert err.body == "unexpected error handling request"
    assert len({r.service for r in s.records}) == 1
    assert 19 * MIN_MS < s.records[-1].time_ms - DEFAULT_BASE_MS <= 20 * MIN_MS
    # DETECTION.md: one error in a quiet service is decided by evidence and severity, not forbidden.
    assert [(e.tenant, e.min_incidents, e.max_incidents) for e in s.expectations] == [(DEFAULT_TENANT, 0, 1)]


def test_recurring_errors_repeat_one_template_from_the_start() -> None:
    s = build("recurring_errors", scale=SMALL)
    errs = errors(s.records)
    assert len(errs) >= 20 and {e.service for e in errs} == {"reports"}
    assert errs[0].time_ms - DEFAULT_BASE_MS < 30_000  # background from the first minute, not news later
    assert [(e.tenant, e.max_incidents) for e in s.expectations] == [(DEFAULT_TENANT, 0)]


def test_novel_exception_is_one_traceback_after_a_clean_warm_up() -> None:
    s = build("novel_exception", scale=SMALL)
    [err] = errors(s.records)
    assert err.service == "billing" and err.exception_type == "KeyError"
    assert "Traceback (most recent call last)" in err.exception_stacktrace
    assert err.time_ms - DEFAULT_BASE_MS >= 6 * MIN_MS
    [exp] = s.expectations
    assert (exp.root_cause, exp.min_incidents, exp.max_incidents) == ("billing", 1, 1)


# ------------------------------------------------------------------------------------------ error_spike


def test_error_spike_goes_from_5_to_60_percent_generic_errors_for_3_minutes() -> None:
    s = small("error_spike")
    start = fault_start(s)
    pay = [r for r in s.records if r.service == "payments"]

    def fraction(lo: int, hi: int) -> float:
        window = [r for r in pay if lo <= r.time_ms < hi]
        assert len(window) > 150
        return len(errors(window)) / len(window)

    assert 0.03 < fraction(DEFAULT_BASE_MS, start) < 0.07
    assert 0.52 < fraction(start, start + 3 * MIN_MS) < 0.68
    assert 0.03 < fraction(start + 3 * MIN_MS, s.records[-1].time_ms + 1) < 0.07
    assert {(r.body, r.http_status, r.exception_type, r.level) for r in errors(pay)} == {
        ("payment declined by processor", None, "", Level.ERROR)
    }
    assert len({r.service for r in s.records}) >= 3
    [exp] = s.expectations
    assert (exp.min_incidents, exp.max_incidents, exp.root_cause) == (1, 1, "payments")
    assert exp.detect_within_ms == 30_000


# -------------------------------------------------------------------------------------------- oom_burst


def test_oom_burst_has_10000_identical_oom_lines_within_60_seconds() -> None:
    s = small("oom_burst")
    start = fault_start(s)
    oom = [r for r in s.records if r.body == "java.lang.OutOfMemoryError: Java heap space"]
    assert len(oom) == 10_000
    assert oom[0].time_ms == start and oom[-1].time_ms < start + 60_000
    assert {(r.service, r.level, r.exception_type, r.exception_message) for r in oom} == {
        ("inventory", Level.ERROR, "java.lang.OutOfMemoryError", "Java heap space")
    }
    assert oom[0].attributes["exception.type"] == "java.lang.OutOfMemoryError"
    [exp] = s.expectations
    assert (exp.min_incidents, exp.max_incidents, exp.root_cause, exp.immediate, exp.detect_within_ms) == (
        1, 1, "inventory", True, 1_000)


# ---------------------------------------------------------------------------------------------- cascade


def test_cascade_onset_order_follows_the_call_graph_with_the_documented_delays() -> None:
    s = small("cascade")
    start = fault_start(s)
    onset = {svc: next(r.time_ms for r in s.records if r.service == svc and is_fault_line(r)) - start
             for svc in FAULT_TEXT}
    assert onset["checkout"] < onset["payment-api"] < onset["order-service"] < onset["notification-service"]
    assert 0 <= onset["checkout"] < 3_000
    assert 15_000 <= onset["payment-api"] < 20_000
    assert 30_000 <= onset["order-service"] < 40_000
    assert 45_000 <= onset["notification-service"] < 55_000
    fault_lines = [r for r in s.records if r.service == "checkout" and is_fault_line(r)]
    requests = [r for r in s.records if r.service == "order-service" and r.trace_id
                and start <= r.time_ms < start + 4 * MIN_MS]
    assert len(fault_lines) > 0.7 * len({r.trace_id for r in requests})  # "most requests"
    [exp] = s.expectations
    assert exp.root_cause == "checkout"
    assert exp.affected == {"payment-api", "order-service", "notification-service"}
    assert (exp.min_incidents, exp.max_incidents, exp.detect_within_ms) == (1, 1, 30_000)


def test_cascade_errors_inside_each_failing_trace_start_at_checkout() -> None:
    s = small("cascade")
    by_trace: defaultdict[str, list[LogRecord]] = defaultdict(list)
    for r in s.records:
        if is_fault_line(r):
            by_trace[r.trace_id].append(r)
    rank = {svc: i for i, svc in enumerate(FAULT_TEXT)}
    full_chains = 0
    for trace in by_trace.values():
        services = [r.service for r in trace]
        assert services[0] == "checkout"
        assert services == sorted(services, key=rank.__getitem__)
        assert [r.time_unix_nano for r in trace] == sorted(r.time_unix_nano for r in trace)
        full_chains += len(services) == 4
    assert full_chains > 100


def test_cascade_spans_form_the_call_graph_with_consistent_parents_times_and_status() -> None:
    s = small("cascade")
    spans = {(x.trace_id, x.span_id): x for x in s.spans}
    assert len(spans) == len(s.spans)
    edges: Counter[tuple[str, str, str]] = Counter()
    for x in s.spans:
        assert x.end_unix_nano > x.start_unix_nano
        if not x.parent_span_id:
            assert x.service == "order-service" and x.kind == 2
            continue
        parent = spans[(x.trace_id, x.parent_span_id)]
        assert parent.start_unix_nano <= x.start_unix_nano and x.end_unix_nano <= parent.end_unix_nano
        edges[(parent.service, x.service, x.name)] += 1
        if x.status == SpanStatus.ERROR:
            assert x.status_message
    assert set(edges) == {
        ("order-service", "payment-api", "POST /api/payments"),
        ("payment-api", "checkout", "POST /api/checkout"),
        ("checkout", "checkout", "redis GET cart"),
        ("order-service", "notification-service", "POST /api/notifications"),
    }
    assert len(set(edges.values())) == 1  # every request has all five spans
    # every traced log line belongs to a span of its own service in its trace
    for r in s.records:
        if r.trace_id and (r.trace_id, r.span_id) in spans:
            assert spans[(r.trace_id, r.span_id)].service == r.service
    traced = [r for r in s.records if r.trace_id and r.service == "checkout" and is_fault_line(r)]
    assert all(spans[(r.trace_id, r.span_id)].status == SpanStatus.ERROR for r in traced)


def test_two_tenants_share_service_names_and_only_acme_has_the_fault() -> None:
    s = small("two_tenants")
    names = {t: {r.service for r in s.records if r.tenant == t} for t in ("acme", "globex")}
    assert names["acme"] == names["globex"] == set(FAULT_TEXT)
    assert {r.tenant for r in s.records} == {"acme", "globex"}
    globex = [r for r in s.records if r.tenant == "globex"]
    assert not any(is_fault_line(r) for r in globex)
    assert 0.003 < len(errors(globex)) / len(globex) < 0.008
    assert sum(1 for r in s.records if r.tenant == "acme" and is_fault_line(r)) > 500
    assert {x.tenant for x in s.spans} == {"acme", "globex"}
    exp = {e.tenant: e for e in s.expectations}
    assert exp["globex"].max_incidents == 0 and exp["acme"].root_cause == "checkout"
    assert exp["acme"] == dataclasses.replace(small("cascade").expectations[0], tenant="acme")


# ------------------------------------------------------------------------------------------ requests_of


def test_requests_of_batches_by_resource_size_and_time() -> None:
    records = small("two_tenants").records
    batches = requests_of(records, 50, max_span_ms=1_000)
    assert sorted(id(r) for b in batches for r in b) == sorted(id(r) for r in records)
    for b in batches:
        assert 1 <= len(b) <= 50
        assert len({(r.tenant, r.service) for r in b}) == 1
        assert b[-1].time_unix_nano - b[0].time_unix_nano <= 1_000_000_000
        assert [r.time_unix_nano for r in b] == sorted(r.time_unix_nano for r in b)
    firsts = [b[0].time_unix_nano for b in batches]
    assert firsts == sorted(firsts)
    mixed = requests_of(records, 10, by_resource=False)
    assert [r for b in mixed for r in b] == list(records)
    assert max(len(b) for b in mixed) == 10 and len({(r.tenant, r.service) for r in mixed[0]}) > 1
    with pytest.raises(ValueError):
        requests_of(records, 0)


def test_requests_of_fills_messages_up_to_the_size_when_records_are_dense() -> None:
    oom = [r for r in small("oom_burst").records if r.service == "inventory" and r.level == Level.ERROR]
    batches = requests_of(oom, 100)
    assert max(len(b) for b in batches) == 100
    assert sum(len(b) == 100 for b in batches) >= 0.8 * len(oom) // 100  # ~167 OOM lines/s: full messages
    assert sum(len(b) for b in batches) == len(oom)


def test_span_requests_of_keeps_every_span_once() -> None:
    spans = small("cascade").spans
    batches = span_requests_of(spans, 100)
    assert sorted(id(x) for b in batches for x in b) == sorted(id(x) for x in spans)
    assert all(len({(x.tenant, x.service) for x in b}) == 1 and len(b) <= 100 for b in batches)


# ------------------------------------------------------------------------------------- logclaw simulate


def simulate(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    simulate_cmd.add_arguments(parser)
    return simulate_cmd.run(parser.parse_args(list(argv)))


def read_lines(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return [line.rstrip(b"\n") for line in f]


def test_simulate_is_registered_in_the_cli() -> None:
    assert cli.COMMANDS["simulate"][0] == "jobs.cli.simulate"


def test_simulate_writes_gzipped_otlp_json_that_decodes_to_the_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, spans_out = tmp_path / "tmp.jsonl.gz", tmp_path / "spans.jsonl"
    assert simulate("--scenario", "cascade", "--scale", "0.25", "--out", str(out),
                    "--spans-out", str(spans_out)) == 0
    expected = small("cascade")
    lines = read_lines(out)
    decoded: list[LogRecord] = []
    for line in lines:
        result = otlp.decode_logs(line, fmt="json")
        assert result.errors == ()
        decoded.extend(result.records)
    assert decoded == [r for b in requests_of(expected.records, 200) for r in b]
    assert sorted(decoded, key=lambda r: r.time_unix_nano) == list(expected.records)
    span_list: list[Span] = []
    for line in read_lines(spans_out):
        result_spans = otlp.decode_spans(line, fmt="json")
        assert result_spans.errors == ()
        span_list.extend(result_spans.spans)
    assert sorted(span_list, key=lambda x: x.start_unix_nano) == list(expected.spans)
    summary = capsys.readouterr().out
    counts = f"{len(expected.records)} records, {len(expected.spans)} spans, {len(lines)} messages"
    assert f"cascade: {counts}" in summary
    assert "root checkout" in summary


def test_simulate_base_time_accepts_rfc3339_and_unix_ms(tmp_path: Path) -> None:
    assert simulate_cmd.parse_base_time("2026-03-01T12:00:00Z") == 1_772_366_400_000
    assert simulate_cmd.parse_base_time("2026-03-01T13:00:00+01:00") == 1_772_366_400_000
    assert simulate_cmd.parse_base_time("1772366400000") == 1_772_366_400_000
    assert simulate_cmd.parse_base_time(None) == DEFAULT_BASE_MS
    with pytest.raises(ValueError, match="offset"):
        simulate_cmd.parse_base_time("2026-03-01T12:00:00")
    out = tmp_path / "q.jsonl"
    assert simulate("--scenario", "quiet_single_error", "--base-time", "2026-03-01T12:00:00Z",
                    "--out", str(out)) == 0
    records = [r for line in read_lines(out) for r in otlp.decode_logs(line).records]
    assert min(r.time_ms for r in records) >= 1_772_366_400_000
    assert sorted(records, key=lambda r: r.time_unix_nano) == list(
        build("quiet_single_error", base_ms=1_772_366_400_000).records)


def test_simulate_rejects_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate("--scenario", "nope", "--out", str(tmp_path / "x.jsonl")) == 2
    assert simulate("--scenario", "steady") == 2
    assert simulate("--scenario", "steady", "--format", "proto", "--out", str(tmp_path / "x.jsonl")) == 2
    assert not (tmp_path / "x.jsonl").exists()
    assert simulate("--list") == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in SCENARIOS)


@pytest.mark.broker
def test_simulate_produces_proto_messages_to_kafka_against_local_tansu(broker: LocalBroker) -> None:
    topic = f"sim-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic])
    assert simulate("--scenario", "quiet_single_error", "--scale", "0.5", "--kafka", broker.bootstrap,
                    "--topic", topic, "--format", "proto", "--per-message", "100") == 0
    expected = build("quiet_single_error", scale=0.5)
    batches = requests_of(expected.records, 100)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])  # no group join: fast and deterministic
    got: list[Message] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < len(batches) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
    finally:
        consumer.close()
    assert len(got) == len(batches)
    assert [(m.key(), m.timestamp()[1]) for m in got] == [
        (f"{b[0].tenant}/{b[0].service}".encode(), b[0].time_ms) for b in batches]
    decoded = [r for m in got for r in otlp.decode_logs(m.value() or b"", fmt="proto").records]
    assert decoded == [r for b in batches for r in b]
