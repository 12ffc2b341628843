"""The durable ticket ledger: which ticket each (tenant, fingerprint, destination) has, in SQLite.

One row per key holds the platform reference (id, url, extra JSON), the state (``pending`` /
``open`` / ``resolved``), the last incident event applied (event, ``detected_at``, incident id) and
``updated_at_ms`` (processing time).

Crash safety: before a platform ``create`` the worker *claims* the key, which writes a ``pending``
row. If the process dies between the platform call and ``record``, the row stays ``pending``; whoever
claims it next is told so (``Claim.recovering``) and must call the client's ``find()`` (platform-side
dedup by fingerprint) before any create, so a crash never leaves two tickets. Claims are taken in
``BEGIN IMMEDIATE`` transactions (one writer at a time across processes), and a pending row held by
another live worker (``lease_ms`` not yet expired) is refused with ``LedgerBusy``, so several worker
replicas never create the same ticket twice.

Claims are fenced: the holder ``renew``s its claim right before each platform create (a slow
``find`` or a retried create never outlives the lease unnoticed), and the outcome is written with
``record(..., claimed=True)``, an ``UPDATE … WHERE state='pending' AND owner=?``; a worker whose
claim was taken over gets ``ClaimLost`` instead of overwriting the new owner's row. The lease must
outlast one create call (the transport's deadline plus one timeout: 60 s + 10 s by default).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.tickets.base import TicketRef

SCHEMA_VERSION = 1
STATES = ("pending", "open", "resolved")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tickets (
    tenant TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'open', 'resolved')),
    external_id TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}',
    incident_id TEXT NOT NULL DEFAULT '',
    last_event TEXT NOT NULL DEFAULT '',
    last_detected_at TEXT NOT NULL DEFAULT '',
    last_event_rank INTEGER NOT NULL DEFAULT -1,
    owner TEXT NOT NULL DEFAULT '',
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, fingerprint, destination)
);
"""


class LedgerBusy(Exception):
    """Another live worker holds the pending claim on this key: retry the message later."""


class ClaimLost(LedgerBusy):
    """This worker's claim on the key was taken over (its lease ran out): retry the message later."""


@dataclass(frozen=True)
class LedgerKey:
    tenant: str
    fingerprint: str
    destination: str


@dataclass(frozen=True)
class EventMark:
    """The incident event last applied to a ticket; marks compare in event order."""

    incident_id: str
    event: str
    detected_at_ms: int
    rank: int  # opened 0 < updated 1 < resolved 2, for events sharing one detected_at

    @property
    def order(self) -> tuple[int, int]:
        return (self.detected_at_ms, self.rank)


@dataclass(frozen=True)
class LedgerRow:
    key: LedgerKey
    state: str
    ref: TicketRef | None  # None while pending, and for a "resolved before any ticket" tombstone
    mark: EventMark | None
    owner: str
    updated_at_ms: int


@dataclass(frozen=True)
class Claim:
    """The result of claiming a key for a create: ``recovering`` means a pending row was found."""

    recovering: bool


