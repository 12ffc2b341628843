"""Where accepted requests go: ``LogsProducer`` (one message per request, acknowledged before ``send``
returns) and its Kafka implementation."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from connectors.otlp import MAX_MESSAGE_BYTES


class ProduceError(RuntimeError):
    """The broker did not acknowledge the message; ``too_large`` when it never will (HTTP 413, else 503)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class LogsProducer(Protocol):
    """Where accepted requests go: one message per request, acknowledged before ``send`` returns."""

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        """Produce ``value`` under ``key`` with ``timestamp_ms`` (the request's receive time, Unix ms)."""
        ...


class KafkaLogsProducer:
    """Idempotent confluent-kafka producer; ``send`` blocks until the broker acknowledged (or raises).

    ``max_message_bytes`` is its ``message.max.bytes``: the one message size limit of the topics and the
    job (``connectors.otlp.MAX_MESSAGE_BYTES``), not librdkafka's 1 MB default nor the request limit."""

    def __init__(self, bootstrap_servers: str, topic: str, *, timeout_s: float = 10.0,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, client_config: Mapping[str, Any] | None = None) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._producer = Producer({
            **(client_config or {}),  # SASL/TLS: jobs.settings.kafka_client_config
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": int(timeout_s * 1000),
            "message.max.bytes": max_message_bytes,
        })

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self.send_to(self.topic, key, value, timestamp_ms)

    def for_topic(self, topic: str) -> LogsProducer:
        """A ``LogsProducer`` to ``topic`` through this producer's connection (e.g. the spans topic)."""
        return _TopicProducer(self, topic)

    def send_to(self, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
        """``send`` to ``topic``."""
        from confluent_kafka import KafkaError, KafkaException

        done = threading.Event()
        outcome: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            outcome.append(err)
            done.set()

        try:
            self._producer.produce(topic, value=value, key=key, timestamp=timestamp_ms, on_delivery=delivered)
        except BufferError as exc:
            raise ProduceError(f"producer queue full: {exc}") from exc
        except KafkaException as exc:
            err = exc.args[0]
            raise ProduceError(f"produce to {topic} failed: {err.str()}",
                               too_large=err.code() == KafkaError.MSG_SIZE_TOO_LARGE) from exc
        deadline = time.monotonic() + self.timeout_s + 5.0  # librdkafka reports a timeout itself first
        while not done.is_set() and time.monotonic() < deadline:
            self._producer.poll(0.05)  # serves any thread's callbacks; each sets its own event
        if not done.is_set():
            raise ProduceError(f"{topic}: no acknowledgement within {self.timeout_s} s")
        err = outcome[0]
        if err is not None:
            raise ProduceError(f"{topic}: {err.str()}", too_large=err.code() == KafkaError.MSG_SIZE_TOO_LARGE)

    def close(self) -> None:
        self._producer.flush(self.timeout_s)


class _TopicProducer:
    """``KafkaLogsProducer.for_topic``: the same producer, another topic."""

    def __init__(self, producer: KafkaLogsProducer, topic: str) -> None:
        self._producer, self.topic = producer, topic

    def send(self, key: bytes, value: bytes, timestamp_ms: int) -> None:
        self._producer.send_to(self.topic, key, value, timestamp_ms)
