"""The cascade: checkout's Redis pool is exhausted and its callers fail after it, in traces and spans.

Call graph (one trace per request): order-service -> payment-api -> checkout (-> redis, a client
span), then order-service -> notification-service. During the 4 min fault, measured from the
request's start time ``t0`` relative to the fault start (event time):

- from +0 s checkout fails on ~85 % of requests ("redis connection pool exhausted ...");
- from +15 s payment-api fails those requests ("checkout returned 503 Service Unavailable");
- from +30 s order-service times out on them after 5000 ms;
- from +45 s notification-service, called after the timeout, logs its queue backing up.

So inside one failing trace the errors come in that order, checkout first.
"""

from __future__ import annotations

import random

from udfs.records import EMPTY_ATTRIBUTES, Level
from udfs.scenarios.traffic import (
    BACKGROUND_ERROR_RATE,
    CLIENT,
    MS_NS,
    S_NS,
    SERVER,
    Errors,
    Service,
    ServiceTraffic,
    Stream,
    gap_ns,
    http_attrs,
    ms_ns,
    new_span_id,
    new_trace_id,
)

SERVICES = ("order-service", "payment-api", "checkout", "notification-service")
FAULT_NS = 4 * 60 * S_NS
POOL_BODY = "redis connection pool exhausted (max=50, in_use=50)"
PAYMENT_BODY = "checkout returned 503 Service Unavailable"
RETRY_BODY = "checkout call failed, retrying (attempt 2/3)"
ORDER_BODY = "timeout calling payment-api after 5000ms"
REQUESTS_PER_S = 2.0
CHATTER_PER_S = 0.6
# Background errors come from chatter only, at a share that makes them ~0.5 % of all lines.
_CHATTER_ERRORS = Errors(rate=BACKGROUND_ERROR_RATE * (REQUESTS_PER_S + CHATTER_PER_S) / CHATTER_PER_S)


