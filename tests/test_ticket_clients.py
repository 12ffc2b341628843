"""Ticket platform clients against strict local stand-ins, the retry policy, and escaping.

Real SaaS platforms cannot run here: every client is exercised against an in-process HTTP stand-in
(``tests/standins``) that checks auth, paths and payload shapes; test names say so.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from connectors.tickets.adf import build_adf
from connectors.tickets.base import Rca, TicketClient, TicketRef, TicketView
from connectors.tickets.factory import SettingsError, build_client
from connectors.tickets.facts import build_facts, fingerprint_label
from connectors.tickets.render import Mode, render
from connectors.tickets.retry import (
    HttpTransport,
    PermanentError,
    Response,
    RetryPolicy,
    TransientError,
    UnclearError,
    Verdict,
    parse_retry_after,
)
from tests.standins import StandinServer
from tests.standins.adf import doc_text, validate_doc
from tests.standins.jira import JiraStandin
from tests.standins.opsgenie import OpsgenieStandin
from tests.standins.pagerduty import PagerDutyStandin
from tests.standins.servicenow import ServiceNowStandin
from tests.standins.slack import SlackStandin
from tests.standins.zammad import ZammadStandin

NASTY = "pool exhausted <script>alert(1)</script> *bold* & `tick` ``` {{ 7*7 }} _u_ ~s~"
ROUTING_KEY = "R0123456789abcdef0123456789abcde"


# -- fixtures ---------------------------------------------------------------------------------
def incident(event: str = "opened", **over: Any) -> dict[str, Any]:
    inc: dict[str, Any] = {
        "schema": "logclaw.incident/v1",
        "incident_id": "inc-0001abcd",
        "event": event,
        "tenant": "acme",
        "fingerprint": "payment-api|db|pool",
        "severity": "critical",
        "score": 0.91,
        "path": "windowed",
        "opened_at": "2024-05-01T03:47:12Z",
        "detected_at": "2024-05-01T03:48:00Z",
        "service": "payment-api",
        "root_cause": {
            "service": "checkout",
            "confidence": 0.8,
            "candidates": [{"service": "checkout", "score": 0.8}],
            "chain": ["checkout", "payment-api", "order-service", "notification-service"],
        },
        "affected_services": ["payment-api", "order-service", "notification-service", "email-service"],
        "signals": [
            {"name": "database connection_pool", "weight": 0.75},
            {"name": "blast radius", "weight": 0.85, "detail": {"services": 4}},
            {"name": "velocity", "weight": 0.9, "detail": "12x baseline"},
        ],
        "score_breakdown": {"pattern": 0.75, "blast_radius": 0.85, "velocity": 0.9},
        "trace_ids": ["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7a3ce929d0e0e4736"],
        "title": "payment-api connection pool errors",
        "summary": "Checkout never returns pooled connections.",
    }
    inc.update(over)
    return inc


def make_view(
    event: str = "opened", evidence_body: str = "ERROR redis pool exhausted after 30s", **over: Any
) -> TicketView:
    inc = incident(event, **over)
    rca = Rca(
        root_cause="the Redis connection pool in checkout is exhausted",
        impact="payments fail for 12% of requests",
        affected_services=("payment-api",),
        suggested_fix="set a max idle time and close connections in a `finally` block",
        confidence=0.7,
        source="evidence",
    )
    evidence = [
        {
            "time": f"2024-05-01T03:47:0{i}Z",
            "service": "checkout",
            "level": "ERROR",
            "body": evidence_body,
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        }
        for i in range(7)
    ]
    return TicketView(
        tenant=inc["tenant"],
        fingerprint=inc["fingerprint"],
        incident_id=inc["incident_id"],
        event=event,
        severity=inc["severity"],
        score=inc["score"],
        title=inc["title"],
        incident=inc,
        rca=rca,
        evidence=evidence,
        link="https://dash.example/app/discover#/?q=incident&t=acme",
    )


class FakeClock:
    """Processing time that only moves when the retry policy sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def make_transport(clock: FakeClock, **policy: Any) -> HttpTransport:
    return HttpTransport(
        RetryPolicy(
            rng=random.Random(7),
            sleep=clock.sleep,
            monotonic=clock.monotonic,
            wall_clock=lambda: 1_714_535_000.0,
            **policy,
        ),
        timeout_s=5,
    )


