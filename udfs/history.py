"""Template history of one (tenant, service) and the surprise of a never-seen alarming template.

An *alarming* record is a failure (ERROR and above, a 5xx, a failure pattern) or a WARNING that
carries a stack trace (DETECTION.md stage 1). The history remembers which alarming templates the
service has logged (count, first and last seen, highest level) and how much the service has been
observed (buckets since it first appeared), with exponential forgetting so old behaviour fades.

Estimator (the principle, no constant fitted to a case): every event-time bucket since the service
first appeared is a trial that either does or does not reveal an alarming template the service
never logged before (busy or idle: a service that has existed for ten minutes without an alarming
line is ten minutes of evidence, and an idle service that suddenly fails is the typical real
fault). With ``K`` such buckets among ``B`` buckets and a uniform prior,
the per-bucket discovery probability has the posterior Beta(K + 1, B - K + 1). We judge by the
probability the history cannot rule out, its upper 95 % credible bound (for K = 0 the "rule of
three", about 3 / B), because a short history proves little. That bound is the *surprise* ``p`` of a
bucket with a discovery. Buckets, not records, are the trials: a failing request drags a burst of
records into its bucket, and the decision is taken once per bucket. Consequences, each a
requirement of DETECTION.md:
- a service observed for a long time without discoveries gives a small ``p`` (strong evidence):
  with 10 s buckets ~0.1 after five clean minutes, ~0.008 after one clean hour;
- a service with little history gets little credit (``p`` near 1 for the first buckets): cold start
  needs no warm-up constant;
- a service that keeps discovering new error templates (noisy, or just started) has a high rate, so
  its next new template is no news;
- a template the service has logged before is never a discovery: recurring errors are background
  (their rate is judged by the window's significance test instead).

Forgetting: counts are multiplied by ``2 ** (-dt / HALF_LIFE_MS)`` as event time passes, so the
evidence of a quiet history is about the last day, and what a service did a week ago (before a
deploy, say) barely counts. Memory is bounded: at most ``max_templates`` templates, the least
recently seen evicted first (an evicted template is simply new again if it ever returns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scipy.special import betaincinv

SCHEMA_VERSION = 1
CREDIBILITY = 0.95
"""The discovery probability is judged at its upper 95 % credible bound: what the history cannot rule out."""
HALF_LIFE_MS = 86_400_000
"""One day: the history a rate is judged by spans a full daily cycle of traffic and batch jobs."""


@dataclass
class TemplateHistory:
    """Alarming templates of one service and the decayed observation counts (event time, ms)."""

    buckets: float = 0.0
    """Decayed number of buckets observed since the service first appeared."""
    discoveries: float = 0.0
    """Decayed number of those buckets with an alarming template the service logged for the first time."""
    updated_ms: int = -1
    """Event time the decay was last applied to ``records`` and ``discoveries``."""
    seen: dict[str, list[int]] = field(default_factory=dict)
    """template id -> [count, first_ms, last_ms, highest level number]."""


def decay(h: TemplateHistory, now_ms: int) -> None:
    """Forget in event time: scale the counts by the half-life factor since ``updated_ms``."""
    if h.updated_ms < 0:
        h.updated_ms = now_ms
        return
    dt = now_ms - h.updated_ms
    if dt <= 0:
        return
    factor = 2.0 ** (-dt / HALF_LIFE_MS)
    h.buckets *= factor
    h.discoveries *= factor
    h.updated_ms = now_ms


def is_known(h: TemplateHistory, template_id: str) -> bool:
    return template_id in h.seen


def remember(h: TemplateHistory, template_id: str, level: int, at_ms: int, max_templates: int) -> bool:
    """Record one alarming record of ``template_id``; True when the service never logged it before."""
    row = h.seen.get(template_id)
    if row is not None:
        row[0] += 1
        row[1] = min(row[1], at_ms)
        row[2] = max(row[2], at_ms)
        row[3] = max(row[3], level)
        return False
    h.seen[template_id] = [1, at_ms, at_ms, level]
    if len(h.seen) > max_templates:
        oldest = min(h.seen.items(), key=lambda kv: (kv[1][2], kv[0]))[0]
        del h.seen[oldest]
    return True


def observe(h: TemplateHistory, discovered: bool, at_ms: int, bucket_ms: int) -> None:
    """Fold a closed bucket ending at ``at_ms`` into the counts, with the quiet buckets since the
    last one (after it was judged, so it never judges itself)."""
    elapsed = 1.0 if h.updated_ms < 0 else max(1.0, (at_ms - h.updated_ms) / bucket_ms)
    decay(h, at_ms)
    h.buckets += elapsed
    h.discoveries += 1.0 if discovered else 0.0


def surprise(h: TemplateHistory) -> float:
    """P(a discovery in one bucket) that the service's history cannot rule out."""
    return discovery_bound(h.discoveries, h.buckets)


def discovery_bound(discoveries: float, buckets: float) -> float:
    """Upper ``CREDIBILITY`` bound of Beta(K + 1, B - K + 1), in (0, 1): K discoveries in B buckets."""
    k = min(max(0.0, discoveries), max(0.0, buckets))
    return float(betaincinv(k + 1.0, max(0.0, buckets) - k + 1.0, CREDIBILITY))  # Beta(a, b)'s quantile


def encode(h: TemplateHistory) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "buckets": h.buckets,
        "discoveries": h.discoveries,
        "updated_ms": h.updated_ms,
        "seen": {k: list(v) for k, v in h.seen.items()},
    }


def decode(obj: Mapping[str, Any]) -> TemplateHistory:
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"template history: unsupported schema_version {obj.get('schema_version')!r}")
    return TemplateHistory(
        buckets=float(obj["buckets"]),
        discoveries=float(obj["discoveries"]),
        updated_ms=int(obj["updated_ms"]),
        seen={str(k): [int(x) for x in v] for k, v in obj["seen"].items()},
    )
