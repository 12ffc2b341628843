"""What the two receivers share (OTLP/HTTP in ``handler``, OTLP/gRPC in ``grpc_receiver``): the signals,
who is calling (API key -> tenant), one export (decode within the limits, stamp the tenant, produce and wait
for the broker's acknowledgement), why a request was refused, and the bookkeeping (counters, metrics,
rate-limited refusal warnings). Transport details (status lines, gRPC codes) stay in the receivers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import NamedTuple

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from connectors.ingest.keys import ApiKeys
from connectors.ingest.limits import LOGGER_NAME, REFUSAL_WARNINGS_PER_S, IngestLimits
from connectors.ingest.metrics import IngestMetrics
from connectors.ingest.payload import BadPayload, Ingested, PayloadTooLarge, prepare
from connectors.ingest.producer import LogsProducer, ProduceError
from connectors.ingest.traces import prepare_traces

log = logging.getLogger(LOGGER_NAME)

# The one API-key header, for HTTP and gRPC alike (gRPC metadata keys are lower case); the Collector config
# and the console use it too. ``Authorization: Bearer <key>`` (what OTLP exporters are usually configured
# with) is accepted as well; when both are sent, this header decides.
API_KEY_HEADER = "x-logclaw-api-key"
AUTHORIZATION_HEADER = "authorization"
PROTOBUF, JSON = "application/x-protobuf", "application/json"


class Signal(NamedTuple):
    """One OTLP signal the receivers take: its name (metric label), HTTP path and gRPC method, and noun."""

    name: str
    http_path: str
    grpc_method: str
    noun: str


LOGS = Signal("logs", "/v1/logs", "/opentelemetry.proto.collector.logs.v1.LogsService/Export", "log records")
TRACES = Signal("traces", "/v1/traces", "/opentelemetry.proto.collector.trace.v1.TraceService/Export", "spans")
SIGNALS = (LOGS, TRACES)


class Reason(StrEnum):
    """Why a request was refused: the ``reason`` label of the refusal metric; each receiver maps it to its
    own answer (HTTP status, gRPC code)."""

    BAD_REQUEST = "bad_request"  # cannot be read as the signal's Export request
    UNAUTHENTICATED = "unauthenticated"  # missing or unknown API key
    TOO_LARGE = "too_large"  # over a size or count limit: the client must send smaller batches
    BROKER_UNAVAILABLE = "broker_unavailable"  # the broker did not acknowledge in time: retry later
    SATURATED = "saturated"  # every processing slot is taken: retry later
    TOO_MANY_CONNECTIONS = "too_many_connections"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BODY_TIMEOUT = "body_timeout"
    LENGTH_REQUIRED = "length_required"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    MALFORMED = "malformed"  # not even an HTTP request line and headers


class Refused(Exception):
    """A request refused for ``reason``; ``message`` is said to the client and logged (never a key)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def presented_key(api_key: str | None, authorization: str | None) -> str | None:
    """The API key a request presents: the ``x-logclaw-api-key`` header, else ``Authorization: Bearer``."""
    if api_key is not None and api_key.strip():
        return api_key
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def export_response(signal: Signal, rejected: int, error_message: str, content_type: str = PROTOBUF) -> bytes:
    """An ``Export{Logs,Trace}ServiceResponse``; ``partial_success`` only when something was rejected."""
    if signal is TRACES:
        traces = trace_service_pb2.ExportTraceServiceResponse()
        if rejected or error_message:
            traces.partial_success.rejected_spans = rejected
            traces.partial_success.error_message = error_message
        response = traces
    else:
        logs = logs_service_pb2.ExportLogsServiceResponse()
        if rejected or error_message:
            logs.partial_success.rejected_log_records = rejected
            logs.partial_success.error_message = error_message
        response = logs
    if content_type == JSON:
        return str(json_format.MessageToJson(response, indent=None)).encode()
    return bytes(response.SerializeToString())


