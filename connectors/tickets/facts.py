"""The one "facts" builder every platform renders, so every ticket shows the same content.

``build_facts(view)`` turns a ``TicketView`` (the incident contract event, the RCA, the evidence)
into a flat, bounded, typed ``TicketFacts``. Renderers only format it; they never dig into the
incident dict themselves. Times are the incident's event-time RFC 3339 strings.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.tickets.base import Rca, TicketView

EVIDENCE_MAX_LINES = 5
EVIDENCE_MAX_CHARS = 300
TRACE_IDS_MAX = 5
CHAIN_MAX = 12


@dataclass(frozen=True)
class Signal:
    name: str
    weight: float
    detail: str


@dataclass(frozen=True)
class EvidenceLine:
    time: str
    service: str
    level: str
    text: str
    trace_id: str


@dataclass(frozen=True)
class TicketFacts:
    """Everything a ticket says, platform-neutral and already bounded."""

    title: str
    headline: str
    event: str
    tenant: str
    fingerprint: str
    incident_id: str
    severity: str
    score: float
    score_breakdown: tuple[tuple[str, float], ...]
    service: str
    root_cause_service: str
    root_cause_confidence: float
    chain: tuple[str, ...]
    affected: tuple[str, ...]
    signals: tuple[Signal, ...]
    rca: Rca
    evidence: tuple[EvidenceLine, ...]
    evidence_total: int
    trace_ids: tuple[str, ...]
    link: str
    opened_at: str
    detected_at: str
    resolved_at: str
    summary: str
    label: str


def fingerprint_label(tenant: str, fingerprint: str) -> str:
    """A tenant-scoped tag safe for Jira labels, Zammad tags and ServiceNow correlation ids.

    No spaces, lower-case, at most 64 chars: ``logclaw-<tenant slug>-<16 hex of sha256>``. The hash
    covers tenant and fingerprint, so two tenants never share a label even if their slugs collide.
    """
    digest = hashlib.sha256(f"{tenant}\x00{fingerprint}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^a-z0-9]+", "-", tenant.lower()).strip("-")[:38] or "t"
    return f"logclaw-{slug}-{digest}"


def clock_utc(rfc3339: str) -> str:
    """``HH:MM`` of an RFC 3339 time (as written in the incident), or "" if it does not parse."""
    try:
        when = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return when.strftime("%H:%M")


def ticket_title(severity: str, service: str, score: float, opened_at: str) -> str:
    """E.g. ``[critical] payment-api — composite score 0.91 at 03:47 UTC``."""
    at = clock_utc(opened_at)
    tail = f" at {at} UTC" if at else ""
    return f"[{severity}] {service} — composite score {score:.2f}{tail}"


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _detail(detail: Any) -> str:
    if detail is None or detail == "":
        return ""
    if isinstance(detail, Mapping):
        return ", ".join(f"{k}={v}" for k, v in list(detail.items())[:6])
    return cut(str(detail), 200)


def _evidence_line(item: Mapping[str, Any]) -> EvidenceLine:
    text = next((_str(item[k]) for k in ("body", "message", "line", "text") if item.get(k)), "")
    one_line = " ⏎ ".join(part for part in text.splitlines() if part.strip()) or text
    return EvidenceLine(
        time=_str(item.get("time") or item.get("@timestamp") or item.get("timestamp")),
        service=_str(item.get("service") or item.get("service.name")),
        level=_str(item.get("level") or item.get("severity_text") or item.get("severity")),
        text=cut(one_line, EVIDENCE_MAX_CHARS),
        trace_id=_str(item.get("trace_id")),
    )


def _strings(values: Any, limit: int) -> tuple[str, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        return ()
    return tuple(_str(v) for v in values[:limit] if _str(v))


def build_facts(view: TicketView) -> TicketFacts:
    """The facts of one ticket event: bounded evidence (5 lines x 300 chars), signals by weight."""
    inc = view.incident
    root = inc.get("root_cause") or {}
    service = _str(inc.get("service")) or _str(root.get("service")) or "unknown service"
    opened_at = _str(inc.get("opened_at"))
    signals = sorted(
        (
            Signal(_str(s.get("name")), _float(s.get("weight")), _detail(s.get("detail")))
            for s in inc.get("signals") or ()
            if isinstance(s, Mapping)
        ),
        key=lambda s: -s.weight,
    )
    breakdown = inc.get("score_breakdown") or {}
    raw_evidence = list(view.evidence) or list(inc.get("evidence") or ())
    evidence = tuple(_evidence_line(e) for e in raw_evidence[:EVIDENCE_MAX_LINES] if isinstance(e, Mapping))
    affected = _strings(inc.get("affected_services"), 50) or view.rca.affected_services
    trace_ids = _strings(inc.get("trace_ids"), TRACE_IDS_MAX) or tuple(
        dict.fromkeys(e.trace_id for e in evidence if e.trace_id)
    )
    return TicketFacts(
        title=ticket_title(view.severity, service, view.score, opened_at),
        headline=_str(view.title) or _str(inc.get("title")),
        event=view.event,
        tenant=view.tenant,
        fingerprint=view.fingerprint,
        incident_id=view.incident_id,
        severity=view.severity,
        score=view.score,
        score_breakdown=tuple(sorted(((str(k), _float(v)) for k, v in breakdown.items()), key=lambda kv: -kv[1]))
        if isinstance(breakdown, Mapping)
        else (),
        service=service,
        root_cause_service=_str(root.get("service")) or service,
        root_cause_confidence=_float(root.get("confidence")),
        chain=_strings(root.get("chain"), CHAIN_MAX),
        affected=affected,
        signals=tuple(signals),
        rca=view.rca,
        evidence=evidence,
        evidence_total=len(raw_evidence),
        trace_ids=trace_ids,
        link=view.link,
        opened_at=opened_at,
        detected_at=_str(inc.get("detected_at")),
        resolved_at=_str(inc.get("resolved_at")),
        summary=_str(inc.get("summary")),
        label=fingerprint_label(view.tenant, view.fingerprint),
    )


# Severity (contract: critical/high/medium/low) in each platform's vocabulary.
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}
OPSGENIE_PRIORITY = {"critical": "P1", "high": "P2", "medium": "P3", "low": "P4"}
JIRA_PRIORITY = {"critical": "Highest", "high": "High", "medium": "Medium", "low": "Low"}
# ServiceNow urgency/impact: 1 = High, 2 = Medium, 3 = Low (priority is computed from both).
SERVICENOW_URGENCY_IMPACT = {
    "critical": ("1", "1"),
    "high": ("1", "2"),
    "medium": ("2", "2"),
    "low": ("3", "3"),
}
ZAMMAD_PRIORITY = {"critical": "3 high", "high": "3 high", "medium": "2 normal", "low": "1 low"}
