"""PagerDuty Events API v2 client: ``POST /v2/enqueue`` trigger / acknowledge / resolve.

The Events API cannot look alerts up, so ``find`` answers None: the worker then sends ``create``,
a trigger, which PagerDuty de-duplicates on ``dedup_key`` (a repeated trigger lands on the open
alert, so sending it again after a crash or an unclear failure pages no one twice). ``update``
re-sends a trigger; ``resolve`` of a key with no open alert is dropped by PagerDuty. ``ref_for``
gives the ref of a key, for resolving an alert the ledger lost. Success is HTTP 202 with
``{"status": "success"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.tickets.base import TicketRef, TicketView
from connectors.tickets.common import bounded_key, join_url, masked_repr
from connectors.tickets.facts import PAGERDUTY_SEVERITY, TicketFacts, build_facts, cut
from connectors.tickets.render import render, safe_url
from connectors.tickets.retry import HttpTransport, Response, Verdict

DEFAULT_BASE_URL = "https://events.pagerduty.com"


@dataclass(frozen=True, repr=False)
class PagerDutySettings:
    routing_key: str
    base_url: str = DEFAULT_BASE_URL
    source: str = ""  # default: the incident's service
    client_url: str = ""

    def __repr__(self) -> str:
        return masked_repr("PagerDutySettings", vars(self), {"routing_key"})


def _accepted(resp: Response) -> Verdict:
    ok = resp.status == 202 and isinstance(resp.json, dict) and resp.json.get("status") == "success"
    return "ok" if ok else "fail"


def dedup_key(view: TicketView) -> str:
    return bounded_key(view.dedup_key, 255)


class PagerDutyClient:
    def __init__(self, name: str, settings: PagerDutySettings, transport: HttpTransport) -> None:
        self.name = name
        self.settings = settings
        self.transport = transport

    def __repr__(self) -> str:
        return f"PagerDutyClient(name={self.name!r}, settings={self.settings!r})"

    def _send(self, event: dict[str, Any]) -> Response:
        event = {"routing_key": self.settings.routing_key, **event}
        return self.transport.request(
            "POST", join_url(self.settings.base_url, "/v2/enqueue"), json=event, classify=_accepted
        )

    def _ref(self, key: str) -> TicketRef:
        return TicketRef(self.name, key, "", {"dedup_key": key})

    def _trigger(self, facts: TicketFacts, key: str) -> dict[str, Any]:
        details: dict[str, Any] = {
            "incident_id": facts.incident_id,
            "tenant": facts.tenant,
            "headline": facts.headline,
            "score": round(facts.score, 4),
            "score_breakdown": dict(facts.score_breakdown),
            "root_cause": facts.rca.root_cause,
            "root_cause_service": facts.root_cause_service,
            "root_cause_confidence": facts.root_cause_confidence,
            "chain": list(facts.chain),
            "affected_services": list(facts.affected),
            "impact": facts.rca.impact,
            "suggested_fix": facts.rca.suggested_fix,
            "rca_confidence": facts.rca.confidence,
            "rca_source": facts.rca.source,
            "signals": [{"name": s.name, "weight": s.weight, "detail": s.detail} for s in facts.signals],
            "evidence": [" ".join(p for p in (e.time, e.service, e.level, e.text) if p) for e in facts.evidence],
            "trace_ids": list(facts.trace_ids),
            "opened_at": facts.opened_at,
            "detected_at": facts.detected_at,
            "report": render("plain", facts, "full" if facts.event == "opened" else "update"),
        }
        payload: dict[str, Any] = {
            "summary": cut(facts.title, 1024),
            "source": self.settings.source or facts.service,
            "severity": PAGERDUTY_SEVERITY.get(facts.severity, "error"),
            "component": facts.root_cause_service,
            "group": facts.tenant,
            "class": facts.signals[0].name if facts.signals else "log anomaly",
            "custom_details": details,
        }
        if facts.opened_at:
            payload["timestamp"] = facts.opened_at
        event: dict[str, Any] = {
            "event_action": "trigger",
            "dedup_key": key,
            "payload": payload,
            "client": "LogClaw",
        }
        if self.settings.client_url:
            event["client_url"] = self.settings.client_url
        if safe_url(facts.link):
            event["links"] = [{"href": facts.link, "text": "Logs for this incident"}]
        return event

    def find(self, view: TicketView) -> TicketRef | None:
        return None  # nothing to look up: create (trigger) is idempotent by dedup_key

    def ref_for(self, view: TicketView) -> TicketRef:
        return self._ref(dedup_key(view))

    def create(self, view: TicketView) -> TicketRef:
        key = dedup_key(view)
        self._send(self._trigger(build_facts(view), key))
        return self._ref(key)

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef:
        self._send(self._trigger(build_facts(view), ref.external_id))
        return ref

    def acknowledge(self, ref: TicketRef) -> TicketRef:
        self._send({"event_action": "acknowledge", "dedup_key": ref.external_id})
        return ref

    def resolve(self, ref: TicketRef, view: TicketView) -> TicketRef:
        self._send({"event_action": "resolve", "dedup_key": ref.external_id})
        return ref
