"""``logclaw ingest``: an OTLP receiver in front of the logs and spans topics, like a Collector's: OTLP/HTTP
(``POST /v1/logs``, ``POST /v1/traces``, ``GET /healthz``, ``GET /metrics``) on ``--port`` (4318) and OTLP/gRPC
(``LogsService/Export``, ``TraceService/Export``) on ``--grpc-port`` (4317).

Point an OpenTelemetry SDK or Collector at it with the header (gRPC: metadata) ``x-logclaw-api-key: KEY`` or
``Authorization: Bearer KEY``; ``--keys`` is a JSON or YAML file ``{api_key: tenant}``, kept in memory only as
SHA-256 digests. Refused requests are logged at WARNING on stderr (reason and peer, never the key).

Every limit a user would tune is a flag; the future skew and the message size limit are the job's settings
(``LOGCLAW_MAX_FUTURE_SKEW_MS``, ``LOGCLAW_MAX_MESSAGE_BYTES``, same defaults and ranges), the flag winning
over the variable. A bad value stops the command at start-up with one line
naming the flag or variable (exit 2). Runs until Ctrl-C or SIGTERM, then stops accepting and flushes the
producer (a request cut off by the exit gets no answer, so its client retries it: at-least-once).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from connectors.ingest import ApiKeys, IngestLimits, IngestServer, KafkaLogsProducer
from connectors.ingest.grpc_receiver import GrpcReceiver
from connectors.ingest.limits import (
    BODY_GRACE_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_RECORDS,
    HEAD_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    KAFKA_RECORD_OVERHEAD_BYTES,
    MAX_FUTURE_SKEW_MS,
    MIN_FUTURE_SKEW_MS,
    MIN_UPLOAD_BYTES_PER_S,
    default_max_message_bytes,
)
from jobs.config import ConfigError, JobConfig
from jobs.observability import add_logging_arguments, configure_logging

SETTINGS = ("LOGCLAW_MAX_FUTURE_SKEW_MS", "LOGCLAW_MAX_MESSAGE_BYTES")  # shared with the job (jobs.config)
MIN_BODY_BYTES = 1024


class BadFlag(ValueError):
    """A flag's value is not valid; the message names the flag and says why, in one line."""


