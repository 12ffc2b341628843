"""The traffic generators behind ``udfs.scenarios.library``: realistic background and the fault shapes.

Pure and deterministic: every random draw comes from a ``random.Random`` seeded with
``"{seed}/{tenant}/{service}/{purpose}"`` (string seeds hash the same in every process), so one
service's traffic does not shift when another service is added. Times are event time in Unix ns.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from udfs.records import (
    DEFAULT_TENANT,
    EMPTY_ATTRIBUTES,
    Attributes,
    AttrValue,
    Level,
    LogRecord,
    Span,
    SpanStatus,
)

MS_NS = 1_000_000
S_NS = 1_000 * MS_NS
MIN_NS = 60 * S_NS
BACKGROUND_ERROR_RATE = 0.005
SERVER, CLIENT = 2, 3  # OTLP SpanKind

SHOP_SERVICES = (
    "frontend", "orders", "inventory", "payments", "shipping", "users", "search", "recommendations",
)
_CALLEES: dict[str, tuple[str, ...]] = {
    "frontend": ("orders", "users", "search", "booking"),
    "orders": ("inventory", "payments", "shipping"),
    "search": ("recommendations",),
}
_ROUTES: dict[str, tuple[tuple[str, str], ...]] = {
    "frontend": (("GET", "/"), ("GET", "/products/"), ("GET", "/cart")),
    "orders": (("GET", "/api/orders/"), ("POST", "/api/orders")),
    "inventory": (("GET", "/api/stock/"), ("POST", "/api/reservations")),
    "payments": (("POST", "/api/payments"), ("GET", "/api/payments/")),
    "shipping": (("GET", "/api/shipments/"), ("POST", "/api/quotes")),
    "users": (("GET", "/api/users/"), ("POST", "/api/sessions")),
    "search": (("GET", "/api/search"),),
    "recommendations": (("GET", "/api/recommendations/"),),
    "booking": (("GET", "/api/bookings/"), ("POST", "/api/bookings")),
    "audit": (("POST", "/api/audit-events"),),
    "order-service": (("POST", "/api/orders"), ("GET", "/api/orders/")),
    "payment-api": (("POST", "/api/payments"),),
    "checkout": (("POST", "/api/checkout"),),
    "notification-service": (("POST", "/api/notifications"),),
}
_DEFAULT_ROUTES = (("GET", "/api/items/"),)
_INFO: tuple[str, ...] = (
    "user {n} logged in", "cache hit ratio 0.{r}", "processed batch of {k} events in {ms}ms",
    "scheduled job cleanup-{k} finished in {ms}ms", "connection pool stats: active={k} idle={r}",
)
_DEBUG: tuple[str, ...] = (
    "cache lookup key=item:{n} hit=true", "query returned {k} rows in {ms}ms",
    "feature flag new-checkout-{k} evaluated to false",
)
_WARN: tuple[str, ...] = (
    "slow query: {ms}ms on table orders_{k}", "retrying request to dependency (attempt 2/3)",
    "GC pause of {ms}ms", "request body of {k}KB close to limit",
)
_NO_EXC = ("", "", "")
_FIELDS = ("email", "quantity", "postal_code", "currency", "card_expiry")
_OOM_TRACE = (
    "java.lang.OutOfMemoryError: Java heap space\n"
    "\tat java.base/java.util.Arrays.copyOf(Arrays.java:3512)\n"
    "\tat java.base/java.util.ArrayList.grow(ArrayList.java:237)\n"
    "\tat com.example.inventory.StockCache.load(StockCache.java:88)"
)


@dataclass(frozen=True)
class Errors:
    """Share of a service's lines that are errors; ``generic`` replaces the background mix."""

    rate: float = BACKGROUND_ERROR_RATE
    generic: str = ""
    spike: tuple[int, int, float] | None = None
    """(start_ns, end_ns, rate): the error share inside [start, end)."""

    def rate_at(self, t_ns: int) -> float:
        if self.spike is not None and self.spike[0] <= t_ns < self.spike[1]:
            return self.spike[2]
        return self.rate


@dataclass(frozen=True)
class Service:
    tenant: str
    name: str
    namespace: str
    scope: str
    resource: Attributes


def new_trace_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128) | 1:032x}"


def new_span_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64) | 1:016x}"


def gap_ns(rng: random.Random, per_s: float) -> int:
    """An exponential inter-arrival gap (Poisson arrivals), at least 1 µs so loops always advance."""
    return max(1_000, int(rng.expovariate(per_s) * S_NS))


def http_attrs(method: str, path: str, status: int) -> Attributes:
    return MappingProxyType(
        {"http.request.method": method, "url.path": path, "http.response.status_code": status}
    )


