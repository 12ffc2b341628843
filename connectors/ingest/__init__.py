"""The OTLP/HTTP logs receiver: ``POST /v1/logs`` -> one message on the logs topic per accepted request.

The edge of the product for apps that speak OTLP/HTTP (the OpenTelemetry SDKs' ``OTLPLogExporter``,
a Collector's ``otlphttp`` exporter). Per the OTLP spec (opentelemetry-proto ``docs/specification.md``,
"OTLP/HTTP"):

- binary protobuf (``application/x-protobuf``) and JSON Protobuf encoding (``application/json``) on the
  same port, optionally ``Content-Encoding: gzip`` (or ``deflate``); the response uses the request's
  content type;
- 200 with an ``ExportLogsServiceResponse``: empty on full success, ``partial_success`` with
  ``rejected_log_records`` and an ``error_message`` when some records could not be decoded or are dated
  more than the maximum future skew after the request's receive time;
- failures carry a ``google.rpc.Status``: 400 bad payload or ambiguous framing, 401 missing/unknown API
  key, 404/405 wrong path/method, 408 body not received in time, 411 no Content-Length, 413 over a limit
  (body, decompressed body, records per request, re-encoded size), 415 unknown content type or encoding,
  503 with ``Retry-After`` when the broker did not acknowledge or the receiver is saturated (the client
  retries; nothing is dropped silently). ``GET /healthz`` answers 200 without a key (probes).

Tenants never mix: the ``x-logclaw-api-key`` header names the tenant, and ``tenant.id`` on every
resource is set to it, whatever the client sent. The request is decoded with the job's codec (records
it cannot decode are the rejected ones), re-encoded as protobuf and produced as ONE message to the
logs topic (key = tenant, timestamp = the receive time in ms: the wall clock when the request arrived,
never a record's event time, which one tenant's clock could push ahead); the answer waits for the
broker's acknowledgement (at-least-once: a client retry after a lost answer can duplicate a message).

Nobody without a key costs more than reading headers: path, framing, key, size and type are checked on
the headers alone, and a refused request is answered and its connection closed without reading its body.
Every connection has total deadlines (idle, headers, body at a minimum rate), connections are capped, and
a processing slot is taken only by a keyed request whose body is about to be read. Refusals are logged
at WARNING (reason and peer, never the key), at most ``REFUSAL_WARNINGS_PER_S`` a second.

Modules, along the request: ``limits`` (every limit and the principle behind it), ``keys`` (API keys ->
tenant), ``handler`` (one request: headers, body, answer), ``payload`` (inflate, count, decode, stamp the
tenant, re-encode), ``producer`` (the logs topic), ``server`` (connections, slots, counters).
"""

from __future__ import annotations

from connectors.ingest.handler import HEALTH_PATH, LOGS_PATH, METRICS_PATH, TRACES_PATH, export_response, status_body
from connectors.ingest.intake import (
    API_KEY_HEADER,
    JSON,
    LOGS,
    PROTOBUF,
    SIGNALS,
    TRACES,
    IngestStats,
    Intake,
    Reason,
    RefusalLog,
    Refused,
    Signal,
    presented_key,
)
from connectors.ingest.keys import ApiKeys, check_api_keys, load_api_keys, tenant_problem
from connectors.ingest.limits import (
    BODY_GRACE_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_FUTURE_SKEW_MS,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_RECORDS,
    HEAD_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    KAFKA_RECORD_OVERHEAD_BYTES,
    MAX_TENANT_CHARS,
    MESSAGE_HEADROOM_BYTES,
    MIN_API_KEY_CHARS,
    MIN_UPLOAD_BYTES_PER_S,
    IngestLimits,
    default_max_message_bytes,
)
from connectors.ingest.payload import (
    BadPayload,
    Ingested,
    PayloadTooLarge,
    count_records,
    inflate,
    prepare,
    rejection_message,
    with_tenant,
)
from connectors.ingest.producer import KafkaLogsProducer, LogsProducer, ProduceError
from connectors.ingest.server import ConnectionTable, IngestServer
from connectors.ingest.traces import prepare_traces

__all__ = [
    "API_KEY_HEADER",
    "BODY_GRACE_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_FUTURE_SKEW_MS",
    "DEFAULT_MAX_INFLIGHT",
    "DEFAULT_MAX_RECORDS",
    "HEAD_TIMEOUT_S",
    "HEALTH_PATH",
    "IDLE_TIMEOUT_S",
    "JSON",
    "KAFKA_RECORD_OVERHEAD_BYTES",
    "LOGS",
    "LOGS_PATH",
    "MAX_TENANT_CHARS",
    "MESSAGE_HEADROOM_BYTES",
    "METRICS_PATH",
    "MIN_API_KEY_CHARS",
    "MIN_UPLOAD_BYTES_PER_S",
    "PROTOBUF",
    "SIGNALS",
    "TRACES",
    "TRACES_PATH",
    "ApiKeys",
    "BadPayload",
    "ConnectionTable",
    "IngestLimits",
    "IngestServer",
    "IngestStats",
    "Ingested",
    "Intake",
    "KafkaLogsProducer",
    "LogsProducer",
    "PayloadTooLarge",
    "ProduceError",
    "Reason",
    "RefusalLog",
    "Refused",
    "Signal",
    "check_api_keys",
    "count_records",
    "default_max_message_bytes",
    "export_response",
    "inflate",
    "load_api_keys",
    "prepare",
    "prepare_traces",
    "presented_key",
    "rejection_message",
    "status_body",
    "tenant_problem",
    "with_tenant",
]
