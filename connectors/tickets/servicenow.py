"""ServiceNow Table API client for the ``incident`` table.

find ``GET /api/now/table/incident?sysparm_query=correlation_id=<label>^active=true``, create
``POST`` with short_description/description/urgency/impact/correlation_id, update ``PATCH`` with
work_notes, resolve ``PATCH`` state=6 (Resolved) with close_code and close_notes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.tickets.base import TicketRef, TicketView
from connectors.tickets.common import join_url, masked_repr
from connectors.tickets.facts import SERVICENOW_URGENCY_IMPACT, build_facts, cut
from connectors.tickets.render import render
from connectors.tickets.retry import HttpTransport, PermanentError, Response

TABLE = "/api/now/table/incident"
STATE_RESOLVED = "6"


@dataclass(frozen=True, repr=False)
class ServiceNowSettings:
    base_url: str
    username: str
    password: str
    assignment_group: str = ""
    caller_id: str = ""
    category: str = ""
    close_code: str = "Solution provided"

    def __repr__(self) -> str:
        return masked_repr("ServiceNowSettings", vars(self), {"password"})


class ServiceNowClient:
    def __init__(self, name: str, settings: ServiceNowSettings, transport: HttpTransport) -> None:
        self.name = name
        self.settings = settings
        self.transport = transport

    def __repr__(self) -> str:
        return f"ServiceNowClient(name={self.name!r}, settings={self.settings!r})"

    def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
              replay_safe: bool = True) -> Response:
        s = self.settings
        return self.transport.request(
            method,
            join_url(s.base_url, path),
            json=json,
            params=params,
            auth=(s.username, s.password),
            headers={"Content-Type": "application/json"} if json is not None else None,
            replay_safe=replay_safe,
        )

    def _ref(self, record: Mapping[str, Any]) -> TicketRef:
        sys_id = str(record["sys_id"])
        url = join_url(self.settings.base_url, f"/nav_to.do?uri=incident.do?sys_id={sys_id}")
        return TicketRef(self.name, sys_id, url, {"number": str(record.get("number", ""))})

    def find(self, view: TicketView) -> TicketRef | None:
        label = build_facts(view).label
        resp = self._call(
            "GET",
            TABLE,
            params={
                "sysparm_query": f"correlation_id={label}^active=true",
                "sysparm_limit": "1",
                "sysparm_fields": "sys_id,number,state",
            },
        )
        rows = (resp.json or {}).get("result") or []
        return self._ref(rows[0]) if rows else None

    def create(self, view: TicketView) -> TicketRef:
        facts = build_facts(view)
        s = self.settings
        urgency, impact = SERVICENOW_URGENCY_IMPACT.get(facts.severity, ("2", "2"))
        record: dict[str, str] = {
            "short_description": cut(facts.title, 160),
            "description": render("plain", facts, "full"),
            "urgency": urgency,
            "impact": impact,
            "correlation_id": facts.label,
            "correlation_display": "LogClaw",
        }
        for key in ("assignment_group", "caller_id", "category"):
            if getattr(s, key):
                record[key] = getattr(s, key)
        result = (self._call("POST", TABLE, json=record, replay_safe=False).json or {}).get("result") or {}
        if "sys_id" not in result:
            raise PermanentError(201, str(result), reason="ServiceNow create answered without sys_id")
        return self._ref(result)

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef:
        facts = build_facts(view)
        urgency, impact = SERVICENOW_URGENCY_IMPACT.get(facts.severity, ("2", "2"))
        self._call(
            "PATCH",
            f"{TABLE}/{ref.external_id}",
            json={
                "work_notes": render("plain", facts, "update"),
                "urgency": urgency,
                "impact": impact,
            },
        )
        return ref

    def resolve(self, ref: TicketRef, view: TicketView) -> TicketRef:
        facts = build_facts(view)
        self._call(
            "PATCH",
            f"{TABLE}/{ref.external_id}",
            json={
                "state": STATE_RESOLVED,
                "close_code": self.settings.close_code,
                "close_notes": render("plain", facts, "resolve"),
            },
        )
        return ref