class TicketLedger:
    """SQLite-backed ledger; safe to share one file between several worker processes."""

    def __init__(
        self,
        path: str | Path,
        *,
        owner: str,
        lease_ms: int = 120_000,
        busy_timeout_s: float = 30.0,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.owner = owner
        self.lease_ms = lease_ms
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (the case the pending protocol covers); after
        # power loss the last commits may be lost, and find() before every create still prevents a
        # second ticket.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._transaction() as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            found = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if found is None:
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(found[0]) != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: ledger schema {found[0]} != {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def get(self, key: LedgerKey) -> LedgerRow | None:
        row = self._conn.execute(
            "SELECT * FROM tickets WHERE tenant=? AND fingerprint=? AND destination=?",
            (key.tenant, key.fingerprint, key.destination),
        ).fetchone()
        return None if row is None else _row(key, row)

    def claim(self, key: LedgerKey, incident_id: str) -> Claim:
        """Write (or take over) the ``pending`` row before a platform create.

        Raises ``LedgerBusy`` when another worker's pending claim is younger than ``lease_ms``."""
        now = self._clock_ms()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT state, owner, updated_at_ms FROM tickets"
                " WHERE tenant=? AND fingerprint=? AND destination=?",
                (key.tenant, key.fingerprint, key.destination),
            ).fetchone()
            if row is not None and row[0] == "open":  # recorded since the caller planned a create
                raise LedgerBusy(f"{key} already has a ticket; plan again")
            if row is not None and row[0] == "pending":
                _state, owner, since = row
                if owner != self.owner and now - int(since) < self.lease_ms:
                    raise LedgerBusy(f"{key} is being created by {owner}")
                conn.execute(
                    "UPDATE tickets SET owner=?, updated_at_ms=?"
                    " WHERE tenant=? AND fingerprint=? AND destination=?",
                    (self.owner, now, key.tenant, key.fingerprint, key.destination),
                )
                return Claim(recovering=True)
            conn.execute(
                "INSERT OR REPLACE INTO tickets (tenant, fingerprint, destination, state, incident_id,"
                " owner, updated_at_ms) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                (key.tenant, key.fingerprint, key.destination, incident_id, self.owner, now),
            )
            return Claim(recovering=False)

    def renew(self, key: LedgerKey) -> None:
        """Extend this worker's pending claim by a whole lease; ``ClaimLost`` if it is not ours any more."""
        with self._transaction() as conn:
            self._fenced(conn, key, "UPDATE tickets SET updated_at_ms=?", (self._clock_ms(),))

    def _fenced(self, conn: sqlite3.Connection, key: LedgerKey, update: str, values: tuple[Any, ...]) -> None:
        done = conn.execute(
            update + " WHERE tenant=? AND fingerprint=? AND destination=? AND state='pending' AND owner=?",
            (*values, key.tenant, key.fingerprint, key.destination, self.owner),
        ).rowcount
        if done != 1:
            raise ClaimLost(f"{key}: the claim of {self.owner} was taken over")

    def record(self, key: LedgerKey, state: str, ref: TicketRef | None, mark: EventMark, *,
               claimed: bool = False) -> None:
        """Store the outcome of an applied event (after the platform call succeeded). ``claimed``:
        the outcome of a create under this worker's claim, written only while the claim is still ours."""
        if state not in STATES:
            raise ValueError(f"unknown ledger state {state!r}")
        extra = json.dumps(dict(ref.extra) if ref else {}, sort_keys=True)
        if claimed:
            with self._transaction() as conn:
                self._fenced(
                    conn, key,
                    "UPDATE tickets SET state=?, external_id=?, url=?, extra=?, incident_id=?, last_event=?,"
                    " last_detected_at=?, last_event_rank=?, updated_at_ms=?",
                    (state, ref.external_id if ref else "", ref.url if ref else "", extra, mark.incident_id,
                     mark.event, str(mark.detected_at_ms), mark.rank, self._clock_ms()),
                )
            return
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO tickets (tenant, fingerprint, destination, state, external_id,"
                " url, extra, incident_id, last_event, last_detected_at, last_event_rank, owner,"
                " updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.tenant, key.fingerprint, key.destination, state,
                    ref.external_id if ref else "", ref.url if ref else "", extra,
                    mark.incident_id, mark.event, str(mark.detected_at_ms), mark.rank,
                    self.owner, self._clock_ms(),
                ),
            )

    def rows(self, tenant: str | None = None) -> list[LedgerRow]:
        sql, params = "SELECT * FROM tickets", tuple[str, ...]()
        if tenant is not None:
            sql, params = sql + " WHERE tenant=?", (tenant,)
        out = []
        for row in self._conn.execute(sql + " ORDER BY tenant, fingerprint, destination", params):
            out.append(_row(LedgerKey(row[0], row[1], row[2]), row))
        return out

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> TicketLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _row(key: LedgerKey, row: tuple[Any, ...]) -> LedgerRow:
    (_t, _f, destination, state, external_id, url, extra, incident_id, last_event, last_detected_at,
     rank, owner, updated_at_ms) = row
    extras: dict[str, str] = {str(k): str(v) for k, v in json.loads(extra).items()}
    ref = TicketRef(destination, external_id, url, extras) if external_id else None
    mark = (
        EventMark(incident_id, last_event, int(last_detected_at), int(rank)) if last_event else None
    )
    return LedgerRow(key, state, ref, mark, owner, int(updated_at_ms))


def plan(row: LedgerRow | None, mark: EventMark) -> str:
    """What to do with one incident event for one destination, given the ledger row.

    ``create`` (find first, then create), ``recover`` (a pending row: find first; create only if the
    platform has no ticket), ``update``, ``resolve``, ``tombstone`` (``resolved`` before any ticket:
    remember it, create nothing) or ``skip`` (duplicate, out of order, or ``updated`` after
    ``resolved``). A new incident (another ``incident_id``) opened on a resolved key gets a new ticket.
    """
    if row is None:
        return "tombstone" if mark.event == "resolved" else "create"
    if row.state == "pending":
        return "recover"
    if row.mark is not None and mark.order <= row.mark.order:
        return "skip"
    if row.state == "open":
        return "resolve" if mark.event == "resolved" else "update"
    recurrence = mark.event == "opened" and (row.mark is None or row.mark.incident_id != mark.incident_id)
    return "create" if recurrence else "skip"
