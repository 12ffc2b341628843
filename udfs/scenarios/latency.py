"""Span scenarios: a call chain whose faults show in spans and nowhere in the logs.

``gateway`` -> ``users`` (half the requests) and ``gateway`` -> ``trips`` -> ``pricing``, 5 requests/s,
every service logging one INFO access line per request. Self times are lognormal (sigma 0.4, the
jitter of a healthy service); a caller's duration is its self time plus its callees' (synchronous
calls). ``users`` answers 3 % of its look-ups with an expected 404 (span status ERROR, client error)
all the time. Faults (3 min after the warm-up, never scaled):
- ``latency_chain``: pricing's self time x5; trips and gateway are slower only by inclusion;
- ``span_errors_chain``: 30 % of pricing's requests fail, the failure passed up through trips and
  gateway (their spans fail too, their own code does not); failed requests log nothing;
- ``span_steady``: no fault, 60 min (scaled); a 2 s stall of trips (+250 ms) every ~7 min, the
  bursty jitter of a real service (GC, a noisy neighbour).

The CPU and network faults run on a richer chain (``routes=True``): every call is a CLIENT span of
the caller (named after its peer, "POST pricing /api/quote", as ``peer.service`` would say; ~0.5 ms
of network each way) whose child is the callee's SERVER span, and requests take four routes:
gateway ``GET /trips`` -> (users and) trips ``GET /api/trips`` -> pricing; gateway ``GET /trips/{id}``
-> trips ``GET /api/trips/{id}`` (no callee); gateway ``GET /quote`` -> pricing directly.
- ``cpu_contention``: trips' self time x3 on every operation (CPU starved: all of its own work is
  slower, the time it waits for pricing is not); gateway slower by inclusion; pricing unchanged.
  Root cause trips: its self time rose; gateway only waits, pricing is not anomalous.
- ``network_delay``: calls from trips to pricing take +100 ms on trips' CLIENT span (a netem-like
  delay on that link); pricing's own SERVER spans are unchanged and so are gateway's direct calls to
  pricing. The incident names **trips**, the caller side of the edge, and its evidence names the
  edge (the self time of trips' "POST pricing /api/quote" client span: the time between sending the
  request and pricing starting on it, plus the way back). Why not pricing: every span pricing
  records is as fast as before and its other caller sees no delay, so nothing of pricing moved;
  the time appeared on trips' side of the link (its outbound path, connection pool, sidecar or the
  link itself), which is where an operator starts.
- ``network_delay_pod``: every reply pricing sends takes +100 ms (netem on pricing's pod): the client
  spans of both its callers slow down, pricing's own spans do not. The incident names **pricing**:
  the one end every slow link shares explains them with one cause (udfs.rootcause ``shared_end``).
  The gateway's direct calls (0.5/s) have ~150 baseline requests after the 6 min warm-up of the
  evaluation scale: enough for the latency test, which judges from 100 (udfs.red ``min_tail_baseline``).

Pure and deterministic (seeded RNGs per purpose, times from ``base_ms``). Times are Unix ns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from udfs.records import Level
from udfs.scenarios.base import DEFAULT_BASE_MS, STEADY, TAIL, WARMUP, Expectation, Scenario, _check, _finish
from udfs.scenarios.traffic import (
    CLIENT,
    MIN_NS,
    MS_NS,
    S_NS,
    SERVER,
    Service,
    Stream,
    gap_ns,
    http_attrs,
    new_span_id,
    new_trace_id,
)

REQUESTS_PER_S = 5.0
FAULT_NS = 3 * MIN_NS
SLOWDOWN = 5.0
FAIL_SHARE = 0.30
NOT_FOUND_SHARE = 0.03
STALL_EVERY_NS = 7 * MIN_NS
STALL_NS = 2 * S_NS
STALL_EXTRA_MS = 250.0
CPU_FACTOR = 3.0
EDGE = ("trips", "pricing")
EDGE_DELAY_MS = 100.0
NET_MS = 0.5
"""Median network time of a call, each way (lognormal, sigma 0.5)."""
SELF_MS = {"gateway": 3.0, "users": 8.0, "trips": 10.0, "pricing": 30.0}
ROUTES = {"gateway": ("GET", "/trips"), "users": ("GET", "/users/{id}"), "trips": ("GET", "/api/trips"),
          "pricing": ("POST", "/api/quote")}
DETAIL = {"gateway": ("GET", "/trips/{id}"), "trips": ("GET", "/api/trips/{id}")}
QUOTE = ("GET", "/quote")
CHAIN = ("gateway", "users", "trips", "pricing")


class _Chain:
    def __init__(
        self, stream: Stream, tenant: str, fault: str, fault_ns: int | None, stalls: bool, routes: bool,
        per_s: float = REQUESTS_PER_S,
    ) -> None:
        self.stream = stream
        self.svcs: dict[str, Service] = {n: stream.service(tenant, n, "trips") for n in CHAIN}
        self.rng = stream.rng(tenant, "chain", "requests")
        self.fault, self.fault_ns, self.stalls, self.routes, self.per_s = fault, fault_ns, stalls, routes, per_s

    def in_fault(self, t_ns: int) -> bool:
        return self.fault_ns is not None and self.fault_ns <= t_ns < self.fault_ns + FAULT_NS

    def self_ns(self, name: str, t_ns: int) -> int:
        ms = SELF_MS[name] * self.rng.lognormvariate(0.0, 0.4)
        if name == "pricing" and self.fault == "latency" and self.in_fault(t_ns):
            ms *= SLOWDOWN
        if name == "trips" and self.fault == "cpu" and self.in_fault(t_ns):
            ms *= CPU_FACTOR
        if name == "trips" and self.stalls and (t_ns % STALL_EVERY_NS) < STALL_NS:
            ms += STALL_EXTRA_MS
        return int(ms * MS_NS)

    def call(
        self, name: str, parent: str, trace_id: str, start: int, callees: tuple[str, ...],
        route: tuple[str, str] | None = None,
    ) -> tuple[int, str]:
        """One span of ``name`` starting at ``start`` (half its self time before its callees, half
        after); returns (end, error message)."""
        span_id = new_span_id(self.rng)
        own = self.self_ns(name, start)
        t = start + own // 2
        error = ""
        for callee in callees:
            sub = ("pricing",) if callee == "trips" else ()
            if callee == "trips:detail":
                end, err = self.client(name, span_id, trace_id, t, "trips", (), DETAIL["trips"])
            elif self.routes:
                end, err = self.client(name, span_id, trace_id, t, callee, sub, ROUTES[callee])
            else:
                end, err = self.call(callee, span_id, trace_id, t, sub)
            t = end
            if err and callee != "users":
                error = f"{callee} failed: {err}"
        if name == "pricing" and self.fault == "errors" and self.in_fault(start) and self.rng.random() < FAIL_SHARE:
            error = "quote engine returned 500"
        status = 200
        if name == "users" and self.rng.random() < NOT_FOUND_SHARE:
            error, status = "user not found", 404
        end = t + own - own // 2
        if error and status == 200:
            status = 500 if name == "pricing" else 502
        method, path = route or ROUTES[name]
        self.stream.span(self.svcs[name], trace_id, span_id, parent, f"{method} {path}", SERVER, start, end, error)
        if error and status >= 500:
            return end, error  # failures leave no access line: only the spans know (a silent failure)
        self.stream.log(self.svcs[name], end, Level.INFO, f"{method} {path} {status} in {(end - start) // MS_NS}ms",
                        trace_id=trace_id, span_id=span_id, status=status, attrs=http_attrs(method, path, status))
        return end, error

    def client(
        self, caller: str, parent: str, trace_id: str, start: int, callee: str, sub: tuple[str, ...],
        route: tuple[str, str],
    ) -> tuple[int, str]:
        """``caller``'s CLIENT span of one call to ``callee`` (network time each way around the
        callee's SERVER span; +EDGE_DELAY_MS on the way out on the faulted edge)."""
        span_id = new_span_id(self.rng)
        out_ns, back_ns = (int(NET_MS * self.rng.lognormvariate(0.0, 0.5) * MS_NS) for _ in range(2))
        if self.fault == "edge" and (caller, callee) == EDGE and self.in_fault(start):
            out_ns += int(EDGE_DELAY_MS * MS_NS)
        if self.fault == "pod" and callee == EDGE[1] and self.in_fault(start):
            back_ns += int(EDGE_DELAY_MS * MS_NS)  # netem on the callee's pod delays what it sends: its replies
        end, err = self.call(callee, span_id, trace_id, start + out_ns, sub, route)
        method, path = route
        self.stream.span(self.svcs[caller], trace_id, span_id, parent, f"{method} {callee} {path}", CLIENT, start,
                         end + back_ns, err)
        return end + back_ns, err

    def _callees(self) -> tuple[tuple[str, ...], tuple[str, str] | None]:
        """The gateway's callees and route for one request."""
        u = self.rng.random()
        if not self.routes:
            return (("users", "trips") if u < 0.5 else ("trips",)), None
        if u < 0.35:
            return ("users", "trips"), None
        if u < 0.70:
            return ("trips",), None
        if u < 0.90:
            return ("trips:detail",), DETAIL["gateway"]
        return ("pricing",), QUOTE

    def run(self, start_ns: int, end_ns: int) -> None:
        t = start_ns + gap_ns(self.rng, self.per_s)
        while t < end_ns:
            callees, route = self._callees()
            self.call("gateway", "", new_trace_id(self.rng), t, callees, route)
            t += gap_ns(self.rng, self.per_s)


