"""The anomalies the RED state emits (udfs.red): what moved, in words people read, and the score's
parts. Pure; the tests that decide live in udfs.red."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from udfs.anomaly import ServiceAnomaly, SignalInfo
from udfs.scoring import Breakdown, significance_score, velocity_score
from udfs.signals import DEFAULT_WEIGHTS, Group

if TYPE_CHECKING:
    from udfs.red import RedState, Test

SLOWNESS_WEIGHT = DEFAULT_WEIGHTS[Group.TIMEOUT]
"""A request many times slower than its operation's normal is what a timeout is made of: a
significant slow-tail departure weighs as the timeout group does."""
ERROR_SEVERITY = 0.7
"""A span with status ERROR is an ERROR record (udfs.signals.severity_score)."""


def anomaly_id(state: RedState, kind: str, at_ms: int) -> str:
    """The operation's hash first, the tenant's after: the correlator orders simultaneous anomalies
    by id, and two tenants with the same data must see them in the same order."""
    op = hashlib.sha1(f"{state.service}\x1f{state.operation}\x1f{kind}".encode()).hexdigest()[:8]
    raw = f"{state.tenant}\x1f{state.service}\x1f{state.operation}\x1f{kind}\x1f{at_ms}"
    return op + hashlib.sha1(raw.encode()).hexdigest()[:8]


def fmt_us(us: float) -> str:
    """A duration as people read it: 850 µs, 180 ms, 2.4 s."""
    if us < 1_000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1_000:.3g} ms"
    return f"{us / 1_000_000:.3g} s"


def latency(state: RedState, t: Test, own: Test, own_rose: bool, at_ms: int) -> ServiceAnomaly:
    """A latency departure of ``t`` (the duration's tail test); ``own``: the self time's, ``own_rose``:
    whether it rose (the operation is slow itself, not only waiting for a callee)."""
    ratio = t.recent_q / t.base_q if t.base_q else 0.0
    stat = significance_score(t.p_value)
    signals = [
        SignalInfo(
            "latency",
            stat,
            f"{state.operation} p99 {fmt_us(t.recent_q)} vs {fmt_us(t.base_q)} baseline "
            f"({t.hits:.0f}/{t.total:.0f} in 30 s slower than the baseline p99, expected {t.p0:.1%})",
        )
    ]
    if own_rose:
        signals.append(
            SignalInfo(
                "self_time",
                significance_score(own.p_value),
                f"{state.operation} self time p99 {fmt_us(own.recent_q)} vs {fmt_us(own.base_q)} baseline",
            )
        )
    breakdown = Breakdown(pattern=SLOWNESS_WEIGHT, statistical=stat, context=velocity_score(ratio))
    stats = (
        ("recent_total", t.total),
        ("slow", t.hits),
        ("expected_share", round(t.p0, 6)),
        ("p_value", t.p_value),
        ("p99_ms", round(t.recent_q / 1_000, 3)),
        ("baseline_p99_ms", round(t.base_q / 1_000, 3)),
        ("self_p_value", own.p_value),
        ("self_rose", float(own_rose)),
        ("late_spans", float(state.late_spans)),
    )
    return _anomaly(state, "latency", at_ms, state.latency_onset_ms, breakdown, signals, stats)


def errors(state: RedState, t: Test, own: Test, own_rose: bool, at_ms: int) -> ServiceAnomaly:
    """A span-error departure of ``t``; ``own``: the test of errors with no failing callee."""
    rate = t.hits / t.total if t.total else 0.0
    stat = significance_score(t.p_value)
    signals = [
        SignalInfo(
            "span_errors",
            stat,
            f"{state.operation} {t.hits:.0f}/{t.total:.0f} spans failed in 30 s vs baseline {t.p0:.2%}",
        )
    ]
    if own_rose:
        signals.append(
            SignalInfo(
                "own_span_errors",
                significance_score(own.p_value),
                f"{state.operation} {own.hits:.0f} failed with no failing callee",
            )
        )
    breakdown = Breakdown(statistical=stat, context=velocity_score(rate / t.p0), severity=ERROR_SEVERITY)
    stats = (
        ("recent_total", t.total),
        ("recent_failures", t.hits),
        ("baseline_rate", round(t.p0, 6)),
        ("p_value", t.p_value),
        ("own_failures", own.hits),
        ("own_p_value", own.p_value),
        ("own_rose", float(own_rose)),
        ("late_spans", float(state.late_spans)),
    )
    return _anomaly(state, "span_errors", at_ms, state.errors_onset_ms, breakdown, signals, stats)


def _anomaly(
    state: RedState,
    kind: str,
    at_ms: int,
    onset_ms: int,
    breakdown: Breakdown,
    signals: list[SignalInfo],
    stats: tuple[tuple[str, float], ...],
) -> ServiceAnomaly:
    return ServiceAnomaly(
        anomaly_id=anomaly_id(state, kind, at_ms),
        tenant=state.tenant,
        service=state.service,
        namespace="",
        path="windowed",
        kind=kind,
        at_ms=at_ms,
        onset_ms=onset_ms,
        breakdown=breakdown,
        signals=tuple(signals),
        stats=tuple((k, float(v)) for k, v in stats),
        samples=(),
        templates=(),
    )
