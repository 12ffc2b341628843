"""Two deliberately simple detectors, so every number of the engine's evaluation has context.

- ``any_error``: every record at level ERROR or above opens an incident, naming its own service as
  root cause. Without dedup (the point: this is what a naive "alert on ERROR" rule does), and as a
  fairer variant with a per-(tenant, service) cooldown.
- ``busiest_minute``: per tenant, each 60 s tumbling event-time window with at least one error opens
  an incident naming the service with the most errors in that window as root cause (the others
  ranked after it by error count). Also with a per-tenant cooldown variant.

They return incident-like events with the keys ``udfs.evaluation.metrics.judge_stream`` reads (``event``,
``tenant``, ``incident_id``, ``fingerprint``, ``opened_at``, ``detected_at``, ``service``,
``root_cause.service`` / ``.candidates``), only ``opened`` events. Times are event time (RFC 3339
UTC, ms). ``any_error`` detects at the record's own time (an instant rule); ``busiest_minute``
detects when its window closes (window end). Pure: no clock; input order does not matter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from udfs.incidents import rfc3339
from udfs.records import Level, LogRecord

COOLDOWN_MS = 300_000
"""The cooldown of the fair variants: 5 min of event time."""
WINDOW_MS = 60_000
"""The tumbling window of ``busiest_minute``: 60 s of event time, aligned to the Unix epoch."""


class ErrorLine(NamedTuple):
    """What the baselines keep of a record at level ERROR or above (event time, Unix ms)."""

    tenant: str
    service: str
    time_ms: int


def error_lines(records: Iterable[LogRecord]) -> list[ErrorLine]:
    """The records at level >= ERROR, sorted by (event time, tenant, service): the baselines' input."""
    lines = [ErrorLine(r.tenant, r.service, r.time_ms) for r in records if r.level >= Level.ERROR]
    return sorted(lines, key=lambda e: (e.time_ms, e.tenant, e.service))


def _event(
    detector: str, tenant: str, opened_ms: int, detected_ms: int, ranked: list[tuple[str, int]], seq: int
) -> dict[str, Any]:
    service = ranked[0][0]
    fingerprint = f"{detector}.{service}"
    digest = hashlib.sha1(f"{detector}\x1f{tenant}\x1f{service}\x1f{opened_ms}\x1f{seq}".encode()).hexdigest()
    return {
        "event": "opened",
        "detector": detector,
        "tenant": tenant,
        "incident_id": f"{detector}-{digest[:16]}",
        "fingerprint": fingerprint,
        "opened_at": rfc3339(opened_ms),
        "detected_at": rfc3339(detected_ms),
        "service": service,
        "root_cause": {
            "service": service,
            "candidates": [{"service": s, "score": float(n)} for s, n in ranked],
        },
    }


def any_error(records: Iterable[LogRecord], cooldown_ms: int = 0) -> list[dict[str, Any]]:
    """Every error record opens an incident at its own event time; with ``cooldown_ms`` > 0, a
    (tenant, service) that opened one less than ``cooldown_ms`` ago opens none (the cooldown runs
    from the opening record and is not extended by the errors it absorbs)."""
    if cooldown_ms < 0:
        raise ValueError(f"cooldown_ms must be >= 0, got {cooldown_ms}")
    detector = "any_error" if cooldown_ms == 0 else "any_error_cooldown"
    last_open: dict[tuple[str, str], int] = {}
    out: list[dict[str, Any]] = []
    for seq, line in enumerate(error_lines(records)):
        key = (line.tenant, line.service)
        last = last_open.get(key)
        if cooldown_ms and last is not None and line.time_ms - last < cooldown_ms:
            continue
        last_open[key] = line.time_ms
        out.append(_event(detector, line.tenant, line.time_ms, line.time_ms, [(line.service, 1)], seq))
    return out


def _rank(window: list[ErrorLine]) -> list[tuple[str, int]]:
    """Services by error count (desc), ties by first error in the window, then by name."""
    count: dict[str, int] = {}
    first: dict[str, int] = {}
    for e in window:
        count[e.service] = count.get(e.service, 0) + 1
        first.setdefault(e.service, e.time_ms)
    return [(s, count[s]) for s in sorted(count, key=lambda s: (-count[s], first[s], s))]


def busiest_minute(
    records: Iterable[LogRecord], cooldown_ms: int = 0, window_ms: int = WINDOW_MS
) -> list[dict[str, Any]]:
    """Per tenant, each ``window_ms`` tumbling window with >= 1 error opens an incident when it
    closes (detected_at = window end, opened_at = its first error). With ``cooldown_ms`` > 0, a
    tenant that opened one less than ``cooldown_ms`` before the window's end opens none."""
    if cooldown_ms < 0 or window_ms <= 0:
        raise ValueError(f"need cooldown_ms >= 0 and window_ms > 0, got {cooldown_ms}, {window_ms}")
    detector = "busiest_minute" if cooldown_ms == 0 else "busiest_minute_cooldown"
    windows: dict[tuple[str, int], list[ErrorLine]] = {}
    for line in error_lines(records):
        windows.setdefault((line.tenant, line.time_ms - line.time_ms % window_ms), []).append(line)
    last_open: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for seq, (tenant, start) in enumerate(sorted(windows, key=lambda k: (k[1], k[0]))):
        end = start + window_ms
        last = last_open.get(tenant)
        if cooldown_ms and last is not None and end - last < cooldown_ms:
            continue
        last_open[tenant] = end
        lines = windows[(tenant, start)]
        out.append(_event(detector, tenant, lines[0].time_ms, end, _rank(lines), seq))
    return out


def _any_error_cooldown(records: Iterable[LogRecord]) -> list[dict[str, Any]]:
    return any_error(records, COOLDOWN_MS)


def _busiest_minute_cooldown(records: Iterable[LogRecord]) -> list[dict[str, Any]]:
    return busiest_minute(records, COOLDOWN_MS)


BASELINES: Mapping[str, Callable[[Iterable[LogRecord]], list[dict[str, Any]]]] = MappingProxyType(
    {
        "any_error": any_error,
        "any_error_cooldown": _any_error_cooldown,
        "busiest_minute": busiest_minute,
        "busiest_minute_cooldown": _busiest_minute_cooldown,
    }
)
"""Baseline name -> detector over a record stream (all tenants); names as in eval.json and the report."""
