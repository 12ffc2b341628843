"""The ticketing worker end to end with in-memory ticket platforms (fakes of ``TicketClient``), a
fake log reader, the real ledger, the real contract validator and, for Kafka mode, the local broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from connectors.ledger import TicketLedger
from connectors.tickets.base import TicketRef, TicketView
from connectors.tickets.retry import PermanentError, TransientError
from jobs import cli
from jobs.ticketing import DeadLetter, Metrics, TicketingWorker, handle_with_retry, run_kafka
from jobs.ticketing_config import ConfigError, TicketingConfig
from udfs.routing import RoutingConfig

ROUTING = RoutingConfig.parse(
    {
        "default": {"critical": ["pagerduty", "jira"], "high": ["jira"], "medium": ["jira"], "low": []},
        "tenants": {"globex": {"high": ["slack"]}},
        "destinations": {
            "pagerduty": {"type": "pagerduty"},
            "jira": {"type": "jira"},
            "slack": {"type": "slack"},
        },
    }
)


def incident(
    event: str = "opened",
    *,
    tenant: str = "acme",
    fingerprint: str = "fp-pool",
    at: str = "03:47:30",
    severity: str = "critical",
    incident_id: str = "inc-000001",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "schema": "logclaw.incident/v1",
        "incident_id": incident_id,
        "event": event,
        "tenant": tenant,
        "fingerprint": fingerprint,
        "severity": severity,
        "score": 0.91,
        "path": "windowed",
        "opened_at": "2024-05-01T03:47:00.000Z",
        "detected_at": f"2024-05-01T{at}.000Z",
        "service": "payment-api",
        "root_cause": {
            "service": "checkout",
            "confidence": 0.82,
            "chain": ["checkout", "payment-api"],
            "candidates": [{"service": "checkout", "score": 0.82, "reasons": ["started first"]}],
        },
        "affected_services": ["payment-api"],
        "signals": [{"name": "database", "weight": 0.75}],
        "trace_ids": ["t1", "t2", "t3", "t4"],
        "title": "[critical] payment-api",
        **extra,
    }


def line(inc: dict[str, Any]) -> str:
    return json.dumps(inc)


class FakePlatform:
    """An in-memory ticket platform: tickets keyed by the view's dedup key, every call recorded."""

    def __init__(self, name: str, tickets: dict[str, dict[str, Any]] | None = None) -> None:
        self.name = name
        self.tickets = {} if tickets is None else tickets
        self.calls: list[tuple[str, str, str]] = []

    def find(self, view: TicketView) -> TicketRef | None:
        self.calls.append(("find", view.dedup_key, view.event))
        found = self.tickets.get(view.dedup_key)
        return TicketRef(self.name, found["id"]) if found and found["state"] == "open" else None

    def create(self, view: TicketView) -> TicketRef:
        self.calls.append(("create", view.dedup_key, view.event))
        ticket_id = f"{self.name.upper()}-{len(self.tickets) + 1}"
        self.tickets[view.dedup_key] = {"id": ticket_id, "state": "open", "view": view, "comments": 0}
        return TicketRef(self.name, ticket_id)

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef:
        self.calls.append(("update", view.dedup_key, view.event))
        self.tickets[view.dedup_key]["comments"] += 1
        return ref

    def resolve(self, ref: TicketRef, view: TicketView) -> TicketRef:
        self.calls.append(("resolve", view.dedup_key, view.event))
        self.tickets[view.dedup_key]["state"] = "resolved"
        return ref

    def kinds(self) -> list[str]:
        return [kind for kind, _key, _event in self.calls if kind != "find"]


class CrashAfterCreate(FakePlatform):
    """Creates the ticket on the platform, then the process 'dies' before the ledger write."""

    def create(self, view: TicketView) -> TicketRef:
        super().create(view)
        raise KeyboardInterrupt("worker killed between the platform call and the ledger write")


