"""The ticketing worker end to end with every real platform client against its local stand-in
(``tests/standins``): the real ledger, the real contract validator, the real HTTP transport (its
sleeps recorded, not waited; its timeouts real). Tickets are counted on the stand-in.

Storms: per platform, every incident's create meets a different failure (429 + Retry-After, a 5xx
before the platform acted, a 5xx or a timeout *after* it created the ticket), on top of 5xx on the
lookups and updates. Expected: as many tickets as incidents, each resolved; none lost, none twice.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.ledger import TicketLedger
from connectors.tickets.factory import build_client
from connectors.tickets.retry import HttpTransport, RetryPolicy
from jobs.ticketing import DeadLetter, Metrics, TicketingWorker, handle_with_retry
from tests.standins import StandinServer
from tests.standins.platforms import PLATFORM_IDS, PLATFORM_SPECS, PlatformSpec
from udfs.routing import RoutingConfig

TIMEOUT_S = 0.3  # the client's per-request timeout in these tests
HANG_S = 0.8  # an injected "no answer in time": longer than TIMEOUT_S


def incident(event: str = "opened", *, fingerprint: str = "fp-pool", at: str = "03:47:30",
             incident_id: str = "inc-000001", severity: str = "critical") -> str:
    return json.dumps({
        "schema": "logclaw.incident/v1", "incident_id": incident_id, "event": event, "tenant": "acme",
        "fingerprint": fingerprint, "severity": severity, "score": 0.91, "path": "windowed",
        "opened_at": "2024-05-01T03:47:00.000Z", "detected_at": f"2024-05-01T{at}.000Z",
        "service": "payment-api",
        "root_cause": {"service": "checkout", "confidence": 0.82, "chain": ["checkout", "payment-api"],
                       "candidates": [{"service": "checkout", "score": 0.82, "reasons": ["started first"]}]},
        "affected_services": ["payment-api"], "signals": [{"name": "database", "weight": 0.75}],
        "trace_ids": ["t1"], "title": f"[critical] payment-api {fingerprint}",
    })


def life_cycle(fingerprint: str, incident_id: str) -> list[str]:
    return [
        incident("opened", fingerprint=fingerprint, incident_id=incident_id),
        incident("updated", fingerprint=fingerprint, incident_id=incident_id, at="03:49:00"),
        incident("resolved", fingerprint=fingerprint, incident_id=incident_id, at="03:58:00"),
    ]


@dataclass
class Rig:
    spec: PlatformSpec
    server: StandinServer
    worker: TicketingWorker
    ledger: TicketLedger
    sleeps: list[float]
    tmp: Path

    def feed(self, *raws: str) -> None:
        for raw in raws:
            assert handle_with_retry(self.worker, raw, threading.Event(), max_attempts=20, backoff_cap_s=0.01)

    def dead_letters(self) -> list[dict[str, Any]]:
        path = self.tmp / "dlq.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(params=PLATFORM_SPECS, ids=PLATFORM_IDS)
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    spec: PlatformSpec = request.param
    sleeps: list[float] = []
    routes = {sev: [spec.name] for sev in ("critical", "high", "medium", "low")}
    routing = RoutingConfig.parse({"default": routes, "destinations": {spec.name: {"type": spec.name}}})
    with spec.standin() as server:
        policy = RetryPolicy(rng=random.Random(7), sleep=sleeps.append, wall_clock=lambda: 1_714_535_000.0)
        client = build_client(spec.name, spec.settings(server), HttpTransport(policy, timeout_s=TIMEOUT_S))
        ledger = TicketLedger(tmp_path / "ledger.sqlite", owner="w1")
        worker = TicketingWorker(routing, {spec.name: client}, ledger, DeadLetter(tmp_path / "dlq.jsonl"),
                                 metrics=Metrics())
        yield Rig(spec, server, worker, ledger, sleeps, tmp_path)
        ledger.close()


def test_worker_opens_updates_and_resolves_one_ticket_against_local_standin(rig: Rig) -> None:
    rig.feed(*life_cycle("fp-pool", "inc-000001"))
    rig.feed(*life_cycle("fp-pool", "inc-000001"))  # a whole replay changes nothing
    tickets = rig.spec.tickets(rig.server)
    assert [(t.resolved, t.updates) for t in tickets] == [(True, 1)]
    assert [(r.state, r.ref is not None) for r in rig.ledger.rows()] == [("resolved", True)]
    assert rig.dead_letters() == []


def test_opened_then_resolved_without_update_opens_and_resolves_against_local_standin(rig: Rig) -> None:
    """Defect 6: PagerDuty's find() answered a ref for every key, so ``opened`` was recorded as
    "already exists" and nobody was paged."""
    rig.feed(incident("opened"), incident("resolved", at="03:58:00"))
    assert [t.resolved for t in rig.spec.tickets(rig.server)] == [True]
    assert rig.worker.metrics.counts[(rig.spec.name, "created")] == 1


def test_recurrence_after_resolution_gets_a_second_ticket_against_local_standin(rig: Rig) -> None:
    rig.feed(*life_cycle("fp-pool", "inc-000001"))
    rig.feed(incident("opened", incident_id="inc-000002", at="05:00:00"))
    assert [t.resolved for t in rig.spec.tickets(rig.server)] == [True, False]


@pytest.mark.parametrize("fault", ["504 after create", "timeout after create", "502 after create"])
def test_unclear_create_is_looked_up_not_repeated_against_jira_standin(tmp_path: Path, fault: str) -> None:
    """Defect 7: a create that the platform applied but answered 5xx/timeout was sent again."""
    spec = next(p for p in PLATFORM_SPECS if p.name == "jira")
    routing = RoutingConfig.parse({"default": {"critical": ["jira"]}, "destinations": {"jira": {"type": "jira"}}})
    with spec.standin() as server:
        policy = RetryPolicy(rng=random.Random(7), sleep=lambda _s: None)
        client = build_client("jira", spec.settings(server), HttpTransport(policy, timeout_s=TIMEOUT_S))
        with TicketLedger(tmp_path / "ledger.sqlite", owner="w1") as ledger:
            worker = TicketingWorker(routing, {"jira": client}, ledger, DeadLetter(tmp_path / "dlq.jsonl"))
            status = int(fault[:3]) if fault[0].isdigit() else 504
            server.fault(status, method="POST", path="/rest/api/3/issue", after=True,
                         hang_s=HANG_S if fault.startswith("timeout") else 0.0)
            assert handle_with_retry(worker, incident(), threading.Event(), max_attempts=5, backoff_cap_s=0.01)
            assert len(server.issues) == 1  # type: ignore[attr-defined]
            (row,) = ledger.rows()
            assert (row.state, row.ref.external_id if row.ref else None) == ("open", "OPS-1")


# -- storms -----------------------------------------------------------------------------------------
INCIDENTS = 6


def _create_storm(i: int) -> dict[str, Any]:
    """The failure incident ``i``'s create meets (all six kinds across six incidents)."""
    return [
        {"status": 429, "retry_after": "2"},  # refused: wait as told, then again
        {"status": 503},  # refused before the platform acted
        {"status": 504, "after": True},  # created, then the gateway timed out
        {"status": 504, "after": True, "hang_s": HANG_S},  # created, then no answer in time
        {"status": 502, "after": True},  # created, then a bad gateway
        {"status": 500, "after": True},  # created, then an internal error
    ][i % 6]


