"""Zammad REST client: a ticket per incident, tagged with the fingerprint label for lookup.

create ``POST /api/v1/tickets`` (first article: an HTML note; the fingerprint tag in the same request,
so a ticket is never there without the tag ``find`` looks for);
find ``GET /api/v1/tickets/search?query=tags:<label>``; update ``POST /api/v1/ticket_articles``;
resolve = a closing article then ``PUT /api/v1/tickets/{id}`` with state "closed".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.tickets.base import TicketRef, TicketView
from connectors.tickets.common import join_url, masked_repr
from connectors.tickets.facts import ZAMMAD_PRIORITY, build_facts, cut
from connectors.tickets.render import Mode, render
from connectors.tickets.retry import HttpTransport, PermanentError, Response

CLOSED_STATES = frozenset({"closed", "merged", "removed"})


@dataclass(frozen=True, repr=False)
class ZammadSettings:
    base_url: str
    token: str
    group: str
    customer: str  # e-mail or login of an existing Zammad user
    set_priority: bool = True

    def __repr__(self) -> str:
        return masked_repr("ZammadSettings", vars(self), {"token"})


class ZammadClient:
    def __init__(self, name: str, settings: ZammadSettings, transport: HttpTransport) -> None:
        self.name = name
        self.settings = settings
        self.transport = transport

    def __repr__(self) -> str:
        return f"ZammadClient(name={self.name!r}, settings={self.settings!r})"

    def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
              replay_safe: bool = True) -> Response:
        return self.transport.request(
            method,
            join_url(self.settings.base_url, path),
            json=json,
            params=params,
            headers={"Authorization": f"Token token={self.settings.token}"},
            replay_safe=replay_safe,
        )

    def _ref(self, ticket: Mapping[str, Any]) -> TicketRef:
        ticket_id = str(ticket["id"])
        url = join_url(self.settings.base_url, f"/#ticket/zoom/{ticket_id}")
        return TicketRef(self.name, ticket_id, url, {"number": str(ticket.get("number", ""))})

    def find(self, view: TicketView) -> TicketRef | None:
        label = build_facts(view).label
        resp = self._call(
            "GET",
            "/api/v1/tickets/search",
            params={"query": f'tags:"{label}"', "limit": "10", "expand": "true"},
        )
        body = resp.json
        # expand=true answers a list of tickets; without it Zammad answers {"tickets": [ids], ...}.
        tickets: list[Any] = body if isinstance(body, list) else (body or {}).get("tickets") or []
        for ticket in tickets:
            if isinstance(ticket, Mapping):
                if str(ticket.get("state", "")).lower() not in CLOSED_STATES:
                    return self._ref(ticket)
            else:
                return self._ref({"id": ticket})
        return None

    def _article(self, view: TicketView, mode: Mode) -> dict[str, Any]:
        facts = build_facts(view)
        prefix = {"full": "", "update": "Update: ", "resolve": "Resolved: "}[mode]
        subject = prefix + facts.title
        return {
            "subject": cut(subject, 250),
            "body": render("html", facts, mode),
            "content_type": "text/html",
            "type": "note",
            "internal": False,
        }

    def create(self, view: TicketView) -> TicketRef:
        facts = build_facts(view)
        s = self.settings
        ticket: dict[str, Any] = {
            "title": cut(facts.title, 250),
            "group": s.group,
            "customer": s.customer,
            "article": self._article(view, "full"),
            "tags": facts.label,  # Zammad splits a comma-separated string; the label has no comma
        }
        if s.set_priority and facts.severity in ZAMMAD_PRIORITY:
            ticket["priority"] = ZAMMAD_PRIORITY[facts.severity]
        created = self._call("POST", "/api/v1/tickets", json=ticket, replay_safe=False).json or {}
        if "id" not in created:
            raise PermanentError(201, str(created), reason="Zammad create answered without a ticket id")
        return self._ref(created)

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef:
        article = {"ticket_id": int(ref.external_id), **self._article(view, "update")}
        self._call("POST", "/api/v1/ticket_articles", json=article)
        return ref

    def resolve(self, ref: TicketRef, view: TicketView) -> TicketRef:
        article = {"ticket_id": int(ref.external_id), **self._article(view, "resolve")}
        self._call("POST", "/api/v1/ticket_articles", json=article)
        self._call("PUT", f"/api/v1/tickets/{ref.external_id}", json={"state": "closed"})
        return ref