@dataclass
class Platform:
    name: str
    standin: Callable[[], StandinServer]
    settings: Callable[[Any], dict[str, str]]
    count: Callable[[Any], int]
    check_created: Callable[[Any, TicketRef, TicketView], None]
    check_updated: Callable[[Any, TicketRef], None]
    check_resolved: Callable[[Any, TicketRef], None]
    reject_status: int = 400  # a 4xx the platform really answers for a bad request


def _jira_created(s: JiraStandin, ref: TicketRef, view: TicketView) -> None:
    issue = s.issues[ref.external_id]
    label = fingerprint_label(view.tenant, view.fingerprint)
    assert issue["fields"]["summary"] == "[critical] payment-api — composite score 0.91 at 03:47 UTC"
    assert issue["labels"] == ["logclaw", label, "severity-critical"]
    assert issue["fields"]["priority"] == {"name": "Highest"}
    assert issue["fields"]["issuetype"] == {"name": "Bug"}
    text = doc_text(issue["fields"]["description"])
    assert "the Redis connection pool in checkout is exhausted" in text
    assert "checkout → payment-api → order-service → notification-service" in text
    assert ref.url == f"{s.url}/browse/{ref.external_id}"


def _snow_created(s: ServiceNowStandin, ref: TicketRef, view: TicketView) -> None:
    rec = s.records[ref.external_id]
    assert {k: rec[k] for k in ("urgency", "impact", "correlation_display", "correlation_id", "state")} == {
        "urgency": "1",
        "impact": "1",
        "correlation_display": "LogClaw",
        "correlation_id": fingerprint_label(view.tenant, view.fingerprint),
        "state": "1",
    }
    assert rec["description"].startswith("[critical] payment-api — composite score 0.91 at 03:47 UTC\n")
    assert ref.extra == {"number": "INC0010001"}


def _pd_created(s: PagerDutyStandin, ref: TicketRef, view: TicketView) -> None:
    [alert] = s.alerts
    event = alert["events"][0]
    assert event["dedup_key"] == "logclaw:acme:payment-api|db|pool" == ref.external_id
    payload = event["payload"]
    assert {k: payload[k] for k in ("summary", "source", "severity", "component", "group", "class")} == {
        "summary": "[critical] payment-api — composite score 0.91 at 03:47 UTC",
        "source": "payment-api",
        "severity": "critical",
        "component": "checkout",
        "group": "acme",
        "class": "velocity",
    }
    assert payload["custom_details"]["chain"] == [
        "checkout",
        "payment-api",
        "order-service",
        "notification-service",
    ]
    assert event["links"] == [{"href": view.link, "text": "Logs for this incident"}]


def _og_created(s: OpsgenieStandin, ref: TicketRef, view: TicketView) -> None:
    [alert] = s.alerts
    assert (alert["alias"], alert["priority"], alert["entity"], alert["source"]) == (
        "logclaw:acme:payment-api|db|pool",
        "P1",
        "payment-api",
        "LogClaw",
    )
    assert alert["tags"] == ["logclaw", "severity:critical", fingerprint_label(view.tenant, view.fingerprint)]
    assert alert["details"]["root_cause_service"] == "checkout"
    assert "Suggested fix: set a max idle time" in alert["description"]


def _slack_created(s: SlackStandin, ref: TicketRef, view: TicketView) -> None:
    [parent] = s.parents()
    assert ref.extra == {"channel": "C0123", "thread_ts": parent["ts"]}
    assert parent["blocks"][0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "[critical] payment-api — composite score 0.91 at 03:47 UTC",
            "emoji": False,
        },
    }
    assert parent["metadata"]["event_payload"]["dedup_key"] == view.dedup_key
    assert "*Root cause:* the Redis connection pool" in json.dumps(parent["blocks"], ensure_ascii=False)


