"""What flows between the keyed steps: per-message service summaries, service anomalies and
recoveries, and trace facts. All times are event time in Unix milliseconds (``_ms``)."""

from __future__ import annotations

from typing import NamedTuple

from udfs.scoring import Breakdown


class Sample(NamedTuple):
    """One log line kept as evidence (body cut to a few hundred characters)."""

    time_ms: int
    service: str
    level: str
    body: str
    trace_id: str
    http_status: int | None
    template_id: str = ""


class Notable(NamedTuple):
    """A record looked at individually in the service step: a failure, an immediate signal or a
    WARN line. Everything else is only counted."""

    time_ms: int
    level: str
    body: str
    trace_id: str
    http_status: int | None
    groups: tuple[str, ...]
    pattern: float
    http: float
    severity: float
    structural: float
    failure: bool
    immediate: str | None
    exception_type: str = ""


class BucketAgg(NamedTuple):
    """Counts for one 10 s event-time bucket of one service, as summarized from one message."""

    start_ms: int
    total: int
    failures: int
    client_errors: int
    groups: tuple[tuple[str, int], ...]
    """Failure count per signal group."""
    max_http: float
    max_severity: float
    max_structural: float
    first_failure_ms: int
    """Event time of the earliest failure in the bucket, or -1."""


class ServiceBatch(NamedTuple):
    """Everything one message says about one (tenant, service): bucket counts and a bounded set of
    notable records (all immediate-path records, failures and WARN lines up to a cap)."""

    tenant: str
    service: str
    namespace: str
    buckets: tuple[BucketAgg, ...]
    notables: tuple[Notable, ...]
    max_time_ms: int


class SignalInfo(NamedTuple):
    name: str
    weight: float
    detail: str = ""


class TemplateInfo(NamedTuple):
    template_id: str
    template: str
    seen: int
    novel: bool


class ServiceAnomaly(NamedTuple):
    """A service departs from its baseline (windowed path) or logged an OOM/crash/resource signal
    (immediate path). ``at_ms`` is the event time it was detected at (bucket close or record)."""

    anomaly_id: str
    tenant: str
    service: str
    namespace: str
    path: str
    """"immediate" or "windowed"."""
    kind: str
    """Signal group for the immediate path (oom, crash, resource), "error_rate" for windowed."""
    at_ms: int
    onset_ms: int
    breakdown: Breakdown
    signals: tuple[SignalInfo, ...]
    stats: tuple[tuple[str, float], ...]
    samples: tuple[Sample, ...]
    templates: tuple[TemplateInfo, ...]


class ServiceRecovered(NamedTuple):
    """The service's recent window is back at its baseline (hysteresis: looser than entry)."""

    tenant: str
    service: str
    at_ms: int


class TraceFact(NamedTuple):
    """From a request timeline: ``edge`` (a appeared before b: caller a -> callee b) or ``precedes``
    (a's first error came before b's first error in the same trace)."""

    tenant: str
    trace_id: str
    kind: str
    a: str
    b: str
    at_ms: int


class TraceObservation(NamedTuple):
    """One service seen in one trace within one message (first time and first failure time)."""

    tenant: str
    trace_id: str
    service: str
    first_ms: int
    first_failure_ms: int
    """-1 when the service had no failure in this trace (in this message)."""


class SpanTiming(NamedTuple):
    """One span as the RED state counts it, once its trace's children are known (udfs.traces).

    ``end_ms`` is event time: a request's latency is known when it completes, so RED buckets count
    spans by their end. Durations are microseconds. ``self_us`` is the duration minus the time
    covered by its children (clipped to the span, overlaps counted once); ``own_error``: the span
    failed and none of its children did (its own error, not one passed up from a callee)."""

    tenant: str
    service: str
    operation: str
    end_ms: int
    duration_us: int
    self_us: int
    error: bool
    own_error: bool
