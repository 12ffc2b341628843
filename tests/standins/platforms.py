"""The six ticket platforms as the worker tests see them: a stand-in, the destination settings that
point a real client at it, the platform's create request, and the tickets it holds (counted on the
stand-in, never on the client)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.standins import StandinServer
from tests.standins.jira import JiraStandin
from tests.standins.opsgenie import OpsgenieStandin
from tests.standins.pagerduty import PagerDutyStandin
from tests.standins.servicenow import ServiceNowStandin
from tests.standins.slack import SlackStandin
from tests.standins.zammad import ZammadStandin

ROUTING_KEY = "R0123456789abcdef0123456789abcde"


@dataclass(frozen=True)
class Ticket:
    """One ticket on a platform: its id, whether it is resolved, and how many updates it received
    (comments, notes, replies or re-triggers; not the one its resolution adds)."""

    id: str
    resolved: bool
    updates: int


@dataclass(frozen=True)
class PlatformSpec:
    name: str
    standin: Callable[[], StandinServer]
    settings: Callable[[Any], dict[str, str]]  # destination settings (strings) for build_client
    create: tuple[str, str]  # method and path of the request that creates a ticket
    tickets: Callable[[Any], list[Ticket]]


def _jira(s: JiraStandin) -> list[Ticket]:
    return [Ticket(k, i["category"] == "done", len(i["comments"]) - (i["category"] == "done"))
            for k, i in s.issues.items()]


def _snow(s: ServiceNowStandin) -> list[Ticket]:
    return [Ticket(r["number"], r["state"] == "6", len(r["work_notes_journal"])) for r in s.records.values()]


def _pagerduty(s: PagerDutyStandin) -> list[Ticket]:
    return [
        Ticket(a["dedup_key"], a["status"] == "resolved",
               sum(e["event_action"] == "trigger" for e in a["events"]) - 1)
        for a in s.alerts
    ]


def _opsgenie(s: OpsgenieStandin) -> list[Ticket]:
    return [Ticket(a["alias"], a["status"] == "closed", len(a["notes"]) - (a["status"] == "closed"))
            for a in s.alerts]


def _slack(s: SlackStandin) -> list[Ticket]:
    tickets = []
    for parent in s.parents():
        resolved = bool(parent["metadata"]["event_payload"].get("resolved"))
        tickets.append(Ticket(parent["ts"], resolved, len(s.replies(parent["ts"])) - resolved))
    return tickets


def _zammad(s: ZammadStandin) -> list[Ticket]:
    return [Ticket(str(t["id"]), t["state"] == "closed", len(t["articles"]) - 1 - (t["state"] == "closed"))
            for t in s.tickets.values()]


PLATFORM_SPECS = [
    PlatformSpec(
        "jira",
        lambda: JiraStandin("bot@example.com", "jira-secret-token"),
        lambda s: {"base_url": s.url, "email": "bot@example.com", "api_token": "jira-secret-token",
                   "project_key": "OPS"},
        ("POST", "/rest/api/3/issue"),
        _jira,
    ),
    PlatformSpec(
        "servicenow",
        lambda: ServiceNowStandin("logclaw", "snow-secret-pw"),
        lambda s: {"base_url": s.url, "username": "logclaw", "password": "snow-secret-pw"},
        ("POST", "/api/now/table/incident"),
        _snow,
    ),
    PlatformSpec(
        "pagerduty",
        lambda: PagerDutyStandin(ROUTING_KEY),
        lambda s: {"base_url": s.url, "routing_key": ROUTING_KEY},
        ("POST", "/v2/enqueue"),
        _pagerduty,
    ),
    PlatformSpec(
        "opsgenie",
        lambda: OpsgenieStandin("genie-secret-key"),
        lambda s: {"base_url": s.url, "api_key": "genie-secret-key"},
        ("POST", "/v2/alerts"),
        _opsgenie,
    ),
    PlatformSpec(
        "slack",
        lambda: SlackStandin("xoxb-secret-token", "C0123"),
        lambda s: {"api_url": s.url + "/api", "bot_token": "xoxb-secret-token", "channel": "C0123"},
        ("POST", "/api/chat.postMessage"),
        _slack,
    ),
    PlatformSpec(
        "zammad",
        lambda: ZammadStandin("zammad-secret-token"),
        lambda s: {"base_url": s.url, "token": "zammad-secret-token", "group": "Users",
                   "customer": "ops@example.com"},
        ("POST", "/api/v1/tickets"),
        _zammad,
    ),
]
PLATFORM_IDS = [p.name for p in PLATFORM_SPECS]
