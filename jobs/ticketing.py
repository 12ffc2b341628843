"""The ticketing worker (``logclaw ticketing``): incident events in, one ticket per (tenant,
fingerprint, destination) out, kept in sync as the incident updates and resolves.

This module feeds the per-event worker (``jobs.ticketing_worker``) and wires it from its settings:
Kafka mode commits a message's offset only after every destination of it is in the ledger (or
dead-lettered); ``--once FILE`` replays an ``incidents.jsonl``. Transient failures are retried, never
dropped; permanent ones go to the dead-letter with the reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.ledger import TicketLedger
from connectors.llm import LlmModel, LlmRca
from connectors.logstore import LogReader
from connectors.tickets.base import TicketClient
from jobs.observability import add_logging_arguments, add_metrics_port_argument, configure_logging, start_metrics_server
from jobs.ticketing_config import ConfigError, TicketingConfig, add_config_arguments
from jobs.ticketing_worker import (
    QUEUE_LAG,
    RETRYABLE,
    DeadLetter,
    Metrics,
    TicketingWorker,
)
from udfs.routing import RoutingConfig

log = logging.getLogger("logclaw.ticketing")  # the worker's logger: one name for the whole command


def handle_with_retry(worker: TicketingWorker, raw: bytes | str, stop: threading.Event,
                      max_attempts: int = 0, backoff_cap_s: float = 30.0) -> bool:
    """Handle one message, retrying transient failures with capped backoff until it succeeds, ``stop``
    is set, or ``max_attempts`` (0: unbounded) is reached. Returns True when the message is done."""
    attempt = 0
    while True:
        try:
            worker.handle(raw)
            return True
        except RETRYABLE as exc:
            attempt += 1
            worker.metrics.retrying()
            log.warning("transient failure (attempt %d): %s", attempt, exc)
            if (max_attempts and attempt >= max_attempts) or stop.wait(min(backoff_cap_s, 0.2 * 2**attempt)):
                return False


def run_kafka(worker: TicketingWorker, cfg: TicketingConfig, stop: threading.Event, *,
              max_messages: int = 0, idle_exit_s: float = 0.0,
              consumer_config: Mapping[str, Any] | None = None) -> int:
    """Consume the incidents topic until ``stop`` (or, for tests, ``max_messages`` handled or
    ``idle_exit_s`` without a message). Commits each offset only after the message is done;
    ``consumer_config`` adds librdkafka settings (e.g. a shorter ``session.timeout.ms``)."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        **cfg.kafka_config, "group.id": cfg.group_id, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "enable.partition.eof": False, **(consumer_config or {}),
    })
    consumer.subscribe([cfg.topic])
    done, idle_since = 0, time.monotonic()
    try:
        while not stop.is_set():
            msg = consumer.poll(0.5)
            worker.metrics.maybe_log()
            if msg is None:
                if idle_exit_s and time.monotonic() - idle_since > idle_exit_s:
                    break
                continue
            if msg.error():
                log.warning("consumer error: %s", msg.error())
                continue
            _observe_lag(consumer, msg)
            if not handle_with_retry(worker, msg.value() or b"", stop, cfg.max_attempts):
                if stop.is_set():
                    break  # not committed: the message is handled again after restart
                worker.metrics.add("(transient)", "failed")
                worker.dead_letter.put((msg.value() or b"").decode("utf-8", "replace"), "retries exhausted")
            consumer.commit(message=msg, asynchronous=False)
            done, idle_since = done + 1, time.monotonic()
            if max_messages and done >= max_messages:
                break
    finally:
        consumer.close()
    return done


def _observe_lag(consumer: Any, msg: Any) -> None:
    """Messages after ``msg`` on its partition, from the high watermark of the latest fetch (no request)."""
    from confluent_kafka import KafkaException, TopicPartition

    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(msg.topic(), msg.partition()), cached=True)
    except KafkaException:
        return
    if high >= 0:
        QUEUE_LAG.labels(str(msg.partition())).set(max(0, high - msg.offset() - 1))


def run_once(worker: TicketingWorker, path: Path, max_attempts: int = 5) -> None:
    """Handle every line of an ``incidents.jsonl`` in order."""
    stop = threading.Event()
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip() and not handle_with_retry(worker, line, stop, max_attempts, backoff_cap_s=2.0):
                worker.metrics.add("(transient)", "failed")
                worker.dead_letter.put(line, "retries exhausted")