def chain(stream: Stream, tenant: str, start_ns: int, end_ns: int, fault: str = "", fault_ns: int | None = None,
          stalls: bool = False, routes: bool = False, per_s: float = REQUESTS_PER_S) -> None:
    """The chain's traffic, ``per_s`` requests per second of event time; ``fault`` is "latency",
    "errors", "cpu", "edge" or "" (healthy); ``routes``: client spans and four routes (module docstring)."""
    _Chain(stream, tenant, fault, fault_ns, stalls, routes, per_s).run(start_ns, end_ns)


def _fault_scenario(
    name: str, fault: str, description: str, seed: int, base_ms: int, scale: float, root: str = "pricing",
    affected: frozenset[str] = frozenset({"trips", "gateway"}), routes: bool = False,
) -> Scenario:
    _check(scale)
    start = base_ms * 1_000_000
    fault_ns = start + WARMUP.ns(scale)
    stream = Stream(seed)
    chain(stream, "default", start, fault_ns + FAULT_NS + TAIL.ns(scale), fault, fault_ns, routes=routes)
    exp = Expectation(
        "default", max_incidents=1, min_incidents=1, root_cause=root, affected=affected,
        fault_start_ms=fault_ns // 1_000_000, detect_within_ms=60_000,
    )
    return _finish(name, description, stream, [exp])


