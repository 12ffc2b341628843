"""``logclaw ingest``: the OTLP/HTTP logs endpoint (``POST /v1/logs``) in front of the logs topic.

Point an OpenTelemetry SDK or Collector at ``http://HOST:PORT/v1/logs`` with the header
``x-logclaw-api-key: KEY``; ``--keys`` is a JSON or YAML file ``{api_key: tenant}``. Runs until Ctrl-C or
SIGTERM, then stops accepting and flushes the producer (a request cut off by the exit gets no answer, so
its client retries it: at-least-once).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from connectors.otlp_http import DEFAULT_MAX_BODY_BYTES, IngestServer, KafkaLogsProducer, load_api_keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=4318, help="listen port (default: %(default)s, the OTLP/HTTP port)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s; 0.0.0.0 for all)")
    parser.add_argument("--keys", type=Path, required=True, help="JSON or YAML file {api_key: tenant}")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers (default: %(default)s)")
    parser.add_argument("--topic", default="otlp_logs", help="logs topic (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help="request body limit, compressed and decompressed (default: %(default)s)")
    parser.add_argument("--ack-timeout-s", type=float, default=10.0,
                        help="seconds a request waits for the broker's ack before answering 503 (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    try:
        keys = load_api_keys(args.keys)
    except (OSError, ValueError) as exc:
        print(f"ingest: --keys: {exc}", file=sys.stderr)
        return 2
    if args.max_body_bytes < 1024:
        print("ingest: --max-body-bytes must be >= 1024", file=sys.stderr)
        return 2
    producer = KafkaLogsProducer(args.bootstrap, args.topic, timeout_s=args.ack_timeout_s)  # MAX_MESSAGE_BYTES
    try:
        server = IngestServer((args.host, args.port), keys=keys, producer=producer, max_body_bytes=args.max_body_bytes)
    except OSError as exc:
        print(f"ingest: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="ingest-http")
    serving.start()
    print(f"ingest: listening on {server.url} ({len(keys)} api keys; topic {args.topic} at {args.bootstrap})",
          flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()  # stops the accept loop
        serving.join(10)
        server.server_close()
        producer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = server.stats
    print(f"ingest: stopped; {stats.messages} messages, {stats.accepted} records accepted, "
          f"{stats.rejected} rejected; responses {dict(sorted(stats.by_status.items()))}", flush=True)
    return 0
