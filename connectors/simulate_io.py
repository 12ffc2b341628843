"""Where simulated OTLP messages go: JSON-lines files (gzip by suffix) or a Kafka topic."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer


@dataclass(frozen=True)
class KafkaMessage:
    """One message to produce: ``timestamp_ms`` is the first record's event time (Unix ms)."""

    key: bytes
    value: bytes
    timestamp_ms: int


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def _write_lines(handle: _Writable, lines: Iterable[bytes]) -> int:
    count = 0
    for line in lines:
        if b"\n" in line:
            raise ValueError("an OTLP/JSON line must not contain a newline")
        handle.write(line)
        handle.write(b"\n")
        count += 1
    return count


def write_jsonl(path: str | Path, lines: Iterable[bytes]) -> int:
    """Write one OTLP/JSON request per line (gzip when ``path`` ends in ``.gz``); return the line count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as gz:
            return _write_lines(gz, lines)
    with path.open("wb") as plain:
        return _write_lines(plain, lines)


class ProduceError(RuntimeError):
    """Some messages were not acknowledged by the broker; the message says how many and why."""


def produce_messages(
    bootstrap: str, topic: str, messages: Iterable[KafkaMessage], *, flush_timeout_s: float = 30.0,
    max_buffer_waits: int = 1_000, client_config: Mapping[str, Any] | None = None,
) -> int:
    """Produce ``messages`` to ``topic`` and flush; return how many the broker acknowledged.
    ``client_config``: more librdkafka settings (security: ``jobs.settings.kafka_client_config``).

    Raises ``ProduceError`` when any delivery failed or the flush timed out, so a partial load is
    never reported as done.
    """
    producer = Producer({**(client_config or {}), "bootstrap.servers": bootstrap, "linger.ms": 20,
                         "enable.idempotence": False})
    acked: list[int] = [0]
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            acked[0] += 1
        else:
            failures.append(str(err))

    sent = 0
    for message in messages:
        for _attempt in range(max_buffer_waits):
            try:
                producer.produce(topic, value=message.value, key=message.key,
                                 timestamp=message.timestamp_ms, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain, then retry
        else:
            raise ProduceError(f"producer queue stayed full after {max_buffer_waits} waits")
        sent += 1
        producer.poll(0)
    remaining = producer.flush(flush_timeout_s)
    if remaining or failures:
        detail = failures[0] if failures else "flush timed out"
        raise ProduceError(f"{sent - acked[0]} of {sent} messages not acknowledged ({detail})")
    return acked[0]
