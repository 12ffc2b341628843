"""Zammad REST stand-in: tickets, articles, tags, tag search."""

from __future__ import annotations

import re
from typing import Any

from tests.standins import Reject, Reply, Request, StandinServer, check_keys, check_str

ARTICLE = {"subject", "body", "type", "internal", "content_type"}
STATES = {"new", "open", "pending reminder", "closed", "merged", "pending close"}
PRIORITIES = {"1 low", "2 normal", "3 high"}


def _unprocessable(message: str) -> Reject:
    return Reject(422, {"error": message, "error_human": message})


class ZammadStandin(StandinServer):
    def __init__(
        self,
        token: str,
        groups: tuple[str, ...] = ("Users",),
        customers: tuple[str, ...] = ("ops@example.com",),
    ) -> None:
        super().__init__()
        self.token = token
        self.groups = groups
        self.customers = customers
        self.tickets: dict[int, dict[str, Any]] = {}

    def route(self, req: Request) -> Reply:
        if req.headers.get("authorization") != f"Token token={self.token}":
            raise Reject(401, {"error": "Authentication required"})
        if req.method == "POST" and req.path == "/api/v1/tickets":
            return self._create(req.json())
        if req.method == "POST" and req.path == "/api/v1/tags/add":
            body = check_keys(req.json(), "tag", {"item", "object", "o_id"}, status=422)
            if body["object"] != "Ticket" or body["o_id"] not in self.tickets:
                raise _unprocessable("No such object")
            self.tickets[body["o_id"]]["tags"].append(check_str(body["item"], "item", 255, status=422))
            return Reply(201, True)
        if req.method == "GET" and req.path == "/api/v1/tickets/search":
            m = re.fullmatch(r'tags:"?([^"\s]+)"?', req.query.get("query", ""))
            if not m:
                raise _unprocessable("stand-in supports only tags:<tag> queries")
            hits = [t for t in self.tickets.values() if m.group(1) in t["tags"]]
            hits = hits[: int(req.query.get("limit", "10"))]
            if req.query.get("expand") == "true":
                return Reply(200, hits)
            return Reply(200, {"tickets": [t["id"] for t in hits], "tickets_count": len(hits), "assets": {}})
        if req.method == "POST" and req.path == "/api/v1/ticket_articles":
            body = check_keys(
                req.json(), "article", {"ticket_id", "body"} | {"content_type"}, ARTICLE, status=422
            )
            ticket = self.tickets.get(body["ticket_id"])
            if ticket is None:
                raise Reject(404, {"error": "Couldn't find Ticket"})
            ticket["articles"].append(self._article(body))
            return Reply(201, {"id": len(ticket["articles"]), "ticket_id": ticket["id"]})
        m = re.fullmatch(r"/api/v1/tickets/(\d+)", req.path)
        if m and req.method == "PUT":
            ticket = self.tickets.get(int(m.group(1)))
            if ticket is None:
                raise Reject(404, {"error": "Couldn't find Ticket"})
            body = check_keys(
                req.json(), "ticket", set(), {"state", "title", "priority", "group", "article"}, status=422
            )
            if body.get("state", ticket["state"]) not in STATES:
                raise _unprocessable("No lookup value found for 'state'")
            ticket.update({k: v for k, v in body.items() if k != "article"})
            return Reply(200, {k: v for k, v in ticket.items() if k != "articles"})
        raise Reject(404, {"error": f"no route {req.method} {req.path}"})

    def _article(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("type", "note") not in ("note", "email", "phone", "web"):
            raise _unprocessable("unknown article type")
        if body.get("content_type") not in ("text/html", "text/plain"):
            raise _unprocessable("content_type must be text/html or text/plain")
        if not isinstance(body.get("internal", False), bool):
            raise _unprocessable("internal must be a boolean")
        check_str(body.get("body"), "body", 1_500_000, status=422)
        return dict(body)

    def _create(self, body: Any) -> Reply:
        body = check_keys(
            body, "ticket", {"title", "group", "customer", "article"}, {"priority", "state", "tags"}, status=422
        )
        tags = check_str(body.get("tags", "-"), "tags", 10_000, status=422)  # Zammad: "a,b", split on ","
        check_str(body["title"], "title", 250, status=422)
        if body["group"] not in self.groups:
            raise _unprocessable(f"No lookup value found for 'group': {body['group']!r}")
        if body["customer"] not in self.customers:
            raise _unprocessable(f"No lookup value found for 'customer': {body['customer']!r}")
        if "priority" in body and body["priority"] not in PRIORITIES:
            raise _unprocessable("No lookup value found for 'priority'")
        article = self._article(check_keys(body["article"], "article", {"body"}, ARTICLE, status=422))
        ticket_id = len(self.tickets) + 1
        ticket = {
            "id": ticket_id,
            "number": str(31000 + ticket_id),
            "title": body["title"],
            "group": body["group"],
            "state": "new",
            "priority": body.get("priority", "2 normal"),
            "tags": [t.strip() for t in tags.split(",") if t.strip()] if "tags" in body else [],
            "articles": [article],
        }
        self.tickets[ticket_id] = ticket
        return Reply(201, {k: v for k, v in ticket.items() if k != "articles"})
