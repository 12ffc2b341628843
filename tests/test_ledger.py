"""The ticket ledger: the plan per event, durable rows, pending claims and replica leases."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.ledger import Claim, ClaimLost, EventMark, LedgerBusy, LedgerKey, LedgerRow, TicketLedger, plan
from connectors.tickets.base import TicketRef

KEY = LedgerKey("acme", "fp-1", "jira")
REF = TicketRef("jira", "OPS-7", "https://jira.example/browse/OPS-7", {"thread": "1.2"})


def mark(event: str, at_ms: int, incident_id: str = "inc-1") -> EventMark:
    return EventMark(incident_id, event, at_ms, {"opened": 0, "updated": 1, "resolved": 2}[event])


def row(state: str, last: EventMark | None, ref: TicketRef | None = REF) -> LedgerRow:
    return LedgerRow(KEY, state, ref, last, "w1", 0)


@pytest.mark.parametrize(
    ("current", "event", "expected"),
    [
        (None, mark("opened", 10), "create"),
        (None, mark("updated", 10), "create"),
        (None, mark("resolved", 10), "tombstone"),
        (row("pending", None, None), mark("opened", 10), "recover"),
        (row("open", mark("opened", 10)), mark("opened", 10), "skip"),  # duplicate
        (row("open", mark("updated", 20)), mark("updated", 15), "skip"),  # out of order
        (row("open", mark("opened", 10)), mark("updated", 20), "update"),
        (row("open", mark("opened", 10)), mark("updated", 10), "update"),  # same time, later kind
        (row("open", mark("updated", 20)), mark("resolved", 30), "resolve"),
        (row("resolved", mark("resolved", 30)), mark("updated", 40), "skip"),  # updated after resolved
        (row("resolved", mark("resolved", 30)), mark("resolved", 30), "skip"),
        (row("resolved", mark("resolved", 30)), mark("opened", 90, "inc-2"), "create"),  # recurrence
        (row("resolved", mark("resolved", 30)), mark("opened", 20, "inc-0"), "skip"),  # older incident
        (
            row("resolved", mark("resolved", 30), None),
            mark("opened", 5),
            "skip",
        ),  # late opened after tombstone
    ],
)
def test_plan(current: LedgerRow | None, event: EventMark, expected: str) -> None:
    assert plan(current, event) == expected


def test_rows_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with TicketLedger(path, owner="w1", clock_ms=lambda: 1000) as ledger:
        assert ledger.claim(KEY, "inc-1") == Claim(recovering=False)
        ledger.record(KEY, "open", REF, mark("opened", 10))
    with TicketLedger(path, owner="w2", clock_ms=lambda: 2000) as ledger:
        assert ledger.get(KEY) == LedgerRow(KEY, "open", REF, mark("opened", 10), "w1", 1000)
        assert ledger.get(LedgerKey("other", "fp-1", "jira")) is None
        assert [r.key for r in ledger.rows()] == [KEY]


def test_a_pending_row_is_reported_as_recovering_to_the_next_claim(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with TicketLedger(path, owner="w1") as ledger:
        ledger.claim(KEY, "inc-1")  # ... and the process dies before record()
    with TicketLedger(path, owner="w1") as ledger:
        current = ledger.get(KEY)
        assert current is not None and current.state == "pending" and current.ref is None
        assert plan(current, mark("opened", 10)) == "recover"
        assert ledger.claim(KEY, "inc-1") == Claim(recovering=True)


def test_a_replica_cannot_take_a_live_pending_claim_but_can_after_the_lease(tmp_path: Path) -> None:
    now = [1_000]
    path = tmp_path / "ledger.sqlite"
    first = TicketLedger(path, owner="w1", lease_ms=60_000, clock_ms=lambda: now[0])
    second = TicketLedger(path, owner="w2", lease_ms=60_000, clock_ms=lambda: now[0])
    first.claim(KEY, "inc-1")
    with pytest.raises(LedgerBusy):
        second.claim(KEY, "inc-1")
    now[0] += 60_000
    assert second.claim(KEY, "inc-1") == Claim(recovering=True)
    row_now = first.get(KEY)
    assert row_now is not None and row_now.owner == "w2"
    first.close()
    second.close()


def test_tombstone_has_no_ref_and_blocks_a_late_opened(tmp_path: Path) -> None:
    with TicketLedger(tmp_path / "l.sqlite", owner="w1") as ledger:
        ledger.record(KEY, "resolved", None, mark("resolved", 50))
        current = ledger.get(KEY)
        assert current == LedgerRow(KEY, "resolved", None, mark("resolved", 50), "w1", current.updated_at_ms)
        assert plan(current, mark("opened", 10)) == "skip"


def test_unknown_state_is_refused(tmp_path: Path) -> None:
    with TicketLedger(tmp_path / "l.sqlite", owner="w1") as ledger, pytest.raises(ValueError):
        ledger.record(KEY, "closed", REF, mark("resolved", 1))


def test_record_of_a_claimed_create_is_fenced_by_the_claim_owner(tmp_path: Path) -> None:
    """A worker whose claim was taken over (its lease ran out mid-create) must not overwrite the row."""
    now = [1_000]
    path = tmp_path / "ledger.sqlite"
    with (
        TicketLedger(path, owner="w1", lease_ms=60_000, clock_ms=lambda: now[0]) as slow,
        TicketLedger(path, owner="w2", lease_ms=60_000, clock_ms=lambda: now[0]) as other,
    ):
        slow.claim(KEY, "inc-1")
        now[0] += 60_000
        assert other.claim(KEY, "inc-1") == Claim(recovering=True)
        with pytest.raises(ClaimLost):
            slow.record(KEY, "open", REF, mark("opened", 10), claimed=True)
        with pytest.raises(ClaimLost):
            slow.renew(KEY)
        other.record(KEY, "open", REF, mark("opened", 10), claimed=True)
        current = slow.get(KEY)
        assert current is not None and (current.state, current.owner) == ("open", "w2")


def test_renew_keeps_a_long_create_from_being_taken_over(tmp_path: Path) -> None:
    now = [1_000]
    path = tmp_path / "ledger.sqlite"
    with (
        TicketLedger(path, owner="w1", lease_ms=60_000, clock_ms=lambda: now[0]) as first,
        TicketLedger(path, owner="w2", lease_ms=60_000, clock_ms=lambda: now[0]) as second,
    ):
        first.claim(KEY, "inc-1")
        now[0] += 50_000
        first.renew(KEY)  # e.g. after a slow find(), before the create
        now[0] += 50_000  # 100 s after the claim, 50 s after the renewal
        with pytest.raises(LedgerBusy):
            second.claim(KEY, "inc-1")
        first.record(KEY, "open", REF, mark("opened", 10), claimed=True)


def test_a_claim_on_an_open_row_is_refused_as_stale(tmp_path: Path) -> None:
    """Two replicas planned "create" on the same key; the second claims after the first recorded."""
    with (
        TicketLedger(tmp_path / "l.sqlite", owner="w1") as first,
        TicketLedger(tmp_path / "l.sqlite", owner="w2") as second,
    ):
        first.claim(KEY, "inc-1")
        first.record(KEY, "open", REF, mark("opened", 10), claimed=True)
        with pytest.raises(LedgerBusy):
            second.claim(KEY, "inc-1")
        current = first.get(KEY)
        assert current is not None and current.ref == REF
