"""PagerDuty Events API v2 stand-in: ``POST /v2/enqueue`` with PagerDuty's dedup semantics."""

from __future__ import annotations

from typing import Any

from tests.standins import Reject, Reply, Request, StandinServer, check_keys, check_str

TOP = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client", "client_url"}
PAYLOAD = {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"}
SEVERITIES = {"critical", "error", "warning", "info"}


def _invalid(why: str) -> Reject:
    return Reject(400, {"status": "invalid event", "message": "Event object is invalid", "errors": [why]})


class PagerDutyStandin(StandinServer):
    def __init__(self, routing_key: str) -> None:
        super().__init__()
        self.routing_key = routing_key
        self.alerts: list[dict[str, Any]] = []  # every alert ever opened, in order

    def open_alert(self, key: str) -> dict[str, Any] | None:
        return next((a for a in self.alerts if a["dedup_key"] == key and a["status"] != "resolved"), None)

    def route(self, req: Request) -> Reply:
        if req.method != "POST" or req.path != "/v2/enqueue":
            raise Reject(404, {"status": "not found", "message": f"no route {req.method} {req.path}"})
        try:
            event = check_keys(req.json(), "event", {"routing_key", "event_action"}, TOP)
        except Reject as rej:
            raise _invalid(str(rej.body)) from rej
        if event["routing_key"] != self.routing_key:
            raise _invalid("'routing_key' is invalid")
        action = event["event_action"]
        key = event.get("dedup_key")
        if key is not None:
            try:
                check_str(key, "dedup_key", 255)
            except Reject as rej:
                raise _invalid("'dedup_key' must be at most 255 characters") from rej
        for link in event.get("links", []):
            if not isinstance(link, dict) or set(link) - {"href", "text"} or "href" not in link:
                raise _invalid("links need href and optional text")
        if action == "trigger":
            self._trigger(event)
        elif action in ("acknowledge", "resolve"):
            if key is None:
                raise _invalid("'dedup_key' is required for acknowledge and resolve")
            if "payload" in event:
                raise _invalid("'payload' is only accepted on trigger")
            alert = self.open_alert(key)
            if alert is not None:  # PagerDuty drops ack/resolve for unknown keys
                alert["status"] = "acknowledged" if action == "acknowledge" else "resolved"
                alert["events"].append(event)
        else:
            raise _invalid("'event_action' must be trigger, acknowledge or resolve")
        return Reply(202, {"status": "success", "message": "Event processed", "dedup_key": key})

    def _trigger(self, event: dict[str, Any]) -> None:
        try:
            payload = check_keys(event.get("payload"), "payload", {"summary", "source", "severity"}, PAYLOAD)
            check_str(payload["summary"], "payload.summary", 1024)
            check_str(payload["source"], "payload.source", 255)
        except Reject as rej:
            raise _invalid(str(rej.body)) from rej
        if payload["severity"] not in SEVERITIES:
            raise _invalid("'payload.severity' must be critical, error, warning or info")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            raise _invalid("'payload.custom_details' must be an object")
        key = event.get("dedup_key")
        alert = self.open_alert(key) if key else None
        if alert is None:
            self.alerts.append({"dedup_key": key, "status": "triggered", "events": [event]})
        else:
            alert["events"].append(event)