def _zammad_created(s: ZammadStandin, ref: TicketRef, view: TicketView) -> None:
    ticket = s.tickets[int(ref.external_id)]
    assert ticket["tags"] == [fingerprint_label(view.tenant, view.fingerprint)]
    assert (ticket["group"], ticket["priority"], ticket["state"]) == ("Users", "3 high", "new")
    [article] = ticket["articles"]
    assert (article["type"], article["internal"], article["content_type"]) == ("note", False, "text/html")
    assert "<h3>Root cause</h3>" in article["body"]


PLATFORMS = [
    Platform(
        "jira",
        lambda: JiraStandin("bot@example.com", "jira-secret-token"),
        lambda s: {
            "base_url": s.url,
            "email": "bot@example.com",
            "api_token": "jira-secret-token",
            "project_key": "OPS",
        },
        lambda s: len(s.issues),
        _jira_created,
        lambda s, ref: _assert_eq(len(s.issues[ref.external_id]["comments"]), 1),
        lambda s, ref: _assert_eq(
            (s.issues[ref.external_id]["status"], len(s.issues[ref.external_id]["comments"])), ("Done", 2)
        ),
    ),
    Platform(
        "servicenow",
        lambda: ServiceNowStandin("logclaw", "snow-secret-pw"),
        lambda s: {"base_url": s.url, "username": "logclaw", "password": "snow-secret-pw"},
        lambda s: len(s.records),
        _snow_created,
        lambda s, ref: _assert_eq(len(s.records[ref.external_id]["work_notes_journal"]), 1),
        lambda s, ref: _assert_eq(
            {k: s.records[ref.external_id][k] for k in ("state", "active", "close_code")},
            {"state": "6", "active": "false", "close_code": "Solution provided"},
        ),
    ),
    Platform(
        "pagerduty",
        lambda: PagerDutyStandin(ROUTING_KEY),
        lambda s: {"base_url": s.url, "routing_key": ROUTING_KEY},
        lambda s: len(s.alerts),
        _pd_created,
        lambda s, ref: _assert_eq([e["event_action"] for e in s.alerts[0]["events"]], ["trigger", "trigger"]),
        lambda s, ref: _assert_eq(s.alerts[0]["status"], "resolved"),
    ),
    Platform(
        "opsgenie",
        lambda: OpsgenieStandin("genie-secret-key"),
        lambda s: {"base_url": s.url, "api_key": "genie-secret-key"},
        lambda s: len(s.alerts),
        _og_created,
        lambda s, ref: _assert_eq(len(s.alerts[0]["notes"]), 1),
        lambda s, ref: _assert_eq((s.alerts[0]["status"], len(s.alerts[0]["notes"])), ("closed", 2)),
        reject_status=422,
    ),
    Platform(
        "slack",
        lambda: SlackStandin("xoxb-secret-token", "C0123"),
        lambda s: {"api_url": s.url + "/api", "bot_token": "xoxb-secret-token", "channel": "C0123"},
        lambda s: len(s.parents()),
        _slack_created,
        lambda s, ref: _assert_eq(len(s.replies(ref.extra["thread_ts"])), 1),
        lambda s, ref: _assert_eq(len(s.replies(ref.extra["thread_ts"])), 2),
    ),
    Platform(
        "zammad",
        lambda: ZammadStandin("zammad-secret-token"),
        lambda s: {
            "base_url": s.url,
            "token": "zammad-secret-token",
            "group": "Users",
            "customer": "ops@example.com",
        },
        lambda s: len(s.tickets),
        _zammad_created,
        lambda s, ref: _assert_eq(len(s.tickets[int(ref.external_id)]["articles"]), 2),
        lambda s, ref: _assert_eq(
            (s.tickets[int(ref.external_id)]["state"], len(s.tickets[int(ref.external_id)]["articles"])),
            ("closed", 3),
        ),
        reject_status=422,
    ),
]
IDS = [p.name for p in PLATFORMS]


