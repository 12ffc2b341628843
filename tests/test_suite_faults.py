"""Issue 13's standing suite "faults": a TaskManager killed (kill -9) mid-stream under load, with the
ticketing worker consuming the incidents topic into the six platform stand-ins. Counted on the stand-ins:
every incident the engine expects has exactly one ticket on every platform (0 lost, 0 duplicate), resolved
as the engine resolves it, with the engine's number of updates.

The detection job runs on a standalone cluster of two single-slot TaskManagers (as
``tests/test_standalone_cluster.py``), reading three tenants' cascades staggered by a minute (three
incidents), checkpoints every 2 s. The first tenant's incident is open and ticketed on all six platforms;
while the rest of the stream is being produced, one TaskManager is killed right after that incident's next
update is ticketed (checkpoints every 5 s, so most runs kill after an emission the last checkpoint does not
cover); the job restores and re-emits what it emitted since, which the worker must not turn into tickets.
The worker is the real one (``jobs.ticketing.run_kafka``, real clients, real ledger) in a thread.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from connectors.broker import FAST_GROUP_JOIN, LocalBroker, free_port
from connectors.flink_cluster import StandaloneCluster
from connectors.ledger import TicketLedger
from connectors.tickets.factory import build_client
from connectors.tickets.retry import HttpTransport, RetryPolicy
from jobs.cli.stack import job_env, prepare_cluster, submit_detect
from jobs.ticketing import DeadLetter, Metrics, TicketingWorker, run_kafka
from jobs.ticketing_config import TicketingConfig
from tests.standins import StandinServer
from tests.standins.platforms import PLATFORM_SPECS, Ticket
from tests.test_standalone_cluster import (
    OUT_OF_ORDERNESS_MS,
    expected_events,
    produce,
    wait_for_checkpoint,
    wait_for_restore,
)
from udfs.records import LogRecord
from udfs.routing import RoutingConfig
from udfs.scenarios.library import DEFAULT_BASE_MS, build, requests_of

TENANTS = ("acme", "globex", "initech")
STAGGER_MS = 60_000  # each tenant's cascade a minute after the previous one's
KILL_AT_MS = DEFAULT_BASE_MS + 400_000  # 00:06:40: acme's incident is open (00:06:12), the others' not yet

Batches = list[list[LogRecord]]


def streams() -> tuple[Batches, Batches, Batches]:
    """Every tenant's cascade (scale 0.25) and quiet tail, in event-time order: before the kill, after
    it, and the tail that moves event time past every incident's resolution."""
    body: list[list[LogRecord]] = []
    tail: list[list[LogRecord]] = []
    for i, tenant in enumerate(TENANTS):
        cascade = build("cascade", scale=0.25, base_ms=DEFAULT_BASE_MS + i * STAGGER_MS).records
        quiet = build("steady", scale=0.25, base_ms=cascade[-1].time_ms + 1_000).records
        body += requests_of([r._replace(tenant=tenant) for r in cascade], 200)
        tail += requests_of([r._replace(tenant=tenant) for r in quiet], 200)[::10]
    body.sort(key=lambda b: b[0].time_ms)
    tail.sort(key=lambda b: b[0].time_ms)
    before = [b for b in body if b[0].time_ms < KILL_AT_MS]
    return before, body[len(before):], tail


class Platforms:
    """The six stand-ins, a real client for each, and routing that sends every incident to all six."""

    def __init__(self, tmp: Path) -> None:
        self.servers: dict[str, StandinServer] = {s.name: s.standin().__enter__() for s in PLATFORM_SPECS}
        routes = {sev: list(self.servers) for sev in ("critical", "high", "medium", "low")}
        self.routing = RoutingConfig.parse({"default": routes,
                                            "destinations": {n: {"type": n} for n in self.servers}})
        transport = HttpTransport(RetryPolicy(rng=random.Random(7), max_delay_s=1.0, deadline_s=10.0), timeout_s=5)
        self.clients = {s.name: build_client(s.name, s.settings(self.servers[s.name]), transport)
                        for s in PLATFORM_SPECS}
        self.ledger_path, self.dead_letters = tmp / "ledger.sqlite", tmp / "ticketing-dlq.jsonl"

    def tickets(self) -> dict[str, list[Ticket]]:
        return {s.name: s.tickets(self.servers[s.name]) for s in PLATFORM_SPECS}

    def ledger_rows(self) -> list[Any]:
        ledger = TicketLedger(self.ledger_path, owner="reader")
        try:
            return ledger.rows()
        finally:
            ledger.close()

    def close(self) -> None:
        for server in self.servers.values():
            server.__exit__(None, None, None)


