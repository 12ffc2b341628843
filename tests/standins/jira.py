"""Jira Cloud REST v3 stand-in: issues, JQL search (``/search/jql``), comments, transitions."""

from __future__ import annotations

import re
from typing import Any

from tests.standins import Reject, Reply, Request, StandinServer, check_keys, check_str
from tests.standins.adf import validate_doc

JQL = re.compile(
    r'^project = "(?P<project>[A-Z][A-Z0-9_]*)" AND labels = "(?P<label>[^"\s]+)" '
    r"AND statusCategory != Done ORDER BY created DESC$"
)
PRIORITIES = {"Highest", "High", "Medium", "Low", "Lowest"}
TRANSITIONS = [("11", "To Do", "new"), ("21", "In Progress", "indeterminate"), ("31", "Done", "done")]


def _field_error(name: str) -> Reject:
    return Reject(
        400,
        {
            "errorMessages": [],
            "errors": {
                name: f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
            },
        },
    )


class JiraStandin(StandinServer):
    def __init__(self, email: str, token: str, project: str = "OPS", issue_types: tuple[str, ...] = ("Bug",)):
        super().__init__()
        self.credentials = (email, token)
        self.project = project
        self.issue_types = issue_types
        self.issues: dict[str, dict[str, Any]] = {}

    def route(self, req: Request) -> Reply:
        if req.basic_auth() != self.credentials:
            raise Reject(401, {"errorMessages": ["You are not authenticated."]})
        path = req.path
        if path == "/rest/api/3/search" or path == "/rest/api/2/search":
            raise Reject(
                410,
                {
                    "errorMessages": [
                        "The requested API has been removed. Please migrate to the "
                        "/rest/api/3/search/jql API."
                    ]
                },
            )
        if req.method == "POST" and path == "/rest/api/3/issue":
            return self._create(req.json())
        if req.method == "GET" and path == "/rest/api/3/search/jql":
            return self._search(req.query)
        m = re.fullmatch(r"/rest/api/3/issue/([A-Z][A-Z0-9_]*-\d+)/(comment|transitions)", path)
        if m:
            issue = self.issues.get(m.group(1))
            if issue is None:
                raise Reject(
                    404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}
                )
            if m.group(2) == "comment" and req.method == "POST":
                body = check_keys(req.json(), "comment", {"body"}, {"visibility", "properties"})
                validate_doc(body["body"])
                issue["comments"].append(body["body"])
                return Reply(201, {"id": str(10000 + len(issue["comments"])), "body": body["body"]})
            if m.group(2) == "transitions" and req.method == "GET":
                return Reply(
                    200,
                    {
                        "transitions": [
                            {"id": tid, "name": name, "to": {"name": name, "statusCategory": {"key": cat}}}
                            for tid, name, cat in TRANSITIONS
                        ]
                    },
                )
            if m.group(2) == "transitions" and req.method == "POST":
                body = check_keys(req.json(), "transition", {"transition"}, {"fields", "update"})
                tid = check_keys(body["transition"], "transition", {"id"})["id"]
                match = [t for t in TRANSITIONS if t[0] == tid]
                if not match:
                    raise Reject(
                        400, {"errorMessages": [f"Transition id '{tid}' is not valid for this issue."]}
                    )
                issue["status"], issue["category"] = match[0][1], match[0][2]
                return Reply(204)
        raise Reject(404, {"errorMessages": [f"no route {req.method} {path}"]})

    def _create(self, body: Any) -> Reply:
        check_keys(body, "issue", {"fields"}, {"update"})
        fields = body["fields"]
        allowed = {"project", "issuetype", "summary", "description", "labels", "priority"}
        for name in fields:
            if name not in allowed:
                raise _field_error(name)
        check_keys(fields, "fields", {"project", "issuetype", "summary"}, allowed)
        if fields["project"] != {"key": self.project}:
            raise Reject(400, {"errorMessages": [], "errors": {"project": "valid project is required"}})
        if check_keys(fields["issuetype"], "issuetype", {"name"})["name"] not in self.issue_types:
            raise Reject(400, {"errorMessages": [], "errors": {"issuetype": "Specify a valid issue type"}})
        summary = check_str(fields["summary"], "summary", 255)
        if "\n" in summary:
            raise Reject(
                400,
                {
                    "errorMessages": [],
                    "errors": {"summary": "The summary is invalid because it contains newline characters."},
                },
            )
        if "description" in fields:
            validate_doc(fields["description"])
        labels = fields.get("labels", [])
        if not all(
            isinstance(lab, str) and lab and not re.search(r"\s", lab) and len(lab) <= 255 for lab in labels
        ):
            raise Reject(400, {"errorMessages": [], "errors": {"labels": "The label can't contain spaces."}})
        if (
            "priority" in fields
            and check_keys(fields["priority"], "priority", {"name"})["name"] not in PRIORITIES
        ):
            raise Reject(400, {"errorMessages": [], "errors": {"priority": "Specify a valid priority"}})
        n = len(self.issues) + 1
        key = f"{self.project}-{n}"
        self.issues[key] = {
            "id": str(10000 + n),
            "key": key,
            "fields": fields,
            "labels": list(labels),
            "status": "To Do",
            "category": "new",
            "comments": [],
        }
        return Reply(
            201, {"id": str(10000 + n), "key": key, "self": f"{self.url}/rest/api/3/issue/{10000 + n}"}
        )

    def _search(self, query: dict[str, str]) -> Reply:
        m = JQL.match(query.get("jql", ""))
        if not m:
            raise Reject(400, {"errorMessages": [f"stand-in cannot parse JQL: {query.get('jql')!r}"]})
        limit = int(query.get("maxResults", "50"))
        hits = [
            i
            for i in self.issues.values()
            if m.group("project") == self.project
            and m.group("label") in i["labels"]
            and i["category"] != "done"
        ]
        hits.sort(key=lambda i: -int(i["id"]))
        return Reply(
            200,
            {
                "issues": [
                    {
                        "id": i["id"],
                        "key": i["key"],
                        "fields": {"summary": i["fields"]["summary"], "status": {"name": i["status"]}},
                    }
                    for i in hits[:limit]
                ],
                "isLast": True,
            },
        )