class _Trace:
    """One request through the four services; logs and spans go to the stream."""

    def __init__(self, stream: Stream, svcs: dict[str, Service], rng: random.Random, since_ns: int | None):
        self.stream, self.svcs, self.rng = stream, svcs, rng
        self.since_ns = since_ns if since_ns is not None else -1
        self.trace_id = new_trace_id(rng)
        self.ids = {name: new_span_id(rng) for name in SERVICES}
        in_fault = since_ns is not None and 0 <= since_ns < FAULT_NS
        self.checkout_fails = in_fault and rng.random() < 0.85
        self.payment_fails = self.checkout_fails and self.since_ns >= 15 * S_NS
        self.order_fails = self.payment_fails and self.since_ns >= 30 * S_NS
        self.notify_fails = self.order_fails and self.since_ns >= 45 * S_NS

    def _log(self, name: str, t_ns: int, level: Level, body: str, status: int | None = None,
             route: tuple[str, str] = ("", "")) -> None:
        attrs = http_attrs(route[0], route[1], status) if status is not None else EMPTY_ATTRIBUTES
        self.stream.log(self.svcs[name], t_ns, level, body, trace_id=self.trace_id, span_id=self.ids[name],
                        status=status, attrs=attrs)

    def _span(self, name: str, parent: str, start: int, end: int, error: str) -> None:
        parent_id = self.ids[parent] if parent else ""
        self.stream.span(self.svcs[name], self.trace_id, self.ids[name], parent_id, _SPAN_NAMES[name],
                         SERVER, start, end, error)

    def run(self, t0: int) -> None:
        rng = self.rng
        order_id = rng.randint(100_000, 999_999)
        pay_start = t0 + ms_ns(1 + rng.random())
        co_end = self._checkout(pay_start + ms_ns(1 + rng.random()))
        pay_end = self._payment(t0, pay_start, co_end)
        if self.order_fails:
            replied = t0 + 5_000 * MS_NS
            self._log("order-service", replied, Level.ERROR, ORDER_BODY, 504, ("POST", "/api/orders"))
        else:
            replied = pay_end
            if self.payment_fails:
                self._log("order-service", pay_end + MS_NS, Level.WARN,
                          f"payment-api returned 503, will retry order {order_id} later")
        notify_end = self._notify(replied + MS_NS + ms_ns(rng.random()), order_id)
        end = notify_end + ms_ns(1 + 2 * rng.random())
        if not self.order_fails:
            status = 202 if self.payment_fails else 201
            body = f"POST /api/orders {status} in {(end - t0) // MS_NS}ms"
            self._log("order-service", end, Level.INFO, body, status, ("POST", "/api/orders"))
        self._span("order-service", "", t0, end, ORDER_BODY if self.order_fails else "")

    def _checkout(self, start: int) -> int:
        rng = self.rng
        redis_start = start + ms_ns(0.5)
        if self.checkout_fails:
            redis_end = redis_start + ms_ns(rng.uniform(50, 200))
            end = redis_end + MS_NS
            self._log("checkout", redis_end + ms_ns(0.5), Level.ERROR, POOL_BODY)
        else:
            redis_end = redis_start + ms_ns(0.3 + rng.lognormvariate(0.3, 0.5))
            end = redis_end + ms_ns(1 + rng.lognormvariate(1.5, 0.5))
            self._log("checkout", end, Level.INFO, f"POST /api/checkout 200 in {(end - start) // MS_NS}ms",
                      200, ("POST", "/api/checkout"))
        self.stream.span(self.svcs["checkout"], self.trace_id, new_span_id(rng), self.ids["checkout"],
                         "redis GET cart", CLIENT, redis_start, redis_end,
                         "connection pool exhausted" if self.checkout_fails else "")
        self._span("checkout", "payment-api", start, end, POOL_BODY if self.checkout_fails else "")
        return end

    def _payment(self, t0: int, start: int, co_end: int) -> int:
        rng = self.rng
        if self.payment_fails:
            route = ("POST", "/api/checkout")
            self._log("payment-api", co_end + MS_NS, Level.ERROR, PAYMENT_BODY, 503, route)
            end = t0 + 4_950 * MS_NS if self.order_fails else co_end + ms_ns(rng.uniform(200, 400))
        else:
            if self.checkout_fails:
                self._log("payment-api", co_end + MS_NS, Level.WARN, RETRY_BODY)
                end = co_end + ms_ns(rng.uniform(100, 300))
            else:
                end = co_end + ms_ns(1 + rng.lognormvariate(2.0, 0.5))
            self._log("payment-api", end, Level.INFO, f"POST /api/payments 200 in {(end - start) // MS_NS}ms",
                      200, ("POST", "/api/payments"))
        self._span("payment-api", "order-service", start, end, PAYMENT_BODY if self.payment_fails else "")
        return end

    def _notify(self, start: int, order_id: int) -> int:
        rng = self.rng
        if self.notify_fails:
            end = start + ms_ns(rng.uniform(5, 20))
            depth = 1_000 + self.since_ns // (S_NS // 40) + rng.randint(0, 50)
            body = f"notification queue backing up, depth={depth}"
            self._log("notification-service", end, Level.ERROR, body)
        else:
            end = start + ms_ns(1 + rng.lognormvariate(1.5, 0.5))
            body = ""
            self._log("notification-service", end, Level.INFO,
                      f"POST /api/notifications 202 in {(end - start) // MS_NS}ms", 202,
                      ("POST", "/api/notifications"))
        self._span("notification-service", "order-service", start, end, body)
        return end


_SPAN_NAMES = {
    "order-service": "POST /api/orders", "payment-api": "POST /api/payments",
    "checkout": "POST /api/checkout", "notification-service": "POST /api/notifications",
}


def cascade(stream: Stream, tenant: str, start_ns: int, end_ns: int, fault_ns: int | None) -> None:
    """The four services' traffic from ``start_ns`` to ``end_ns``; healthy when ``fault_ns`` is None."""
    svcs = {name: stream.service(tenant, name) for name in SERVICES}
    for name in SERVICES:
        rng = stream.rng(tenant, name, "chatter")
        ServiceTraffic(stream, svcs[name], rng, _CHATTER_ERRORS, request_share=0.0).run(
            start_ns, end_ns, CHATTER_PER_S)
    rng = stream.rng(tenant, "order-service", "requests")
    t = start_ns + gap_ns(rng, REQUESTS_PER_S)
    while t < end_ns:
        _Trace(stream, svcs, rng, None if fault_ns is None else t - fault_ns).run(t)
        t += gap_ns(rng, REQUESTS_PER_S)
