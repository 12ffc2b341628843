"""Kafka producers for the job's rare, important outputs: incident events and dead letters.

PyFlink's KafkaSink cannot key a message by a field of the element, so these go through an
idempotent confluent-kafka producer with a synchronous flush per event: the operator does not move
on until the broker acknowledged, so a restart from the last checkpoint can only re-send (same
incident id, same fingerprint key), never lose. Incidents are few per minute; the flush is cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException, Producer


class KafkaSinkError(RuntimeError):
    """The broker did not acknowledge in time; the job fails and restarts from its checkpoint."""


class KeyedProducer:
    """Produce JSON values with a key and wait for the acknowledgement (at-least-once)."""

    def __init__(self, bootstrap_servers: str, topic: str, *, timeout_s: float = 30.0) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                "message.timeout.ms": int(timeout_s * 1000),
            }
        )
        self.sent = 0

    def send(self, key: str, value: Mapping[str, Any] | bytes, *, timestamp_ms: int | None = None) -> None:
        errors: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        payload = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True).encode()
        try:
            kwargs: dict[str, Any] = {"key": key.encode(), "value": payload, "on_delivery": delivered}
            if timestamp_ms is not None:
                kwargs["timestamp"] = timestamp_ms
            self._producer.produce(self.topic, **kwargs)
        except (KafkaException, BufferError) as exc:
            raise KafkaSinkError(f"produce to {self.topic} failed: {exc}") from exc
        remaining = self._producer.flush(self.timeout_s)
        if remaining or errors:
            raise KafkaSinkError(f"{self.topic}: not acknowledged within {self.timeout_s}s ({'; '.join(errors)})")
        self.sent += 1

    def close(self) -> None:
        self._producer.flush(self.timeout_s)