def _assert_eq(got: Any, want: Any) -> None:
    assert got == want


def _client(p: Platform, server: StandinServer, clock: FakeClock, **policy: Any) -> TicketClient:
    return build_client(p.name, p.settings(server), make_transport(clock, **policy))


# -- each platform: lifecycle, dedup, retries ---------------------------------------------------
@pytest.mark.parametrize("p", PLATFORMS, ids=IDS)
def test_create_dedup_update_resolve_against_local_standin(p: Platform) -> None:
    clock = FakeClock()
    with p.standin() as server:
        client = _client(p, server, clock)
        view = make_view()
        ref = client.create(view)
        assert p.count(server) == 1
        p.check_created(server, ref, view)
        # The worker lost its ledger and sees the incident again: find, not a second ticket.
        # (PagerDuty's Events API cannot look alerts up: its find() is None, its trigger idempotent.)
        if p.name != "pagerduty":
            again = client.find(view)
            assert again is not None and again.external_id == ref.external_id
            assert p.count(server) == 1
        client.update(ref, make_view("updated", score=0.95))
        p.check_updated(server, ref)
        client.resolve(ref, make_view("resolved", resolved_at="2024-05-01T04:30:00Z"))
        p.check_resolved(server, ref)
        assert p.count(server) == 1
        assert clock.sleeps == []


@pytest.mark.parametrize("p", PLATFORMS, ids=IDS)
def test_find_is_none_before_create_and_after_resolve_against_local_standin(p: Platform) -> None:
    with p.standin() as server:
        client = _client(p, server, FakeClock())
        view = make_view()
        assert client.find(view) is None
        ref = client.create(view)
        assert client.find(replace(view, tenant="other-tenant")) is None  # tenant-scoped
        client.resolve(ref, make_view("resolved"))
        assert client.find(view) is None


@pytest.mark.parametrize("p", PLATFORMS, ids=IDS)
def test_429_with_retry_after_is_honoured_against_local_standin(p: Platform) -> None:
    clock = FakeClock()
    with p.standin() as server:
        client = _client(p, server, clock)
        server.fail_next(2, 429, retry_after="3")
        ref = client.create(make_view())
        assert clock.sleeps == [3.0, 3.0]
        assert p.count(server) == 1
        p.check_created(server, ref, make_view())
        assert client.transport.stats.snapshot() == {  # type: ignore[attr-defined]
            "requests": len(server.log),
            "retries": 2,
            "permanent_failures": 0,
            "transient_failures": 0,
        }


@pytest.mark.parametrize("p", PLATFORMS, ids=IDS)
def test_5xx_is_retried_with_jittered_backoff_against_local_standin(p: Platform) -> None:
    clock = FakeClock()
    with p.standin() as server:
        client = _client(p, server, clock)
        ref = client.create(make_view())
        server.fail_next(1, 503)
        server.fail_next(1, 502)
        client.update(ref, make_view("updated", score=0.95))  # updates are safe to send again
        p.check_updated(server, ref)
        assert p.count(server) == 1
        assert len(clock.sleeps) == 2
        assert 0.25 <= clock.sleeps[0] <= 0.5 and 0.5 <= clock.sleeps[1] <= 1.0


@pytest.mark.parametrize("p", PLATFORMS, ids=IDS)
def test_4xx_is_permanent_and_not_retried_against_local_standin(p: Platform) -> None:
    clock = FakeClock()
    with p.standin() as server:
        client = _client(p, server, clock)
        server.fail_next(1, p.reject_status, body={"error": "bad request"})
        with pytest.raises(PermanentError) as err:
            client.create(make_view())
        assert err.value.status == p.reject_status
        assert len(server.log) == 1 and clock.sleeps == [] and p.count(server) == 0


