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

from confluent_kafka import KafkaError, KafkaException, Producer

from connectors.otlp import MAX_MESSAGE_BYTES
from connectors.security import KafkaSecurity

# Errors about this one message, not the broker: sending it again cannot succeed.
_REFUSED = frozenset(
    getattr(KafkaError, name)
    for name in ("MSG_SIZE_TOO_LARGE", "_MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_RECORD",
                 "CORRUPT_MESSAGE", "INVALID_MSG_SIZE", "_INVALID_ARG")
    if hasattr(KafkaError, name)
)  # fmt: skip


class KafkaSinkError(RuntimeError):
    """The broker did not acknowledge in time, or refused the message (``refused``: too large or
    invalid, so a retry cannot help); the caller decides whether the job fails."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


def _refused(err: Any) -> bool:
    return isinstance(err, KafkaError) and err.code() in _REFUSED


class KeyedProducer:
    """Produce JSON values with a key and wait for the acknowledgement (at-least-once).

    ``max_message_bytes`` is the client's ``message.max.bytes``: the one size limit of the project's
    topics (``connectors.otlp.MAX_MESSAGE_BYTES``), not librdkafka's 1 MB default. ``security`` is how
    it authenticates (``connectors.security``; default plain TCP)."""

    def __init__(self, bootstrap_servers: str, topic: str, *, timeout_s: float = 30.0,
                 max_message_bytes: int = MAX_MESSAGE_BYTES,
                 security: KafkaSecurity | None = None) -> None:  # fmt: skip
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = Producer(
            {
                **(security or KafkaSecurity()).librdkafka_config(),
                "bootstrap.servers": bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                "message.timeout.ms": int(timeout_s * 1000),
                "message.max.bytes": max_message_bytes,
            }
        )
        self.sent = 0

    def send(self, key: str, value: Mapping[str, Any] | bytes, *, timestamp_ms: int | None = None) -> None:
        errors: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        payload = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True).encode()
        try:
            kwargs: dict[str, Any] = {"key": key.encode(), "value": payload, "on_delivery": delivered}
            if timestamp_ms is not None:
                kwargs["timestamp"] = timestamp_ms
            self._producer.produce(self.topic, **kwargs)
        except KafkaException as exc:
            raise KafkaSinkError(f"produce to {self.topic} failed: {exc}", refused=_refused(exc.args[0])) from exc
        except BufferError as exc:
            raise KafkaSinkError(f"produce to {self.topic} failed: {exc}") from exc
        remaining = self._producer.flush(self.timeout_s)
        if remaining or errors:
            raise KafkaSinkError(
                f"{self.topic}: not acknowledged within {self.timeout_s}s ({'; '.join(map(str, errors))})",
                refused=not remaining and all(_refused(e) for e in errors),
            )
        self.sent += 1

    def close(self) -> None:
        self._producer.flush(self.timeout_s)
