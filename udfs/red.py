"""RED state per (tenant, service, operation) from spans: request count, errors and the duration and
self-time distributions in 10 s event-time buckets (by span end), judged against the operation's own
decayed baseline (DETECTION.md "Spans").

The step is pure: ``on_timing`` adds one span's timing to its open bucket; ``on_timer`` closes every
bucket the watermark has passed (zero-filling gaps) and decides; the state expires ``ttl_ms`` of
event time after the operation's last span (eviction rule; the adapter registers that timer). The
anomalies it emits (what moved, in words) are built in ``udfs.red_anomaly``.

Principles behind the constants (not tuned to cases):
- latency is the operation's slow tail against its own normal: the share of the recent 30 s slower
  than the baseline's p99 against the share the baseline itself has there, judged at that share's
  upper 95 % credible bound (a p99 learned from 200 requests is not known to 1 %) — binomial tail;
- the same multiple-testing discipline as the error-rate test (udfs.window): enter at 1e-6 with at
  least ``min_slow`` slow requests and twice the expected share, stay while significant at 1e-2;
  one burst is no departure: without the recent window's worst bucket the rest must still be
  significant at 1e-2 (a GC pause fills one bucket; a fault fills them all);
- span errors are judged like log errors, against the operation's own error rate (expected 404s of
  look-ups are background there, never "errors" in absolute terms);
- self time (duration minus the children's) and own errors (no child failed) are tested the same
  way at 1e-2 once a departure is established: they say whether this operation is slow or failing
  itself or only waits for a callee (udfs.rootcause); a self time that departs by the entry rules
  while the duration's tail is significant only at 1e-2 is a departure too (an operation that
  mostly waits for callees dilutes its own slowdown in its duration);
- the baseline forgets with a 30 min half-life and learns only from buckets not judged anomalous;
  span errors are not judged before it holds ``min_baseline`` requests (an operation that answers 5 % of
  its look-ups with 404 has no "spike" of them in its first minute); latency once it holds enough for a
  p99 to be a quantile rather than its maximum (``min_tail_baseline``: 100), the credible bound above
  carrying the rest of a short baseline's uncertainty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from scipy.special import bdtrc, betaincinv

from udfs import red_anomaly
from udfs import spans_sketch as sk
from udfs.anomaly import ServiceAnomaly, SpanTiming

SCHEMA_VERSION = 1
CREDIBILITY = 0.95
KEEP_SLOWEST = 8
"""Slowest spans kept per bucket (their end times date a latency onset)."""


@dataclass(frozen=True)
class RedConfig:
    bucket_ms: int = 10_000
    recent_buckets: int = 3
    allowed_lateness_ms: int = 2_000
    half_life_buckets: float = 180.0
    min_baseline: float = 200.0
    tail_q: float = 0.99
    alpha_enter: float = 1e-6
    alpha_exit: float = 1e-2
    min_slow: int = 5
    min_share_ratio: float = 2.0
    min_p99_ratio: float = 1.5
    """The recent p99 must also be half as slow again as the baseline's: a significant but tiny shift
    (2.0 ms -> 2.2 ms) is nothing an operator acts on."""
    prior_rate: float = 0.01
    prior_requests: float = 50.0
    ttl_ms: int = 3_600_000

    def __post_init__(self) -> None:
        if self.bucket_ms <= 0 or self.recent_buckets < 1:
            raise ValueError("red: need bucket_ms > 0 and recent_buckets >= 1")
        if not (0 < self.alpha_enter <= self.alpha_exit < 1):
            raise ValueError("red: need 0 < alpha_enter <= alpha_exit < 1")


@dataclass
class RedBucket:
    count: int = 0
    errors: int = 0
    own_errors: int = 0
    first_error_ms: int = -1
    duration: sk.Sketch = field(default_factory=dict)
    self_time: sk.Sketch = field(default_factory=dict)
    slowest: list[list[int]] = field(default_factory=list)
    """[duration_us, end_ms] of the slowest spans, at most KEEP_SLOWEST (order-independent)."""

    def add(self, t: SpanTiming) -> None:
        self.count += 1
        if t.error:
            self.errors += 1
            if self.first_error_ms < 0 or t.end_ms < self.first_error_ms:
                self.first_error_ms = t.end_ms
        self.own_errors += int(t.own_error)
        sk.add(self.duration, t.duration_us)
        sk.add(self.self_time, t.self_us)
        last = self.slowest[-1] if len(self.slowest) >= KEEP_SLOWEST else None
        if last is None or (-t.duration_us, t.end_ms) < (-last[0], last[1]):  # most spans are not among them
            self.slowest.append([t.duration_us, t.end_ms])
            self.slowest.sort(key=lambda r: (-r[0], r[1]))
            del self.slowest[KEEP_SLOWEST:]

    def merge(self, other: RedBucket) -> None:
        """Add ``other``'s spans: the bucket ends as if they had been added one by one, in any order
        (counts add, the sketches merge order-free, the slowest are the top of both)."""
        self.count += other.count
        self.errors += other.errors
        self.own_errors += other.own_errors
        if other.first_error_ms >= 0 and (self.first_error_ms < 0 or other.first_error_ms < self.first_error_ms):
            self.first_error_ms = other.first_error_ms
        sk.merge(self.duration, other.duration)
        sk.merge(self.self_time, other.self_time)
        if other.slowest:
            self.slowest = sorted([*self.slowest, *other.slowest], key=lambda r: (-r[0], r[1]))[:KEEP_SLOWEST]


WireBucket = tuple[int, int, int, int, int, int, dict[int, float], dict[int, float], list[list[int]]]
"""A partial bucket as it crosses between operators: (start_ms, last_ms, count, errors, own_errors,
first_error_ms, duration sketch, self-time sketch, slowest): plain tuples, lists and dicts pickle in C."""


def partials(timings: Iterable[SpanTiming], cfg: RedConfig) -> dict[tuple[str, str, str], list[WireBucket]]:
    """Timings of many operations -> per (tenant, service, operation), one partial bucket per bucket
    start (with the latest span end it saw). ``add_partial`` of each equals ``count`` of each timing:
    an adapter sends an operation a few partial buckets instead of every span."""
    parts: dict[tuple[str, str, str], dict[int, list[Any]]] = {}
    bucket_ms = cfg.bucket_ms
    for t in timings:
        start = t.end_ms - t.end_ms % bucket_ms
        per_key = parts.get((t.tenant, t.service, t.operation))
        if per_key is None:
            per_key = parts[(t.tenant, t.service, t.operation)] = {}
        row = per_key.get(start)
        if row is None:
            row = per_key[start] = [RedBucket(), t.end_ms]
        elif t.end_ms > row[1]:
            row[1] = t.end_ms
        row[0].add(t)
    return {key: [_wire(start, last, b) for start, (b, last) in per_key.items()] for key, per_key in parts.items()}


def _wire(start: int, last_ms: int, b: RedBucket) -> WireBucket:
    return (start, last_ms, b.count, b.errors, b.own_errors, b.first_error_ms, b.duration, b.self_time, b.slowest)


def add_partial(state: RedState, part: WireBucket) -> int:
    """Count a partial bucket (``partials``) as ``count`` counts its spans; returns its span count. The
    state keeps the part's sketches and lists (``partials`` builds fresh ones for each call)."""
    start, last_ms, n = part[0], part[1], part[2]
    if _late(state, start, last_ms, n):
        return n
    bucket = RedBucket(n, part[3], part[4], part[5], part[6], part[7], part[8])  # the state takes the parts over
    mine = state.open.get(start)
    if mine is None:
        state.open[start] = bucket
    else:
        mine.merge(bucket)
    return n


