"""Novelty judged by the tenant: the second level of "surprise against the service's own history".

The service window (udfs.window) judges a never-seen alarming template against the service's own
template history (udfs.history) and sends every discovery to the tenant's correlator: a candidate
when the service's history makes it improbable, a report otherwise. The tenant knows two things a
single service does not, and judges again with them (same estimator, same odds of 3 to 1):
- **its own age**: a service first seen while its tenant has been observed for ten minutes has been
  idle, not absent; its exposure is the tenant's age when that is longer than its own history
  (every service announces when it was first seen, path "hello");
- **its other services**: a template another service of the tenant already discovered is background
  (shared libraries log the same lines), and a tenant whose services discover new templates
  routinely makes the next one no news.

The tenant's routine rate is its *routine* discoveries per bucket of its age (upper credible bound, as
a service's). Routine are (issue 11, cold start both ways):
- every discovery of a **mature** service: one whose own history could already have called it news,
  i.e. at least ``maturity_buckets(max_p)`` buckets old (the exposure at which a clean history's
  bound first falls to ``max_p``; 10 buckets for 1/4 at 95 %, derived, not chosen);
- a **young** service's discovery only when its template is **shared**, i.e. another service of the
  tenant discovered it too (before or since): a line the tenant's services log alike is the tenant's
  background, whatever their age.
A young service's discovery of a template only it has logged is start-up learning of its own
vocabulary: no evidence that the tenant discovers routinely, so forty services starting together
do not silence novelty for hours. The price of counting shared lines: ``k`` services that all
discover one shared start-up line keep the tenant's bound above 1/4 until it is about ``5 k`` buckets
old (40 services: 33 minutes; before, any 80 start-up discoveries: 63 minutes).
Measured (``logclaw eval``, real OpenStack set): unchanged (24/27 detected, 0 fault-free incidents,
root cause 24/27, median TTD 8.5 s). Not solved: a young synthetic tenant's first background line of
a kind (room_booked at 4:21, oom_burst at 1:44), which its few earlier discoveries cannot call
routine; leaving the start-up buckets out of the tenant's exposure too fixed those but lost 5 real
detections whose fault came in a round's first minutes (their p, 0.15-0.21, is the synthetic lines').
A report that the tenant's knowledge makes improbable becomes a candidate, its record categories
re-weighted by the new confidence (the window weighs them linearly by 1 - p); a candidate that the
tenant finds routine is dropped. Either way the tenant learns the templates. Pure; no clock.
"""

from __future__ import annotations

import math

from udfs.anomaly import ServiceAnomaly, SignalInfo
from udfs.history import CREDIBILITY, discovery_bound
from udfs.scoring import Breakdown
from udfs.tenant_state import TenantState

RECURRENCE = 0.7
"""Context score of a never-seen template at full confidence (the published design's value)."""


def judge(state: TenantState, a: ServiceAnomaly, *, max_p: float, max_known: int) -> ServiceAnomaly | None:
    """The anomaly to score (possibly re-weighted), or None when it is no news for the tenant."""
    if a.path == "hello":
        first = state.first_seen_ms
        state.first_seen_ms = a.at_ms if first < 0 else min(first, a.at_ms)
        return None
    if a.kind != "novel_template":
        return a
    stats = dict(a.stats)
    texts = [t.template for t in a.templates if t.novel]
    known = bool(texts) and all(t in state.known_templates and state.known_templates[t] < a.onset_ms for t in texts)
    bucket_ms = stats.get("bucket_ms", 10_000.0)
    age = (a.onset_ms - state.first_seen_ms) / bucket_ms if state.first_seen_ms >= 0 else 0.0
    state.age_buckets = max(state.age_buckets, int(stats.get("history_buckets", 0.0)))
    exposure = max(stats.get("history_buckets", 0.0), age)
    p_service = discovery_bound(stats.get("history_discoveries", 0.0), exposure)
    p_tenant = discovery_bound(routine_discoveries(state, a.onset_ms), max(age, float(state.age_buckets)))
    _learn(state, a, texts, max_known, stats.get("history_buckets", 0.0) >= maturity_buckets(max_p))
    if known or max(p_service, p_tenant) > max_p:
        if not known:
            state.witnesses[a.service] = [a.onset_ms, a.at_ms]
        return None
    return _reweigh(a, p_service, exposure)


def maturity_buckets(max_p: float) -> float:
    """Buckets of clean history after which a discovery can first be news: the smallest B with
    ``discovery_bound(0, B) <= max_p`` (for K = 0 the bound is 1 - (1 - CREDIBILITY) ** (1 / (B + 1)))."""
    return float(math.ceil(math.log(1.0 - CREDIBILITY) / math.log(1.0 - max_p)) - 1)


def routine_discoveries(state: TenantState, before_ms: int) -> int:
    """The tenant's discoveries before ``before_ms`` that show its routine: every one a mature service
    made, and a young service's only when its template is shared (another service discovered it too)."""
    shared = state.discoverers
    young = sum(1 for at, *texts in state.young if at < before_ms and any(shared.get(t, ("", 0))[1] for t in texts))
    return young + sum(1 for t in state.discoveries if t < before_ms)


def _learn(state: TenantState, a: ServiceAnomaly, texts: list[str], max_known: int, mature: bool) -> None:
    if mature:
        state.discoveries.append(a.at_ms)
        del state.discoveries[: max(0, len(state.discoveries) - max_known)]
    elif texts:
        state.young.append([a.at_ms, *texts])
        del state.young[: max(0, len(state.young) - max_known)]
    for t in texts:
        state.known_templates[t] = max(state.known_templates.get(t, a.at_ms), a.at_ms)
        first = state.discoverers.setdefault(t, [a.service, 0])
        first[1] = first[1] or int(first[0] != a.service)
    if len(state.known_templates) > max_known:
        for t in sorted(state.known_templates, key=lambda k: (state.known_templates[k], k))[
            : len(state.known_templates) - max_known
        ]:
            del state.known_templates[t]
            state.discoverers.pop(t, None)


def _reweigh(a: ServiceAnomaly, p: float, exposure: float) -> ServiceAnomaly:
    """``a`` with the tenant-informed confidence 1 - ``p`` in place of the service's own, if higher."""
    own = 1.0 - dict(a.stats).get("novelty_p", 1.0)
    sure = 1.0 - p
    if sure <= own:
        return a._replace(path="windowed")
    f = sure / own if own > 0 else 1.0
    b = a.breakdown
    breakdown = Breakdown(
        pattern=round(min(1.0, b.pattern * f), 4),
        statistical=round(max(b.statistical, sure), 4),
        context=round(max(b.context, RECURRENCE * sure), 4),
        http=round(min(1.0, b.http * f), 4),
        severity=round(min(1.0, b.severity * f), 4),
        structural=round(min(1.0, b.structural * f), 4),
    )
    signals = tuple(
        SignalInfo(s.name, round(sure, 4), f"{s.detail}; judged over its tenant's {exposure:.0f} buckets p = {p:.3g}")
        if s.name == "novel_template"
        else s
        for s in a.signals
    )
    stats = tuple((k, round(p, 6) if k == "novelty_p" else v) for k, v in a.stats)
    return a._replace(path="windowed", breakdown=breakdown, signals=signals, stats=stats)
