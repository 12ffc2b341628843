"""Service window state per (tenant, service): 10 s event-time buckets, a 300 s window and a one-hour
baseline, judged by a binomial tail test (DETECTION.md stage 2, "statistical").

The step is pure: ``on_batch`` adds one message's counts and runs the immediate path;
``on_timer`` closes every bucket whose end (plus allowed lateness) the watermark has passed,
zero-filling gaps, and decides whether the service is anomalous. Event time only; no clock.

Principles behind the constants (not tuned to cases):
- a spike is a departure from *this service's* normal: the baseline is the last hour of buckets
  that were not themselves anomalous, with a weak prior (1 % errors over 50 records) for new services;
- significance, not raw z: P(X >= e | n, p0) under a binomial model must be < 1e-6, with at least
  ``min_failures`` failures and at least twice the baseline rate, so one error in a quiet bucket
  never counts (the multiple-testing budget is ~2 900 tests per service per 8 h);
- hysteresis: an episode ends only when the recent window is no longer significant even at 1e-2;
- a sustained high failure rate (>= 25 % over the 300 s window, >= 30 failures) is anomalous
  even when it never changed, because "always broken" has no spike to find;
- surprise against the service's own template history (udfs.history): an alarming record whose
  template this service never logged is judged by how probable such a discovery was in that
  bucket given everything the service logged before (the rate's upper credible bound). At
  p <= 1/4 the service is a candidate without any rate gate: one never-seen exception is news in a
  long-clean service and none in a new or noisy one; the composite score then decides.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from scipy.stats import binom

from udfs import history
from udfs.anomaly import (
    Notable,
    Sample,
    ServiceAnomaly,
    ServiceBatch,
    ServiceRecovered,
    SignalInfo,
    TemplateInfo,
)
from udfs.records import Level
from udfs.scoring import Breakdown, significance_score, velocity_score
from udfs.signals import DEFAULT_WEIGHTS as GROUP_WEIGHTS
from udfs.templates import TemplateMatch, TemplateMiner, masked_tokens
from udfs.window_state import OpenBucket, ServiceState


@dataclass(frozen=True)
class WindowConfig:
    bucket_ms: int = 10_000
    window_buckets: int = 30  # 300 s
    recent_buckets: int = 3  # the 30 s judged at each close
    baseline_buckets: int = 360  # one hour
    allowed_lateness_ms: int = 2_000
    alpha_enter: float = 1e-6
    alpha_exit: float = 1e-2
    min_failures: int = 5
    min_rate_ratio: float = 2.0
    prior_rate: float = 0.01
    prior_records: float = 50.0
    sustained_rate: float = 0.25
    sustained_failures: int = 30
    immediate_repeat_ms: int = 300_000
    max_samples: int = 5
    novelty_max_p: float = 0.25
    """A never-seen alarming template makes the service a candidate when its own history gives such a
    discovery in that bucket a probability of at most 1/4: odds of 3 to 1 against it, the least that
    counts as evidence rather than chance (udfs.history). Weaker surprises are left to the rate test."""
    max_history_templates: int = 300
    """Alarming templates remembered per service (the miner's own cap), least recently seen evicted."""
    group_weights: Mapping[str, float] = field(default_factory=lambda: {g.value: w for g, w in GROUP_WEIGHTS.items()})

    def __post_init__(self) -> None:
        if self.bucket_ms <= 0 or self.window_buckets < self.recent_buckets or self.recent_buckets < 1:
            raise ValueError("window: need bucket_ms > 0 and window_buckets >= recent_buckets >= 1")
        if not (0 < self.alpha_enter <= self.alpha_exit < 1):
            raise ValueError("window: need 0 < alpha_enter <= alpha_exit < 1")


class Step(NamedTuple):
    state: ServiceState
    emit: tuple[ServiceAnomaly | ServiceRecovered, ...]
    timer_at_ms: int | None
    """Event time of the next bucket close to register, or None."""
    dirty: frozenset[str]
    """Which parts of the state changed: "open", "core", "templates" (lets adapters write less)."""


def _bucket_of(time_ms: int, bucket_ms: int) -> int:
    return time_ms - time_ms % bucket_ms


def _anomaly_id(tenant: str, service: str, kind: str, at_ms: int) -> str:
    return hashlib.sha1(f"{tenant}\x1f{service}\x1f{kind}\x1f{at_ms}".encode()).hexdigest()[:16]


def on_batch(state: ServiceState, batch: ServiceBatch, cfg: WindowConfig, watermark_ms: int) -> Step:
    """Add one message's counts for this service; run the immediate path on its notable records."""
    dirty = {"open"}
    emit: list[ServiceAnomaly] = []
    if state.first_seen_ms < 0 or batch.max_time_ms < state.first_seen_ms:
        state.first_seen_ms = min(b.start_ms for b in batch.buckets) if batch.buckets else batch.max_time_ms
        dirty.add("core")
        emit.append(_hello(state))
    state.namespace = state.namespace or batch.namespace
    for agg in batch.buckets:
        if agg.start_ms < state.closed_until_ms:
            state.late_records += agg.total
            dirty.add("core")
            continue
        state.open.setdefault(agg.start_ms, OpenBucket()).add(agg)
    if batch.notables:
        # Notables feed the miner ("templates") and the template history, which lives in "core".
        dirty.update(("templates", "core"))
        emit.extend(_look_at_notables(state, batch.notables, cfg))
    timer = _next_timer(state, cfg)
    return Step(state, tuple(emit), timer, frozenset(dirty))


def _look_at_notables(state: ServiceState, notables: tuple[Notable, ...], cfg: WindowConfig) -> list[ServiceAnomaly]:
    if state.templates is None:
        state.templates = TemplateMiner(state.tenant, state.service)
    miner = state.templates
    emit: list[ServiceAnomaly] = []
    for n in notables:
        match = miner.add(n.body, n.time_ms)
        bucket = state.open.get(_bucket_of(n.time_ms, cfg.bucket_ms))
        if bucket is not None:
            if n.failure:
                _remember(state, bucket, n, match, cfg)
            if n.failure or n.immediate:
                tid = match.template_id
                bucket.template_counts[tid] = bucket.template_counts.get(tid, 0) + 1
                # Keep the earliest samples, not the first to arrive: parallel decoders deliver in any order.
                bucket.samples.append(
                    Sample(n.time_ms, state.service, n.level, n.body[:300], n.trace_id, n.http_status, tid)
                )
                if len(bucket.samples) > cfg.max_samples:
                    bucket.samples.sort()
                    del bucket.samples[cfg.max_samples :]
        if n.immediate is None:
            continue
        last = state.immediate_seen.get(n.immediate)
        if last is not None and 0 <= n.time_ms - last < cfg.immediate_repeat_ms:
            state.suppressed_immediate += 1
            continue
        state.immediate_seen[n.immediate] = n.time_ms
        emit.append(_immediate_anomaly(state, n, match.template_id, match.template, match.novel))
    return emit


def _hello(state: ServiceState) -> ServiceAnomaly:
    """Tell the tenant when this service was first seen (event time): the tenant's own age is
    exposure for a service that stayed silent, and for the tenant-level novelty check."""
    return ServiceAnomaly(
        anomaly_id=_anomaly_id(state.tenant, state.service, "first_seen", state.first_seen_ms),
        tenant=state.tenant,
        service=state.service,
        namespace=state.namespace,
        path="hello",
        kind="first_seen",
        at_ms=state.first_seen_ms,
        onset_ms=state.first_seen_ms,
        breakdown=Breakdown(),
        signals=(),
        stats=(),
        samples=(),
        templates=(),
    )


def _remember(state: ServiceState, bucket: OpenBucket, n: Notable, match: TemplateMatch, cfg: WindowConfig) -> None:
    """Fold one alarming record into the template history; count a discovery in its bucket.

    A discovery belongs to the template's earliest record in event time, whatever the arrival order
    (parallel decoders deliver in any order): an earlier record moves it from a later bucket that is
    still open, and the discovery's text and time are those of its earliest record."""
    tid = match.template_id
    level = Level[n.level].value if n.level in Level.__members__ else 0
    row = state.memory.seen.get(tid)
    first_ms = row[1] if row is not None else None
    history.remember(state.memory, tid, level, n.time_ms, cfg.max_history_templates)
    if first_ms is None:
        _discover(bucket, tid, n, cfg)
    elif n.time_ms < first_ms:
        later = state.open.get(_bucket_of(first_ms, cfg.bucket_ms))
        if later is bucket and tid in bucket.novel_ids:
            k = bucket.novel_ids.index(tid)
            bucket.novel_texts[k] = " ".join(masked_tokens(n.body))
            bucket.novel_times[k] = n.time_ms
            bucket.first_novel_ms = min(bucket.novel_times)
        elif later is not None and tid in later.novel_ids:
            _undiscover(later, tid)
            _discover(bucket, tid, n, cfg)
    if tid in bucket.novel_ids:
        bucket.novel_failures += 1


def _discover(bucket: OpenBucket, tid: str, n: Notable, cfg: WindowConfig) -> None:
    bucket.discoveries += 1
    if n.structural > 0:
        bucket.novel_exceptions += 1
    if len(bucket.novel_ids) < cfg.max_samples:
        bucket.novel_ids.append(tid)
        bucket.novel_texts.append(" ".join(masked_tokens(n.body)))
        bucket.novel_times.append(n.time_ms)
    bucket.first_novel_ms = min(bucket.novel_times, default=n.time_ms)


def _undiscover(bucket: OpenBucket, tid: str) -> None:
    """Take back the discovery of ``tid`` from ``bucket`` (an earlier record of it turned up)."""
    k = bucket.novel_ids.index(tid)
    del bucket.novel_ids[k], bucket.novel_texts[k], bucket.novel_times[k]
    bucket.discoveries -= 1
    bucket.novel_failures -= bucket.template_counts.get(tid, 0)
    bucket.first_novel_ms = min(bucket.novel_times, default=-1)


def _immediate_anomaly(state: ServiceState, n: Notable, template_id: str, template: str, novel: bool) -> ServiceAnomaly:
    breakdown = Breakdown(pattern=n.pattern, http=n.http, severity=n.severity, structural=n.structural)
    signals = tuple(SignalInfo(g, n.pattern if g == n.immediate else 0.0, "immediate") for g in n.groups)
    sample = Sample(n.time_ms, state.service, n.level, n.body[:300], n.trace_id, n.http_status, template_id)
    return ServiceAnomaly(
        anomaly_id=_anomaly_id(state.tenant, state.service, n.immediate or "", n.time_ms),
        tenant=state.tenant,
        service=state.service,
        namespace=state.namespace,
        path="immediate",
        kind=n.immediate or "",
        at_ms=n.time_ms,
        onset_ms=n.time_ms,
        breakdown=breakdown,
        signals=signals,
        stats=(),
        samples=(sample,),
        templates=(TemplateInfo(template_id, template, 1, novel),),
    )


def _next_timer(state: ServiceState, cfg: WindowConfig) -> int | None:
    if not state.open:
        return None
    return min(state.open) + cfg.bucket_ms + cfg.allowed_lateness_ms


def on_timer(state: ServiceState, cfg: WindowConfig, timer_ms: int) -> Step:
    """Close every open bucket with ``end + allowed_lateness <= timer_ms``, oldest first."""
    emit: list[ServiceAnomaly | ServiceRecovered] = []
    due = sorted(s for s in state.open if s + cfg.bucket_ms + cfg.allowed_lateness_ms <= timer_ms)
    for start in due:
        _zero_fill(state, start, cfg)
        bucket = state.open.pop(start)
        emitted = _close_bucket(state, start, bucket, cfg)
        if emitted is not None:
            emit.append(emitted)
    dirty = frozenset({"open", "core"}) if due else frozenset()
    return Step(state, tuple(emit), _next_timer(state, cfg), dirty)


def _zero_fill(state: ServiceState, start: int, cfg: WindowConfig) -> None:
    """No data is a count of zero: append empty closed buckets up to ``start``."""
    if not state.history:
        return
    nxt = state.history[-1][0] + cfg.bucket_ms
    # Beyond the baseline length, older empties would be trimmed anyway.
    nxt = max(nxt, start - cfg.baseline_buckets * cfg.bucket_ms)
    while nxt < start:
        _append_history(state, [nxt, 0, 0, 0], OpenBucket(), cfg)
        nxt += cfg.bucket_ms


def _append_history(state: ServiceState, row: list[int], detail: OpenBucket, cfg: WindowConfig) -> None:
    history = state.history
    history.append(row)
    if len(history) > cfg.recent_buckets:  # the oldest recent row joins the baseline; its flag is final
        _count_baseline(state, history[-cfg.recent_buckets - 1], 1)
    if len(history) > cfg.baseline_buckets:
        drop = len(history) - cfg.baseline_buckets
        in_baseline = len(history) - cfg.recent_buckets
        for i in range(min(drop, in_baseline)):
            _count_baseline(state, history[i], -1)
        del history[:drop]
    state.recent.append(detail)
    if len(state.recent) > cfg.recent_buckets:
        del state.recent[: len(state.recent) - cfg.recent_buckets]
    state.closed_until_ms = max(state.closed_until_ms, row[0] + cfg.bucket_ms)


def _count_baseline(state: ServiceState, row: list[int], sign: int) -> None:
    if not row[3] and state.base_total >= 0:
        state.base_total += sign * row[1]
        state.base_failures += sign * row[2]


def _baseline_sums(history: list[list[int]], cfg: WindowConfig) -> tuple[int, int]:
    base = history[: max(0, len(history) - cfg.recent_buckets)]
    return sum(r[1] for r in base if not r[3]), sum(r[2] for r in base if not r[3])


class WindowStats(NamedTuple):
    recent_total: int
    recent_failures: int
    window_total: int
    window_failures: int
    baseline_rate: float
    p_value: float
    z: float
    rate_ratio: float


def window_stats(
    history: list[list[int]], cfg: WindowConfig, *, with_p_value: bool = True, baseline: tuple[int, int] | None = None
) -> WindowStats:
    """Statistics of the last closed buckets against the non-anomalous baseline before them.

    ``baseline`` (total, failures) is the caller's running sum over the baseline rows (see
    ``ServiceState.base_total``); without it the history is summed here. ``with_p_value=False``
    skips the binomial tail (``p_value`` is then 1.0) for callers that can tell from the counts
    alone that no decision depends on it. This runs at every bucket close of every service."""
    n_b, e_b = baseline if baseline is not None else _baseline_sums(history, cfg)
    n_r = e_r = n_w = e_w = 0
    recent_from = len(history) - cfg.recent_buckets
    start = max(0, len(history) - cfg.window_buckets)
    for i in range(start, len(history)):
        row = history[i]
        n_w += row[1]
        e_w += row[2]
        if i >= recent_from:
            n_r += row[1]
            e_r += row[2]
    p0 = (e_b + cfg.prior_rate * cfg.prior_records) / (n_b + cfg.prior_records)
    p0 = min(max(p0, 1e-6), 0.999)
    p_value = tail_p_value(e_r, n_r, p0) if with_p_value else 1.0
    rate = e_r / n_r if n_r else 0.0
    z = (rate - p0) / math.sqrt(p0 * (1 - p0) / n_r) if n_r else 0.0
    return WindowStats(
        recent_total=n_r,
        recent_failures=e_r,
        window_total=n_w,
        window_failures=e_w,
        baseline_rate=p0,
        p_value=p_value,
        z=z,
        rate_ratio=rate / p0,
    )


def tail_p_value(failures: int, total: int, rate: float) -> float:
    """P(X >= failures) for X ~ Binomial(total, rate); 1.0 without failures."""
    return float(binom.sf(failures - 1, total, rate)) if failures > 0 and total > 0 else 1.0


def _close_bucket(
    state: ServiceState, start: int, bucket: OpenBucket, cfg: WindowConfig
) -> ServiceAnomaly | ServiceRecovered | None:
    # The bucket's discoveries are judged against the history before it, then join that history.
    novelty_p = history.surprise(state.memory) if bucket.discoveries else 1.0
    before = (state.memory.buckets, state.memory.discoveries)
    history.observe(state.memory, bucket.discoveries > 0, start + cfg.bucket_ms, cfg.bucket_ms)
    novel = novelty_p <= cfg.novelty_max_p
    _append_history(state, [start, bucket.total, bucket.failures, 0], bucket, cfg)
    if state.base_total < 0:
        state.base_total, state.base_failures = _baseline_sums(state.history, cfg)
    st = window_stats(state.history, cfg, with_p_value=False, baseline=(state.base_total, state.base_failures))
    sustained = (
        st.window_failures >= cfg.sustained_failures
        and st.window_total > 0
        and st.window_failures / st.window_total >= cfg.sustained_rate
    )
    # The tail probability matters only with enough recent failures, a new failure mode, or for the
    # record of a sustained episode; below that every rule is decided by the counts alone.
    if st.recent_failures >= cfg.min_failures or novel or sustained:
        st = st._replace(p_value=tail_p_value(st.recent_failures, st.recent_total, st.baseline_rate))
    spike = (
        st.p_value < cfg.alpha_enter and st.recent_failures >= cfg.min_failures and st.rate_ratio >= cfg.min_rate_ratio
    )
    still = state.anomalous and (st.p_value < cfg.alpha_exit and st.recent_failures >= cfg.min_failures)
    # Detected when the bucket closes: its end plus the allowed lateness, the event time of the timer.
    at_ms = start + cfg.bucket_ms + cfg.allowed_lateness_ms
    if spike or sustained or still or novel:
        state.history[-1][3] = 1
        if not state.anomalous:
            state.anomalous = True
            state.onset_ms = bucket.first_novel_ms if novel and not spike else _onset(state, st.baseline_rate, start)
        rate = spike or sustained or still
        surprise = 1.0 - novelty_p if novel else 0.0
        return _windowed_anomaly(state, st, sustained, at_ms, cfg, surprise, rate, state.onset_ms, before)
    if state.anomalous:
        state.anomalous = False
        state.onset_ms = -1
        return ServiceRecovered(state.tenant, state.service, at_ms)
    if bucket.discoveries:
        # A discovery this service's own history makes unremarkable: reported to the tenant, which
        # may know better (its age, its other services) and learns the template either way.
        report = _windowed_anomaly(state, st, False, at_ms, cfg, 1.0 - novelty_p, False, bucket.first_novel_ms, before)
        return report._replace(
            path="discovery", anomaly_id=_anomaly_id(state.tenant, state.service, "discovery", at_ms)
        )
    return None


def _onset(state: ServiceState, baseline_rate: float, default_ms: int) -> int:
    """First failure of the earliest recent bucket that itself departs from the baseline (at least
    two failures and twice the expected count), so a background error before the fault is not it."""
    rows = state.history[-len(state.recent) :]
    for row, detail in zip(rows, state.recent, strict=True):
        expected = row[1] * baseline_rate
        if detail.first_failure_ms >= 0 and row[2] >= 2 and row[2] >= 2 * expected:
            return detail.first_failure_ms
    firsts = [b.first_failure_ms for b in state.recent if b.first_failure_ms >= 0]
    return min(firsts) if firsts else default_ms


def _windowed_anomaly(
    state: ServiceState,
    st: WindowStats,
    sustained: bool,
    at_ms: int,
    cfg: WindowConfig,
    surprise: float,
    rate: bool,
    onset_ms: int,
    history_before: tuple[float, float],
) -> ServiceAnomaly:
    """The anomaly as of this close. ``surprise`` is 1 - p of a discovery in the closing bucket (0
    without one): statistical evidence like a significance, and "recurrence" context (DETECTION.md:
    a never-seen template scores higher than a known one), 0.7 as the published design scores it.
    ``rate``: the failure rate itself departs from the baseline. Without it the anomaly rests on
    novelty alone, and the records' own categories (pattern, http, severity, structure) count in
    proportion to the confidence that they are news: how bad a line looks says nothing about whether
    this service logs such lines anyway. Velocity needs the rate test's own minimum of failures.
    ``history_before``: (buckets, discoveries) of the template history before this bucket, so the
    tenant can judge the discovery again with what it knows (udfs.correlate)."""
    groups: dict[str, int] = {}
    samples: list[Sample] = []
    novel = 0
    max_http = max_sev = max_struct = 0.0
    for b in state.recent:
        for name, n in b.groups.items():
            groups[name] = groups.get(name, 0) + n
        samples.extend(x for x in b.samples if x.time_ms >= onset_ms)
        novel += b.novel_failures
        max_http, max_sev, max_struct = (
            max(max_http, b.max_http),
            max(max_sev, b.max_severity),
            max(max_struct, b.max_structural),
        )
    weights = cfg.group_weights
    # A pattern group counts when it is a real share of the failures, or when the records are news.
    floor = 1 if surprise else max(2, math.ceil(0.1 * st.recent_failures))
    dominant = {g: n for g, n in groups.items() if n >= floor}
    pattern = max((weights.get(g, 0.0) for g in dominant), default=0.0)
    stat = max(significance_score(st.p_value), round(surprise, 4))
    if sustained:
        stat = max(stat, min(1.0, 2 * st.window_failures / max(1, st.window_total)))
    velocity = velocity_score(st.rate_ratio) if st.recent_failures >= cfg.min_failures else 0.0
    novelty = 0.7 * surprise
    weight = 1.0 if rate else surprise
    kind = "error_rate" if rate else "novel_template"
    breakdown = Breakdown(
        pattern=round(pattern * weight, 4),
        statistical=stat,
        context=max(velocity, round(novelty, 4)),
        http=round(max_http * weight, 4),
        severity=round(max_sev * weight, 4),
        structural=round(max_struct * weight, 4),
    )
    signals = [
        SignalInfo(g, weights.get(g, 0.0), f"{n} failures") for g, n in sorted(dominant.items(), key=lambda kv: -kv[1])
    ]
    if rate:
        signals.append(
            SignalInfo(
                "error_rate_spike" if not sustained else "sustained_failure",
                significance_score(st.p_value) if not sustained else stat,
                f"{st.recent_failures}/{st.recent_total} in 30 s vs baseline {st.baseline_rate:.2%}",
            )
        )
    if velocity:
        signals.append(SignalInfo("velocity", velocity, f"{st.rate_ratio:.1f}x baseline"))
    if surprise:
        signals.append(
            SignalInfo(
                "novel_template",
                round(surprise, 4),
                f"{novel} failures with templates this service never logged before; by its own history "
                f"({history_before[0]:.0f} buckets of {cfg.bucket_ms // 1000} s, {history_before[1]:.0f} with "
                f"discoveries) p = {1 - surprise:.3g}",
            )
        )
    miner = state.templates
    templates: list[TemplateInfo] = []
    if miner is not None:
        discovered = {i: t for b in state.recent for i, t in zip(b.novel_ids, b.novel_texts, strict=False)}
        seen: set[str] = set()
        for s in samples:
            if s.template_id and s.template_id not in seen:
                seen.add(s.template_id)
                info = miner.describe(s.template_id)
                if info is not None:
                    in_window = sum(b.template_counts.get(s.template_id, 0) for b in state.recent)
                    novel_text = discovered.get(s.template_id)
                    text = novel_text if novel_text is not None else info.template
                    templates.append(TemplateInfo(s.template_id, text, in_window, novel_text is not None))
    stats = (
        ("recent_failures", float(st.recent_failures)),
        ("recent_total", float(st.recent_total)),
        ("window_failures", float(st.window_failures)),
        ("window_total", float(st.window_total)),
        ("error_rate", round(st.recent_failures / st.recent_total, 4) if st.recent_total else 0.0),
        ("baseline_rate", round(st.baseline_rate, 6)),
        ("p_value", st.p_value),
        ("z", round(st.z, 2)),
        ("velocity", round(st.rate_ratio, 2)),
        ("late_records", float(state.late_records)),
        ("novelty_p", round(1.0 - surprise, 6) if surprise else 1.0),
        ("history_buckets", round(history_before[0], 3)),
        ("history_discoveries", round(history_before[1], 3)),
        ("bucket_ms", float(cfg.bucket_ms)),
    )
    return ServiceAnomaly(
        anomaly_id=_anomaly_id(state.tenant, state.service, kind, at_ms),
        tenant=state.tenant,
        service=state.service,
        namespace=state.namespace,
        path="windowed",
        kind=kind,
        at_ms=at_ms,
        onset_ms=onset_ms,
        breakdown=breakdown,
        signals=tuple(signals),
        stats=stats,
        samples=tuple(samples[: cfg.max_samples]),
        templates=tuple(templates[:5]),
    )
