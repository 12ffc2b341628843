"""Local destination: one Markdown file per ticket, ``<root>/<tenant>/<fingerprint-safe>.md``.

Used by the demo and by anyone without a ticket platform. Creating writes the whole ticket
atomically (temp file + rename); updates and the resolution append a section. ``find`` is file
existence. No network, so no retries.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from connectors.tickets.base import TicketRef, TicketView
from connectors.tickets.facts import build_facts
from connectors.tickets.render import Mode, render

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(value: str, limit: int = 80) -> str:
    """A file-name-safe form of ``value``; a short hash keeps distinct values distinct once changed."""
    cleaned = _UNSAFE.sub("_", value).strip("._") or "_"
    if cleaned == value and len(value) <= limit:
        return value
    return f"{cleaned[:limit]}-{hashlib.sha256(value.encode()).hexdigest()[:10]}"


class FileClient:
    def __init__(self, name: str, root: str | Path) -> None:
        self.name = name
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FileClient(name={self.name!r}, root={str(self.root)!r})"

    def path_for(self, view: TicketView) -> Path:
        return self.root / safe_name(view.tenant) / f"{safe_name(view.fingerprint)}.md"

    def _ref(self, path: Path) -> TicketRef:
        return TicketRef(self.name, str(path.relative_to(self.root)), path.resolve().as_uri())

    def find(self, view: TicketView) -> TicketRef | None:
        path = self.path_for(view)
        return self._ref(path) if path.is_file() else None

    def create(self, view: TicketView) -> TicketRef:
        path = self.path_for(view)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(render("markdown", build_facts(view), "full"), encoding="utf-8")
        os.replace(tmp, path)
        return self._ref(path)

    def _append(self, ref: TicketRef, view: TicketView, mode: Mode) -> TicketRef:
        path = self.root / ref.external_id
        with path.open("a", encoding="utf-8") as out:
            out.write("\n" + render("markdown", build_facts(view), mode))
        return ref

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef:
        return self._append(ref, view, "update")

    def resolve(self, ref: TicketRef, view: TicketView) -> TicketRef:
        return self._append(ref, view, "resolve")