class Stream:
    """Collects one scenario's records and spans; hands out seeded RNGs and service identities."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.records: list[LogRecord] = []
        self.spans: list[Span] = []
        self._services: dict[tuple[str, str], Service] = {}

    def rng(self, tenant: str, service: str, purpose: str) -> random.Random:
        return random.Random(f"{self.seed}/{tenant}/{service}/{purpose}")

    def service(self, tenant: str, name: str, namespace: str = "shop") -> Service:
        known = self._services.get((tenant, name))
        if known is not None:
            return known
        host = f"{name}-{self.rng(tenant, name, 'host').getrandbits(24):06x}"
        resource: dict[str, AttrValue] = {
            "service.name": name, "service.namespace": namespace, "service.version": "1.4.2",
            "host.name": host, "deployment.environment.name": "production",
        }
        if tenant != DEFAULT_TENANT:
            resource["tenant.id"] = tenant
        svc = Service(tenant, name, namespace, f"{namespace}.{name}", MappingProxyType(resource))
        self._services[(tenant, name)] = svc
        return svc

    def log(
        self, svc: Service, t_ns: int, level: Level, body: str, *, trace_id: str = "", span_id: str = "",
        status: int | None = None, attrs: Attributes = EMPTY_ATTRIBUTES, exc: tuple[str, str, str] = _NO_EXC,
    ) -> None:
        self.records.append(LogRecord(
            svc.tenant, svc.name, svc.namespace, t_ns, t_ns, int(level), level, level.name, body, False,
            trace_id, span_id, status, exc[0], exc[1], exc[2], svc.scope, svc.resource,
            EMPTY_ATTRIBUTES, attrs,
        ))

    def span(
        self, svc: Service, trace_id: str, span_id: str, parent: str, name: str, kind: int,
        start_ns: int, end_ns: int, error: str = "",
    ) -> None:
        status = SpanStatus.ERROR if error else SpanStatus.UNSET
        self.spans.append(Span(svc.tenant, svc.name, trace_id, span_id, parent, name, kind, start_ns, end_ns,
                               status, error))


class ServiceTraffic:
    """One service's Poisson stream: request lines (with downstream calls) and app chatter."""

    def __init__(
        self, stream: Stream, svc: Service, rng: random.Random, errors: Errors,
        callees: Sequence[Service] = (), request_share: float = 0.55, info_only: bool = False,
    ) -> None:
        self.stream, self.svc, self.rng, self.errors = stream, svc, rng, errors
        self.callees, self.request_share, self.info_only = tuple(callees), request_share, info_only

    def run(self, start_ns: int, end_ns: int, per_s: float) -> None:
        t = start_ns + gap_ns(self.rng, per_s)
        while t < end_ns:
            if self.rng.random() < self.request_share:
                self.request(self.svc, t, new_trace_id(self.rng), depth=0)
            else:
                self.chatter(t)
            t += gap_ns(self.rng, per_s)

    def _route(self, svc: Service) -> tuple[str, str]:
        method, path = self.rng.choice(_ROUTES.get(svc.name, _DEFAULT_ROUTES))
        return method, (f"{path}{self.rng.randint(1000, 99999)}" if path.endswith("/") else path)

    def request(self, svc: Service, t_ns: int, trace_id: str, depth: int) -> None:
        rng = self.rng
        span_id = new_span_id(rng)
        if rng.random() < self.errors.rate_at(t_ns):
            self.error(svc, t_ns, trace_id, span_id)
        else:
            method, path = self._route(svc)
            status = 201 if method == "POST" else (304 if rng.random() < 0.05 else 200)
            ms = max(1, int(rng.lognormvariate(3.0, 0.6)))
            self.stream.log(svc, t_ns, Level.INFO, f"{method} {path} {status} in {ms}ms", trace_id=trace_id,
                            span_id=span_id, status=status, attrs=http_attrs(method, path, status))
        if depth < 2 and svc is self.svc:
            for callee in self.callees:
                if rng.random() < 0.5:
                    self.request(callee, t_ns + rng.randint(1, 5) * MS_NS, trace_id, depth + 1)

    def chatter(self, t_ns: int) -> None:
        rng = self.rng
        if not self.info_only and rng.random() < self.errors.rate_at(t_ns):
            self.error(self.svc, t_ns, new_trace_id(rng), new_span_id(rng))
            return
        u = rng.random()
        level, templates = Level.INFO, _INFO
        if not self.info_only and u >= 0.6:
            level, templates = (Level.DEBUG, _DEBUG) if u < 0.85 else (Level.WARN, _WARN)
        body = rng.choice(templates).format(
            n=rng.randint(1000, 99999), r=rng.randint(80, 99), k=rng.randint(2, 64),
            ms=max(1, int(rng.lognormvariate(4.0, 0.8))),
        )
        self.stream.log(self.svc, t_ns, level, body)

    def error(self, svc: Service, t_ns: int, trace_id: str, span_id: str) -> None:
        rng, log = self.rng, self.stream.log
        if self.errors.generic:
            log(svc, t_ns, Level.ERROR, self.errors.generic, trace_id=trace_id, span_id=span_id)
            return
        kind = rng.random()
        method, path = self._route(svc)
        if kind < 0.35:
            log(svc, t_ns, Level.ERROR, "upstream request timed out after 30s", trace_id=trace_id,
                span_id=span_id, status=504, attrs=http_attrs(method, path, 504))
        elif kind < 0.6:
            log(svc, t_ns, Level.ERROR, "connection reset by peer", trace_id=trace_id, span_id=span_id)
        else:
            status = rng.choice((400, 422))
            level = Level.WARN if rng.random() < 0.5 else Level.ERROR
            body = (f"{method} {path} {status} in {rng.randint(2, 30)}ms: validation failed: "
                    f"field '{rng.choice(_FIELDS)}' is invalid")
            log(svc, t_ns, level, body, trace_id=trace_id, span_id=span_id, status=status,
                attrs=http_attrs(method, path, status))


