"""Opsgenie Alert API v2 stand-in: create, get by alias, notes, close (202 + requestId)."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import unquote

from tests.standins import Reject, Reply, Request, StandinServer, check_keys, check_str

CREATE = {
    "alias",
    "description",
    "responders",
    "visibleTo",
    "actions",
    "tags",
    "details",
    "entity",
    "source",
    "priority",
    "user",
    "note",
}
LIMITS = {"alias": 512, "description": 15000, "entity": 512, "source": 100, "user": 100, "note": 25000}


def _error(status: int, message: str) -> Reject:
    return Reject(status, {"message": message, "took": 0.001, "requestId": str(uuid.uuid4())})


def _accepted() -> Reply:
    return Reply(202, {"result": "Request will be processed", "took": 0.002, "requestId": str(uuid.uuid4())})


class OpsgenieStandin(StandinServer):
    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.alerts: list[dict[str, Any]] = []

    def by_alias(self, alias: str) -> dict[str, Any] | None:
        matches = [a for a in self.alerts if a["alias"] == alias]
        open_ = [a for a in matches if a["status"] == "open"]
        chosen = open_ or matches
        return chosen[-1] if chosen else None

    def route(self, req: Request) -> Reply:
        if req.headers.get("authorization") != f"GenieKey {self.api_key}":
            raise _error(401, "Could not authenticate")
        if req.method == "POST" and req.path == "/v2/alerts":
            return self._create(req.json())
        m = re.fullmatch(r"/v2/alerts/([^/]+)(?:/(notes|close))?", req.path)
        if not m:
            raise _error(404, f"no route {req.method} {req.path}")
        if req.query.get("identifierType") not in ("id", "alias", "tiny"):
            raise _error(422, "identifierType must be id, alias or tiny")
        alert = self.by_alias(unquote(m.group(1))) if req.query["identifierType"] == "alias" else None
        action = m.group(2)
        if req.method == "GET" and action is None:
            if alert is None:
                raise _error(404, "Alert does not exist")
            return Reply(
                200,
                {
                    "data": {k: v for k, v in alert.items() if k != "notes"},
                    "took": 0.003,
                    "requestId": str(uuid.uuid4()),
                },
            )
        if req.method == "POST" and action == "notes":
            body = check_keys(req.json(), "note", {"note"}, {"user", "source"}, status=422)
            self._limits(body)
            if alert is not None:  # the real API accepts, then fails asynchronously for unknown alerts
                alert["notes"].append(body["note"])
            return _accepted()
        if req.method == "POST" and action == "close":
            body = check_keys(
                req.json() if req.body else {}, "close", set(), {"user", "source", "note"}, status=422
            )
            self._limits(body)
            if alert is not None:
                alert["status"] = "closed"
                if "note" in body:
                    alert["notes"].append(body["note"])
            return _accepted()
        raise _error(404, f"no route {req.method} {req.path}")

    def _limits(self, body: dict[str, Any]) -> None:
        for key, limit in LIMITS.items():
            if key in body:
                check_str(body[key], key, limit, status=422)

    def _create(self, body: Any) -> Reply:
        body = check_keys(body, "alert", {"message"}, CREATE, status=422)
        check_str(body["message"], "message", 130, status=422)
        self._limits(body)
        tags = body.get("tags", [])
        if len(tags) > 20 or not all(isinstance(t, str) and 0 < len(t) <= 50 for t in tags):
            raise _error(422, "tags: at most 20, each at most 50 characters")
        details = body.get("details", {})
        if not isinstance(details, dict) or not all(isinstance(v, str) for v in details.values()):
            raise _error(422, "details must map strings to strings")
        if sum(len(k) + len(v) for k, v in details.items()) > 8000:
            raise _error(422, "details exceed 8000 characters")
        if body.get("priority", "P3") not in ("P1", "P2", "P3", "P4", "P5"):
            raise _error(422, "priority must be P1..P5")
        existing = self.by_alias(body["alias"]) if "alias" in body else None
        if existing is not None and existing["status"] == "open":
            existing["count"] += 1  # de-duplicated: no new alert
            return _accepted()
        n = len(self.alerts) + 1
        self.alerts.append(
            {
                "id": str(uuid.uuid4()),
                "tinyId": str(n),
                "alias": body.get("alias", str(n)),
                "message": body["message"],
                "status": "open",
                "count": 1,
                "priority": body.get("priority", "P3"),
                "tags": tags,
                "details": details,
                "description": body.get("description", ""),
                "entity": body.get("entity", ""),
                "source": body.get("source", ""),
                "notes": [],
            }
        )
        return _accepted()