@dataclass
class RedState:
    tenant: str
    service: str
    operation: str
    open: dict[int, RedBucket] = field(default_factory=dict)
    recent: list[list[Any]] = field(default_factory=list)
    """[start_ms, RedBucket, latency_flag, errors_flag] of the last closed buckets, oldest first."""
    base_duration: sk.Sketch = field(default_factory=dict)
    base_self: sk.Sketch = field(default_factory=dict)
    base_requests: float = 0.0
    base_errors: float = 0.0
    base_own_errors: float = 0.0
    latency_onset_ms: int = -1
    """-1 = no latency episode."""
    errors_onset_ms: int = -1
    closed_until_ms: int = -(2**62)
    last_ms: int = -1
    late_spans: int = 0


class Step(NamedTuple):
    state: RedState
    emit: tuple[ServiceAnomaly, ...]
    timer_at_ms: int
    """Event time of the next bucket close, or of the eviction when no bucket is open."""


class Test(NamedTuple):
    """One recent-window test: ``hits`` of ``total`` against the expected share ``p0``."""

    hits: float
    total: float
    p0: float
    p_value: float
    p_rest: float
    """The same test without the recent window's worst bucket."""
    recent_q: float
    base_q: float
    """The tail quantiles compared (µs) for latency tests; 0 for error tests."""