def _setting(destination: str, key: str, value: Any, env: Mapping[str, str]) -> str:
    """A destination setting as the factory wants it (a string); ``${VAR}`` reads the variable or the
    file ``VAR_FILE`` names (a Kubernetes secret mount, as for the other secrets), so secrets stay out
    of the routing file."""
    from jobs.settings import FILE_SUFFIX, secret_from_env

    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    if text.startswith("${") and text.endswith("}"):
        var, where = text[2:-1], f"routing.destinations.{destination}.{key}"
        try:
            found = secret_from_env(env, var)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if found is None:
            raise ConfigError(f"{where}: environment variable {var} unset (nor {var}{FILE_SUFFIX})")
        return found
    return text


def build_clients(routing: RoutingConfig, env: Mapping[str, str]) -> dict[str, TicketClient]:
    """One platform client per routed destination; bad settings fail at start-up."""
    from connectors.tickets.factory import SettingsError, build_client
    from connectors.tickets.retry import HttpTransport

    clients = {}
    for name in routing.used_destinations():
        spec = routing.destinations[name]
        settings = {k: _setting(name, k, v, env) for k, v in spec.settings.items()}
        try:
            clients[name] = build_client(name, {**settings, "type": spec.type}, HttpTransport())
        except SettingsError as exc:
            raise ConfigError(str(exc)) from None
    return clients


def build_worker(cfg: TicketingConfig, clients: Mapping[str, TicketClient] | None = None,
                 producer: Any = None) -> tuple[TicketingWorker, TicketLedger]:
    """Wire the worker from config: routing, clients, ledger, evidence reader, LLM, dead-letter."""
    routing = cfg.load_routing()
    if clients is None:
        clients = build_clients(routing, os.environ)
    reader: LogReader | None = None
    if cfg.opensearch_url:
        from connectors.opensearch import OpenSearchReader

        access = cfg.opensearch  # basic auth, CA bundle, verification (none of it sent before)
        reader = OpenSearchReader([access.url], access.auth(), client_options=access.client_options())
    elif Path(cfg.store_path).exists():
        from connectors.store import EmbeddedStore
        from connectors.store_retention import NO_RETENTION

        reader = EmbeddedStore(cfg.store_path, retention=NO_RETENTION)  # a reader: the job alone deletes
    llm = None
    if cfg.llm_models:
        models = [LlmModel(m, cfg.llm_api_base, cfg.llm_api_key) for m in cfg.llm_models]
        llm = LlmRca(models, timeout_s=cfg.llm_timeout_s, max_retries=cfg.llm_max_retries)
    ledger = TicketLedger(cfg.ledger_path, owner=cfg.worker_id)
    dead_letter = DeadLetter(cfg.dead_letter_path, producer, cfg.dead_letter_topic)
    worker = TicketingWorker(routing, clients, ledger, dead_letter, reader=reader, llm=llm,
                             metrics=Metrics(cfg.metrics_interval_s, platforms={
                                 name: d.type for name, d in routing.destinations.items()}),
                             dashboards_url=cfg.dashboards_url)
    return worker, ledger


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", metavar="FILE", help="process an incidents.jsonl and exit (no Kafka)")
    add_config_arguments(parser)
    add_logging_arguments(parser)
    add_metrics_port_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every event was handled, 1 when some failed (dead-lettered), 2 on bad settings."""
    configure_logging(args.log_format, args.log_level)
    if args.once and not Path(args.once).is_file():
        print(f"logclaw ticketing: --once {args.once}: no such file", file=sys.stderr)
        return 2
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        print(f"logclaw ticketing: --metrics-port {args.metrics_port}: not a port (0-65535)", file=sys.stderr)
        return 2
    try:
        cfg = TicketingConfig.from_args(args, os.environ)
        producer = None
        if not args.once and cfg.dead_letter_topic:
            from confluent_kafka import Producer

            producer = Producer(cfg.kafka_config)
        worker, ledger = build_worker(cfg, producer=producer)
    except ConfigError as exc:
        print(f"logclaw ticketing: {exc}", file=sys.stderr)
        return 2
    metrics_server = None
    try:
        if args.metrics_port:
            metrics_server = start_metrics_server(args.metrics_port)
            log.info("metrics on :%d/metrics", metrics_server.port)
        if args.once:
            run_once(worker, Path(args.once), cfg.max_attempts or 5)
        else:
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            run_kafka(worker, cfg, stop)
    except OSError as exc:  # the --once file unreadable, the metrics port taken
        print(f"logclaw ticketing: {exc}", file=sys.stderr)
        return 1
    finally:
        ledger.close()
        if metrics_server is not None:
            metrics_server.stop()
    print(worker.metrics.table())
    return 1 if worker.metrics.failed() else 0