@pytest.mark.parametrize("p", PLATFORMS, ids=IDS)
def test_wrong_credentials_are_rejected_once_against_local_standin(p: Platform) -> None:
    clock = FakeClock()
    with p.standin() as server:
        settings = {
            k: (
                "wrong"
                if k in {"api_token", "password", "routing_key", "api_key", "bot_token", "token"}
                else v
            )
            for k, v in p.settings(server).items()
        }
        client = build_client(p.name, settings, make_transport(clock))
        with pytest.raises(PermanentError):
            client.create(make_view())
        assert len(server.log) == 1 and p.count(server) == 0


def test_jira_resolve_without_done_transition_is_permanent_against_local_standin() -> None:
    with JiraStandin("bot@example.com", "t") as server:
        client = build_client(
            "jira",
            {
                "base_url": server.url,
                "email": "bot@example.com",
                "api_token": "t",
                "project_key": "OPS",
                "done_transitions": "Shipped",
            },
            make_transport(FakeClock()),
        )
        ref = client.create(make_view())
        with pytest.raises(PermanentError, match="no transition named"):
            client.resolve(ref, make_view("resolved"))
        assert server.issues[ref.external_id]["status"] == "To Do"


def test_slack_ok_false_ratelimited_is_retried_other_errors_are_permanent_against_local_standin() -> None:
    clock = FakeClock()
    with SlackStandin("xoxb-t", "C0123") as server:
        client = build_client(
            "slack",
            {"api_url": server.url + "/api", "bot_token": "xoxb-t", "channel": "C0123"},
            make_transport(clock),
        )
        server.fail_next_ok_false(1, "ratelimited")
        client.create(make_view())
        assert len(server.parents()) == 1 and len(clock.sleeps) == 1
        server.fail_next_ok_false(1, "channel_not_found")
        with pytest.raises(PermanentError, match="channel_not_found"):
            client.create(make_view(fingerprint="other"))
        assert len(clock.sleeps) == 1 and len(server.parents()) == 1


def test_slack_webhook_posts_plain_text_and_cannot_find_against_local_standin() -> None:
    clock = FakeClock()
    with SlackStandin("xoxb-t", "C0123") as server:
        client = build_client(
            "alerts",
            {"type": "slack", "webhook_url": server.url + server.webhook_path},
            make_transport(clock),
        )
        view = make_view(evidence_body=NASTY)
        assert client.find(view) is None
        ref = client.create(view)
        client.update(ref, make_view("updated"))
        server.fail_next(1, 429, retry_after="2")
        client.resolve(ref, make_view("resolved"))
        assert clock.sleeps == [2.0]
        assert len(server.webhook_texts) == 3
        first = server.webhook_texts[0]
        assert first.startswith("*[critical] payment-api — composite score 0.91 at 03:47 UTC*\n")
        assert "&lt;script&gt;" in first and "<script>" not in first
        assert server.webhook_texts[2].startswith(":white_check_mark: *Resolved at")
        server.fail_next(1, 404, body="no_service")
        with pytest.raises(PermanentError) as err:
            client.update(ref, view)
        assert "secret" not in str(err.value)  # the webhook URL is a secret; errors do not show it
        assert len(server.webhook_texts) == 3


def test_opsgenie_truncates_to_api_limits_against_local_standin() -> None:
    with OpsgenieStandin("k") as server:
        client = build_client(
            "opsgenie", {"base_url": server.url, "api_key": "k"}, make_transport(FakeClock())
        )
        long_service = "svc-" + "x" * 700
        client.create(make_view(service=long_service, summary="s" * 20000))
        [alert] = server.alerts
        assert len(alert["message"]) == 130 and alert["message"].endswith("…")
        assert len(alert["description"]) <= 15000 and len(alert["entity"]) == 512


