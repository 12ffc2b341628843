"""Render incident life-cycle events per shared/contracts/incident.schema.json (logclaw.incident/v1).

Times are event time (RFC 3339 UTC, milliseconds). ``emitted_at`` is wall-clock and is added at the
boundary (the sink), never here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from udfs.rootcause import Ranking
from udfs.scoring import ScoreConfig
from udfs.timefmt import format_time_ms

if TYPE_CHECKING:
    from udfs.tenant_state import IncidentState

SCHEMA = "logclaw.incident/v1"
PATTERN_GROUPS = frozenset({"oom", "crash", "resource", "dependency", "database", "timeout", "connection", "auth"})


def rfc3339(ms: int) -> str:
    """Unix milliseconds -> RFC 3339 UTC with millisecond precision."""
    return format_time_ms(ms)


def _title(inc: IncidentState, ranking: Ranking) -> str:
    hhmm = rfc3339(inc.opened_at_ms)[11:16]
    root = ranking.chain[0] if ranking.chain else inc.service
    # Lead with what broke (a pattern group such as database), else the statistical signal.
    named = [s for s in inc.signals if s.name in PATTERN_GROUPS] or inc.signals
    lead = max(named, key=lambda s: s.weight, default=None)
    what = f": {lead.name.replace('_', ' ')}" if lead is not None else ""
    return f"[{inc.severity}] {root} — composite score {inc.score:.2f} at {hhmm} UTC{what}"


def _summary(inc: IncidentState, ranking: Ranking) -> str:
    parts = []
    if ranking.chain:
        parts.append(f"Likely root cause: {ranking.chain[0]} (confidence {ranking.confidence:.2f}).")
    if len(ranking.chain) > 1:
        parts.append("Chain: " + " → ".join(ranking.chain) + ".")
    if ranking.affected:
        parts.append("Affected: " + ", ".join(ranking.affected) + ".")
    if inc.samples:
        first = inc.samples[0]
        parts.append(f"First error ({first.service}): {first.body[:160]}.")
    sig = sorted(inc.signals, key=lambda s: (s.name not in PATTERN_GROUPS, -s.weight))[:4]
    if sig:
        parts.append("Signals: " + "; ".join(f"{s.name} ({s.weight:.2f}, {s.detail})" for s in sig) + ".")
    return " ".join(parts)


def to_contract(event: str, inc: IncidentState, ranking: Ranking, at_ms: int, score_cfg: ScoreConfig) -> dict[str, Any]:
    """One contract event for ``inc`` as it is now (call at emit time: the state keeps changing)."""
    root = ranking.chain[0] if ranking.chain else inc.service
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "incident_id": inc.incident_id,
        "event": event,
        "tenant": inc.tenant,
        "fingerprint": inc.fingerprint,
        "severity": inc.severity,
        "score": round(min(1.0, max(0.0, inc.score)), 4),
        "path": inc.path,
        "opened_at": rfc3339(inc.opened_at_ms),
        "detected_at": rfc3339(at_ms),
        "resolved_at": rfc3339(at_ms) if event == "resolved" else None,
        "service": inc.service,
        "root_cause": {
            "service": root,
            "confidence": ranking.confidence,
            "candidates": [
                {"service": c.service, "score": c.score, "reasons": list(c.reasons)} for c in ranking.candidates
            ],
            "chain": list(ranking.chain),
        },
        "affected_services": list(ranking.affected),
        "signals": [{"name": s.name, "weight": round(s.weight, 4), "detail": s.detail} for s in inc.signals],
        "score_breakdown": score_cfg.weighted(inc.breakdown),
        "stats": {
            **inc.stats,
            "anomalies": inc.anomalies,
            "services": len(inc.services),
            "namespaces": {e.service: e.namespace for e in inc.services.values()},
        },
        "templates": [
            {"template_id": t.template_id, "template": t.template, "count": t.seen, "novel": t.novel}
            for t in inc.templates
        ],
        "trace_ids": list(inc.trace_ids),
        "evidence": [
            {
                "time": rfc3339(s.time_ms),
                "service": s.service,
                "level": s.level,
                "body": s.body,
                "trace_id": s.trace_id,
                "http_status": s.http_status,
                "template_id": s.template_id,
            }
            for s in inc.samples
        ],
        "title": _title(inc, ranking),
        "summary": _summary(inc, ranking),
    }
    return out
