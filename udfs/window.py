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

import math
from typing import NamedTuple

from udfs import history
from udfs.anomaly import (
    Notable,
    Sample,
    ServiceAnomaly,
    ServiceBatch,
    ServiceRecovered,
)
from udfs.records import Level
from udfs.templates import TemplateMatch, TemplateMiner, masked_tokens
from udfs.window_anomaly import anomaly_id, hello, immediate_anomaly, windowed_anomaly
from udfs.window_config import WindowConfig as WindowConfig
from udfs.window_state import OpenBucket, ServiceState
from udfs.window_stats import WindowStats, tail_p_value


class Step(NamedTuple):
    state: ServiceState
    emit: tuple[ServiceAnomaly | ServiceRecovered, ...]
    timer_at_ms: int | None
    """Event time of the next bucket close to register, or None."""
    dirty: frozenset[str]
    """Which parts of the state changed: "open", "core", "memory", "templates" (lets adapters write less)."""
    touched: frozenset[int] = frozenset()
    """Start of every open bucket this step changed (adapters that store buckets one by one write
    these); a bucket the step closed is no longer in ``state.open``."""


def _bucket_of(time_ms: int, bucket_ms: int) -> int:
    return time_ms - time_ms % bucket_ms


def on_batch(state: ServiceState, batch: ServiceBatch, cfg: WindowConfig, watermark_ms: int) -> Step:
    """Add one message's counts for this service; run the immediate path on its notable records."""
    dirty = {"open"}
    touched: set[int] = set()
    emit: list[ServiceAnomaly] = []
    if state.first_seen_ms < 0 or batch.max_time_ms < state.first_seen_ms:
        state.first_seen_ms = min(b.start_ms for b in batch.buckets) if batch.buckets else batch.max_time_ms
        dirty.add("core")
        emit.append(hello(state))
    if not state.namespace and batch.namespace:
        state.namespace = batch.namespace
        dirty.add("core")
    for agg in batch.buckets:
        if agg.start_ms < state.closed_until_ms:
            state.late_records += agg.total
            dirty.add("core")
            continue
        state.open.setdefault(agg.start_ms, OpenBucket()).add(agg)
        touched.add(agg.start_ms)
    if batch.notables:
        # Notables feed the miner ("templates"), failures also the template history ("memory"); the core
        # changes only when the immediate path remembers or suppresses one (rare), so it is not rewritten
        # per message.
        dirty.add("templates")
        if any(n.failure for n in batch.notables):
            dirty.add("memory")
        suppressed = state.suppressed_immediate
        found = _look_at_notables(state, batch.notables, cfg, touched)  # each remembered in immediate_seen
        if found or state.suppressed_immediate != suppressed:
            dirty.add("core")
        emit.extend(found)
    timer = _next_timer(state, cfg)
    return Step(state, tuple(emit), timer, frozenset(dirty), frozenset(touched))


def _look_at_notables(
    state: ServiceState, notables: tuple[Notable, ...], cfg: WindowConfig, touched: set[int]
) -> list[ServiceAnomaly]:
    if state.templates is None:
        state.templates = TemplateMiner(state.tenant, state.service)
    miner = state.templates
    emit: list[ServiceAnomaly] = []
    for n in notables:
        match = miner.add(n.body, n.time_ms)
        start = _bucket_of(n.time_ms, cfg.bucket_ms)
        bucket = state.open.get(start)
        if bucket is not None:
            touched.add(start)
            if n.failure:
                moved_from = _remember(state, bucket, n, match, cfg)
                if moved_from is not None:
                    touched.add(moved_from)
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
        emit.append(immediate_anomaly(state, n, match.template_id, match.template, match.novel))
    return emit


def _remember(
    state: ServiceState, bucket: OpenBucket, n: Notable, match: TemplateMatch, cfg: WindowConfig
) -> int | None:
    """Fold one alarming record into the template history; count a discovery in its bucket.

    A discovery belongs to the template's earliest record in event time, whatever the arrival order
    (parallel decoders deliver in any order): an earlier record moves it from a later bucket that is
    still open, and the discovery's text and time are those of its earliest record. Returns the start
    of that later bucket when it changed (it is not this message's bucket, so adapters that store
    buckets one by one must be told), else None."""
    tid = match.template_id
    level = Level[n.level].value if n.level in Level.__members__ else 0
    row = state.memory.seen.get(tid)
    first_ms = row[1] if row is not None else None
    moved_from: int | None = None
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
            moved_from = _bucket_of(first_ms, cfg.bucket_ms)
    if tid in bucket.novel_ids:
        bucket.novel_failures += 1
    return moved_from


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
    dirty = frozenset({"open", "core", "memory"}) if due else frozenset()
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
        return windowed_anomaly(state, st, sustained, at_ms, cfg, surprise, rate, state.onset_ms, before)
    if state.anomalous:
        state.anomalous = False
        state.onset_ms = -1
        return ServiceRecovered(state.tenant, state.service, at_ms)
    if bucket.discoveries:
        # A discovery this service's own history makes unremarkable: reported to the tenant, which
        # may know better (its age, its other services) and learns the template either way.
        report = windowed_anomaly(state, st, False, at_ms, cfg, 1.0 - novelty_p, False, bucket.first_novel_ms, before)
        return report._replace(path="discovery", anomaly_id=anomaly_id(state.tenant, state.service, "discovery", at_ms))
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