NO_TEST = Test(0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)


def new_state(tenant: str, service: str, operation: str) -> RedState:
    return RedState(tenant, service, operation)


def key_of(t: SpanTiming) -> tuple[str, str, str]:
    return (t.tenant, t.service, t.operation)


def key_of_state(s: RedState) -> tuple[str, str, str]:
    return (s.tenant, s.service, s.operation)


def on_timing(state: RedState, t: SpanTiming, cfg: RedConfig) -> Step:
    """Count one span in the bucket of its end (a span of a closed bucket is late, counted apart)."""
    count(state, t, cfg)
    return Step(state, (), next_timer(state, cfg))


def count(state: RedState, t: SpanTiming, cfg: RedConfig) -> None:
    """``on_timing`` without the next timer (an adapter that counts a batch asks for it once)."""
    start = t.end_ms - t.end_ms % cfg.bucket_ms
    if not _late(state, start, t.end_ms, 1):
        bucket = state.open.get(start)
        if bucket is None:
            bucket = state.open[start] = RedBucket()
        bucket.add(t)


def _late(state: RedState, start: int, end_ms: int, n: int) -> bool:
    """Move the operation's last span time to ``end_ms``; ``n`` spans of a bucket starting at ``start``
    are late (counted apart) when that bucket is already closed."""
    if end_ms > state.last_ms:
        state.last_ms = end_ms
    if start < state.closed_until_ms:
        state.late_spans += n
        return True
    return False


def next_timer(state: RedState, cfg: RedConfig) -> int:
    if state.open:
        return min(state.open) + cfg.bucket_ms + cfg.allowed_lateness_ms
    return state.last_ms + cfg.ttl_ms


def expired(state: RedState, timer_ms: int, cfg: RedConfig) -> bool:
    return not state.open and state.last_ms + cfg.ttl_ms <= timer_ms


def on_timer(state: RedState, timer_ms: int, cfg: RedConfig) -> Step:
    """Close every open bucket with ``end + allowed_lateness <= timer_ms``, oldest first."""
    emit: list[ServiceAnomaly] = []
    for start in sorted(s for s in state.open if s + cfg.bucket_ms + cfg.allowed_lateness_ms <= timer_ms):
        _zero_fill(state, start, cfg)
        _push(state, start, state.open.pop(start), cfg)
        emit.extend(_judge(state, start + cfg.bucket_ms + cfg.allowed_lateness_ms, cfg))
    return Step(state, tuple(emit), next_timer(state, cfg))


def _zero_fill(state: RedState, start: int, cfg: RedConfig) -> None:
    """No spans is a count of zero: empty buckets up to ``start`` (a recent window's worth at most;
    older ones only decay the baseline)."""
    if state.closed_until_ms < -(2**61):
        return
    gap = (start - state.closed_until_ms) // cfg.bucket_ms
    nxt = state.closed_until_ms
    if gap > cfg.recent_buckets:
        _decay(state, gap - cfg.recent_buckets, cfg)
        nxt = start - cfg.recent_buckets * cfg.bucket_ms
    while nxt < start:
        _push(state, nxt, RedBucket(), cfg)
        nxt += cfg.bucket_ms


def _decay(state: RedState, buckets: int, cfg: RedConfig) -> None:
    factor = 0.5 ** (buckets / cfg.half_life_buckets)
    sk.scale(state.base_duration, factor)
    sk.scale(state.base_self, factor)
    state.base_requests *= factor
    state.base_errors *= factor
    state.base_own_errors *= factor


def _push(state: RedState, start: int, bucket: RedBucket, cfg: RedConfig) -> None:
    """Append a closed bucket to the recent window; the one leaving it joins the baseline unless it
    was judged anomalous (per test)."""
    _decay(state, 1, cfg)
    state.recent.append([start, bucket, False, False])
    if len(state.recent) > cfg.recent_buckets:
        _, old, lat_flag, err_flag = state.recent.pop(0)
        if not lat_flag:
            sk.merge(state.base_duration, old.duration)
            sk.merge(state.base_self, old.self_time)
        if not err_flag:
            state.base_requests += old.count
            state.base_errors += old.errors
            state.base_own_errors += old.own_errors
    state.closed_until_ms = max(state.closed_until_ms, start + cfg.bucket_ms)


