"""Event-time text: Unix milliseconds <-> RFC 3339 UTC with millisecond precision (integer arithmetic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_time_ms(time_ms: int) -> str:
    """Unix milliseconds -> RFC 3339 UTC with milliseconds, e.g. ``2024-05-01T03:47:00.123Z``."""
    moment = _EPOCH + timedelta(milliseconds=time_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{time_ms % 1000:03d}Z"


def parse_time_ms(text: str) -> int:
    """RFC 3339 (``Z`` or offset; naive means UTC) -> Unix milliseconds."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