def shop(
    stream: Stream, tenant: str, names: Sequence[str], start_ns: int, end_ns: int, errors: Errors
) -> None:
    """Healthy background for ``names``; a request may call the listed services among ``names``."""
    present = set(names)
    for name in names:
        rng = stream.rng(tenant, name, "traffic")
        callees = [stream.service(tenant, c) for c in _CALLEES.get(name, ()) if c in present]
        gen = ServiceTraffic(stream, stream.service(tenant, name), rng, errors, callees)
        gen.run(start_ns, end_ns, per_s=rng.uniform(1.2, 2.2))


def quiet(
    stream: Stream, tenant: str, name: str, start_ns: int, end_ns: int, error_ns: int, body: str
) -> None:
    """A quiet INFO-only service (~0.5 records/s) with exactly one ERROR line at ``error_ns``."""
    svc = stream.service(tenant, name)
    rng = stream.rng(tenant, name, "traffic")
    ServiceTraffic(stream, svc, rng, Errors(rate=0.0), info_only=True).run(start_ns, end_ns, per_s=0.5)
    stream.log(svc, error_ns, Level.ERROR, body, trace_id=new_trace_id(rng), span_id=new_span_id(rng))


def recurring_error(
    stream: Stream, tenant: str, name: str, start_ns: int, end_ns: int, every_ns: int, body: str
) -> None:
    """A busy INFO service that also logs the same ERROR ``body`` about every ``every_ns`` from the start:
    a known, recurring background error (a flaky nightly export, a noisy health check)."""
    svc = stream.service(tenant, name)
    rng = stream.rng(tenant, name, "traffic")
    ServiceTraffic(stream, svc, rng, Errors(rate=0.0), info_only=True).run(start_ns, end_ns, per_s=1.5)
    t = start_ns + int(rng.random() * every_ns)
    while t < end_ns:
        stream.log(svc, t, Level.ERROR, body.format(n=rng.randint(1000, 9999)), trace_id=new_trace_id(rng),
                   span_id=new_span_id(rng))
        t += int(every_ns * rng.uniform(0.5, 1.5))


def exception_once(stream: Stream, tenant: str, name: str, at_ns: int, exc: tuple[str, str, str]) -> None:
    """One ERROR with a Python traceback (``exc`` = type, message, stack trace) from ``name``."""
    svc = stream.service(tenant, name)
    rng = stream.rng(tenant, name, "exception")
    exc_type, exc_message, trace = exc
    attrs = MappingProxyType(
        {"exception.type": exc_type, "exception.message": exc_message, "exception.stacktrace": trace}
    )
    stream.log(svc, at_ns, Level.ERROR, f"Unhandled exception in invoice job: {exc_type}: {exc_message}",
               trace_id=new_trace_id(rng), span_id=new_span_id(rng), attrs=attrs, exc=exc)


def room_bookings(stream: Stream, tenant: str, start_ns: int, count: int, duration_ns: int) -> None:
    """``count`` INFO "room N booked" lines from "booking", uniformly within [start, start + duration)."""
    svc = stream.service(tenant, "booking")
    rng = stream.rng(tenant, "booking", "rooms")
    for t in sorted(start_ns + int(rng.random() * duration_ns) for _ in range(count)):
        stream.log(svc, t, Level.INFO, f"room {rng.randint(100, 1299)} booked", trace_id=new_trace_id(rng),
                   span_id=new_span_id(rng))


def oom_lines(
    stream: Stream, tenant: str, name: str, start_ns: int, count: int, duration_ns: int, body: str
) -> None:
    """``count`` identical OOM ERROR lines within [start, start + duration), the first at ``start``."""
    svc = stream.service(tenant, name)
    rng = stream.rng(tenant, name, "oom")
    exc_type, _, exc_message = body.partition(": ")
    attrs = MappingProxyType(
        {"exception.type": exc_type, "exception.message": exc_message, "exception.stacktrace": _OOM_TRACE}
    )
    times = [start_ns, *sorted(start_ns + int(rng.random() * duration_ns) for _ in range(count - 1))]
    for t in times:
        stream.log(svc, t, Level.ERROR, body, attrs=attrs, exc=(exc_type, exc_message, _OOM_TRACE))


def ms_ns(ms: float) -> int:
    return math.floor(ms * MS_NS)