def min_tail_baseline(cfg: RedConfig) -> float:
    """Requests the latency test needs in its baseline: 1 / (1 - tail_q) (100 for a p99), below which
    the baseline's p99 is only its maximum. Not ``min_baseline``: the credible bound on the share above
    the p99 already carries a short baseline's uncertainty (from 150 requests it is ~2.8 %, not 1 %),
    and a caller that calls a service twice a second has only ~150 requests after 5 min of traffic."""
    return min(cfg.min_baseline, 1.0 / (1.0 - cfg.tail_q))


def tail_test(recent: list[RedBucket], base: Mapping[int, float], which: str, cfg: RedConfig) -> Test:
    """Share of recent requests above the baseline's p99 bin vs the baseline's own share there."""
    n_base = sk.total(base)
    if n_base < min_tail_baseline(cfg):
        return NO_TEST
    t = sk.quantile_bin(base, cfg.tail_q)
    per = [(sk.count_above(getattr(b, which), t), float(b.count)) for b in recent]
    hits, total = sum(h for h, _ in per), sum(n for _, n in per)
    if hits < cfg.min_slow:
        return NO_TEST._replace(hits=hits, total=total)
    above = sk.count_above(base, t)
    p0 = float(betaincinv(above + 1, n_base - above + 1, CREDIBILITY))  # Beta(a, b)'s quantile
    worst = max(per)
    merged: sk.Sketch = {}
    for b in recent:
        sk.merge(merged, getattr(b, which))
    return Test(
        hits,
        total,
        p0,
        _tail(hits, total, p0),
        _tail(hits - worst[0], total - worst[1], p0),
        sk.quantile(merged, cfg.tail_q),
        sk.value_of(t),
    )


def rate_test(recent: list[RedBucket], failures: float, requests: float, which: str, cfg: RedConfig) -> Test:
    """Recent error count vs the baseline's rate (with a weak prior, as in udfs.window)."""
    per = [(float(getattr(b, which)), float(b.count)) for b in recent]
    hits, total = sum(h for h, _ in per), sum(n for _, n in per)
    if hits < cfg.min_slow or requests < cfg.min_baseline:
        return NO_TEST._replace(hits=hits, total=total)
    p0 = (failures + cfg.prior_rate * cfg.prior_requests) / (requests + cfg.prior_requests)
    p0 = min(max(p0, 1e-6), 0.999)
    worst = max(per)
    return Test(hits, total, p0, _tail(hits, total, p0), _tail(hits - worst[0], total - worst[1], p0), 0.0, 0.0)


def _tail(hits: float, total: float, p0: float) -> float:
    h, n = round(hits), round(total)
    return float(bdtrc(h - 1, n, p0))  # P(X >= h), X ~ Binomial(n, p0) if h > 0 and n > 0 else 1.0


def _enters(t: Test, cfg: RedConfig) -> bool:
    return (
        t.p_value < cfg.alpha_enter
        and t.p_rest < cfg.alpha_exit
        and t.hits >= cfg.min_slow
        and t.hits >= cfg.min_share_ratio * t.p0 * t.total
    )


def _stays(t: Test, cfg: RedConfig) -> bool:
    return t.p_value < cfg.alpha_exit and t.hits >= cfg.min_slow


def _judge(state: RedState, at_ms: int, cfg: RedConfig) -> list[ServiceAnomaly]:
    recent = [r[1] for r in state.recent]
    emit: list[ServiceAnomaly] = []
    lat = tail_test(recent, state.base_duration, "duration", cfg)
    slower = lat.base_q > 0 and lat.recent_q >= cfg.min_p99_ratio * lat.base_q
    departs = _enters(lat, cfg) and slower
    own: Test | None = None
    if not departs and state.latency_onset_ms < 0 and _stays(lat, cfg):
        # Its own work departed (entry significance, half as slow again) while its duration's tail
        # moved only at the exit level: the time it waits for callees dilutes its own rise (CPU
        # contention on a service that mostly waits). It is slow itself; the duration dates it.
        own = tail_test(recent, state.base_self, "self_time", cfg)
        departs = _enters(own, cfg) and own.base_q > 0 and own.recent_q >= cfg.min_p99_ratio * own.base_q
    if (state.latency_onset_ms >= 0 and _stays(lat, cfg)) or departs:
        if state.latency_onset_ms < 0:
            state.latency_onset_ms = _latency_onset(state, lat)
        state.recent[-1][2] = True
        if own is None:
            own = tail_test(recent, state.base_self, "self_time", cfg)
        own_rose = _stays(own, cfg) and own.base_q > 0 and own.recent_q >= cfg.min_p99_ratio * own.base_q
        emit.append(red_anomaly.latency(state, lat, own, own_rose, at_ms))
    else:
        state.latency_onset_ms = -1
    err = rate_test(recent, state.base_errors, state.base_requests, "errors", cfg)
    if (state.errors_onset_ms >= 0 and _stays(err, cfg)) or _enters(err, cfg):
        if state.errors_onset_ms < 0:
            state.errors_onset_ms = _errors_onset(state, err)
        state.recent[-1][3] = True
        own = rate_test(recent, state.base_own_errors, state.base_requests, "own_errors", cfg)
        own_rose = _stays(own, cfg) and own.hits >= cfg.min_share_ratio * own.p0 * own.total
        emit.append(red_anomaly.errors(state, err, own, own_rose, at_ms))
    else:
        state.errors_onset_ms = -1
    return emit


