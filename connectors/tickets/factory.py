"""``build_client``: a ``TicketClient`` from a destination's flat string settings.

The platform is ``settings["type"]`` or, when absent, the destination name itself (so a destination
called ``jira`` needs no ``type``). Settings per platform (``*`` = required):

- jira: base_url*, email*, api_token*, project_key*, issue_type (Bug), done_transitions
  (Done,Resolved,Closed), labels (logclaw), set_priority (true)
- servicenow: base_url*, username*, password*, assignment_group, caller_id, category,
  close_code (Solution provided)
- pagerduty: routing_key*, base_url (https://events.pagerduty.com), source, client_url
- opsgenie: api_key*, base_url (https://api.opsgenie.com), source, user, tags (logclaw)
- slack: webhook_url* — or — bot_token* and channel* (a channel ID); api_url
- zammad: base_url*, token*, group*, customer*, set_priority (true)
- file: dir*

Bad or missing values raise ``SettingsError`` naming the destination and the setting, at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from connectors.tickets.base import TicketClient
from connectors.tickets.file import FileClient
from connectors.tickets.jira import JiraClient, JiraSettings
from connectors.tickets.opsgenie import DEFAULT_BASE_URL as OPSGENIE_URL
from connectors.tickets.opsgenie import OpsgenieClient, OpsgenieSettings
from connectors.tickets.pagerduty import DEFAULT_BASE_URL as PAGERDUTY_URL
from connectors.tickets.pagerduty import PagerDutyClient, PagerDutySettings
from connectors.tickets.retry import HttpTransport
from connectors.tickets.servicenow import ServiceNowClient, ServiceNowSettings
from connectors.tickets.slack import DEFAULT_API_URL as SLACK_API_URL
from connectors.tickets.slack import (
    SlackClient,
    SlackSettings,
    SlackWebhookClient,
    SlackWebhookSettings,
)
from connectors.tickets.zammad import ZammadClient, ZammadSettings


class SettingsError(ValueError):
    """A destination's settings are missing or malformed; the message names the setting."""


class _Reader:
    def __init__(self, destination: str, settings: Mapping[str, str]) -> None:
        self.destination = destination
        self.settings = settings

    def fail(self, key: str, problem: str) -> SettingsError:
        return SettingsError(f"ticket destination {self.destination!r}: setting {key!r} {problem}")

    def required(self, key: str) -> str:
        value = str(self.settings.get(key, "")).strip()
        if not value:
            raise self.fail(key, "is required")
        return value

    def optional(self, key: str, default: str = "") -> str:
        return str(self.settings.get(key, "")).strip() or default

    def url(self, key: str, default: str = "") -> str:
        value = self.optional(key, default) if default else self.required(key)
        if not value.startswith(("https://", "http://")):
            raise self.fail(key, f"must be an http(s) URL, got {value[:40]!r}")
        return value.rstrip("/")

    def names(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self.optional(key)
        return tuple(n.strip() for n in raw.split(",") if n.strip()) if raw else default

    def flag(self, key: str, default: bool) -> bool:
        raw = self.optional(key).lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise self.fail(key, f"must be true or false, got {raw!r}")


def _jira(name: str, r: _Reader, transport: HttpTransport) -> TicketClient:
    try:
        settings = JiraSettings(
            base_url=r.url("base_url"),
            email=r.required("email"),
            api_token=r.required("api_token"),
            project_key=r.required("project_key"),
            issue_type=r.optional("issue_type", "Bug"),
            done_transitions=r.names("done_transitions", ("Done", "Resolved", "Closed")),
            labels=r.names("labels", ("logclaw",)),
            set_priority=r.flag("set_priority", True),
        )
    except SettingsError:
        raise
    except ValueError as exc:  # JiraSettings validates the project key
        raise r.fail("project_key", str(exc)) from exc
    return JiraClient(name, settings, transport)


def _servicenow(name: str, r: _Reader, transport: HttpTransport) -> TicketClient:
    return ServiceNowClient(
        name,
        ServiceNowSettings(
            base_url=r.url("base_url"),
            username=r.required("username"),
            password=r.required("password"),
            assignment_group=r.optional("assignment_group"),
            caller_id=r.optional("caller_id"),
            category=r.optional("category"),
            close_code=r.optional("close_code", "Solution provided"),
        ),
        transport,
    )


def _pagerduty(name: str, r: _Reader, transport: HttpTransport) -> TicketClient:
    return PagerDutyClient(
        name,
        PagerDutySettings(
            routing_key=r.required("routing_key"),
            base_url=r.url("base_url", PAGERDUTY_URL),
            source=r.optional("source"),
            client_url=r.optional("client_url"),
        ),
        transport,
    )


def _opsgenie(name: str, r: _Reader, transport: HttpTransport) -> TicketClient:
    return OpsgenieClient(
        name,
        OpsgenieSettings(
            api_key=r.required("api_key"),
            base_url=r.url("base_url", OPSGENIE_URL),
            source=r.optional("source", "LogClaw"),
            user=r.optional("user", "LogClaw"),
            tags=r.names("tags", ("logclaw",)),
        ),
        transport,
    )


def _slack(name: str, r: _Reader, transport: HttpTransport) -> TicketClient:
    if r.optional("webhook_url"):
        return SlackWebhookClient(name, SlackWebhookSettings(webhook_url=r.url("webhook_url")), transport)
    if not r.optional("bot_token"):
        raise r.fail("webhook_url", "or 'bot_token' with 'channel' is required")
    return SlackClient(
        name,
        SlackSettings(
            bot_token=r.required("bot_token"),
            channel=r.required("channel"),
            api_url=r.url("api_url", SLACK_API_URL),
        ),
        transport,
    )


def _zammad(name: str, r: _Reader, transport: HttpTransport) -> TicketClient:
    return ZammadClient(
        name,
        ZammadSettings(
            base_url=r.url("base_url"),
            token=r.required("token"),
            group=r.required("group"),
            customer=r.required("customer"),
            set_priority=r.flag("set_priority", True),
        ),
        transport,
    )


def _file(name: str, r: _Reader, transport: HttpTransport) -> TicketClient:
    return FileClient(name, r.required("dir"))


BUILDERS: dict[str, Callable[[str, _Reader, HttpTransport], TicketClient]] = {
    "jira": _jira,
    "servicenow": _servicenow,
    "pagerduty": _pagerduty,
    "opsgenie": _opsgenie,
    "slack": _slack,
    "zammad": _zammad,
    "file": _file,
}


def build_client(destination_name: str, settings: Mapping[str, str], transport: HttpTransport) -> TicketClient:
    """The client for one destination; raises ``SettingsError`` naming any bad setting."""
    reader = _Reader(destination_name, settings)
    kind = reader.optional("type", destination_name).lower()
    builder = BUILDERS.get(kind)
    if builder is None:
        raise reader.fail("type", f"names an unknown platform {kind!r}; known: {', '.join(sorted(BUILDERS))}")
    return builder(destination_name, reader, transport)
