"""The receivers' Prometheus metrics (``GET /metrics`` on the HTTP port), in a registry of their own (one
per receiver, so that receivers in one process, as in the tests, count apart), served together with the
process's default registry (``jobs.observability``'s convention: process and GC collectors).

Counters only. Labels are bounded: ``transport`` (http, grpc), ``signal`` (logs, traces), ``reason`` (the
``intake.Reason`` values), and ``tenant`` only where the tenant is known from an accepted key, i.e. one of
the key file's tenants, never a value a client sends.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class IngestMetrics:
    """Counters of one receiver (HTTP and gRPC share them); ``tenants`` are the only tenant label values."""

    def __init__(self, tenants: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tenants = frozenset(tenants)
        registry = self.registry
        self.requests = Counter("logclaw_ingest_requests", "Export requests answered, by transport, signal and "
                                "outcome (ok, partial, refused)", ["transport", "signal", "outcome"], registry=registry)
        self.records = Counter("logclaw_ingest_records", "Log records or spans of accepted requests, by signal, "
                               "tenant and result (accepted, rejected)", ["signal", "tenant", "result"],
                               registry=registry)
        self.messages = Counter("logclaw_ingest_messages", "Messages acknowledged by the broker, by signal",
                                ["signal"], registry=registry)
        self.refusals = Counter("logclaw_ingest_refusals", "Requests or connections refused, by transport and "
                                "reason", ["transport", "reason"], registry=registry)
        self.received_bytes = Counter("logclaw_ingest_received_bytes", "Request bodies read (as sent, before "
                                      "decompression), by transport and signal", ["transport", "signal"],
                                      registry=registry)

    def exported(self, signal: str, tenant: str, accepted: int, rejected: int, messages: int) -> None:
        label = tenant if tenant in self._tenants else "other"
        if accepted:
            self.records.labels(signal, label, "accepted").inc(accepted)
        if rejected:
            self.records.labels(signal, label, "rejected").inc(rejected)
        if messages:
            self.messages.labels(signal).inc(messages)

    def answered(self, transport: str, signal: str, outcome: str) -> None:
        self.requests.labels(transport, signal, outcome).inc()

    def received(self, transport: str, signal: str, n_bytes: int) -> None:
        self.received_bytes.labels(transport, signal).inc(n_bytes)

    def refused(self, transport: str, reason: str) -> None:
        self.refusals.labels(transport, reason).inc()

    def exposition(self) -> bytes:
        """The text exposition format of these counters, then of the process's default registry (process and
        GC collectors, and whatever else the process registered there)."""
        return bytes(generate_latest(self.registry)) + bytes(generate_latest(REGISTRY))
