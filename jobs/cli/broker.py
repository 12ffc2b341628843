"""``logclaw broker``: run the local Kafka-protocol broker (tansu, in-memory) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from connectors.broker import DEFAULT_TOPICS, BrokerError, LocalBroker
from jobs.cli import port_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port_number, default=None,
                        help="listen port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--topics", default=",".join(DEFAULT_TOPICS),
                        help="comma-separated topics to create (default: %(default)s)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions per topic (default: 1)")
    parser.add_argument("--log", type=Path, default=None, help="broker log file (default: a temp file)")


def run(args: argparse.Namespace) -> int:
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    broker = LocalBroker(port=args.port, log_path=args.log)
    try:
        broker.start()
        topics = [name.strip() for name in args.topics.split(",") if name.strip()]
        broker.create_topics(topics, partitions=args.partitions)
        print(f"broker: bootstrap {broker.bootstrap}", flush=True)
        print(f"broker: topics {', '.join(topics) or '(none)'}; log {broker.log_path}", flush=True)
        print("broker: in-memory storage; Ctrl-C to stop", flush=True)
        while not stopping.wait(0.5):
            if not broker.is_running():
                print(f"error: broker exited unexpectedly; log {broker.log_path}", file=sys.stderr)
                return 1
        print("broker: stopping", flush=True)
        return 0
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
