"""Slack stand-in: Web API ``chat.postMessage`` / ``conversations.history`` and an incoming webhook.

Web API errors are HTTP 200 with ``{"ok": false, "error": ...}`` as Slack answers them; rate limits
are HTTP 429 with ``Retry-After`` (inject with ``fail_next``) or ``ok: false`` via ``fail_next_ok_false``.
"""

from __future__ import annotations

from typing import Any

from tests.standins import Reject, Reply, Request, StandinServer

POST_ARGS = {
    "channel",
    "text",
    "blocks",
    "thread_ts",
    "reply_broadcast",
    "unfurl_links",
    "unfurl_media",
    "metadata",
    "mrkdwn",
    "attachments",
    "icon_emoji",
    "icon_url",
    "username",
    "link_names",
    "parse",
}


def _err(error: str) -> Reject:
    return Reject(200, {"ok": False, "error": error})


class SlackStandin(StandinServer):
    def __init__(self, bot_token: str, channel: str, webhook_path: str = "/services/T0/B0/secret") -> None:
        super().__init__()
        self.bot_token = bot_token
        self.channel = channel
        self.webhook_path = webhook_path
        self.messages: list[dict[str, Any]] = []  # chat.postMessage, in order
        self.webhook_texts: list[str] = []
        self._ok_false: list[str] = []

    def fail_next_ok_false(self, n: int, error: str) -> None:
        self._ok_false.extend([error] * n)

    def parents(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "thread_ts" not in m]

    def replies(self, ts: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("thread_ts") == ts]

    def route(self, req: Request) -> Reply:
        if req.path == self.webhook_path:
            return self._webhook(req)
        if req.path.startswith("/services/"):
            raise Reject(404, "no_service")
        if req.headers.get("authorization") != f"Bearer {self.bot_token}":
            raise _err("not_authed" if "authorization" not in req.headers else "invalid_auth")
        if self._ok_false:
            raise _err(self._ok_false.pop(0))
        if req.method == "POST" and req.path == "/api/chat.postMessage":
            return self._post(req)
        if req.method == "POST" and req.path == "/api/chat.update":
            return self._update(req)
        if req.method == "GET" and req.path == "/api/conversations.history":
            if req.query.get("channel") != self.channel:
                raise _err("channel_not_found")
            with_meta = req.query.get("include_all_metadata") == "true"
            limit = int(req.query.get("limit", "100"))
            newest_first = list(reversed(self.parents()))[:limit]
            return Reply(
                200,
                {
                    "ok": True,
                    "has_more": False,
                    "messages": [
                        {k: v for k, v in m.items() if with_meta or k != "metadata"} for m in newest_first
                    ],
                },
            )
        raise _err("unknown_method")

    def _post(self, req: Request) -> Reply:
        if not req.headers.get("content-type", "").startswith("application/json"):
            raise _err("invalid_form_data")
        body = req.json()
        if not isinstance(body, dict) or body.keys() - POST_ARGS:
            raise _err("invalid_arguments")
        if body.get("channel") != self.channel:
            raise _err("channel_not_found")
        blocks = body.get("blocks")
        if blocks is None and not body.get("text"):
            raise _err("no_text")
        if blocks is not None:
            self._check_blocks(blocks)
        if "metadata" in body:
            meta = body["metadata"]
            if (
                not isinstance(meta, dict)
                or set(meta) != {"event_type", "event_payload"}
                or not isinstance(meta["event_payload"], dict)
            ):
                raise _err("invalid_metadata_format")
        if "thread_ts" in body and not any(m["ts"] == body["thread_ts"] for m in self.parents()):
            raise _err("thread_not_found")
        ts = f"1700000000.{len(self.messages) + 1:06d}"
        message = {
            "type": "message",
            "ts": ts,
            **{k: body[k] for k in ("text", "blocks", "thread_ts", "metadata") if k in body},
        }
        self.messages.append(message)
        return Reply(200, {"ok": True, "channel": self.channel, "ts": ts, "message": message})

    def _update(self, req: Request) -> Reply:
        body = req.json()
        if not isinstance(body, dict) or body.keys() - {
            "channel",
            "ts",
            "text",
            "blocks",
            "metadata",
            "parse",
            "link_names",
            "attachments",
            "as_user",
        }:
            raise _err("invalid_arguments")
        if body.get("channel") != self.channel:
            raise _err("channel_not_found")
        target = next((m for m in self.messages if m["ts"] == body.get("ts")), None)
        if target is None:
            raise _err("message_not_found")
        if "blocks" in body:
            self._check_blocks(body["blocks"])
        target.update({k: body[k] for k in ("text", "blocks", "metadata") if k in body})
        return Reply(
            200, {"ok": True, "channel": self.channel, "ts": target["ts"], "text": target.get("text")}
        )

    @staticmethod
    def _check_blocks(blocks: Any) -> None:
        if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
            raise _err("invalid_blocks")
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            text = block.get("text", {}) if isinstance(block, dict) else {}
            if kind == "header":
                ok = (
                    set(block) <= {"type", "text", "block_id"}
                    and text.get("type") == "plain_text"
                    and 0 < len(text.get("text", "")) <= 150
                )
            elif kind == "section":
                ok = (
                    set(block) <= {"type", "text", "block_id", "fields"}
                    and text.get("type") == "mrkdwn"
                    and 0 < len(text.get("text", "")) <= 3000
                )
            else:
                ok = False
            if not ok:
                raise _err("invalid_blocks")

    def _webhook(self, req: Request) -> Reply:
        if req.method != "POST":
            raise Reject(405, "invalid_method")
        try:
            body = req.json()
        except Reject as rej:
            raise Reject(400, "invalid_payload") from rej
        if (
            not isinstance(body, dict)
            or body.keys() - {"text", "blocks", "attachments", "mrkdwn"}
            or not body.get("text")
        ):
            raise Reject(400, "invalid_payload" if isinstance(body, dict) else "no_text")
        self.webhook_texts.append(body["text"])
        return Reply(200, "ok")
