"""The naive baselines (udfs/evaluation/baselines.py) and the evaluation helpers they are judged with.

Pure and fast: hand-built records with known event times; whole event lists compared in one assert.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest

from udfs.evaluation import baselines
from udfs.evaluation.baselines import any_error, busiest_minute
from udfs.evaluation.metrics import (
    error_rates,
    events_of_tenant,
    incidents_per_case,
    judge_stream,
    parse_time_ms,
    scenario_labels,
    summarize_results,
)
from udfs.incidents import rfc3339
from udfs.records import EMPTY_ATTRIBUTES, Level, LogRecord
from udfs.scenarios import library as scenarios

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a minute boundary


def rec(t_ms: int, service: str, level: Level = Level.ERROR, tenant: str = "default") -> LogRecord:
    return LogRecord(
        tenant=tenant, service=service, service_namespace="", time_unix_nano=t_ms * 1_000_000,
        observed_time_unix_nano=0, severity_number=int(level), level=level, severity_text=level.name, body="x",
        body_truncated=False, trace_id="", span_id="", http_status=None, exception_type="", exception_message="",
        exception_stacktrace="", scope_name="", resource_attributes=EMPTY_ATTRIBUTES,
        scope_attributes=EMPTY_ATTRIBUTES, attributes=EMPTY_ATTRIBUTES,
    )  # fmt: skip


def expected(detector: str, tenant: str, opened: int, detected: int, ranked: list[tuple[str, int]],
             seq: int) -> dict[str, Any]:  # fmt: skip
    service = ranked[0][0]
    digest = hashlib.sha1(f"{detector}\x1f{tenant}\x1f{service}\x1f{opened}\x1f{seq}".encode()).hexdigest()
    return {
        "event": "opened", "detector": detector, "tenant": tenant, "incident_id": f"{detector}-{digest[:16]}",
        "fingerprint": f"{detector}.{service}", "opened_at": rfc3339(opened), "detected_at": rfc3339(detected),
        "service": service,
        "root_cause": {"service": service, "candidates": [{"service": s, "score": float(n)} for s, n in ranked]},
    }  # fmt: skip


def test_any_error_opens_one_incident_per_error_line_and_ignores_lower_levels() -> None:
    records = [
        rec(T0 + 5_000, "api"),
        rec(T0 + 1_000, "db", Level.FATAL),
        rec(T0 + 2_000, "db", Level.WARN),
        rec(T0 + 3_000, "db", Level.INFO),
        rec(T0 + 5_000, "api"),  # same time, same service: still its own incident
    ]
    assert any_error(records) == [
        expected("any_error", "default", T0 + 1_000, T0 + 1_000, [("db", 1)], 0),
        expected("any_error", "default", T0 + 5_000, T0 + 5_000, [("api", 1)], 1),
        expected("any_error", "default", T0 + 5_000, T0 + 5_000, [("api", 1)], 2),
    ]
    events = any_error(records)
    assert len({e["incident_id"] for e in events}) == 3


def test_any_error_cooldown_is_per_tenant_and_service_and_not_extended_by_absorbed_errors() -> None:
    records = [
        rec(T0, "api"),
        rec(T0 + 200_000, "api"),  # absorbed
        rec(T0 + 250_000, "db"),  # other service: opens
        rec(T0 + 260_000, "api", tenant="acme"),  # other tenant: opens
        rec(T0 + 300_000, "api"),  # exactly 5 min after the opening: opens (absorbed one did not extend)
        rec(T0 + 599_999, "api"),  # 299.999 s after that: absorbed
    ]
    got = any_error(records, baselines.COOLDOWN_MS)
    assert [(e["tenant"], e["service"], parse_time_ms(e["opened_at"]) - T0) for e in got] == [
        ("default", "api", 0), ("default", "db", 250_000), ("acme", "api", 260_000), ("default", "api", 300_000),
    ]  # fmt: skip
    assert {e["detector"] for e in got} == {"any_error_cooldown"}


def test_busiest_minute_names_the_service_with_most_errors_per_tenant_window_at_window_end() -> None:
    records = [
        rec(T0 + 10_000, "api"),
        rec(T0 + 20_000, "db"),
        rec(T0 + 30_000, "db"),
        rec(T0 + 40_000, "cache", Level.INFO),  # not an error: no candidate
        rec(T0 + 59_999, "api"),
        rec(T0 + 61_000, "db"),  # next window
        rec(T0 + 62_000, "api"),  # tie 1-1 in that window: the earlier first error (db) ranks first
        rec(T0 + 15_000, "web", tenant="acme"),  # another tenant: its own window and incident
    ]
    assert busiest_minute(records) == [
        expected("busiest_minute", "acme", T0 + 15_000, T0 + 60_000, [("web", 1)], 0),
        expected("busiest_minute", "default", T0 + 10_000, T0 + 60_000, [("api", 2), ("db", 2)], 1),
        expected("busiest_minute", "default", T0 + 61_000, T0 + 120_000, [("db", 1), ("api", 1)], 2),
    ]


def test_busiest_minute_tie_on_count_and_first_error_falls_back_to_service_name() -> None:
    records = [rec(T0 + 1_000, "zeta"), rec(T0 + 1_000, "alpha"), rec(T0 + 2_000, "zeta"), rec(T0 + 2_000, "alpha")]
    (event,) = busiest_minute(records)
    assert event["root_cause"]["candidates"] == [{"service": "alpha", "score": 2.0}, {"service": "zeta", "score": 2.0}]


def test_busiest_minute_cooldown_skips_windows_closing_within_five_minutes_per_tenant() -> None:
    records = [rec(T0 + m * 60_000 + 1_000, "api") for m in range(12)]  # one error in each of 12 minutes
    records.append(rec(T0 + 61_000, "api", tenant="acme"))
    got = busiest_minute(records, baselines.COOLDOWN_MS)
    assert [(e["tenant"], parse_time_ms(e["detected_at"]) - T0) for e in got] == [
        ("default", 60_000), ("acme", 120_000), ("default", 360_000), ("default", 660_000),
    ]  # fmt: skip
    assert len(busiest_minute(records)) == 13


def test_baselines_do_not_depend_on_input_order() -> None:
    rng = random.Random(7)
    records = [rec(T0 + rng.randrange(600_000), rng.choice(["a", "b", "c"]), tenant=rng.choice(["x", "y"]))
               for _ in range(300)]  # fmt: skip
    shuffled = list(records)
    rng.shuffle(shuffled)
    for name, detect in baselines.BASELINES.items():
        assert detect(records) == detect(shuffled), name


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError):
        any_error([], cooldown_ms=-1)
    with pytest.raises(ValueError):
        busiest_minute([], window_ms=0)


def _label(inject_ms: int, end_ms: int, fault_free: bool = False) -> dict[str, Any]:
    case = {"inject_time": rfc3339(inject_ms), "root_cause_service": "cinder", "failure": True,
            "failure_kind": "api_error", "window": [rfc3339(inject_ms), rfc3339(end_ms)]}  # fmt: skip
    return {
        "fault_free": fault_free, "time_range": [rfc3339(T0), rfc3339(end_ms)],
        "service_namespace": {"cinder-volume": "cinder", "nova-api": "nova"}, "cases": [] if fault_free else [case],
    }  # fmt: skip


def test_judge_reads_baseline_events_like_engine_events() -> None:
    inject = T0 + 600_000
    end = T0 + 1_800_000
    records = [
        rec(T0 + 100_000, "nova-api"),  # before the window: a false incident
        rec(inject + 5_000, "nova-api"),
        rec(inject + 7_000, "cinder-volume"),
        rec(inject + 8_000, "cinder-volume"),
    ]
    result = judge_stream("s", _label(inject, end), busiest_minute(records))
    # Windows: [T0+60 s, T0+120 s) with nova-api; [T0+600 s, T0+660 s) with cinder x2 then nova x1.
    assert result._replace(hours=0) == result._replace(
        hours=0, opened=2, detected=True, true_incidents=1, false_incidents=1, ttd_ms=60_000, rc_top1=True,
        rc_top3=True, root_causes=("nova-api", "cinder-volume"),
    )  # fmt: skip
    naive = judge_stream("s", _label(inject, end), any_error(records))
    assert (naive.detected, naive.ttd_ms, naive.rc_top1, naive.true_incidents) == (True, 5_000, False, 3)
    free = judge_stream("f", _label(inject, end, fault_free=True), any_error(records))
    assert (free.fault_free, free.false_incidents, free.opened) == (True, 4, 4)
    summary = summarize_results([naive, free])
    assert (summary["recall"], summary["fault_free_incidents"], summary["precision"]) == (1.0, 4, 0.375)
    assert incidents_per_case([naive, free]) == 3.0


def test_scenario_labels_follow_the_openstack_label_shape() -> None:
    sc = scenarios.build("two_tenants", scale=0.25)
    labels = scenario_labels(sc)
    acme, globex = labels["scenario-two_tenants-acme"], labels["scenario-two_tenants-globex"]
    exp = sc.expectations[0]
    acme_times = [r.time_ms for r in sc.records if r.tenant == "acme"]
    assert exp.fault_start_ms is not None
    assert acme["fault_free"] is False and globex["fault_free"] is True and globex["cases"] == []
    assert acme["time_range"] == [rfc3339(min(acme_times)), rfc3339(max(acme_times))]
    assert acme["cases"] == [{
        "case_id": "scenario-two_tenants-acme", "inject_time": rfc3339(exp.fault_start_ms),
        "root_cause_service": "checkout", "window": [rfc3339(exp.fault_start_ms), rfc3339(max(acme_times))],
        "failure": True, "failure_kind": "scenario", "detect_within_ms": 30_000,
    }]  # fmt: skip
    events = [{"tenant": "acme", "event": "opened"}, {"tenant": "globex", "event": "opened"}]
    assert events_of_tenant(events, "globex") == [events[1]]


def test_error_rates_are_zero_filled_shares_per_service_bucket() -> None:
    records = [
        rec(T0 + 1_000, "api"), rec(T0 + 2_000, "api", Level.INFO), rec(T0 + 3_000, "db", Level.INFO),
        rec(T0 + 25_000, "db"), rec(T0 + 26_000, "api", Level.INFO, tenant="other"),
    ]  # fmt: skip
    assert error_rates(records, "default") == {
        "api": [(T0, 0.5), (T0 + 10_000, 0.0), (T0 + 20_000, 0.0)],
        "db": [(T0, 0.0), (T0 + 10_000, 0.0), (T0 + 20_000, 1.0)],
    }
    assert error_rates(records, "nobody") == {}
