"""The one small protocol every ticket destination implements, and the facts a ticket is made of.

A destination never decides *whether* to ticket: the worker does (routing, ledger, dedup). A client
only knows how to find, create, update and resolve one ticket in its platform's own API shape,
rendering ``TicketView`` with its platform's template and escaping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Rca:
    """A root-cause analysis: from the LLM (validated JSON) or the deterministic fallback."""

    root_cause: str
    impact: str
    affected_services: tuple[str, ...]
    suggested_fix: str
    confidence: float
    source: str  # "llm:<model>" or "evidence" (deterministic fallback)


@dataclass(frozen=True)
class TicketView:
    """Everything a ticket shows, platform-neutral. ``incident`` is the contract event (a dict)."""

    tenant: str
    fingerprint: str
    incident_id: str
    event: str  # "opened" | "updated" | "resolved"
    severity: str
    score: float
    title: str
    incident: Mapping[str, Any]
    rca: Rca
    evidence: Sequence[Mapping[str, Any]] = ()
    link: str = ""  # OpenSearch Dashboards / Discover URL, or "" when none is configured
    labels: tuple[str, ...] = field(default=())

    @property
    def dedup_key(self) -> str:
        """Tenant-scoped idempotency key: equal for every event of one incident."""
        return f"logclaw:{self.tenant}:{self.fingerprint}"


@dataclass(frozen=True)
class TicketRef:
    """Where a ticket lives on its platform (what the ledger stores)."""

    destination: str
    external_id: str
    url: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)  # e.g. Slack channel + thread ts


class TicketClient(Protocol):
    """One ticket destination. Methods raise ``connectors.tickets.retry.PermanentError`` on 4xx
    (not retried) and retry transient failures internally under the shared retry policy."""

    name: str

    def find(self, view: TicketView) -> TicketRef | None:
        """Look the ticket up on the platform by the fingerprint (dedup across ledger loss)."""
        ...

    def create(self, view: TicketView) -> TicketRef: ...

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef: ...

    def resolve(self, ref: TicketRef, view: TicketView) -> TicketRef: ...


@runtime_checkable
class KeyAddressed(Protocol):
    """A destination addressed by the dedup key alone (PagerDuty's Events API): ``find`` cannot see
    its tickets, ``create`` is idempotent, and resolving a key with nothing open is a no-op. The
    worker uses ``ref_for`` to resolve a ticket whose create a crash kept out of the ledger."""

    def ref_for(self, view: TicketView) -> TicketRef: ...