def test_file_destination_create_dedup_update_resolve(tmp_path: Any) -> None:
    client = build_client("file", {"dir": str(tmp_path)}, make_transport(FakeClock()))
    view = make_view()
    assert client.find(view) is None
    ref = client.create(view)
    assert client.find(view) == ref
    client.update(ref, make_view("updated"))
    client.resolve(ref, make_view("resolved", resolved_at="2024-05-01T04:30:00Z"))
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [ref.external_id]
    assert ref.external_id.startswith("acme/payment-api_db_pool-") and ref.external_id.endswith(".md")
    text = (tmp_path / ref.external_id).read_text()
    assert text.startswith("# \\[critical\\] payment-api — composite score 0.91 at 03:47 UTC\n")
    assert text.count("## Update at") == 1 and text.count("## Resolved at 2024-05-01T04:30:00Z") == 1
    assert client.find(replace(view, fingerprint="payment-api_db_pool")) is None  # sanitizing cannot collide


# -- factory ---------------------------------------------------------------------------------------
def test_factory_names_the_missing_setting_and_masks_secrets() -> None:
    transport = make_transport(FakeClock())
    with pytest.raises(SettingsError, match=r"'jira'.*'api_token' is required"):
        build_client(
            "jira", {"base_url": "https://x.atlassian.net", "email": "a@b", "project_key": "OPS"}, transport
        )
    with pytest.raises(SettingsError, match=r"'base_url' must be an http\(s\) URL"):
        build_client(
            "zammad", {"base_url": "zammad.local", "token": "t", "group": "g", "customer": "c"}, transport
        )
    with pytest.raises(SettingsError, match="unknown platform 'teams'"):
        build_client("teams", {}, transport)
    with pytest.raises(SettingsError, match="'project_key'"):
        build_client(
            "jira", {"base_url": "https://x", "email": "a", "api_token": "t", "project_key": "o p"}, transport
        )
    client = build_client(
        "ops-jira",
        {
            "type": "jira",
            "base_url": "https://x.atlassian.net",
            "email": "a@b",
            "api_token": "very-secret",
            "project_key": "OPS",
        },
        transport,
    )
    assert client.name == "ops-jira"
    assert "very-secret" not in repr(client) and "api_token=***" in repr(client)


# -- retry policy ------------------------------------------------------------------------------
def test_retry_after_parsing_seconds_and_http_date() -> None:
    now = 1_714_535_000.0  # 2024-05-01T03:43:20Z
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Wed, 01 May 2024 03:43:50 GMT", now) == 30.0
    assert parse_retry_after("Wed, 01 May 2024 03:40:00 GMT", now) == 0.0  # in the past
    assert [parse_retry_after(v, now) for v in (None, "", "soon", "-3")] == [None, None, None, 0.0]


def _scripted(
    statuses: list[int], headers: dict[str, str] | None = None
) -> tuple[HttpTransport, FakeClock, list[int]]:
    """A transport whose session answers the scripted statuses, counting calls."""
    clock = FakeClock()
    transport = make_transport(clock)
    calls: list[int] = []

    class Raw:
        def __init__(self, status: int) -> None:
            self.status_code = status
            self.content = b"{}"
            self.text = "{}"
            self.headers = headers or {}

        def json(self) -> Any:
            return {}

    def request(*args: Any, **kwargs: Any) -> Raw:
        calls.append(1)
        return Raw(statuses[min(len(calls), len(statuses)) - 1])

    transport.session.request = request  # type: ignore[method-assign,assignment]
    return transport, clock, calls


def test_retry_after_is_capped_by_max_delay() -> None:
    transport, clock, calls = _scripted([429, 200], {"Retry-After": "120"})
    assert transport.request("GET", "http://x/a").status == 200
    assert clock.sleeps == [30.0] and len(calls) == 2


def test_deadline_cuts_the_last_wait_and_then_gives_up() -> None:
    transport, clock, calls = _scripted([503], {"Retry-After": "6"})
    transport.policy.deadline_s = 10.0
    with pytest.raises(TransientError, match="deadline") as err:
        transport.request("POST", "http://x/a?secret=1")
    assert clock.sleeps == [6.0, 4.0] and len(calls) == 3 and err.value.status == 503
    assert "secret" not in str(err.value)
    assert transport.stats.snapshot()["transient_failures"] == 1