def latency_chain(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """gateway -> trips -> pricing with spans; pricing's self time x5 for 3 min, no error log."""
    return _fault_scenario(
        "latency_chain", "latency",
        "pricing's self time x5 for 3 min, trips and gateway slower by inclusion, no error log: one incident, "
        "root cause pricing, callers affected", seed, base_ms, scale,
    )


def span_errors_chain(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """gateway -> trips -> pricing with spans; 30 % of pricing's spans fail for 3 min, no error log."""
    return _fault_scenario(
        "span_errors_chain", "errors",
        "30 % of pricing's spans fail for 3 min, passed up through trips and gateway, no error log; users' "
        "expected 404s throughout: one incident, root cause pricing, callers affected", seed, base_ms, scale,
    )


def span_steady(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """The span call chain healthy for 60 min (scaled): jitter, short stalls, expected 404s."""
    _check(scale)
    start = base_ms * 1_000_000
    stream = Stream(seed)
    chain(stream, "default", start, start + STEADY.ns(scale), stalls=True)
    return _finish(
        "span_steady",
        "the chain healthy for 60 min: lognormal jitter, users' expected 404s, a 2 s stall of trips every 7 min: "
        "no incident", stream, [Expectation("default", max_incidents=0)],
    )


def cpu_contention(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """The routed chain with client spans; trips' self time x3 on all its operations for 3 min."""
    return _fault_scenario(
        "cpu_contention", "cpu",
        "trips' self time x3 on every operation for 3 min (CPU contention), gateway slower by inclusion, pricing "
        "unchanged, no error log: one incident, root cause trips, gateway affected", seed, base_ms, scale,
        root="trips", affected=frozenset({"gateway"}), routes=True,
    )


def network_delay(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """The routed chain with client spans; trips -> pricing calls +100 ms on trips' client span for 3 min."""
    return _fault_scenario(
        "network_delay", "edge",
        "calls from trips to pricing +100 ms on trips' client span for 3 min (network delay on one edge), "
        "pricing's server spans and gateway's direct calls to pricing unchanged, no error log: one incident, "
        "root cause trips (the caller side of the edge), gateway affected", seed, base_ms, scale,
        root="trips", affected=frozenset({"gateway"}), routes=True,
    )


def network_delay_pod(*, seed: int = 0, base_ms: int = DEFAULT_BASE_MS, scale: float = 1.0) -> Scenario:
    """The routed chain with client spans; every reply of pricing +100 ms for 3 min (delay on its pod)."""
    return _fault_scenario(
        "network_delay_pod", "pod",
        "every reply pricing sends takes +100 ms for 3 min (network delay injected on pricing's pod): the "
        "client spans of both its callers (trips and gateway) slow down, pricing's own server spans are "
        "unchanged, no error log: one incident, root cause pricing (the one end every slow link shares), "
        "trips and gateway affected", seed, base_ms, scale,
        root="pricing", affected=frozenset({"trips", "gateway"}), routes=True,
    )


SPAN_SCENARIOS: Mapping[str, Callable[..., Scenario]] = MappingProxyType(
    {"latency_chain": latency_chain, "span_errors_chain": span_errors_chain, "span_steady": span_steady,
     "cpu_contention": cpu_contention, "network_delay": network_delay,
     "network_delay_pod": network_delay_pod}
)
