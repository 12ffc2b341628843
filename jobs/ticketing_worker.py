"""The ticketing worker's per-event logic: one incident event in, one ticket per (tenant, fingerprint,
destination) kept in sync as the incident updates and resolves (``TicketingWorker.handle``). The loops
that feed it and the ``logclaw ticketing`` command are ``jobs.ticketing``.

Per event::

    bytes ─► JSON + contract check ──(invalid)──► dead-letter
          ─► routed destinations (tenant, severity) ─► ledger plan per destination (skip duplicates)
          ─► evidence (bounded, from the log store) ─► RCA (LLM fallback list, else deterministic)
          ─► TicketView ─► per destination: create / update / resolve ─► ledger write

Transient failures raise (``RETRYABLE``) for the caller to retry; permanent ones go to the dead-letter
with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from connectors.ledger import EventMark, LedgerBusy, LedgerKey, TicketLedger, plan
from connectors.llm import LlmFailure, LlmRca, build_messages
from connectors.logstore import EVENT_RANK, LogReader, format_time_ms, parse_time_ms
from connectors.tickets.base import KeyAddressed, Rca, TicketClient, TicketRef, TicketView
from connectors.tickets.retry import PermanentError, TransientError, UnclearError
from jobs.ticketing_config import ConfigError
from udfs.rca import deterministic_rca
from udfs.redact import redact_value
from udfs.routing import RoutingConfig

log = logging.getLogger("logclaw.ticketing")

SCHEMA_RESOURCE = ("connectors.contracts", "incident.schema.json")  # package data, shipped in the wheel
EVIDENCE_BEFORE_MS = 60_000
EVIDENCE_AFTER_MS = 2 * 60_000
EVIDENCE_LOG_LINES = 20
EVIDENCE_TRACES = 3
EVIDENCE_TRACE_LINES = 30
WARN = 13
ERROR = 17
KINDS = ("created", "updated", "resolved", "skipped", "failed")
UNCLEAR_CREATE_ATTEMPTS = 3  # creates per message after unclear failures, each after a find()
RETRYABLE = (TransientError, LedgerBusy, sqlite3.OperationalError)
_EVIDENCE_FIELDS = ("time", "time_ms", "service", "level", "severity_number", "body", "trace_id",
                    "http_status", "exception_type", "exception_message")


def load_validator(path: Path | None = None) -> jsonschema.protocols.Validator:
    """A validator of the incident contract (JSON Schema 2020-12, formats checked where possible):
    the packaged copy, or ``path``."""
    package, name = SCHEMA_RESOURCE
    text = path.read_text(encoding="utf-8") if path else resources.files(package).joinpath(name).read_text("utf-8")
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# Prometheus (``--metrics-port``): process-wide, as Prometheus scrapes a process.
TICKETS = PromCounter("logclaw_ticketing_tickets", "ticket outcomes per destination and its platform "
                      "(created, updated, resolved, skipped as duplicate, failed to the dead-letter)",
                      ["destination", "platform", "outcome"])
RETRIES = PromCounter("logclaw_ticketing_retries", "message retries after a transient failure, by the "
                      "destination that failed (platform 429/5xx/timeouts; empty: ledger busy, evidence read)",
                      ["destination", "platform"])
QUEUE_LAG = Gauge("logclaw_ticketing_queue_lag_messages", "incident events behind the newest on the "
                  "incidents topic, per partition (the consumer's cached high watermark)", ["partition"])
EVENT_AGE = Gauge("logclaw_ticketing_event_age_seconds", "wall clock at handling minus the incident "
                  "event's detected_at (event time), of the last event handled")


class Metrics:
    """Ticket counters per destination; logged every ``interval_s`` (processing time) and exported to
    Prometheus with the destination's platform (``platforms``: destination -> type)."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 platforms: Mapping[str, str] | None = None) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.interval_s, self._clock = interval_s, clock
        self._last_log = clock()
        self.platforms = dict(platforms or {})
        self._retry_counted = False

    def add(self, destination: str, kind: str) -> None:
        self.counts[(destination, kind)] += 1
        TICKETS.labels(destination, self.platforms.get(destination, ""), kind).inc()

    def retrying(self, destination: str = "") -> None:
        """One retry of the message because of ``destination`` ("" when no destination failed)."""
        if destination:
            self._retry_counted = True
        elif self._retry_counted:  # already counted under the destination that failed
            self._retry_counted = False
            return
        RETRIES.labels(destination, self.platforms.get(destination, "")).inc()

    def failed(self) -> int:
        return sum(n for (_d, kind), n in self.counts.items() if kind == "failed")

    def table(self) -> str:
        names = sorted({d for d, _k in self.counts})
        rows = [f"{'destination':<16}" + "".join(f"{k:>10}" for k in KINDS)]
        rows += [f"{d:<16}" + "".join(f"{self.counts[(d, k)]:>10}" for k in KINDS) for d in names]
        return "\n".join(rows)

    def maybe_log(self) -> None:
        if self._clock() - self._last_log >= self.interval_s:
            self._last_log = self._clock()
            log.info("tickets_* counters\n%s", self.table())


