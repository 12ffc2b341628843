"""Atlassian Document Format (ADF) for Jira descriptions and comments, built from ``TicketFacts``.

ADF is JSON, so text is escaped by construction: every string lands in a ``text`` node's value and
is never parsed as markup. Empty text nodes are invalid ADF and are never emitted.
"""

from __future__ import annotations

from typing import Any

from connectors.tickets.facts import TicketFacts
from connectors.tickets.render import Mode, plain_clean, safe_url

Node = dict[str, Any]


def text(value: str, *marks: str, href: str = "") -> Node:
    node: Node = {"type": "text", "text": plain_clean(value)}
    all_marks: list[Node] = [{"type": m} for m in marks]
    if href:
        all_marks.append({"type": "link", "attrs": {"href": href}})
    if all_marks:
        node["marks"] = all_marks
    return node


def paragraph(*parts: Node) -> Node:
    content = [p for p in parts if p.get("text")]
    return {"type": "paragraph", "content": content} if content else {"type": "paragraph"}


def labelled(label: str, value: str) -> Node:
    return paragraph(text(f"{label}: ", "strong"), text(value))


def heading(value: str, level: int = 2) -> Node:
    return {"type": "heading", "attrs": {"level": level}, "content": [text(value)]}


def bullet_list(items: list[str]) -> Node:
    return {
        "type": "bulletList",
        "content": [{"type": "listItem", "content": [paragraph(text(i))]} for i in items if i],
    }


def code_block(lines: list[str]) -> Node:
    return {
        "type": "codeBlock",
        "attrs": {"language": "text"},
        "content": [{"type": "text", "text": plain_clean("\n".join(lines))}],
    }


def doc(content: list[Node]) -> Node:
    return {"type": "doc", "version": 1, "content": content}


def _body(f: TicketFacts) -> list[Node]:
    nodes: list[Node] = [
        paragraph(
            text("Severity: ", "strong"),
            text(f"{f.severity}   "),
            text("Score: ", "strong"),
            text(f"{f.score:.2f}   "),
            text("Service: ", "strong"),
            text(f"{f.service}   "),
            text("Tenant: ", "strong"),
            text(f.tenant),
        )
    ]
    if f.score_breakdown:
        nodes.append(labelled("Score breakdown", " · ".join(f"{k} {v:.2f}" for k, v in f.score_breakdown)))
    if f.signals:
        nodes.append(paragraph(text("Signals", "strong")))
        nodes.append(
            bullet_list([f"{s.name} ({s.weight:.2f})" + (f": {s.detail}" if s.detail else "") for s in f.signals])
        )
    nodes += [
        heading("Root cause", 3),
        paragraph(text(f.rca.root_cause)),
        labelled("Ranked root-cause service", f"{f.root_cause_service} (confidence {f.root_cause_confidence:.2f})"),
    ]
    if f.chain:
        nodes.append(labelled("Chain", " → ".join(f.chain)))
    if f.affected:
        nodes.append(labelled("Affected", ", ".join(f.affected)))
    nodes += [
        labelled("Impact", f.rca.impact),
        labelled("Suggested fix", f.rca.suggested_fix),
        paragraph(text(f"RCA confidence {f.rca.confidence:.2f}, source {f.rca.source}", "em")),
    ]
    if f.evidence:
        nodes.append(heading(f"Evidence ({len(f.evidence)} of {f.evidence_total} log lines)", 3))
        nodes.append(code_block([" ".join(p for p in (e.time, e.service, e.level, e.text) if p) for e in f.evidence]))
    if f.trace_ids:
        nodes.append(labelled("Traces", ", ".join(f.trace_ids)))
    if f.link:
        url = safe_url(f.link)
        nodes.append(paragraph(text("Logs: ", "strong"), text(f.link, href=url) if url else text(f.link)))
    times = f"Opened {f.opened_at} · detected {f.detected_at}"
    nodes.append(paragraph(text(times + (f" · resolved {f.resolved_at}" if f.resolved_at else ""))))
    return nodes


def build_adf(f: TicketFacts, mode: Mode = "full") -> Node:
    """The ADF document for a new issue's description (full), a comment (update) or resolution."""
    if mode == "full":
        head = [heading(f.title, 2)]
        if f.headline:
            head.append(paragraph(text(f.headline, "em")))
        if f.summary:
            head.append(paragraph(text(f.summary)))
        tail = [{"type": "rule"}, paragraph(text(f"Incident {f.incident_id} · {f.label}", "em"))]
        return doc(head + _body(f) + tail)
    if mode == "update":
        return doc([heading(f"Update at {f.detected_at}", 3), *_body(f)])
    closing = f"Final severity {f.severity}, score {f.score:.2f}. Incident {f.incident_id} is resolved."
    content = [heading(f"Resolved at {f.resolved_at or f.detected_at}", 3)]
    if f.summary:
        content.append(paragraph(text(f.summary)))
    content.append(paragraph(text(closing)))
    return doc(content)
