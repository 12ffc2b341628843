"""``logclaw ui``: the incident console (``jobs/console``) over the embedded store or OpenSearch, on
127.0.0.1:8080 by default. Read-only; with ``--keys FILE`` (the ingest key file) an API key selects
the tenant. OpenSearch credentials come from ``LOGCLAW_OPENSEARCH_*`` and never reach the browser."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.cli import port_number
from jobs.observability import add_logging_arguments, configure_logging

if TYPE_CHECKING:
    from connectors.console_read import ConsoleReader

DEFAULT_STORE = Path("out/demo/store.sqlite")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=None,
                        help=f"embedded store file (default {DEFAULT_STORE}; "
                        "ignored when LOGCLAW_OPENSEARCH_URL is set)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=port_number, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--keys", type=Path, default=None,
                        help="API key file (as for 'logclaw ingest'): log in with a key, see only its tenant")
    parser.add_argument("--ledger", type=Path, default=None,
                        help="ticket ledger (default: tickets-ledger.sqlite beside the store, when present)")
    parser.add_argument("--dead-letters", type=Path, default=None,
                        help="dead-letter file of a replay (default: dead-letter.jsonl beside the store)")
    parser.add_argument("--flink-url", default="", help="Flink REST URL for the job's state on the health page")
    add_logging_arguments(parser)


def open_from_args(args: argparse.Namespace) -> ConsoleReader:
    """The reader the arguments and ``LOGCLAW_OPENSEARCH_*`` name (shared with ``logclaw incidents``)."""
    from connectors.console_read import open_reader
    from jobs.settings import opensearch_access

    # LOGCLAW_OPENSEARCH_*: URL, basic auth (password or its _FILE), CA bundle, verification
    return open_reader(store=args.store or DEFAULT_STORE, opensearch=opensearch_access(os.environ))


def run(args: argparse.Namespace) -> int:
    import signal
    import socket

    import uvicorn

    from connectors.ingest import ApiKeys
    from jobs.console.app import build_app

    configure_logging(args.log_format, args.log_level)
    try:
        reader = open_from_args(args)
        keys = ApiKeys.from_file(args.keys) if args.keys else None
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"ui: {exc}", file=sys.stderr)
        return 2
    beside = (args.store or DEFAULT_STORE).parent
    ledger = args.ledger or beside / "tickets-ledger.sqlite"
    dead = args.dead_letters or beside / "dead-letter.jsonl"
    app = build_app(reader, keys=keys, ledger_path=ledger, dead_letters_path=dead,
                    flink_url=args.flink_url)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:  # as ingest: the port is taken or the address is not this machine's
        sock.close()
        reader.close()
        print(f"ui: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    host = f"[{args.host}]" if ":" in args.host else args.host
    # log_config=None: uvicorn's loggers go through configure_logging's handler (text or JSON), at
    # warning and above: the console logs no access lines (they would carry tenants' queries).
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, log_config=None)
    server = uvicorn.Server(config)

    def stop(_signum: int, _frame: Any) -> None:
        server.should_exit = True

    # Ours until uvicorn installs its own (and again after): a Ctrl-C that lands while the server is
    # still starting stops it too. With Python's default handler there, asyncio's runner cancelled the
    # starting server instead, which could swallow the cancellation and keep serving.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        print(f"ui: console on http://{host}:{sock.getsockname()[1]}/ ({reader.store_info()['kind']}"
              f"{', API keys: ' + str(len(keys)) if keys else ''}); Ctrl-C stops it", flush=True)
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C is the way to stop (uvicorn re-raises the one it shut down on): exit 0
        pass
    finally:
        reader.close()
    return 0
