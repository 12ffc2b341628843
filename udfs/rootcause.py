"""Root-cause ranking over the services of one incident (DETECTION.md "Correlation and root cause").

Four pieces of evidence, each in [0, 1], weighted:
- onset (0.35): whose anomaly started first (full credit); later starters get at most half,
  losing 1/60 of it per second of delay;
- depth (0.25): sits deepest in the call graph among the anomalous services (called by anomalous
  services, calls none) — from spans when the tenant has any, else learned from trace order;
- precedence (0.25): its failures come before other anomalous services' failures in shared traces
  (Laplace-smoothed share of wins);
- severity (0.15): the strength of its own signals (its composite score).
Callers of the top candidate are "affected", never candidates for the chain's head.

When spans say more (any service of the incident has a span anomaly), a fifth piece joins and the
others make room (``SPAN_WEIGHTS``): own (0.20), whether the service is slow or failing *itself*
(its self time or its own span errors rose: full credit) or only waits for a callee (its spans are
slower or failing but its self time and own errors are not: none); services known from logs only
get half. A caller that only waits for its callee is not where the fault is (DETECTION.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

WEIGHTS = {"onset": 0.35, "depth": 0.25, "precedence": 0.25, "severity": 0.15, "own": 0.0}
SPAN_WEIGHTS = {"onset": 0.30, "depth": 0.20, "precedence": 0.15, "severity": 0.15, "own": 0.20}
OWN = "own"
"""``ServiceFacts.spans``: its self time or its own span errors rose."""
WAITS = "waits"
"""``ServiceFacts.spans``: its spans are slower or failing, its self time and own errors are not."""


class ServiceFacts(NamedTuple):
    service: str
    onset_ms: int
    score: float
    top_signal: str
    spans: str = ""
    """OWN, WAITS, or "" (no span anomaly); the detail says what moved."""
    spans_detail: str = ""


class Candidate(NamedTuple):
    service: str
    score: float
    reasons: tuple[str, ...]


class Ranking(NamedTuple):
    candidates: tuple[Candidate, ...]
    chain: tuple[str, ...]
    confidence: float
    affected: tuple[str, ...]


def shared_end(facts: Sequence[ServiceFacts], calls: Mapping[str, set[str]]) -> list[ServiceFacts]:
    """``facts`` with the one end that every slow link shares made the suspect.

    A client span's self time is the link: the time between sending a request and the callee's
    server span starting, plus the way back. When it rises at one caller, the time appeared on that
    caller's side (its outbound path, pool, sidecar): the caller stays the suspect. When it rises at
    several callers whose only common callee is one service, and that service's own spans did not
    move, the common end explains every slow link with one cause (a network delay or a saturated
    inbound queue on its side) where blaming the callers needs one fault each: the callee becomes the
    suspect (OWN) and the callers only wait for it. Needs the call graph from spans; unchanged
    otherwise.

    Only judged links count: a caller's link is judged once its baseline holds 100 requests
    (udfs.red ``min_tail_baseline``: at 0.5 calls/s, ~4 min after its first call, the 30 s
    recent window included). Before that, a delay on the callee's side shows as one slow link and
    names that caller, as a lone slow link does (issue 12: seen with a 3 min warm-up; judging from
    fewer requests opened false incidents on real spans)."""
    links = [f for f in facts if f.spans == OWN and f.spans_detail.startswith("self_time")]
    if len(links) < 2:
        return list(facts)
    slow = {f.service for f in links}
    common = set.intersection(*(set(calls.get(f.service, ())) for f in links)) - slow
    if len(common) != 1:
        return list(facts)
    end = common.pop()
    if any(f.service == end and f.spans == OWN for f in facts):
        return list(facts)
    callers = ", ".join(sorted(slow))
    out = [
        f._replace(spans=WAITS, spans_detail=f"its link to {end} slowed with every other caller's: {f.spans_detail}")
        if f.service in slow else f
        for f in facts if f.service != end
    ]
    own = [f for f in facts if f.service == end]  # its own (log) anomaly, if any, keeps its onset and score
    out.append(ServiceFacts(
        end, min(f.onset_ms for f in links + own), max(f.score for f in links + own),
        own[0].top_signal if own else "latency on every link into it", OWN,
        f"the client-side self time of every caller's link into it rose ({callers}), its own spans did not",
    ))
    return out


def _reach(graph: Mapping[str, set[str]], start: str, limit: int = 8) -> dict[str, int]:
    """Services reachable from ``start`` with their hop distance (bounded BFS)."""
    seen: dict[str, int] = {}
    frontier = [start]
    for hop in range(1, limit + 1):
        nxt: list[str] = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child != start and child not in seen:
                    seen[child] = hop
                    nxt.append(child)
        frontier = nxt
        if not frontier:
            break
    return seen


def rank(
    facts: Sequence[ServiceFacts],
    calls: Mapping[str, set[str]],
    precedence: Mapping[tuple[str, str], int],
) -> Ranking:
    """Rank ``facts`` (the incident's services). ``calls`` maps caller -> callees;
    ``precedence[(a, b)]`` counts traces where a's first failure preceded b's."""
    if not facts:
        return Ranking((), (), 0.0, ())
    names = {f.service for f in facts}
    t0 = min(f.onset_ms for f in facts)
    weights = SPAN_WEIGHTS if any(f.spans for f in facts) else WEIGHTS
    reverse: dict[str, set[str]] = {}
    for a, bs in calls.items():
        for b in bs:
            reverse.setdefault(b, set()).add(a)
    scored: list[Candidate] = []
    for f in sorted(facts, key=lambda x: (x.onset_ms, x.service)):
        reasons: list[str] = []
        delay_s = (f.onset_ms - t0) / 1000.0
        # First is categorical: errors propagate between services in milliseconds, so "0.2 s after
        # the first" is still second. Later starters get at most half, fading over a minute.
        onset = 1.0 if delay_s <= 0 else 0.5 * max(0.0, 1.0 - delay_s / 60.0)
        reasons.append("its anomaly started first" if delay_s <= 0 else f"started {delay_s:.1f} s after the first")
        callees = sorted(set(_reach(calls, f.service)) & names)
        callers = sorted(set(_reach(reverse, f.service)) & names)
        if callers and not callees:
            depth = 1.0
            reasons.append(f"deepest anomalous service in the call graph (called by {', '.join(callers)})")
        elif callees:
            depth = 0.5 / (1 + len(callees))
            reasons.append(f"calls anomalous {', '.join(callees)}")
        else:
            depth = 0.5
        wins = sum(precedence.get((f.service, o), 0) for o in names if o != f.service)
        losses = sum(precedence.get((o, f.service), 0) for o in names if o != f.service)
        prec = (wins + 1) / (wins + losses + 2)
        if wins > losses:
            reasons.append(f"its failures precede the others' in {wins} shared traces")
        elif losses > wins:
            reasons.append(f"its failures follow others' in {losses} shared traces")
        own = {OWN: 1.0, WAITS: 0.0}.get(f.spans, 0.5)
        if f.spans == OWN:
            reasons.append(f"its own spans are slow or failing, not only its callees' ({f.spans_detail})")
        elif f.spans == WAITS:
            reasons.append(f"its spans wait for callees: self time and own errors unchanged ({f.spans_detail})")
        reasons.append(f"signal strength {f.score:.2f}" + (f" ({f.top_signal})" if f.top_signal else ""))
        total = (
            weights["onset"] * onset
            + weights["depth"] * depth
            + weights["precedence"] * prec
            + weights["severity"] * min(1.0, f.score)
            + weights["own"] * own
        )
        scored.append(Candidate(f.service, round(total, 4), tuple(reasons)))
    scored.sort(key=lambda c: (-c.score, c.service))
    root = scored[0].service
    root_callers = _reach(reverse, root)
    # Callers of the root cause are affected, not competing causes: rank them after the others.
    heads = [c for c in scored if c.service not in root_callers]
    tails = [c._replace(reasons=(*c.reasons, f"calls {root} (affected)")) for c in scored if c.service in root_callers]
    candidates = tuple(heads + tails)
    onset_of = {f.service: f.onset_ms for f in facts}
    rest = sorted(names - {root}, key=lambda s: (root_callers.get(s, 99), onset_of[s], s))
    chain = (root, *rest)
    if len(candidates) == 1:
        confidence = 0.5 + 0.4 * min(1.0, facts[0].score)
    else:
        confidence = 0.5 + (candidates[0].score - candidates[1].score)
    confidence = round(min(1.0, max(0.0, confidence)), 2)
    return Ranking(candidates, chain, confidence, tuple(rest))
