"""Jira Cloud REST v3 client: one issue per incident, found again by a fingerprint label.

create ``POST /rest/api/3/issue`` (ADF description), find ``GET /rest/api/3/search/jql`` (the
enhanced search that replaced the removed ``/rest/api/3/search``), update = a comment, resolve =
a comment then the first transition whose name is one of the configured "done" names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.tickets.adf import build_adf
from connectors.tickets.base import TicketRef, TicketView
from connectors.tickets.common import join_url, masked_repr
from connectors.tickets.facts import JIRA_PRIORITY, build_facts, cut
from connectors.tickets.retry import HttpTransport, PermanentError, Response

_PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,254}$")


@dataclass(frozen=True, repr=False)
class JiraSettings:
    base_url: str
    email: str
    api_token: str
    project_key: str
    issue_type: str = "Bug"
    done_transitions: tuple[str, ...] = ("Done", "Resolved", "Closed")
    labels: tuple[str, ...] = ("logclaw",)
    set_priority: bool = True

    def __post_init__(self) -> None:
        if not _PROJECT_KEY.match(self.project_key):
            raise ValueError(f"jira project_key {self.project_key!r} is not a Jira project key (e.g. OPS)")

    def __repr__(self) -> str:
        return masked_repr("JiraSettings", vars(self), {"api_token"})


class JiraClient:
    def __init__(self, name: str, settings: JiraSettings, transport: HttpTransport) -> None:
        self.name = name
        self.settings = settings
        self.transport = transport

    def __repr__(self) -> str:
        return f"JiraClient(name={self.name!r}, settings={self.settings!r})"

    def _call(self, method: str, path: str, *, json: Any = None, params: Mapping[str, str] | None = None,
              replay_safe: bool = True) -> Response:
        s = self.settings
        return self.transport.request(
            method, join_url(s.base_url, path), json=json, params=params, auth=(s.email, s.api_token),
            replay_safe=replay_safe,
        )

    def _ref(self, key: str, issue_id: str = "") -> TicketRef:
        extra = {"id": issue_id} if issue_id else {}
        return TicketRef(self.name, key, join_url(self.settings.base_url, f"/browse/{key}"), extra)

    def find(self, view: TicketView) -> TicketRef | None:
        label = build_facts(view).label
        jql = (
            f'project = "{self.settings.project_key}" AND labels = "{label}" '
            f"AND statusCategory != Done ORDER BY created DESC"
        )
        resp = self._call(
            "GET",
            "/rest/api/3/search/jql",
            params={"jql": jql, "maxResults": "1", "fields": "summary,status"},
        )
        issues = (resp.json or {}).get("issues") or []
        if not issues:
            return None
        return self._ref(str(issues[0]["key"]), str(issues[0].get("id", "")))

    def create(self, view: TicketView) -> TicketRef:
        facts = build_facts(view)
        s = self.settings
        labels = list(dict.fromkeys([*s.labels, facts.label, f"severity-{facts.severity}", *view.labels]))
        fields: dict[str, object] = {
            "project": {"key": s.project_key},
            "issuetype": {"name": s.issue_type},
            "summary": cut(facts.title.replace("\n", " "), 255),
            "description": build_adf(facts, "full"),
            "labels": [re.sub(r"\s+", "-", lab) for lab in labels],
        }
        if s.set_priority and facts.severity in JIRA_PRIORITY:
            fields["priority"] = {"name": JIRA_PRIORITY[facts.severity]}
        body = self._call("POST", "/rest/api/3/issue", json={"fields": fields}, replay_safe=False).json or {}
        if "key" not in body:
            raise PermanentError(201, str(body), reason="Jira create answered without an issue key")
        return self._ref(str(body["key"]), str(body.get("id", "")))

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef:
        self._comment(ref, view, "update")
        return ref

    def resolve(self, ref: TicketRef, view: TicketView) -> TicketRef:
        self._comment(ref, view, "resolve")
        path = f"/rest/api/3/issue/{ref.external_id}/transitions"
        transitions = (self._call("GET", path).json or {}).get("transitions") or []
        wanted = {n.casefold() for n in self.settings.done_transitions}
        match = next(
            (
                t
                for t in transitions
                if str(t.get("name", "")).casefold() in wanted
                or str((t.get("to") or {}).get("name", "")).casefold() in wanted
            ),
            None,
        )
        if match is None:
            names = ", ".join(str(t.get("name")) for t in transitions)
            reason = f"no transition named {sorted(wanted)} on {ref.external_id}"
            raise PermanentError(409, names, reason=reason)
        self._call("POST", path, json={"transition": {"id": str(match["id"])}})
        return ref

    def _comment(self, ref: TicketRef, view: TicketView, mode: str) -> None:
        adf = build_adf(build_facts(view), "update" if mode == "update" else "resolve")
        self._call("POST", f"/rest/api/3/issue/{ref.external_id}/comment", json={"body": adf})