class DeadLetter:
    """Append-only JSONL file (fsynced), plus a Kafka topic when a producer is given."""

    def __init__(self, path: str | Path, producer: Any = None, topic: str = "") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.producer, self.topic = producer, topic

    def put(self, raw: str, reason: str, destination: str = "") -> None:
        record = {"reason": reason, "destination": destination, "raw": raw, "at_ms": int(time.time() * 1000)}
        line = json.dumps(record, ensure_ascii=False)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
        if self.producer is not None and self.topic:
            self.producer.produce(self.topic, line.encode("utf-8"))
            self.producer.flush(10)
        log.warning("dead-letter%s: %s", f" ({destination})" if destination else "", reason)


@dataclass(frozen=True)
class Event:
    """A validated incident event and its place in the incident's event order."""

    raw: str
    incident: Mapping[str, Any]
    mark: EventMark

    @property
    def tenant(self) -> str:
        return str(self.incident["tenant"])

    @property
    def fingerprint(self) -> str:
        return str(self.incident["fingerprint"])


class TicketingWorker:
    """Turns one incident event into ticket calls; ``handle`` raises ``RETRYABLE`` errors so the
    caller can retry the whole message (every step is idempotent through the ledger)."""

    def __init__(
        self,
        routing: RoutingConfig,
        clients: Mapping[str, TicketClient],
        ledger: TicketLedger,
        dead_letter: DeadLetter,
        *,
        reader: LogReader | None = None,
        llm: LlmRca | None = None,
        metrics: Metrics | None = None,
        dashboards_url: str = "",
        validator: jsonschema.protocols.Validator | None = None,
    ) -> None:
        missing = sorted(set(routing.used_destinations()) - set(clients))
        if missing:
            raise ConfigError(f"routing names destinations without a client: {missing}")
        self.routing, self.clients, self.ledger = routing, clients, ledger
        self.dead_letter, self.reader, self.llm = dead_letter, reader, llm
        self.metrics = metrics or Metrics()
        self.dashboards_url = dashboards_url.rstrip("/")
        self.validator = validator or load_validator()

    def parse(self, raw: bytes | str) -> Event | str:
        """The validated event, or the reason it is invalid."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            incident = json.loads(text)
        except ValueError as exc:
            return f"not JSON: {exc}"
        errors = sorted(self.validator.iter_errors(incident), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
            return f"contract violation at {where}: {errors[0].message[:300]}"
        try:
            detected_ms = parse_time_ms(incident["detected_at"])
            parse_time_ms(incident["opened_at"])
        except ValueError as exc:
            return f"bad timestamp: {exc}"
        kind = incident["event"]
        EVENT_AGE.set(max(0.0, time.time() - detected_ms / 1000))
        return Event(text, incident, EventMark(incident["incident_id"], kind, detected_ms, EVENT_RANK[kind]))

    def handle(self, raw: bytes | str) -> None:
        """Process one message end to end (dead-letters what cannot ever succeed)."""
        event = self.parse(raw)
        if isinstance(event, str):
            self.metrics.add("(invalid)", "failed")
            self.dead_letter.put(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"), event)
            return
        names = self.routing.destinations_for(event.tenant, str(event.incident["severity"]))
        plans = {}
        for name in names:
            key = LedgerKey(event.tenant, event.fingerprint, name)
            plans[name] = (key, plan(self.ledger.get(key), event.mark))
        view: TicketView | None = None
        for name, (key, action) in plans.items():
            if action == "skip":
                self.metrics.add(name, "skipped")
                continue
            if view is None and action != "tombstone":
                view = self.view(event)
            try:
                kind = self._apply(self.clients[name], key, action, event, view)
            except RETRYABLE:
                self.metrics.retrying(name)
                raise
            except PermanentError as exc:
                self.metrics.add(name, "failed")
                self.dead_letter.put(event.raw, f"{type(exc).__name__}: {exc}", name)
                continue
            self.metrics.add(name, kind)
            log.info("%s: %s ticket for %s/%s (incident %s, %s %s)", name, kind, event.tenant, event.fingerprint,
                     event.incident.get("incident_id"), event.incident.get("event"), event.incident.get("severity"))

    def _apply(self, client: TicketClient, key: LedgerKey, action: str, event: Event,
               view: TicketView | None) -> str:
        mark = event.mark
        if action == "tombstone" or view is None:
            self.ledger.record(key, "resolved", None, mark)
            return "skipped"
        if action in ("update", "resolve"):
            row = self.ledger.get(key)
            assert row is not None and row.ref is not None
            return self._change(client, key, row.ref, action, view, mark)
        claim = self.ledger.claim(key, mark.incident_id)  # pending row first: a crash now leads to find()
        found = client.find(view)
        if found is not None:
            if mark.event == "opened":
                self.ledger.record(key, "open", found, mark, claimed=True)
                return "skipped"
            return self._change(client, key, found, "resolve" if mark.event == "resolved" else "update",
                                view, mark, claimed=True)
        if mark.event == "resolved":
            if claim.recovering and isinstance(client, KeyAddressed):  # a create may have reached it
                return self._change(client, key, client.ref_for(view), "resolve", view, mark, claimed=True)
            self.ledger.record(key, "resolved", None, mark, claimed=True)
            return "skipped"
        self.ledger.record(key, "open", self._create(client, key, view), mark, claimed=True)
        return "created"

    def _create(self, client: TicketClient, key: LedgerKey, view: TicketView) -> TicketRef:
        """Create the ticket under a freshly renewed claim. After an unclear failure (the platform may
        have created it: a 5xx or a timeout once sent) look it up before sending the create again."""
        for attempt in range(1, UNCLEAR_CREATE_ATTEMPTS + 1):
            self.ledger.renew(key)  # fence: ClaimLost if another worker took the key over meanwhile
            try:
                return client.create(view)
            except UnclearError as exc:
                log.warning("%s: create unclear (%s); looking it up before trying again", client.name, exc)
                if attempt == UNCLEAR_CREATE_ATTEMPTS:
                    raise  # transient: the message is retried, and the pending row leads to find() first
                found = client.find(view)
                if found is not None:
                    return found
        raise AssertionError("unreachable")

    def _change(self, client: TicketClient, key: LedgerKey, ref: TicketRef, action: str,
                view: TicketView, mark: EventMark, *, claimed: bool = False) -> str:
        if action == "resolve":
            self.ledger.record(key, "resolved", client.resolve(ref, view), mark, claimed=claimed)
            return "resolved"
        self.ledger.record(key, "open", client.update(ref, view), mark, claimed=claimed)
        return "updated"

    def evidence(self, incident: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Bounded evidence, most telling first: the failure lines the detector kept, then ERROR+ and
        (if room) WARN lines of the root-cause and affected services in [opened_at - 1 min,
        opened_at + 2 min] (event time) from the store, then the logs of up to 3 traces."""
        docs: list[Mapping[str, Any]] = [d for d in incident.get("evidence") or () if isinstance(d, Mapping)]
        if self.reader is not None:
            opened_ms = parse_time_ms(incident["opened_at"])
            root = str((incident.get("root_cause") or {}).get("service") or incident["service"])
            services = list(dict.fromkeys([root, str(incident["service"]), *incident["affected_services"]]))
            window = (opened_ms - EVIDENCE_BEFORE_MS, opened_ms + EVIDENCE_AFTER_MS)
            for floor in (ERROR, WARN):
                if len(docs) >= EVIDENCE_LOG_LINES:
                    break
                docs += self.reader.search_logs(incident["tenant"], services, *window,
                                                min_severity_number=floor, limit=EVIDENCE_LOG_LINES)
            trace_ids = list(incident.get("trace_ids") or ())[:EVIDENCE_TRACES]
            if trace_ids:
                docs += self.reader.trace_logs(incident["tenant"], trace_ids, limit=EVIDENCE_TRACE_LINES)
        seen: set[tuple[str, str, str]] = set()
        unique: list[Mapping[str, Any]] = []
        for d in docs:
            key = (str(d.get("time")), str(d.get("service")), str(d.get("body")))
            if key not in seen:
                seen.add(key)
                unique.append(d)
        bounded = unique[: EVIDENCE_LOG_LINES + EVIDENCE_TRACE_LINES]
        return [redact_value({k: d[k] for k in _EVIDENCE_FIELDS if k in d}) for d in bounded]

    def rca(self, incident: Mapping[str, Any], evidence: Sequence[Mapping[str, Any]]) -> Rca:
        """The LLM's RCA when models are configured (not for ``resolved``), else evidence-based."""
        if self.llm is not None and incident["event"] != "resolved":
            answer = self.llm.analyze(build_messages(incident, evidence))
            if not isinstance(answer, LlmFailure):
                return answer
            log.warning("every LLM failed (%s); writing the evidence-based RCA", "; ".join(answer.attempts))
        draft = deterministic_rca(incident)
        return Rca(draft.root_cause, draft.impact, draft.affected_services, draft.suggested_fix,
                   draft.confidence, source="evidence")

    def view(self, event: Event) -> TicketView:
        """The ticket content; everything from logs in it (incident fields, evidence) is redacted."""
        incident = event.incident
        evidence = self.evidence(incident)
        return TicketView(
            tenant=event.tenant, fingerprint=event.fingerprint, incident_id=str(incident["incident_id"]),
            event=event.mark.event, severity=str(incident["severity"]), score=float(incident["score"]),
            title=str(redact_value(incident["title"])), incident=redact_value(incident),
            rca=self.rca(incident, evidence),
            evidence=evidence, link=self.link(incident),
            labels=("logclaw", f"severity-{incident['severity']}"),
        )

    def link(self, incident: Mapping[str, Any]) -> str:
        """An OpenSearch Dashboards Discover link to the incident's logs, or "" when not configured."""
        if not self.dashboards_url:
            return ""
        opened_ms = parse_time_ms(incident["opened_at"])
        start, end = opened_ms - EVIDENCE_BEFORE_MS, opened_ms + EVIDENCE_AFTER_MS
        services = " or ".join(f'"{s}"' for s in [incident["service"], *incident["affected_services"]])
        query = f'tenant:"{incident["tenant"]}" and service:({services})'
        window = f"time:(from:'{format_time_ms(start)}',to:'{format_time_ms(end)}')"
        return (f"{self.dashboards_url}/app/discover#/?_g=({window})"
                f"&_a=(query:(language:kuery,query:'{quote(query, safe='')}'))")