def test_attempts_are_capped_and_exhaustion_is_transient() -> None:
    transport, clock, calls = _scripted([500])
    with pytest.raises(TransientError, match="after 5 attempts"):
        transport.request("GET", "http://x/a")
    assert len(calls) == 5 and len(clock.sleeps) == 4
    assert transport.stats.snapshot() == {
        "requests": 5,
        "retries": 4,
        "permanent_failures": 0,
        "transient_failures": 1,
    }


@pytest.mark.parametrize(
    ("status", "retried"),
    [(408, True), (429, True), (504, True), (400, False), (404, False), (409, False), (501, False)],
)
def test_which_statuses_are_retried(status: int, retried: bool) -> None:
    transport, _, calls = _scripted([status, 200])
    if retried:
        assert transport.request("GET", "http://x/a").status == 200
    else:
        with pytest.raises(PermanentError):
            transport.request("GET", "http://x/a")
    assert len(calls) == (2 if retried else 1)


def test_expected_status_is_returned_not_raised() -> None:
    transport, _, calls = _scripted([404])
    assert transport.request("GET", "http://x/a", expect=(404,)).status == 404 and len(calls) == 1


def test_jitter_stays_within_half_to_full_capped_backoff() -> None:
    for seed in range(50):
        policy = RetryPolicy(rng=random.Random(seed))
        for attempt in range(1, 10):
            ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
            assert ceiling / 2 <= policy.backoff_s(attempt) <= ceiling
    delays = {RetryPolicy(rng=random.Random(s)).backoff_s(3) for s in range(20)}
    assert len(delays) > 10  # actually jittered


def test_connection_errors_are_retried_until_exhausted() -> None:
    clock = FakeClock()
    with StandinServer() as server:
        url = server.url
    transport = make_transport(clock, max_attempts=3)
    with pytest.raises(TransientError, match="ConnectionError"):
        transport.request("GET", url + "/gone")
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_an_unclear_failure_of_a_request_unsafe_to_replay_is_not_retried(status: int) -> None:
    """A create answered 5xx may have been applied: the caller must look it up before sending it again."""
    transport, clock, calls = _scripted([status, 201])
    with pytest.raises(UnclearError) as err:
        transport.request("POST", "http://x/issue", replay_safe=False)
    assert len(calls) == 1 and clock.sleeps == [] and err.value.status == status
    assert isinstance(err.value, TransientError)  # the worker's retry still applies


@pytest.mark.parametrize("status", [408, 429])
def test_a_refusal_of_a_request_unsafe_to_replay_is_still_retried(status: int) -> None:
    transport, clock, calls = _scripted([status, 201], {"Retry-After": "2"})
    assert transport.request("POST", "http://x/issue", replay_safe=False).status == 201
    assert len(calls) == 2 and clock.sleeps == [2.0]


def test_a_timeout_after_sending_is_unclear_but_a_refused_connection_is_retried() -> None:
    clock = FakeClock()
    with StandinServer() as server:
        server.fault(504, hang_s=0.5)  # no answer within the client's timeout
        transport = make_transport(clock)
        transport.timeout_s = 0.1
        with pytest.raises(UnclearError, match="ReadTimeout"):
            transport.request("POST", server.url + "/issue", replay_safe=False)
        url = server.url
    transport = make_transport(clock, max_attempts=3)
    with pytest.raises(TransientError, match="ConnectionError") as err:
        transport.request("POST", url + "/issue", replay_safe=False)
    assert not isinstance(err.value, UnclearError) and len(clock.sleeps) == 2


def test_classifier_can_demand_retry_on_200() -> None:
    transport, clock, calls = _scripted([200])
    verdicts: Iterator[Verdict] = iter(["retry", "ok"])
    resp = transport.request("GET", "http://x/a", classify=lambda r: next(verdicts))
    assert isinstance(resp, Response) and len(calls) == 2 and len(clock.sleeps) == 1