@dataclass(frozen=True)
class Settings:
    """What the command runs with, every value checked."""

    limits: IngestLimits
    max_message_bytes: int  # the producer's message.max.bytes: the one message size limit
    port: int
    grpc_port: int
    ack_timeout_s: float
    kafka_config: Mapping[str, Any]  # confluent-kafka: bootstrap servers, SASL/TLS (jobs.settings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", type=Path, required=True, help="JSON or YAML file {api_key: tenant}")
    net = parser.add_argument_group("listening and Kafka")
    net.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s; 0.0.0.0 for all)")
    net.add_argument("--port", metavar="PORT", help="OTLP/HTTP listen port (default: 4318; 0: any free port)")
    net.add_argument("--grpc-port", metavar="PORT", help="OTLP/gRPC listen port (default: 4317; 0: any free port)")
    net.add_argument("--bootstrap", help="Kafka bootstrap servers (LOGCLAW_KAFKA_BOOTSTRAP_SERVERS, else "
                     "127.0.0.1:9092; SASL/TLS: LOGCLAW_KAFKA_*)")
    net.add_argument("--topic", default="otlp_logs", help="logs topic (default: %(default)s)")
    net.add_argument("--spans-topic", default="otlp_spans", help="spans topic (default: %(default)s)")
    net.add_argument("--ack-timeout-s", metavar="S",
                     help="seconds a request waits for the broker's ack before answering 503 (default: 10)")
    lim = parser.add_argument_group("limits per request and connection (a bad value stops the command at start-up)")
    lim.add_argument("--max-body-bytes", metavar="N", help="request body limit, compressed and decompressed; "
                     f"413 above it (default: {DEFAULT_MAX_BODY_BYTES})")
    lim.add_argument("--max-records", metavar="N", help="log records per request, counted before decoding; 413 "
                     f"above it (default: {DEFAULT_MAX_RECORDS})")
    lim.add_argument("--max-connections", metavar="N", help="open connections; at the cap an idle one is evicted, "
                     f"else 503 (default: {DEFAULT_MAX_CONNECTIONS})")
    lim.add_argument("--max-inflight", metavar="N", help="requests read, decoded or produced at once; 503 above it "
                     f"(default: {DEFAULT_MAX_INFLIGHT})")
    lim.add_argument("--idle-timeout-s", metavar="S", help="seconds a kept-alive connection may wait for its next "
                     f"request (default: {IDLE_TIMEOUT_S:g})")
    lim.add_argument("--header-timeout-s", metavar="S", help="seconds for a request's line and headers, in total; "
                     f"then the connection is closed (default: {HEAD_TIMEOUT_S:g})")
    lim.add_argument("--body-timeout-s", metavar="S", help="seconds a body may take beyond its length at the "
                     f"minimum upload rate; 408 after (default: {BODY_GRACE_S:g})")
    lim.add_argument("--min-upload-bytes-per-s", metavar="N",
                     help=f"the slowest upload rate accepted for a body (default: {MIN_UPLOAD_BYTES_PER_S})")
    lim.add_argument("--max-future-skew-ms", metavar="MS", help="records dated further than this after the "
                     "receive time are rejected (partial success), as the job does (default: "
                     f"LOGCLAW_MAX_FUTURE_SKEW_MS, else {JobConfig().max_future_skew_ms}; "
                     f"{MIN_FUTURE_SKEW_MS}..{MAX_FUTURE_SKEW_MS})")
    add_logging_arguments(parser)  # refusals are logged at WARNING (reason and peer, never the key)
    parser.epilog = ("The message size limit is LOGCLAW_MAX_MESSAGE_BYTES (default: "
                     f"{JobConfig().max_message_bytes}), as for the topics and the job.")


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_of(args, os.environ)
    except (BadFlag, ConfigError) as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    try:
        keys = ApiKeys.from_file(args.keys)  # digests only: no key stays in memory as text
    except (OSError, ValueError) as exc:
        print(f"ingest: --keys: {exc}", file=sys.stderr)
        return 2
    print(f"ingest: {_count(len(keys), 'api key')} of {_count(len(keys.tenants), 'tenant')} loaded from {args.keys}",
          flush=True)
    configure_logging(args.log_format, args.log_level)
    bootstrap = settings.kafka_config["bootstrap.servers"]
    producer = KafkaLogsProducer(bootstrap, args.topic, timeout_s=settings.ack_timeout_s,
                                 max_message_bytes=settings.max_message_bytes, client_config=settings.kafka_config)
    try:
        server = IngestServer((args.host, settings.port), keys=keys, producer=producer, limits=settings.limits,
                              spans_producer=producer.for_topic(args.spans_topic))
    except OSError as exc:
        producer.close()
        print(f"ingest: cannot listen on {args.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    try:
        receiver = GrpcReceiver(server.intake, args.host, settings.grpc_port)
    except OSError as exc:
        server.server_close()
        producer.close()
        print(f"ingest: cannot listen on {args.host}:{settings.grpc_port} (gRPC): {exc}", file=sys.stderr)
        return 1
    limits = settings.limits
    print(f"ingest: listening on {server.url} (topic {args.topic} at {bootstrap}; per request at most "
          f"{limits.max_body_bytes} bytes and {limits.max_records} records, future skew {limits.max_future_skew_ms}"
          f" ms; {limits.max_connections} connections)", flush=True)
    receiver.start()
    print(f"ingest: OTLP/gRPC listening on {receiver.address}; OTLP/HTTP traces on /v1/traces (topic "
          f"{args.spans_topic}); GET /healthz, GET /metrics", flush=True)
    try:
        serve_until_signalled(server)
    finally:
        receiver.stop()
        producer.close()
    stats = server.stats
    grpc_codes = f"; gRPC {dict(sorted(stats.by_grpc_code.items()))}" if stats.by_grpc_code else ""
    print(f"ingest: stopped; {stats.messages} messages, {stats.accepted} records accepted, "
          f"{stats.rejected} rejected; responses {dict(sorted(stats.by_status.items()))}{grpc_codes}", flush=True)
    return 0


def serve_until_signalled(server: IngestServer) -> None:
    """Serve until SIGINT or SIGTERM, then stop accepting and close the listening socket."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="ingest-http")
    serving.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()  # stops the accept loop
        serving.join(10)
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def settings_of(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The flags and the job's settings, checked; raises ``BadFlag`` or ``ConfigError`` naming the culprit."""
    job = JobConfig.from_env({name: environ[name] for name in SETTINGS if name in environ})
    body_cap = job.max_message_bytes - KAFKA_RECORD_OVERHEAD_BYTES
    max_body = _int(args, "--max-body-bytes", DEFAULT_MAX_BODY_BYTES, MIN_BODY_BYTES, body_cap, maximum_text=(
        f"{body_cap} (the message size limit LOGCLAW_MAX_MESSAGE_BYTES less {KAFKA_RECORD_OVERHEAD_BYTES} bytes)"))
    connections = _int(args, "--max-connections", DEFAULT_MAX_CONNECTIONS, 1)
    inflight = _int(args, "--max-inflight", DEFAULT_MAX_INFLIGHT, 1, connections,
                    maximum_text=f"--max-connections ({connections})")
    skew = _int(args, "--max-future-skew-ms", job.max_future_skew_ms, MIN_FUTURE_SKEW_MS, MAX_FUTURE_SKEW_MS,
                as_range=True)
    limits = IngestLimits(
        max_body_bytes=max_body, max_message_bytes=default_max_message_bytes(max_body, job.max_message_bytes),
        max_records=_int(args, "--max-records", DEFAULT_MAX_RECORDS, 1), max_connections=connections,
        max_inflight=inflight, idle_timeout_s=_seconds(args, "--idle-timeout-s", IDLE_TIMEOUT_S),
        head_timeout_s=_seconds(args, "--header-timeout-s", HEAD_TIMEOUT_S),
        body_grace_s=_seconds(args, "--body-timeout-s", BODY_GRACE_S),
        min_upload_bytes_per_s=_int(args, "--min-upload-bytes-per-s", MIN_UPLOAD_BYTES_PER_S, 1),
        max_future_skew_ms=skew)
    from jobs.settings import KafkaSettings

    kafka = KafkaSettings.load(environ, {"bootstrap_servers": args.bootstrap})
    return Settings(limits=limits, max_message_bytes=job.max_message_bytes, port=_int(args, "--port", 4318, 0, 65535),
                    grpc_port=_int(args, "--grpc-port", 4317, 0, 65535),
                    ack_timeout_s=_seconds(args, "--ack-timeout-s", 10.0), kafka_config=kafka.client_config())


def _raw(args: argparse.Namespace, flag: str) -> str | None:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    return None if value is None else str(value)


def _int(args: argparse.Namespace, flag: str, default: int, minimum: int, maximum: int | None = None, *,
         maximum_text: str = "", as_range: bool = False) -> int:
    """The integer value of ``flag`` (``default`` when absent) within minimum..maximum, else ``BadFlag``
    (saying ``maximum_text`` for the maximum, or the whole range when ``as_range``)."""
    raw = _raw(args, flag)
    if raw is None:
        return default
    try:
        value = int(raw)  # also refuses more than 4300 digits
    except ValueError:
        value = None
    if value is None or not raw.isascii() or "_" in raw:  # int() takes "1_000" and non-ASCII digits
        raise BadFlag(f"{flag} {raw!r}: expected an integer")
    if as_range and not minimum <= value <= (maximum if maximum is not None else value):
        raise BadFlag(f"{flag} {raw}: must be {minimum}..{maximum}")
    if value < minimum:
        raise BadFlag(f"{flag} {raw}: must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise BadFlag(f"{flag} {raw}: must be <= {maximum_text or maximum}")
    return value


def _seconds(args: argparse.Namespace, flag: str, default: float) -> float:
    """The positive, finite number of seconds of ``flag`` (``default`` when absent), else ``BadFlag``."""
    raw = _raw(args, flag)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadFlag(f"{flag} {raw!r}: expected a finite number of seconds")
    if value <= 0:
        raise BadFlag(f"{flag} {raw}: must be > 0")
    return value


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
