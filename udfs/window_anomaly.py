"""What the service window emits: immediate and windowed anomalies, discovery reports and the
"hello" with which a service tells its tenant when it was first seen. Pure; event time only.
"""

from __future__ import annotations

import hashlib
import math

from udfs.anomaly import (
    Notable,
    Sample,
    ServiceAnomaly,
    SignalInfo,
    TemplateInfo,
)
from udfs.scoring import Breakdown, significance_score, velocity_score
from udfs.window_config import WindowConfig
from udfs.window_state import ServiceState
from udfs.window_stats import WindowStats


def anomaly_id(tenant: str, service: str, kind: str, at_ms: int) -> str:
    return hashlib.sha1(f"{tenant}\x1f{service}\x1f{kind}\x1f{at_ms}".encode()).hexdigest()[:16]


def hello(state: ServiceState) -> ServiceAnomaly:
    """Tell the tenant when this service was first seen (event time): the tenant's own age is
    exposure for a service that stayed silent, and for the tenant-level novelty check."""
    return ServiceAnomaly(
        anomaly_id=anomaly_id(state.tenant, state.service, "first_seen", state.first_seen_ms),
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


def immediate_anomaly(state: ServiceState, n: Notable, template_id: str, template: str, novel: bool) -> ServiceAnomaly:
    breakdown = Breakdown(pattern=n.pattern, http=n.http, severity=n.severity, structural=n.structural)
    signals = tuple(SignalInfo(g, n.pattern if g == n.immediate else 0.0, "immediate") for g in n.groups)
    sample = Sample(n.time_ms, state.service, n.level, n.body[:300], n.trace_id, n.http_status, template_id)
    return ServiceAnomaly(
        anomaly_id=anomaly_id(state.tenant, state.service, n.immediate or "", n.time_ms),
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


def windowed_anomaly(
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
        anomaly_id=anomaly_id(state.tenant, state.service, kind, at_ms),
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