# -- facts and escaping ------------------------------------------------------------------------------
def test_facts_are_bounded_and_ordered() -> None:
    facts = build_facts(make_view(evidence_body="y" * 1000))
    assert facts.title == "[critical] payment-api — composite score 0.91 at 03:47 UTC"
    assert len(facts.evidence) == 5 and facts.evidence_total == 7
    assert all(len(e.text) == 300 and e.text.endswith("…") for e in facts.evidence)
    assert [s.name for s in facts.signals] == ["velocity", "blast radius", "database connection_pool"]
    assert facts.score_breakdown == (("velocity", 0.9), ("blast_radius", 0.85), ("pattern", 0.75))
    assert facts.signals[1].detail == "services=4"
    assert facts.label == fingerprint_label("acme", "payment-api|db|pool")
    assert re.fullmatch(r"logclaw-acme-[0-9a-f]{16}", facts.label)
    assert fingerprint_label("a b", "fp") != fingerprint_label("a-b", "fp")


def _nasty_facts() -> Any:
    view = make_view(evidence_body=NASTY)
    rca = replace(view.rca, root_cause=NASTY)
    return build_facts(replace(view, rca=rca))


def test_markdown_escapes_text_and_fences_evidence_safely() -> None:
    out = render("markdown", _nasty_facts())
    assert (
        "pool exhausted \\<script\\>alert(1)\\</script\\> \\*bold\\* \\& \\`tick\\` \\`\\`\\` "
        "\\{\\{ 7\\*7 \\}\\} \\_u\\_ \\~s\\~"
    ) in out
    fence = "````"  # longer than the ``` run inside the evidence
    block = out.split(fence + "text\n", 1)[1].split("\n" + fence + "\n", 1)[0]
    assert block.splitlines()[0] == "2024-05-01T03:47:00Z checkout ERROR " + NASTY
    assert len(block.splitlines()) == 5
    assert "49" not in out


def test_slack_mrkdwn_escapes_and_keeps_log_lines_in_one_code_block() -> None:
    out = render("slack", _nasty_facts())
    assert "*Root cause:* pool exhausted &lt;script&gt;alert(1)&lt;/script&gt; *bold* &amp;" in out
    assert "<script>" not in out and "49" not in out
    assert out.count("```") == 2  # the log line's backticks cannot close the block
    assert "\u02cbtick\u02cb \u02cb\u02cb\u02cb {{ 7*7 }}" in out


def test_html_is_autoescaped() -> None:
    out = render("html", _nasty_facts())
    assert "<script>" not in out
    assert "<p>pool exhausted &lt;script&gt;alert(1)&lt;/script&gt; *bold* &amp; `tick` ``` {{ 7*7 }}" in out
    assert '<a href="https://dash.example/app/discover#/?q=incident&amp;t=acme">' in out


def test_html_drops_non_http_links() -> None:
    view = replace(make_view(), link="javascript:alert(1)")
    out = render("html", build_facts(view))
    assert 'href=""' in out and 'href="javascript' not in out


def test_plain_text_keeps_text_verbatim_but_drops_control_characters() -> None:
    view = make_view(evidence_body=NASTY + "\x1b[31m\x00")
    out = render("plain", build_facts(view))
    assert "checkout ERROR " + NASTY + "[31m\n" in out and "\x1b" not in out and "\x00" not in out


def test_adf_carries_text_verbatim_in_valid_nodes() -> None:
    facts = _nasty_facts()
    modes: tuple[Mode, ...] = ("full", "update", "resolve")
    for mode in modes:
        validate_doc(build_adf(facts, mode))
    doc = build_adf(facts)
    text = doc_text(doc)
    assert NASTY in text
    [code] = [n for n in doc["content"] if n["type"] == "codeBlock"]
    assert code["content"][0]["text"].splitlines()[0] == "2024-05-01T03:47:00Z checkout ERROR " + NASTY
