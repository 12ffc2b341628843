"""Request timings from log records that carry a duration (issue 12 item 4): logs without spans still
feed the RED state per (tenant, service, operation) and its latency test (udfs.red).

Access logs and request-completion lines often say how long the request took (``duration_ms=412``,
OTel's ``http.server.request.duration``, nginx's ``request_time``). Such a record becomes one
``SpanTiming`` ending at the record's time (these lines are written when the request completes):

- the operation is ``log: `` + the route (``http.route`` with its method) or the RPC method, else
  ``log: (records)``: never a raw path (``/users/8812``), which would make one key per id, and never
  a span's name, so a request seen both as a span and as a log line is not counted twice;
- no self time (0): a log line knows nothing of its callees, so it never claims a slowness as its
  own (udfs.rootcause reads self time as "slow itself, not only waiting");
- no errors: the same records' failures are the service window's already (udfs.window); counting
  them again as span errors would judge one failure twice.

A duration is read only where its unit is known: from the attribute's name (``_ms``, ``_us``,
``_ns``, or a convention that fixes it: OTel semantic conventions, nginx) or from a string value that
says it (``"412ms"``, ``"1.5s"``); a bare number under a name without a unit (``elapsed``,
``duration``) is ambiguous and skipped. Values that are not finite, negative, or longer than
``MAX_DURATION_US`` are skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator

from udfs.anomaly import SpanTiming
from udfs.records import AttrValue, LogRecord

US_PER_UNIT = {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6, "m": 6e7, "min": 6e7}

DURATION_ATTRIBUTES: dict[str, float | None] = {
    # name -> microseconds per unit of a bare number (None: only a value that carries its unit)
    "duration_ms": 1e3,
    "elapsed_ms": 1e3,
    "latency_ms": 1e3,
    "response_time_ms": 1e3,
    "took_ms": 1e3,
    "duration_us": 1.0,
    "duration_ns": 1e-3,
    "http.server.request.duration": 1e6,  # OTel semantic conventions 1.21+: seconds
    "http.server.duration": 1e3,  # OTel semantic conventions before 1.21: milliseconds
    "request_time": 1e6,  # nginx $request_time: seconds with millisecond resolution
    "duration": None,
    "elapsed": None,
    "latency": None,
}
"""Checked in this order; the first readable one wins."""

MAX_DURATION_US = 86_400 * 1e6
"""A day: a longer "request" is a mis-read unit or a batch job, not a request's latency."""

LOG_OPERATION_PREFIX = "log: "
NO_ROUTE = "(records)"

_NUMBER = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s|min|m)?\s*")
_NAMES = frozenset(DURATION_ATTRIBUTES)


def duration_us(name: str, value: AttrValue) -> float | None:
    """The duration in µs that attribute ``name`` says, or None when it cannot be read with its unit."""
    per_unit = DURATION_ATTRIBUTES.get(name)
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        us = value * per_unit if per_unit is not None else None
    elif isinstance(value, str):
        match = _NUMBER.fullmatch(value)
        if match is None:
            return None
        unit = match.group(2)
        scale = US_PER_UNIT[unit] if unit is not None else per_unit
        us = float(match.group(1)) * scale if scale is not None else None
    else:
        return None
    if us is None or not math.isfinite(us) or us < 0 or us > MAX_DURATION_US:
        return None
    return us


def operation_of(rec: LogRecord) -> str:
    """The record's operation as a bounded name: method + route, the RPC method, or none."""
    attrs = rec.attributes
    route = attrs.get("http.route")
    if isinstance(route, str) and route:
        method = attrs.get("http.request.method") or attrs.get("http.method")
        return LOG_OPERATION_PREFIX + (f"{method} {route}" if isinstance(method, str) and method else route)
    rpc = attrs.get("rpc.method")
    if isinstance(rpc, str) and rpc:
        service = attrs.get("rpc.service")
        return LOG_OPERATION_PREFIX + (f"{service}/{rpc}" if isinstance(service, str) and service else rpc)
    return LOG_OPERATION_PREFIX + NO_ROUTE


def timing_of(rec: LogRecord) -> SpanTiming | None:
    """The request timing ``rec`` states, or None (most records state none)."""
    attrs = rec.attributes
    if not attrs or _NAMES.isdisjoint(attrs):
        return None
    for name in DURATION_ATTRIBUTES:
        if name in attrs:
            us = duration_us(name, attrs[name])
            if us is not None:
                return SpanTiming(
                    tenant=rec.tenant, service=rec.service, operation=operation_of(rec),
                    end_ms=rec.time_unix_nano // 1_000_000, duration_us=round(us), self_us=0, error=False,
                    own_error=False,
                )  # fmt: skip
    return None


def timings_of(records: Iterable[LogRecord]) -> Iterator[SpanTiming]:
    """Every timing the records state, in record order."""
    for rec in records:
        timing = timing_of(rec)
        if timing is not None:
            yield timing