def _latency_onset(state: RedState, t: Test) -> int:
    """The end of the earliest slow span in the earliest recent bucket that departs on its own (two
    slow spans and twice the expected share), so a natural tail request before the fault is not it."""
    threshold = sk.bin_of(t.base_q)
    for row in state.recent:
        b: RedBucket = row[1]
        slow = [end for dur, end in b.slowest if sk.bin_of(dur) > threshold]
        if len(slow) >= max(2.0, 2 * t.p0 * b.count):
            return min(slow)
    return int(state.recent[-1][0])


def _errors_onset(state: RedState, t: Test) -> int:
    for row in state.recent:
        b: RedBucket = row[1]
        if b.first_error_ms >= 0 and b.errors >= 2 and b.errors >= 2 * t.p0 * b.count:
            return b.first_error_ms
    firsts = [int(r[1].first_error_ms) for r in state.recent if r[1].first_error_ms >= 0]
    return min(firsts) if firsts else int(state.recent[-1][0])


# ---- codec -------------------------------------------------------------------------------------


def encode_bucket(b: RedBucket) -> list[Any]:
    return [b.count, b.errors, b.own_errors, b.first_error_ms, sk.encode(b.duration), sk.encode(b.self_time), b.slowest]


def decode_bucket(v: list[Any]) -> RedBucket:
    return RedBucket(
        int(v[0]),
        int(v[1]),
        int(v[2]),
        int(v[3]),
        sk.decode(v[4]),
        sk.decode(v[5]),
        [[int(a), int(b)] for a, b in v[6]],
    )


def encode_state(s: RedState) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "key": [s.tenant, s.service, s.operation],
        "open": [[start, encode_bucket(b)] for start, b in sorted(s.open.items())],
        "recent": [[r[0], encode_bucket(r[1]), int(r[2]), int(r[3])] for r in s.recent],
        "base": [sk.encode(s.base_duration), sk.encode(s.base_self), s.base_requests, s.base_errors, s.base_own_errors],
        "episodes": [s.latency_onset_ms, s.errors_onset_ms],
        "clock": [s.closed_until_ms, s.last_ms, s.late_spans],
    }


def encode_core(s: RedState) -> dict[str, Any]:
    """Everything but the open buckets (an adapter stores those one entry per bucket)."""
    return {k: v for k, v in encode_state(s).items() if k != "open"}


def decode_parts(core: Mapping[str, Any], buckets: Mapping[int, list[Any]]) -> RedState:
    return decode_state({**core, "open": [[start, b] for start, b in sorted(buckets.items())]})


def decode_state(obj: Mapping[str, Any]) -> RedState:
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"red state: unsupported schema_version {obj.get('schema_version')!r}")
    tenant, service, operation = (str(x) for x in obj["key"])
    base = obj["base"]
    return RedState(
        tenant=tenant,
        service=service,
        operation=operation,
        open={int(start): decode_bucket(b) for start, b in obj["open"]},
        recent=[[int(r[0]), decode_bucket(r[1]), bool(r[2]), bool(r[3])] for r in obj["recent"]],
        base_duration=sk.decode(base[0]),
        base_self=sk.decode(base[1]),
        base_requests=float(base[2]),
        base_errors=float(base[3]),
        base_own_errors=float(base[4]),
        latency_onset_ms=int(obj["episodes"][0]),
        errors_onset_ms=int(obj["episodes"][1]),
        closed_until_ms=int(obj["clock"][0]),
        last_ms=int(obj["clock"][1]),
        late_spans=int(obj["clock"][2]),
    )
