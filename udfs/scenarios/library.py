"""Named, seeded log scenarios: the shared input of tests, the demo, benchmarks and evaluation.

Every scenario is pure and deterministic: one seeded ``random.Random`` per (tenant, service, purpose)
drives arrivals (exponential gaps, so Poisson-ish at a few records/s per service), ids and numbers;
event times derive from ``base_ms`` (Unix ms, default 2026-01-01T00:00:00Z), never from a clock.

``scale`` multiplies the *background* phases only: the warm-up before a fault (15 min at scale 1,
never under 6 min so a 300 s window has a baseline), the tail after it (10 min, never under 5 min),
the length of "steady" (60 min, never under 10 min) and of "quiet_single_error" (20 min, never under
10 min). Fault shapes never scale: the 3 min error spike, the 60 s / 10,000-line OOM burst, the
5 min of 600 room bookings and the 4 min cascade keep their size and timing at every scale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TypeVar

from udfs.records import LogRecord, Span
from udfs.scenarios import cascade as scenario_cascade
from udfs.scenarios import traffic
from udfs.scenarios.base import (
    DEFAULT_BASE_MS as DEFAULT_BASE_MS,
)
from udfs.scenarios.base import (
    QUIET,
    STEADY,
    TAIL,
    WARMUP,
    _check,
    _finish,
    _ms,
)
from udfs.scenarios.base import Expectation as Expectation
from udfs.scenarios.base import Scenario as Scenario
from udfs.scenarios.latency import SPAN_SCENARIOS
from udfs.scenarios.traffic import MIN_NS, S_NS, Errors, Stream

BACKGROUND_ERROR_RATE = traffic.BACKGROUND_ERROR_RATE

OOM_BODY = "java.lang.OutOfMemoryError: Java heap space"
DECLINED_BODY = "payment declined by processor"
QUIET_ERROR_BODY = "unexpected error handling request"
_T = TypeVar("_T", LogRecord, Span)

CASCADE_AFFECTED = frozenset({"payment-api", "order-service", "notification-service"})


def steady(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """Eight healthy services with 0.5 % background errors for 60 min (scaled)."""
    _check(scale)
    start = base_ms * 1_000_000
    stream = Stream(seed)
    traffic.shop(stream, "default", traffic.SHOP_SERVICES, start, start + STEADY.ns(scale), Errors())
    return _finish(
        "steady",
        "8 services, 0.5 % background errors (timeouts, resets, validation); at most one incident",
        stream,
        [Expectation("default", max_incidents=1)],
    )


def room_booked(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """Steady background plus 600 INFO "room N booked" lines within 5 min in service "booking"."""
    _check(scale)
    start = base_ms * 1_000_000
    burst = start + WARMUP.ns(scale)
    end = burst + 5 * MIN_NS + TAIL.ns(scale)
    stream = Stream(seed)
    services = ("frontend", "booking", "users", "search")
    traffic.shop(stream, "default", services, start, end, Errors())
    traffic.room_bookings(stream, "default", burst, 600, 5 * MIN_NS)
    return _finish(
        "room_booked",
        "steady background plus 600 'room N booked' INFO lines in 5 minutes: no incident",
        stream,
        [Expectation("default", max_incidents=0)],
    )


def error_spike(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """payments at 5 % generic errors, 60 % for 3 min after the warm-up, then 5 % again."""
    _check(scale)
    start = base_ms * 1_000_000
    spike = start + WARMUP.ns(scale)
    end = spike + 3 * MIN_NS + TAIL.ns(scale)
    stream = Stream(seed)
    traffic.shop(stream, "default", ("frontend", "orders", "users"), start, end, Errors())
    payments = Errors(rate=0.05, generic=DECLINED_BODY, spike=(spike, spike + 3 * MIN_NS, 0.60))
    traffic.shop(stream, "default", ("payments",), start, end, payments)
    return _finish(
        "error_spike",
        "payments 5 % -> 60 % 'payment declined by processor' for 3 min: one incident within 30 s",
        stream,
        [
            Expectation(
                "default", max_incidents=1, min_incidents=1, root_cause="payments",
                affected=frozenset(), fault_start_ms=_ms(spike), detect_within_ms=30_000,
            )
        ],
    )


def oom_burst(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """Steady background, then 10,000 identical OOM ERROR lines from "inventory" within 60 s."""
    _check(scale)
    start = base_ms * 1_000_000
    burst = start + WARMUP.ns(scale)
    end = burst + 60 * S_NS + TAIL.ns(scale)
    stream = Stream(seed)
    traffic.shop(stream, "default", ("frontend", "orders", "inventory", "shipping"), start, end, Errors())
    traffic.oom_lines(stream, "default", "inventory", burst, 10_000, 60 * S_NS, OOM_BODY)
    return _finish(
        "oom_burst",
        "10,000 identical 'java.lang.OutOfMemoryError: Java heap space' lines in 60 s: one incident, "
        "immediate path",
        stream,
        [
            Expectation(
                "default", max_incidents=1, min_incidents=1, root_cause="inventory",
                fault_start_ms=_ms(burst), detect_within_ms=1_000, immediate=True,
            )
        ],
    )


def _cascade_expectation(tenant: str, fault_ns: int) -> Expectation:
    return Expectation(
        tenant, max_incidents=1, min_incidents=1, root_cause="checkout", affected=CASCADE_AFFECTED,
        fault_start_ms=_ms(fault_ns), detect_within_ms=30_000,
    )


def cascade(
    *, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0, tenant: str = "default"
) -> Scenario:
    """Redis pool exhausted in checkout; payment-api, order-service, notification-service follow."""
    _check(scale)
    start = base_ms * 1_000_000
    fault = start + WARMUP.ns(scale)
    end = fault + scenario_cascade.FAULT_NS + TAIL.ns(scale)
    stream = Stream(seed)
    scenario_cascade.cascade(stream, tenant, start, end, fault)
    return _finish(
        "cascade",
        "checkout's redis pool exhausted -> payment-api 503 (+15 s) -> order-service timeouts (+30 s) "
        "-> notification queue backing up (+45 s); 4 min fault with traces and spans",
        stream,
        [_cascade_expectation(tenant, fault)],
    )


def two_tenants(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """Tenant "acme" runs the cascade; "globex" runs the same services healthy."""
    _check(scale)
    start = base_ms * 1_000_000
    fault = start + WARMUP.ns(scale)
    end = fault + scenario_cascade.FAULT_NS + TAIL.ns(scale)
    stream = Stream(seed)
    scenario_cascade.cascade(stream, "acme", start, end, fault)
    scenario_cascade.cascade(stream, "globex", start, end, None)
    return _finish(
        "two_tenants",
        "acme: the cascade; globex: the same service names, healthy (0.5 % background errors)",
        stream,
        [_cascade_expectation("acme", fault), Expectation("globex", max_incidents=0)],
    )


def quiet_single_error(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """One quiet service logging INFO for 20 min (scaled) with one ERROR line at 3/4 of the run."""
    _check(scale)
    start = base_ms * 1_000_000
    duration = QUIET.ns(scale)
    stream = Stream(seed)
    traffic.quiet(stream, "default", "audit", start, start + duration, start + duration * 3 // 4,
                  QUIET_ERROR_BODY)
    return _finish(
        "quiet_single_error",
        "a quiet INFO-only service with one ERROR line (no pattern, no traceback): decided by evidence, at most "
        "one incident",
        stream,
        [Expectation("default", max_incidents=1)],
    )


RECURRING_BODY = "nightly export {n} failed: timeout contacting object storage"
NOVEL_EXCEPTION = (
    "KeyError",
    "'currency'",
    "Traceback (most recent call last):\n"
    '  File "/app/billing/jobs.py", line 88, in run_invoice_job\n'
    "    total = price_in(invoice)\n"
    '  File "/app/billing/money.py", line 41, in price_in\n'
    "    rate = rates[invoice['currency']]\n"
    "KeyError: 'currency'",
)


def recurring_errors(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """"reports" logs the same ERROR every ~20 s from the start, beside a healthy "ledger"."""
    _check(scale)
    start = base_ms * 1_000_000
    end = start + QUIET.ns(scale)
    stream = Stream(seed)
    traffic.recurring_error(stream, "default", "reports", start, end, 20 * S_NS, RECURRING_BODY)
    traffic.shop(stream, "default", ("ledger",), start, end, Errors(rate=0.0))
    return _finish(
        "recurring_errors",
        "one service logs the same ERROR about every 20 s from the start: background, no incident",
        stream,
        [Expectation("default", max_incidents=0)],
    )


def novel_exception(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """Clean services for the warm-up, then one never-seen KeyError with a traceback in "billing"."""
    _check(scale)
    start = base_ms * 1_000_000
    fault = start + WARMUP.ns(scale)
    end = fault + TAIL.ns(scale)
    stream = Stream(seed)
    traffic.shop(stream, "default", ("frontend", "orders", "billing"), start, end, Errors(rate=0.0))
    traffic.exception_once(stream, "default", "billing", fault, NOVEL_EXCEPTION)
    return _finish(
        "novel_exception",
        "services clean for the warm-up, then one never-seen exception with a traceback: one incident",
        stream,
        [
            Expectation(
                "default", max_incidents=1, min_incidents=1, root_cause="billing",
                fault_start_ms=_ms(fault), detect_within_ms=30_000,
            )
        ],
    )


SCENARIOS: Mapping[str, Callable[..., Scenario]] = MappingProxyType(
    {
        "steady": steady,
        "room_booked": room_booked,
        "error_spike": error_spike,
        "oom_burst": oom_burst,
        "cascade": cascade,
        "two_tenants": two_tenants,
        "quiet_single_error": quiet_single_error,
        "recurring_errors": recurring_errors,
        "novel_exception": novel_exception,
        **SPAN_SCENARIOS,
    }
)


def build(name: str, *, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """Build the named scenario; ``KeyError`` names the known ones when ``name`` is unknown."""
    try:
        builder = SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
    return builder(seed=seed, base_ms=base_ms, scale=scale)


def _batches(
    items: Sequence[_T], key: Callable[[_T], tuple[str, str]], time_ns: Callable[[_T], int],
    per_message: int, max_span_ms: int,
) -> list[list[_T]]:
    if per_message < 1:
        raise ValueError(f"per_message must be >= 1, got {per_message}")
    max_span_ns = max_span_ms * 1_000_000
    open_batch: dict[tuple[str, str], list[_T]] = {}
    done: list[list[_T]] = []
    for item in items:
        k = key(item)
        batch = open_batch.get(k)
        if batch is None or len(batch) >= per_message or time_ns(item) - time_ns(batch[0]) > max_span_ns:
            batch = []
            open_batch[k] = batch
            done.append(batch)
        batch.append(item)
    # `done` is in the order of each batch's first item, because the input is time-ordered.
    return done


def _resource_key(item: LogRecord | Span) -> tuple[str, str]:
    return (item.tenant, item.service)


def _no_key(item: LogRecord | Span) -> tuple[str, str]:
    return ("", "")


def requests_of(
    records: Sequence[LogRecord], per_message: int, *, max_span_ms: int = 1_000, by_resource: bool = True
) -> list[list[LogRecord]]:
    """Batch a time-ordered stream into messages the way a Collector's batch processor does.

    Each message holds at most ``per_message`` records spanning at most ``max_span_ms`` of event
    time. With ``by_resource`` (the default) a message holds one (tenant, service) only, like the
    Kafka exporter partitioning by resource, so a message has one natural key. Messages come out
    in the order of their first record; concatenated they hold every input record exactly once.
    """
    key = _resource_key if by_resource else _no_key
    return _batches(records, key, _record_time, per_message, max_span_ms)


def span_requests_of(
    spans: Sequence[Span], per_message: int, *, max_span_ms: int = 1_000
) -> list[list[Span]]:
    """Batch time-ordered spans into messages of one (tenant, service), as ``requests_of`` does."""
    return _batches(spans, _resource_key, _span_time, per_message, max_span_ms)


def _record_time(record: LogRecord) -> int:
    return record.time_unix_nano


def _span_time(span: Span) -> int:
    return span.start_unix_nano