class FakeReader:
    def __init__(self) -> None:
        self.searches: list[tuple[Any, ...]] = []

    def search_logs(
        self,
        tenant: str,
        services: Sequence[str],
        start_ms: int,
        end_ms: int,
        *,
        min_severity_number: int = 0,
        text: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        self.searches.append(("search", tenant, tuple(services), start_ms, end_ms, min_severity_number, limit))
        return [
            {
                "tenant": tenant,
                "service": "checkout",
                "time": "2024-05-01T03:46:58.000Z",
                "time_ms": 1,
                "level": "ERROR",
                "severity_number": 17,
                "body": "pool exhausted password=hunter2",
                "trace_id": "t1",
                "internal": "dropped",
            }
        ]

    def trace_logs(self, tenant: str, trace_ids: Sequence[str], *, limit: int = 100) -> list[dict[str, Any]]:
        self.searches.append(("traces", tenant, tuple(trace_ids), limit))
        return []

    def incident_events(self, tenant: str, incident_id: str) -> list[dict[str, Any]]:
        return []


class Harness:
    def __init__(self, tmp: Path, platforms: dict[str, FakePlatform] | None = None, owner: str = "w1") -> None:
        self.tmp = tmp
        self.platforms = platforms or {n: FakePlatform(n) for n in ("pagerduty", "jira", "slack")}
        self.ledger = TicketLedger(tmp / "ledger.sqlite", owner=owner)
        self.reader = FakeReader()
        self.worker = TicketingWorker(
            ROUTING,
            self.platforms,
            self.ledger,
            DeadLetter(tmp / "dlq.jsonl"),
            reader=self.reader,
            metrics=Metrics(),
        )

    def feed(self, *incidents: dict[str, Any]) -> None:
        for inc in incidents:
            self.worker.handle(line(inc))

    def dead_letters(self) -> list[dict[str, Any]]:
        path = self.tmp / "dlq.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_opened_creates_one_ticket_per_routed_destination_with_bounded_redacted_evidence(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.feed(incident())
    assert (h.platforms["pagerduty"].kinds(), h.platforms["jira"].kinds(), h.platforms["slack"].kinds()) == (
        ["create"],
        ["create"],
        [],
    )
    view = h.platforms["jira"].tickets["logclaw:acme:fp-pool"]["view"]
    assert view.evidence == [
        {
            "service": "checkout",
            "time": "2024-05-01T03:46:58.000Z",
            "time_ms": 1,
            "level": "ERROR",
            "severity_number": 17,
            "body": "pool exhausted password=[REDACTED:secret]",
            "trace_id": "t1",
        }
    ]
    assert view.rca.source == "evidence" and view.rca.root_cause.startswith("checkout is the likely root cause")
    opened_ms = 1714535220000
    assert h.reader.searches == [  # ERROR+ near the onset first, WARN only while there is room, then traces
        ("search", "acme", ("checkout", "payment-api"), opened_ms - 60_000, opened_ms + 120_000, 17, 20),
        ("search", "acme", ("checkout", "payment-api"), opened_ms - 60_000, opened_ms + 120_000, 13, 20),
        ("traces", "acme", ("t1", "t2", "t3"), 30),
    ]
    assert [(r.key.destination, r.state, r.ref.external_id if r.ref else None) for r in h.ledger.rows()] == [
        ("jira", "open", "JIRA-1"),
        ("pagerduty", "open", "PAGERDUTY-1"),
    ]


def test_duplicates_and_a_whole_replay_create_nothing_new(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    events = [incident(), incident("updated", at="03:48:00"), incident("resolved", at="03:55:00")]
    h.feed(*events)
    h.feed(events[0])
    h.feed(*events)
    assert h.platforms["jira"].kinds() == ["create", "update", "resolve"]
    assert h.platforms["pagerduty"].kinds() == ["create", "update", "resolve"]
    assert h.worker.metrics.counts[("jira", "skipped")] == 4


def test_updates_then_resolve_and_late_or_stale_events_are_ignored(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(incident(), incident("updated", at="03:49:00"), incident("updated", at="03:48:00"))  # last is stale
    assert h.platforms["jira"].kinds() == ["create", "update"]
    h.feed(incident("resolved", at="03:55:00"), incident("updated", at="03:56:00"))  # updated after resolved
    assert h.platforms["jira"].kinds() == ["create", "update", "resolve"]
    assert h.platforms["jira"].tickets["logclaw:acme:fp-pool"]["state"] == "resolved"


def test_resolved_before_any_ticket_creates_nothing_and_the_late_opened_neither(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(incident("resolved", at="03:55:00"), incident())
    assert [p.kinds() for p in h.platforms.values()] == [[], [], []]


def test_a_recurrence_after_resolution_gets_a_new_ticket(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(
        incident(),
        incident("resolved", at="03:55:00"),
        incident(incident_id="inc-000002", at="05:00:00", opened_at="2024-05-01T04:59:00.000Z"),
    )
    assert h.platforms["jira"].kinds() == ["create", "resolve", "create"]


def test_crash_between_create_and_ledger_write_leaves_one_ticket_after_restart(tmp_path: Path) -> None:
    shared: dict[str, dict[str, Any]] = {}
    crashing = Harness(
        tmp_path,
        {
            "jira": CrashAfterCreate("jira", shared),
            "pagerduty": FakePlatform("pagerduty"),
            "slack": FakePlatform("slack"),
        },
    )
    with pytest.raises(KeyboardInterrupt):
        crashing.feed(incident(severity="high"))
    crashing.ledger.close()
    restarted = Harness(
        tmp_path,
        {
            "jira": FakePlatform("jira", shared),
            "pagerduty": FakePlatform("pagerduty"),
            "slack": FakePlatform("slack"),
        },
    )
    restarted.feed(incident(severity="high"), incident("updated", severity="high", at="03:50:00"))
    assert len(shared) == 1
    assert restarted.platforms["jira"].calls == [
        ("find", "logclaw:acme:fp-pool", "opened"),
        ("update", "logclaw:acme:fp-pool", "updated"),
    ]
    (row,) = restarted.ledger.rows()
    assert (row.state, row.ref.external_id if row.ref else None) == ("open", "JIRA-1")


def test_same_fingerprint_in_two_tenants_gets_two_tickets(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(incident(severity="medium"), incident(severity="medium", tenant="initech"))
    assert sorted(h.platforms["jira"].tickets) == ["logclaw:acme:fp-pool", "logclaw:initech:fp-pool"]


def test_tenant_routing_override_sends_high_to_slack(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(incident(severity="high", tenant="globex"), incident(severity="low", fingerprint="quiet"))
    assert (h.platforms["slack"].kinds(), h.platforms["jira"].kinds()) == (["create"], [])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not JSON"),
        (
            line({k: v for k, v in incident().items() if k != "tenant"}),
            "contract violation at (root): 'tenant'",
        ),
        (line(incident(severity="urgent")), "contract violation at severity"),
        (line(incident(score=1.7)), "contract violation at score"),
        (line(incident(detected_at="yesterday")), "contract violation at detected_at"),  # date-time format checked
    ],
)
def test_invalid_incident_goes_to_the_dead_letter(tmp_path: Path, raw: str, reason: str) -> None:
    h = Harness(tmp_path)
    h.worker.handle(raw)
    (dead,) = h.dead_letters()
    assert dead["raw"] == raw and dead["reason"].startswith(reason)
    assert [p.calls for p in h.platforms.values()] == [[], [], []]
    assert h.worker.metrics.counts[("(invalid)", "failed")] == 1


class Refusing(FakePlatform):
    def create(self, view: TicketView) -> TicketRef:
        raise PermanentError(400, '{"errors": {"project": "unknown"}}')


class Flaky(FakePlatform):
    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.failures = failures

    def update(self, ref: TicketRef, view: TicketView) -> TicketRef:
        if self.failures:
            self.failures -= 1
            raise TransientError("HTTP 503 after 3 attempts", status=503)
        return super().update(ref, view)


def test_permanent_failure_dead_letters_that_destination_only(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        {"pagerduty": FakePlatform("pagerduty"), "jira": Refusing("jira"), "slack": FakePlatform("slack")},
    )
    h.feed(incident())
    (dead,) = h.dead_letters()
    assert dead["destination"] == "jira" and dead["reason"].startswith("PermanentError: permanent failure (HTTP 400)")
    assert h.platforms["pagerduty"].kinds() == ["create"]
    assert (
        h.worker.metrics.counts[("jira", "failed")],
        h.worker.metrics.counts[("pagerduty", "created")],
    ) == (1, 1)


def test_transient_failure_is_retried_without_repeating_done_destinations(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        {
            "pagerduty": FakePlatform("pagerduty"),
            "jira": Flaky("jira", failures=2),
            "slack": FakePlatform("slack"),
        },
    )
    h.feed(incident())
    assert handle_with_retry(h.worker, line(incident("updated", at="03:50:00")), threading.Event(), backoff_cap_s=0.01)
    assert h.platforms["jira"].kinds() == ["create", "update"]
    assert h.platforms["pagerduty"].kinds() == ["create", "update"]
    assert h.dead_letters() == []


def test_config_fails_at_start_naming_variable_and_flag_and_masks_the_key() -> None:
    with pytest.raises(ConfigError, match=r"LOGCLAW_LLM_TIMEOUT_S / --llm-timeout-s: .*'abc'"):
        TicketingConfig.from_env({"LOGCLAW_LLM_TIMEOUT_S": "abc"})
    with pytest.raises(ConfigError, match=r"LOGCLAW_LLM_MAX_RETRIES / --llm-max-retries"):
        TicketingConfig.from_env({"LOGCLAW_LLM_MAX_RETRIES": "-1"})
    cfg = TicketingConfig.from_env(
        {
            "LOGCLAW_LLM_API_KEY": "sk-verysecret",
            "LOGCLAW_LLM_MODELS": "gpt-4o-mini, ollama/llama3",
            "LOGCLAW_DATA_DIR": "/var/lib/logclaw",
            "LOGCLAW_WORKER_ID": "w9",
        }
    )
    assert "sk-verysecret" not in repr(cfg) and "llm_api_key='***'" in repr(cfg)
    assert cfg == replace(
        TicketingConfig(),
        llm_api_key="sk-verysecret",
        llm_models=("gpt-4o-mini", "ollama/llama3"),
        data_dir="/var/lib/logclaw",
        store_path="/var/lib/logclaw/store.sqlite",
        ledger_path="/var/lib/logclaw/tickets-ledger.sqlite",
        dead_letter_path="/var/lib/logclaw/ticketing-dead-letter.jsonl",
        tickets_dir="/var/lib/logclaw/tickets",
        worker_id="w9",
    )


def test_once_mode_with_the_file_destination_is_idempotent_across_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    incidents = tmp_path / "incidents.jsonl"
    incidents.write_text(
        "\n".join(
            line(i)
            for i in [
                incident(),
                incident("updated", at="03:48:00"),
                incident(fingerprint="fp-disk", severity="high"),
                incident("resolved", at="03:58:00"),
            ]
        )
        + "\n"
    )
    argv = ["ticketing", "--once", str(incidents), "--data-dir", str(tmp_path / "state")]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    tickets = sorted(
        p.relative_to(tmp_path / "state" / "tickets").as_posix() for p in (tmp_path / "state" / "tickets").rglob("*.md")
    )
    assert tickets == ["acme/fp-disk.md", "acme/fp-pool.md"]
    pool = (tmp_path / "state" / "tickets" / "acme" / "fp-pool.md").read_text()
    assert "checkout" in pool
    assert cli.main(argv) == 0
    second = capsys.readouterr().out
    assert [r.split() for r in first.strip().splitlines()[-2:]] == [
        ["destination", "created", "updated", "resolved", "skipped", "failed"],
        ["file", "2", "1", "1", "0", "0"],
    ]
    assert second.strip().splitlines()[-1].split() == ["file", "0", "0", "0", "4", "0"]
    assert sorted(p.name for p in (tmp_path / "state" / "tickets").rglob("*.md")) == [
        "fp-disk.md",
        "fp-pool.md",
    ]


def test_once_mode_exits_1_when_something_failed(tmp_path: Path) -> None:
    incidents = tmp_path / "incidents.jsonl"
    incidents.write_text(line(incident()) + "\n" + "{broken\n")
    assert cli.main(["ticketing", "--once", str(incidents), "--data-dir", str(tmp_path / "s")]) == 1
    dead = [json.loads(x) for x in (tmp_path / "s" / "ticketing-dead-letter.jsonl").read_text().splitlines()]
    assert [d["raw"] for d in dead] == ["{broken\n"]


@pytest.mark.broker
def test_kafka_mode_commits_after_the_ledger_against_local_broker(broker: Any, tmp_path: Path) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = f"incidents-{tmp_path.name}"
    broker.create_topics([topic])
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for inc in (
        incident(severity="high"),
        incident("updated", severity="high", at="03:50:00"),
        incident("resolved", severity="high", at="03:59:00"),
    ):
        producer.produce(topic, line(inc).encode())
    assert producer.flush(10) == 0
    h = Harness(tmp_path)
    cfg = TicketingConfig(bootstrap=broker.bootstrap, topic=topic, group_id=f"g-{tmp_path.name}")
    assert (
        run_kafka(
            h.worker,
            cfg,
            threading.Event(),
            max_messages=3,
            idle_exit_s=30,
            consumer_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        )
        == 3
    )
    assert h.platforms["jira"].kinds() == ["create", "update", "resolve"]
    probe = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": cfg.group_id})
    try:
        (committed,) = probe.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        probe.close()
    assert committed.offset == 3


def test_shutdown_during_transient_retries_leaves_the_message_unfinished(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        {"pagerduty": FakePlatform("pagerduty"), "jira": Flaky("jira", failures=10**6), "slack": FakePlatform("slack")},
    )
    h.feed(incident())
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)  # what the SIGTERM handler does
    timer.start()
    try:
        done = handle_with_retry(h.worker, line(incident("updated", at="03:50:00")), stop, backoff_cap_s=0.05)
    finally:
        timer.cancel()
    assert done is False  # the caller then skips the commit: the message is handled again after restart
    (jira_row,) = [r for r in h.ledger.rows() if r.key.destination == "jira"]
    assert jira_row.mark is not None and jira_row.mark.event == "opened"
    assert h.dead_letters() == []


def test_without_a_store_the_incident_samples_are_the_evidence_and_the_view_is_redacted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.worker.reader = None
    sample = {
        "service": "checkout",
        "time": "2024-05-01T03:46:00.000Z",
        "level": "ERROR",
        "body": "login as ops@example.com with token=abc123xyz failed",
    }
    h.feed(incident(severity="medium", summary="mail ops@example.com", evidence=[sample]))
    view = h.platforms["jira"].tickets["logclaw:acme:fp-pool"]["view"]
    assert view.evidence == [{**sample, "body": "login as [REDACTED:email] with token=[REDACTED:secret] failed"}]
    assert view.incident["summary"] == "mail [REDACTED:email]"
    assert "ops@example.com" not in json.dumps(view.incident)
