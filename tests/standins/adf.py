"""A strict validator for the Atlassian Document Format subset Jira accepts in descriptions."""

from __future__ import annotations

from typing import Any

from tests.standins import Reject

INLINE_MARKS = {"strong", "em", "code", "link", "strike", "underline"}


def _fail(msg: str) -> Reject:
    return Reject(400, {"errorMessages": [], "errors": {"description": f"INVALID_INPUT: {msg}"}})


def _keys(node: dict[str, Any], allowed: set[str]) -> None:
    extra = node.keys() - allowed
    if extra:
        raise _fail(f"{node.get('type')} has unknown keys {sorted(extra)}")


def _text(node: Any, *, marks_allowed: bool = True) -> None:
    if not isinstance(node, dict) or node.get("type") != "text":
        raise _fail(f"expected a text node, got {node!r:.80}")
    _keys(node, {"type", "text", "marks"})
    if not isinstance(node.get("text"), str) or not node["text"]:
        raise _fail("text nodes need non-empty text")
    for mark in node.get("marks", []):
        if not marks_allowed or mark.get("type") not in INLINE_MARKS:
            raise _fail(f"mark {mark!r:.60} not allowed here")
        if mark["type"] == "link" and not str(mark.get("attrs", {}).get("href", "")).startswith("http"):
            raise _fail("link marks need an http(s) href")


def _block(node: Any) -> None:
    if not isinstance(node, dict):
        raise _fail("block nodes are objects")
    kind = node.get("type")
    content = node.get("content", [])
    if kind == "paragraph":
        _keys(node, {"type", "content"})
        for child in content:
            _text(child)
    elif kind == "heading":
        _keys(node, {"type", "attrs", "content"})
        if node.get("attrs", {}).get("level") not in range(1, 7):
            raise _fail("heading level must be 1..6")
        for child in content:
            _text(child)
    elif kind == "bulletList":
        _keys(node, {"type", "content"})
        if not content:
            raise _fail("bulletList needs listItems")
        for item in content:
            if item.get("type") != "listItem":
                raise _fail("bulletList holds listItems only")
            _keys(item, {"type", "content"})
            for child in item.get("content", []):
                _block(child)
    elif kind == "codeBlock":
        _keys(node, {"type", "attrs", "content"})
        for child in content:
            _text(child, marks_allowed=False)
    elif kind == "rule":
        _keys(node, {"type"})
    else:
        raise _fail(f"unknown node type {kind!r}")


def validate_doc(doc: Any) -> None:
    if not isinstance(doc, dict) or doc.get("type") != "doc" or doc.get("version") != 1:
        raise _fail("top level must be {type: doc, version: 1}")
    _keys(doc, {"type", "version", "content"})
    if not isinstance(doc.get("content"), list):
        raise _fail("doc.content must be a list")
    for node in doc["content"]:
        _block(node)


def doc_text(doc: dict[str, Any]) -> str:
    """All text of an ADF document, for assertions."""
    out: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("type") == "text":
            out.append(node["text"])
        for child in node.get("content", []):
            walk(child)

    walk(doc)
    return "\n".join(out)