class WorkerThread:
    """The ticketing worker (real clients, real ledger) on the incidents topic (``run_kafka``) in a thread
    until ``stop()``; the ledger's SQLite connection is made and closed in that thread."""

    def __init__(self, platforms: Platforms, bootstrap: str, topic: str) -> None:
        self.cfg = TicketingConfig(bootstrap=bootstrap, topic=topic, group_id=f"ticketing-{topic}")
        self.platforms = platforms
        self.stop_event = threading.Event()
        self.handled: list[int] = []
        self.thread = threading.Thread(target=self._run, name="ticketing-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        p = self.platforms
        ledger = TicketLedger(p.ledger_path, owner="worker-0")
        try:
            worker = TicketingWorker(p.routing, p.clients, ledger, DeadLetter(p.dead_letters), metrics=Metrics())
            self.handled.append(run_kafka(worker, self.cfg, self.stop_event, consumer_config=FAST_GROUP_JOIN))
        finally:
            ledger.close()

    def stop(self) -> int:
        self.stop_event.set()
        self.thread.join(30)
        return self.handled[0] if self.handled else -1


def wait_until(done: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.5)


def per_incident(events: Sequence[dict[str, Any]]) -> dict[tuple[str, str], tuple[bool, int]]:
    """(tenant, incident id) -> (resolved, distinct updates) as the engine emits them."""
    out: dict[tuple[str, str], tuple[bool, int]] = {}
    for e in events:
        key = (e["tenant"], e["incident_id"])
        resolved, updates = out.get(key, (False, 0))
        out[key] = (resolved or e["event"] == "resolved", updates + (e["event"] == "updated"))
    return out


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[StandaloneCluster]:
    started = prepare_cluster(tmp_path / "stack", rest_port=free_port(), checkpoint_dir=tmp_path / "checkpoints",
                              extra={"restart-strategy.exponential-delay.initial-backoff": "1 s",
                                     "restart-strategy.exponential-delay.max-backoff": "5 s"})
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def platforms(tmp_path: Path) -> Iterator[Platforms]:
    running = Platforms(tmp_path)
    yield running
    running.close()


@pytest.mark.integration
@pytest.mark.flink
@pytest.mark.broker
@pytest.mark.timeout(420)
def test_taskmanager_killed_mid_stream_loses_and_duplicates_no_ticket_on_any_platform(
    cluster: StandaloneCluster, broker: LocalBroker, platforms: Platforms, tmp_path: Path
) -> None:
    started = time.monotonic()
    run = uuid.uuid4().hex[:8]
    topics = {name: f"faults-{name}-{run}" for name in ("logs", "incidents", "dead")}
    broker.create_topics(topics.values())
    before, after, tail = streams()
    want = per_incident(expected_events([*before, *after, *tail]))
    assert sorted(t for t, _ in want) == sorted(TENANTS) and all(resolved for resolved, _ in want.values())
    first = next(k for k in want if k[0] == TENANTS[0])

    env = job_env(broker.bootstrap, tmp_path / "logclaw.db", LOGCLAW_LOGS_TOPIC=topics["logs"],
                  LOGCLAW_INCIDENTS_TOPIC=topics["incidents"], LOGCLAW_DEAD_LETTER_TOPIC=topics["dead"],
                  LOGCLAW_GROUP_ID=f"detect-{run}", LOGCLAW_CHECKPOINT_INTERVAL_MS="5000",
                  LOGCLAW_OUT_OF_ORDERNESS_MS=str(OUT_OF_ORDERNESS_MS), LOGCLAW_IDLENESS_MS="5000")
    job_id = submit_detect(cluster, env)
    cluster.wait_for_job_state(job_id, "RUNNING", 180, all_running=True)
    worker = WorkerThread(platforms, broker.bootstrap, topics["incidents"])
    try:
        produce(broker.bootstrap, topics["logs"], before)
        # acme's incident is ticketed everywhere before the kill: a replay after the restore must not add one.
        wait_until(lambda: all(len(t) == 1 for t in platforms.tickets().values()), 150, "acme's six tickets")
        completed = wait_for_checkpoint(cluster, job_id, cluster.checkpoint_counts(job_id).get("completed", 0), 60)

        producing = threading.Thread(target=produce, args=(broker.bootstrap, topics["logs"], after))
        producing.start()  # the job is busy with this backlog when one of its TaskManagers dies
        # Right after acme's next update is ticketed: most likely after the last checkpoint, so the job
        # restores from before it and sends it again (the figure below says how many events came twice).
        wait_until(lambda: any(t.updates >= 2 for t in platforms.tickets()["jira"]), 120, "acme's second update")
        tm_pids = cluster.pids("taskexecutor")
        assert len(tm_pids) == 2  # flink-conf: one slot each, parallelism 2
        os.kill(tm_pids[0], signal.SIGKILL)
        killed_at = time.monotonic() - started
        cluster.start_taskmanager()
        cluster.wait_for_taskmanagers(2, 120)
        counts = wait_for_restore(cluster, job_id, 180)
        assert counts["restored"] >= 1 and counts["completed"] >= completed
        producing.join(60)
        produce(broker.bootstrap, topics["logs"], tail)

        def all_resolved() -> bool:
            return all(len(t) >= len(want) and all(x.resolved for x in t) for t in platforms.tickets().values())

        wait_until(all_resolved, 150, f"{len(want)} resolved tickets on each platform")
        time.sleep(3.0)  # a late duplicate (a re-sent event after the restore) would show below
    finally:
        handled = worker.stop()
        cluster.cancel(job_id)

    tickets = platforms.tickets()
    distinct = sum(1 + updates + resolved for resolved, updates in want.values())
    print(f"\nfaults: killed a TaskManager at {killed_at:.0f} s, restored {counts}; worker handled {handled}"
          f" events ({handled - distinct} sent again after the restore, {distinct} distinct); tickets"
          f" {({n: len(t) for n, t in tickets.items()})} for {len(want)} incidents;"
          f" {time.monotonic() - started:.0f} s")
    expected = sorted(want.values())
    assert {name: sorted((t.resolved, t.updates) for t in ts) for name, ts in tickets.items()} == {
        s.name: expected for s in PLATFORM_SPECS}
    assert all(len({t.id for t in ts}) == len(ts) for ts in tickets.values())
    rows = platforms.ledger_rows()
    assert sorted((r.key.destination, r.key.tenant, r.mark.incident_id if r.mark else "", r.state) for r in rows) == \
        sorted((s.name, tenant, incident, "resolved") for s in PLATFORM_SPECS for tenant, incident in want)
    assert first in want and not platforms.dead_letters.exists() and handled >= distinct
