"""Opsgenie Alert API v2 client: one alert per incident, addressed by ``alias`` = the dedup key.

create ``POST /v2/alerts`` (safe to send again: Opsgenie de-duplicates open alerts by alias);
find ``GET /v2/alerts/{alias}?identifierType=alias`` (404 or a closed alert -> None); update = a
note; resolve = close. Writes are asynchronous on Opsgenie's side: they answer 202 with a
``requestId``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from connectors.tickets.base import TicketRef, TicketView
from connectors.tickets.common import bounded_key, join_url, masked_repr
from connectors.tickets.facts import OPSGENIE_PRIORITY, TicketFacts, build_facts, cut
from connectors.tickets.render import render
from connectors.tickets.retry import HttpTransport, Response

DEFAULT_BASE_URL = "https://api.opsgenie.com"
DETAILS_BUDGET = 8000  # Opsgenie's limit on the details map, all keys and values together


@dataclass(frozen=True, repr=False)
class OpsgenieSettings:
    api_key: str
    base_url: str = DEFAULT_BASE_URL
    source: str = "LogClaw"
    user: str = "LogClaw"
    tags: tuple[str, ...] = ("logclaw",)

    def __repr__(self) -> str:
        return masked_repr("OpsgenieSettings", vars(self), {"api_key"})


def alias(view: TicketView) -> str:
    return bounded_key(view.dedup_key, 512)


def _details(facts: TicketFacts) -> dict[str, str]:
    wanted = {
        "incident_id": facts.incident_id,
        "tenant": facts.tenant,
        "score": f"{facts.score:.2f}",
        "root_cause_service": facts.root_cause_service,
        "chain": " -> ".join(facts.chain),
        "affected": ", ".join(facts.affected),
        "suggested_fix": facts.rca.suggested_fix,
        "trace_ids": ", ".join(facts.trace_ids),
        "logs": facts.link,
        "fingerprint_label": facts.label,
    }
    details: dict[str, str] = {}
    used = 0
    for key, value in wanted.items():
        if not value:
            continue
        value = cut(value, max(0, min(1000, DETAILS_BUDGET - used - len(key))))
        used += len(key) + len(value)
        if value and used <= DETAILS_BUDGET:
            details[key] = value
    return details


class OpsgenieClient:
    def __init__(self, name: str, settings: OpsgenieSettings, transport: HttpTransport) -> None:
        self.name = name
        self.settings = settings
        self.transport = transport

    def __repr__(self) -> str:
        return f"OpsgenieClient(name={self.name!r}, settings={self.settings!r})"

    def _call(self, method: str, path: str, *, json: Any = None, expect: tuple[int, ...] = ()) -> Response:
        return self.transport.request(
            method,
            join_url(self.settings.base_url, path),
            json=json,
            expect=expect,
            headers={"Authorization": f"GenieKey {self.settings.api_key}"},
        )

    def _ref(self, key: str, data: Mapping[str, Any] | None = None) -> TicketRef:
        extra = {k: str(data[k]) for k in ("id", "tinyId") if data and data.get(k)}
        return TicketRef(self.name, key, "", extra)

    @staticmethod
    def _path(key: str, action: str = "") -> str:
        return f"/v2/alerts/{quote(key, safe='')}{'/' + action if action else ''}?identifierType=alias"

    def find(self, view: TicketView) -> TicketRef | None:
        key = alias(view)
        resp = self._call("GET", self._path(key), expect=(404,))
        if resp.status == 404:
            return None
        data = (resp.json or {}).get("data") or {}
        if data.get("status") == "closed":
            return None
        return self._ref(key, data)

    def create(self, view: TicketView) -> TicketRef:
        facts = build_facts(view)
        key = alias(view)
        tags = list(dict.fromkeys([*self.settings.tags, f"severity:{facts.severity}", facts.label, *view.labels]))
        alert = {
            "message": cut(facts.title, 130),
            "alias": key,
            "description": cut(render("plain", facts, "full"), 15000),
            "priority": OPSGENIE_PRIORITY.get(facts.severity, "P3"),
            "tags": [cut(t, 50) for t in tags[:20]],
            "details": _details(facts),
            "entity": cut(facts.service, 512),
            "source": cut(self.settings.source, 100),
            "user": cut(self.settings.user, 100),
        }
        resp = self._call("POST", "/v2/alerts", json=alert)
        ref = self._ref(key)
        request_id = (resp.json or {}).get("requestId")
        return TicketRef(ref.destination, ref.external_id, ref.url, {"request_id": str(request_id or "")})

    def _note_body(self, text: str) -> dict[str, str]:
        return {
            "note": cut(text, 25000),
            "source": cut(self.settings.source, 100),
            "user": cut(self.settings.user, 100),
        }

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef:
        text = render("plain", build_facts(view), "update")
        self._call("POST", self._path(ref.external_id, "notes"), json=self._note_body(text))
        return ref

    def resolve(self, ref: TicketRef, view: TicketView) -> TicketRef:
        text = render("plain", build_facts(view), "resolve")
        self._call("POST", self._path(ref.external_id, "close"), json=self._note_body(text))
        return ref