class IngestStats:
    """Counters since start (thread-safe): HTTP answers by status, gRPC answers by code name, records
    accepted/rejected, messages sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_status: Counter[int] = Counter()
        self.by_grpc_code: Counter[str] = Counter()
        self.accepted = self.rejected = self.messages = 0

    def add(self, status: int, accepted: int = 0, rejected: int = 0, messages: int = 0) -> None:
        with self._lock:
            self.by_status[int(status)] += 1
            self.accepted += accepted
            self.rejected += rejected
            self.messages += messages

    def add_grpc(self, code: str, accepted: int = 0, rejected: int = 0, messages: int = 0) -> None:
        with self._lock:
            self.by_grpc_code[code] += 1
            self.accepted += accepted
            self.rejected += rejected
            self.messages += messages


class RefusalLog:
    """WARNING lines for refusals, at most ``per_s`` a second; the next line says how many were skipped."""

    def __init__(self, per_s: int = REFUSAL_WARNINGS_PER_S) -> None:
        self.per_s = per_s
        self._lock = threading.Lock()
        self._second, self._used, self._skipped = -1, 0, 0

    def warn(self, message: str, *args: object) -> None:
        with self._lock:
            second = int(time.monotonic())
            if second != self._second:
                self._second, self._used = second, 0
            if self._used >= self.per_s:
                self._skipped += 1
                return
            self._used += 1
            skipped, self._skipped = self._skipped, 0
        if skipped:
            message, args = message + " (%d earlier refusals not logged)", (*args, skipped)
        log.warning(message, *args)


class Intake:
    """The receivers' shared state and the one export path. ``producers`` maps a signal's name to where its
    accepted requests go; a signal without a producer is refused as not found."""

    def __init__(self, *, keys: ApiKeys, producers: Mapping[str, LogsProducer], limits: IngestLimits,
                 retry_after_s: int, clock_ns: Callable[[], int]) -> None:
        self.api_keys = keys
        self.producers = dict(producers)
        self.limits = limits
        self.retry_after_s = retry_after_s
        self.clock_ns = clock_ns
        self.inflight = threading.BoundedSemaphore(limits.max_inflight)
        self.stats = IngestStats()
        self.refusals = RefusalLog()
        self.metrics = IngestMetrics(keys.tenants)

    def tenant_of(self, api_key: str | None, authorization: str | None) -> str | None:
        """The caller's tenant, or None (missing or unknown key)."""
        return self.api_keys.tenant_of(presented_key(api_key, authorization))

    def export(self, signal: Signal, body: bytes, *, tenant: str, fmt: str, received_ns: int) -> Ingested:
        """Decode ``body`` (inflated; ``fmt`` "proto" or "json"), stamp ``tenant``, produce one message and wait
        for its acknowledgement. Raises ``Refused`` (bad payload, over a limit, broker unavailable)."""
        producer = self.producers.get(signal.name)
        if producer is None:
            raise Refused(Reason.NOT_FOUND, f"{signal.name} are not taken by this receiver")
        limits = self.limits
        prepare_signal = prepare_traces if signal is TRACES else prepare
        try:
            ready = prepare_signal(body, tenant=tenant, fmt=fmt, received_unix_nano=received_ns,
                                   max_body_bytes=limits.max_body_bytes, max_records=limits.max_records,
                                   max_message_bytes=limits.max_message_bytes,
                                   max_future_skew_ms=limits.max_future_skew_ms)
        except BadPayload as exc:
            raise Refused(Reason.BAD_REQUEST, str(exc)) from None
        except PayloadTooLarge as exc:
            raise Refused(Reason.TOO_LARGE, str(exc)) from None
        if ready.accepted:
            try:
                producer.send(ready.key or tenant.encode("utf-8"), ready.payload, ready.timestamp_ms)
            except ProduceError as exc:
                log.warning("ingest: not acknowledged (%d %s of tenant %s): %s", ready.accepted, signal.noun, tenant,
                            exc)
                if exc.too_large:
                    raise Refused(Reason.TOO_LARGE, "the broker refuses a message this large; send smaller "
                                  f"batches ({exc})") from None
                kind = "span" if signal is TRACES else "log"
                raise Refused(Reason.BROKER_UNAVAILABLE,
                              f"the {kind} broker did not acknowledge; retry later ({exc})") from None
        self.metrics.exported(signal.name, tenant, ready.accepted, ready.rejected, 1 if ready.accepted else 0)
        return ready

    def refused(self, transport: str, reason: Reason, what: str, peer: str, answer: object, message: str) -> None:
        """Count and log (rate-limited, never a key) a refusal: ``what`` was asked, ``answer`` given."""
        self.metrics.refused(transport, reason.value)
        self.refusals.warn("ingest: refused %s from %s -> %s (%s): %s", what, peer, answer, reason.value, message)
