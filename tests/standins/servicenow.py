"""ServiceNow Table API stand-in for the ``incident`` table."""

from __future__ import annotations

import uuid
from typing import Any

from tests.standins import Reject, Reply, Request, StandinServer, check_str

TABLE = "/api/now/table/incident"
WRITABLE = {
    "short_description",
    "description",
    "urgency",
    "impact",
    "correlation_id",
    "correlation_display",
    "caller_id",
    "assignment_group",
    "category",
    "work_notes",
    "state",
    "close_code",
    "close_notes",
}
CLOSE_CODES = {
    "Solution provided",
    "Workaround provided",
    "Resolved by caller",
    "Resolved by change",
    "Resolved by problem",
    "Known error",
    "Duplicate",
    "No resolution provided",
    "User error",
}


def _error(status: int, message: str, detail: str = "") -> Reject:
    return Reject(status, {"error": {"message": message, "detail": detail}, "status": "failure"})


class ServiceNowStandin(StandinServer):
    def __init__(self, user: str, password: str) -> None:
        super().__init__()
        self.credentials = (user, password)
        self.records: dict[str, dict[str, Any]] = {}

    def route(self, req: Request) -> Reply:
        if req.basic_auth() != self.credentials:
            raise _error(401, "User Not Authenticated", "Required to provide Auth information")
        if req.path == TABLE and req.method == "GET":
            return self._query(req.query)
        if req.path == TABLE and req.method == "POST":
            return self._create(req.json())
        if req.path.startswith(TABLE + "/") and req.method == "PATCH":
            record = self.records.get(req.path[len(TABLE) + 1 :])
            if record is None:
                raise _error(
                    404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval"
                )
            return self._patch(record, req.json())
        raise _error(400, f"Invalid request {req.method} {req.path}")

    def _check(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _error(400, "Exception while reading request", "body must be an object")
        unknown = body.keys() - WRITABLE
        if unknown:  # the real API ignores unknown columns; rejecting them catches typos
            raise _error(400, f"stand-in: unknown incident columns {sorted(unknown)}")
        for key in ("urgency", "impact"):
            if key in body and body[key] not in ("1", "2", "3"):
                raise _error(400, f"{key} must be 1, 2 or 3")
        for key, value in body.items():
            check_str(value, key, 100 if key == "correlation_id" else 32000)
        return body

    def _create(self, body: Any) -> Reply:
        body = self._check(body)
        check_str(body.get("short_description"), "short_description", 160)
        n = len(self.records) + 1
        sys_id = uuid.uuid4().hex
        record = {
            "sys_id": sys_id,
            "number": f"INC{10000 + n:07d}",
            "state": "1",
            "active": "true",
            "work_notes_journal": [],
            **{k: v for k, v in body.items() if k != "work_notes"},
        }
        self.records[sys_id] = record
        return Reply(201, {"result": record})

    def _patch(self, record: dict[str, Any], body: Any) -> Reply:
        body = self._check(body)
        if body.get("state") == "6" and (
            body.get("close_code") not in CLOSE_CODES or not body.get("close_notes")
        ):
            raise _error(403, "Operation Failed", "Data Policy Exception: Resolution code, Resolution notes")
        if "work_notes" in body:
            record["work_notes_journal"].append(body.pop("work_notes"))
        record.update(body)
        if record["state"] in ("6", "7", "8"):
            record["active"] = "false"
        return Reply(200, {"result": record})

    def _query(self, query: dict[str, str]) -> Reply:
        conditions = [c.split("=", 1) for c in query.get("sysparm_query", "").split("^") if c]
        if not conditions or any(len(c) != 2 for c in conditions):
            raise _error(400, "stand-in: only field=value^field=value queries are supported")
        limit = int(query.get("sysparm_limit", "10000"))
        hits = [r for r in self.records.values() if all(str(r.get(k)) == v for k, v in conditions)]
        fields = [f for f in query.get("sysparm_fields", "").split(",") if f]
        rows = [{f: r.get(f, "") for f in fields} if fields else r for r in hits[:limit]]
        return Reply(200, {"result": rows})
