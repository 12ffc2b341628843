"""Logging and Prometheus metrics for the long-running commands (run, up, ingest, ticketing, ui).

Stable API (other modules import exactly these names):

- ``configure_logging(fmt: str, level: str = "INFO") -> None``: one handler on the root logger,
  writing to stderr, ``fmt`` is ``"text"`` (``2026-12-06T10:00:00.123Z INFO logger: message``) or
  ``"json"`` (one JSON object per line: ``time`` RFC 3339 UTC with milliseconds, ``level``,
  ``logger``, ``message``, every ``extra={...}`` field, ``exception`` with the traceback when there
  is one). ``level`` is a stdlib level name. Calling it again replaces the handler it installed (never
  one installed by someone else). An unknown format or level raises ``ValueError`` naming it.
- ``add_logging_arguments(parser)``: ``--log-format {text,json}`` and ``--log-level``, defaults from
  ``LOGCLAW_LOG_FORMAT`` / ``LOGCLAW_LOG_LEVEL`` (else text / INFO); then
  ``configure_logging(args.log_format, args.log_level)``.
- ``add_metrics_port_argument(parser, default=None)``: ``--metrics-port N`` (0 = off).
- ``metrics_payload() -> (bytes, content_type)``: the Prometheus text exposition of the process's
  registry, for a server that has its own routes (ingest, the console).
- ``metrics_route(path="/metrics")``: a Starlette ``Route`` serving ``metrics_payload``.
- ``start_metrics_server(port, host="0.0.0.0")``: a separate HTTP server thread for a process with no
  HTTP server of its own (the ticketing worker); returns a ``MetricsServer`` (``.port``, ``.stop()``).

Metrics live in prometheus_client's default registry (so the process and GC collectors come along);
define them at module level in the module that counts (``prometheus_client.Counter(...)``), named
``logclaw_<component>_<what>_<unit>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
LOG_FORMAT_ENV = "LOGCLAW_LOG_FORMAT"
LOG_LEVEL_ENV = "LOGCLAW_LOG_LEVEL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Attributes every LogRecord has; anything else on a record came from `extra={...}` and is emitted.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _utc_iso(created_s: float) -> str:
    return datetime.fromtimestamp(created_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (line); non-JSON extra values are written with ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <logger>: <message>``, the time as in the JSON form."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_iso(record.created)


class _LogclawHandler(logging.StreamHandler[TextIO]):
    """Marks the handler configure_logging installed, so a second call replaces only it."""


def configure_logging(fmt: str, level: str = "INFO") -> None:
    """Route every logger through one stderr handler in ``fmt`` ("text" or "json") at ``level``."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    level_name = level.upper()
    if level_name not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LogclawHandler)]:
        root.removeHandler(old)
    handler = _LogclawHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level_name)


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``--log-level``; their defaults come from the environment."""
    env_format = os.environ.get(LOG_FORMAT_ENV, "text")
    env_level = os.environ.get(LOG_LEVEL_ENV, "INFO").upper()
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        default=env_format if env_format in LOG_FORMATS else "text",
                        help=f"log lines as text or one JSON object per line (env {LOG_FORMAT_ENV}; default: text)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper,
                        default=env_level if env_level in LOG_LEVELS else "INFO",
                        help=f"least severe level logged (env {LOG_LEVEL_ENV}; default: INFO)")


def add_metrics_port_argument(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """``--metrics-port N``: serve Prometheus /metrics on that port (0 or absent: no server)."""
    parser.add_argument("--metrics-port", type=int, default=default, metavar="PORT",
                        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off)")


def metrics_payload() -> tuple[bytes, str]:
    """The default registry in the Prometheus text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def metrics_route(path: str = "/metrics") -> Any:
    """A Starlette route serving ``metrics_payload`` (no key: metrics carry no tenant data)."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    def metrics(_request: Request) -> Response:
        body, content_type = metrics_payload()
        return Response(body, media_type=content_type)

    return Route(path, metrics, methods=["GET"])


@dataclass(frozen=True)
class MetricsServer:
    """A running /metrics server: the port it is bound to (useful with port 0) and how to stop it."""

    port: int
    stop: Callable[[], None]


def start_metrics_server(port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve /metrics from a daemon thread on ``host:port`` (0: a free port)."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return MetricsServer(port=server.server_port, stop=stop)
