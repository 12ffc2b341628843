"""Slack clients: the Web API (``chat.postMessage`` with Block Kit, updates as thread replies) and
incoming webhooks (plain mrkdwn ``text``, no threads, no lookup).

The Web API reports most failures as HTTP 200 with ``{"ok": false, "error": ...}``: ``ratelimited``
and Slack-side errors are retried under the shared policy, anything else is a ``PermanentError``.
``find`` reads one page of channel history and matches the message metadata LogClaw attaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.tickets.base import TicketRef, TicketView
from connectors.tickets.common import join_url, masked_repr
from connectors.tickets.facts import TicketFacts, build_facts, cut
from connectors.tickets.render import Mode, mrkdwn_escape, render
from connectors.tickets.retry import HttpTransport, Response, Verdict

DEFAULT_API_URL = "https://slack.com/api"
METADATA_EVENT = "logclaw_incident"
SECTION_MAX = 3000  # Block Kit: section text
HEADER_MAX = 150  # Block Kit: header plain_text
BLOCKS_MAX = 50
TEXT_MAX = 39000  # chat.postMessage truncates text past 40,000 characters
HISTORY_PAGE = 100
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def _web_api_verdict(resp: Response) -> Verdict:
    body = resp.json if isinstance(resp.json, dict) else {}
    if body.get("ok") is True:
        return "ok"
    return "retry" if body.get("error") in RETRYABLE_ERRORS else "fail"


def _webhook_verdict(resp: Response) -> Verdict:
    return "ok" if resp.text.strip() == "ok" else "fail"


def blocks_for(facts: TicketFacts, mode: Mode) -> list[dict[str, Any]]:
    """Block Kit blocks: a header (new tickets) and mrkdwn sections of at most 3000 chars each."""
    text = render("slack", facts, mode)
    blocks: list[dict[str, Any]] = []
    if mode == "full":
        blocks.append(
            {
                "type": "header",
                "text": {"type": "plain_text", "text": cut(facts.title, HEADER_MAX), "emoji": False},
            }
        )
        text = text.split("\n", 1)[1] if "\n" in text else ""
    chunk = ""
    for para in text.split("\n\n"):
        para = cut(para.strip(), SECTION_MAX)
        if not para:
            continue
        if chunk and len(chunk) + 2 + len(para) > SECTION_MAX:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
            chunk = ""
        chunk = f"{chunk}\n\n{para}" if chunk else para
    if chunk:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": chunk}})
    return blocks[:BLOCKS_MAX]


def fallback_text(facts: TicketFacts, mode: Mode) -> str:
    prefix = {"full": "", "update": "Update: ", "resolve": "Resolved: "}[mode]
    return mrkdwn_escape(prefix + facts.title)


@dataclass(frozen=True, repr=False)
class SlackSettings:
    bot_token: str
    channel: str  # a channel ID (C…): conversations.history needs the ID, not the name
    api_url: str = DEFAULT_API_URL

    def __repr__(self) -> str:
        return masked_repr("SlackSettings", vars(self), {"bot_token"})


class SlackClient:
    """Web API mode: one parent message per incident, updates and resolution in its thread."""

    def __init__(self, name: str, settings: SlackSettings, transport: HttpTransport) -> None:
        self.name = name
        self.settings = settings
        self.transport = transport

    def __repr__(self) -> str:
        return f"SlackClient(name={self.name!r}, settings={self.settings!r})"

    def _call(
        self, method: str, api_method: str, *, json: Any = None, params: dict[str, str] | None = None,
        replay_safe: bool = True,
    ) -> Response:
        headers = {"Authorization": f"Bearer {self.settings.bot_token}"}
        if json is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        return self.transport.request(
            method,
            join_url(self.settings.api_url, api_method),
            json=json,
            params=params,
            headers=headers,
            classify=_web_api_verdict,
            replay_safe=replay_safe,
        )

    def _ref(self, channel: str, ts: str) -> TicketRef:
        return TicketRef(self.name, f"{channel}:{ts}", "", {"channel": channel, "thread_ts": ts})

    def find(self, view: TicketView) -> TicketRef | None:
        resp = self._call(
            "GET",
            "conversations.history",
            params={
                "channel": self.settings.channel,
                "limit": str(HISTORY_PAGE),
                "include_all_metadata": "true",
            },
        )
        for message in (resp.json or {}).get("messages") or []:
            meta = message.get("metadata") or {}
            payload = meta.get("event_payload") or {}
            is_parent = message.get("thread_ts", message.get("ts")) == message.get("ts")
            ours = meta.get("event_type") == METADATA_EVENT and payload.get("dedup_key") == view.dedup_key
            if is_parent and ours and not payload.get("resolved"):
                return self._ref(self.settings.channel, str(message["ts"]))
        return None

    @staticmethod
    def _metadata(view: TicketView, resolved: bool = False) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "dedup_key": view.dedup_key,
            "incident_id": view.incident_id,
            "tenant": view.tenant,
        }
        if resolved:
            payload["resolved"] = True
        return {"event_type": METADATA_EVENT, "event_payload": payload}

    def _post(self, view: TicketView, mode: Mode, thread_ts: str = "") -> Response:
        facts = build_facts(view)
        message: dict[str, Any] = {
            "channel": self.settings.channel,
            "text": fallback_text(facts, mode),
            "blocks": blocks_for(facts, mode),
            "unfurl_links": False,
        }
        if thread_ts:
            message["thread_ts"] = thread_ts
            message["reply_broadcast"] = mode == "resolve"
        else:
            message["metadata"] = self._metadata(view)
        # a parent message is the ticket: never posted twice without a lookup in between
        return self._call("POST", "chat.postMessage", json=message, replay_safe=bool(thread_ts))

    def create(self, view: TicketView) -> TicketRef:
        body = self._post(view, "full").json or {}
        return self._ref(str(body.get("channel") or self.settings.channel), str(body["ts"]))

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef:
        self._post(view, "update", thread_ts=ref.extra["thread_ts"])
        return ref

    def resolve(self, ref: TicketRef, view: TicketView) -> TicketRef:
        """A resolution reply (broadcast to the channel), then the parent is marked resolved, so
        ``find`` no longer returns it and readers see the state at a glance."""
        self._post(view, "resolve", thread_ts=ref.extra["thread_ts"])
        facts = build_facts(view)
        blocks = blocks_for(facts, "full")
        blocks[0]["text"]["text"] = cut("Resolved: " + facts.title, HEADER_MAX)
        self._call(
            "POST",
            "chat.update",
            json={
                "channel": ref.extra["channel"],
                "ts": ref.extra["thread_ts"],
                "text": fallback_text(facts, "resolve"),
                "blocks": blocks,
                "metadata": self._metadata(view, resolved=True),
            },
        )
        return ref


@dataclass(frozen=True, repr=False)
class SlackWebhookSettings:
    webhook_url: str

    def __repr__(self) -> str:
        return masked_repr("SlackWebhookSettings", vars(self), {"webhook_url"})


class SlackWebhookClient:
    """Incoming-webhook mode: every event is a new plain mrkdwn message; nothing can be looked up."""

    def __init__(self, name: str, settings: SlackWebhookSettings, transport: HttpTransport) -> None:
        self.name = name
        self.settings = settings
        self.transport = transport

    def __repr__(self) -> str:
        return f"SlackWebhookClient(name={self.name!r}, settings={self.settings!r})"

    def _post(self, view: TicketView, mode: Mode) -> None:
        text = cut(render("slack", build_facts(view), mode), TEXT_MAX)
        self.transport.request(
            "POST",
            self.settings.webhook_url,
            json={"text": text},
            classify=_webhook_verdict,
            log_as="slack incoming webhook",
        )

    def find(self, view: TicketView) -> TicketRef | None:
        return None

    def create(self, view: TicketView) -> TicketRef:
        self._post(view, "full")
        return TicketRef(self.name, view.dedup_key)

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef:
        self._post(view, "update")
        return ref

    def resolve(self, ref: TicketRef, view: TicketView) -> TicketRef:
        self._post(view, "resolve")
        return ref