def test_platform_storm_loses_and_duplicates_nothing_against_local_standin(rig: Rig) -> None:
    method, path = rig.spec.create
    for i in range(INCIDENTS):
        fingerprint, incident_id = f"fp-{i}", f"inc-{i:06d}"
        opened, updated, resolved = life_cycle(fingerprint, incident_id)
        rig.server.fault(429, retry_after="1")  # whatever comes first (the lookup, or the create)
        rig.server.fault(method=method, path=path, **_create_storm(i))
        rig.feed(opened)
        rig.server.fault(503, times=2)  # the update's first two requests
        rig.feed(updated)
        rig.server.fault(502)
        rig.feed(resolved)
        assert rig.server.pending_faults() == 0
        rig.feed(opened, updated)  # replayed after the resolution: nothing new
    tickets = rig.spec.tickets(rig.server)
    assert (len(tickets), len({t.id for t in tickets})) == (INCIDENTS, INCIDENTS)  # 0 duplicate
    assert all(t.resolved for t in tickets)  # 0 lost: every incident's ticket exists and is resolved
    rows = rig.ledger.rows()
    assert [(r.state, r.ref is not None) for r in rows] == [("resolved", True)] * INCIDENTS
    assert rig.dead_letters() == []
    assert 2.0 in rig.sleeps and 1.0 in rig.sleeps  # Retry-After was honoured


def test_crash_after_create_then_only_resolved_arrives_resolves_the_ticket_against_local_standin(
    rig: Rig,
) -> None:
    """The create reached the platform, the ledger kept only the pending claim, and the next event is
    ``resolved``: the ticket must not stay open (PagerDuty cannot find() it: resolved by its key)."""
    client = rig.worker.clients[rig.spec.name]

    class DiesAfterCreate:
        name = client.name
        find, update, resolve = client.find, client.update, client.resolve

        def create(self, view: Any) -> Any:
            client.create(view)
            raise KeyboardInterrupt("killed between the platform call and the ledger write")

    rig.worker.clients = {rig.spec.name: DiesAfterCreate()}  # type: ignore[dict-item]
    with pytest.raises(KeyboardInterrupt):
        rig.worker.handle(incident("opened"))
    rig.worker.clients = {rig.spec.name: client}
    rig.feed(incident("resolved", at="03:58:00"))
    assert [t.resolved for t in rig.spec.tickets(rig.server)] == [True]
    assert [r.state for r in rig.ledger.rows()] == ["resolved"]
