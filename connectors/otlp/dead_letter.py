"""Dead letters: where a rejected message came from, why, and its bytes, bounded in size.

A dead letter must never be what fails the job: the input topics take messages up to
``MAX_MESSAGE_BYTES`` and base64 in JSON grows them by a third, so a dead letter carries the whole
payload only when it is short and otherwise its first ``DEAD_LETTER_PREFIX_BYTES`` (enough to see
what sent it), lists at most ``MAX_LISTED_ERRORS`` errors (a message can hold half a million bad
records) with every reason counted, and is never longer than the limit it is built for.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from connectors.otlp.values import MAX_MESSAGE_BYTES
from udfs.records import DecodeError

DEAD_LETTER_PREFIX_BYTES = 64 * 1024
"""Payload bytes a dead letter keeps: a Collector batch's first records, and far under Kafka's default
1 MB message limit even in base64, so a dead-letter topic left at broker defaults takes it."""
MAX_LISTED_ERRORS = 100
_MAX_DETAIL_CHARS = 500


def build_dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    errors: Sequence[DecodeError],
    payload: bytes,
    max_bytes: int = MAX_MESSAGE_BYTES,
    prefix_bytes: int = DEAD_LETTER_PREFIX_BYTES,
) -> str:
    """One dead letter as a JSON object (sorted keys, ASCII) of at most ``max_bytes`` bytes.

    ``partition``/``offset`` are -1 for file input; ``timestamp_ms`` is the Kafka message timestamp
    (Unix ms, 0 when none). ``errors`` lists each bad record (``record_index``) or the whole message
    (-1); ``error_count`` and ``reasons`` count all of them when the list is cut.
    """
    listed = list(errors[:MAX_LISTED_ERRORS])
    prefix = min(len(payload), max(0, prefix_bytes))
    while True:
        letter: dict[str, Any] = {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp_ms": timestamp_ms,
            "error_count": len(errors),
            "reasons": dict(sorted(Counter(e.reason for e in errors).items())),
            "errors": [
                {"reason": e.reason, "detail": e.detail[:_MAX_DETAIL_CHARS], "record_index": e.index} for e in listed
            ],
            "errors_truncated": len(listed) < len(errors),
            "payload_bytes": len(payload),
            "payload_truncated": prefix < len(payload),
            "payload_base64": base64.b64encode(payload[:prefix]).decode("ascii"),
        }
        text = json.dumps(letter, sort_keys=True)
        if len(text) <= max_bytes or (prefix == 0 and not listed):
            return text
        if prefix:  # shed the payload first, then the listed errors, halving each time
            prefix //= 2
        else:
            listed = listed[: len(listed) // 2]
