"""Root-cause analysis as pure functions: the deterministic evidence-based RCA and the strict parser
of the LLM's JSON answer.

Both produce an ``RcaDraft`` (the analysis without its source); the ticketing job turns it into
``connectors.tickets.base.Rca`` by adding where it came from ("evidence" or "llm:<model>"). The
incident is the contract event (``shared/contracts/incident.schema.json``) as a mapping.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_TEXT_CHARS = 4000
MAX_SERVICES = 50
MAX_SERVICE_CHARS = 200
RCA_KEYS = frozenset({"root_cause", "impact", "affected_services", "suggested_fix", "confidence"})


@dataclass(frozen=True)
class RcaDraft:
    """A root-cause analysis: what failed, who is hurt, what to do, and how sure we are (0..1)."""

    root_cause: str
    impact: str
    affected_services: tuple[str, ...]
    suggested_fix: str
    confidence: float


@dataclass(frozen=True)
class RcaParseError:
    """Why an LLM answer was rejected (the worker then tries the next model or the fallback)."""

    reason: str


# Signal group -> first things an on-call engineer should check (DETECTION.md's eight groups).
FIXES: Mapping[str, str] = {
    "oom": "raise the memory limit to stop the restarts, then look for a leak (heap dump, growth per "
    "request) or an unbounded cache/batch",
    "crash": "roll back the latest deploy if it coincides; read the first stack trace / core dump and "
    "fix the faulting code path",
    "resource": "free or grow the exhausted resource (disk space, file descriptors, ulimit) and find "
    "what consumes it (log rotation, leaked handles)",
    "dependency": "check the health of the upstream the errors point at; fail fast with a circuit "
    "breaker and retries with backoff meanwhile",
    "database": "check the connection pool size and leaked connections (close them in a finally block, "
    "set a max idle time), slow queries and locks/deadlocks",
    "timeout": "find the slow hop in the traces; align client timeouts with the callee's latency and "
    "add backpressure instead of piling up requests",
    "connection": "check that the target is up and reachable (DNS, service endpoints, network policy) "
    "and that connections are not reset by a proxy or an exhausted listener",
    "auth": "check expired or rotated credentials, tokens and certificates, and recent permission "
    "changes",
}
GENERIC_FIX = (
    "compare with the last deploy or config change of {service}; start from the first error in the "
    "evidence and the trace timelines below"
)
_DETAIL_KEYS = ("pattern", "kind", "match", "group", "template", "reason")


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _fmt_num(value: Any) -> str:
    return f"{float(value):.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def _signal_text(signal: Mapping[str, Any]) -> str:
    name = str(signal.get("name", "signal"))
    detail = signal.get("detail")
    extra = ""
    if isinstance(detail, str):
        extra = detail
    elif isinstance(detail, Mapping):
        extra = next((str(detail[k]) for k in _DETAIL_KEYS if isinstance(detail.get(k), str)), "")
    label = f"{name} {extra}" if extra and extra != name else name
    return f"{label} ({_fmt_num(signal.get('weight'))})"


def signal_groups(signals: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """Known signal groups (the signals' names, e.g. ``database``), strongest first, without repeats."""
    ranked = sorted(signals, key=lambda s: -float(s.get("weight", 0) or 0))
    groups: list[str] = []
    for signal in ranked:
        for word in re.split(r"[^a-z]+", str(signal.get("name", "")).lower()):
            if word in FIXES and word not in groups:
                groups.append(word)
    return tuple(groups)


def _services(incident: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    root = incident.get("root_cause") or {}
    root_service = str(root.get("service") or incident.get("service") or "unknown service")
    affected = [str(s) for s in incident.get("affected_services") or () if str(s) != root_service]
    return root_service, tuple(dict.fromkeys(affected))


def _root_cause_text(incident: Mapping[str, Any], root_service: str) -> str:
    root = incident.get("root_cause") or {}
    candidates = [c for c in root.get("candidates") or () if isinstance(c, Mapping)]
    first = next((c for c in candidates if c.get("service") == root_service), None)
    reasons = [str(r) for r in (first or {}).get("reasons") or ()]
    text = f"{root_service} is the likely root cause (confidence {_fmt_num(root.get('confidence', 0))})"
    if reasons:
        text += ": " + "; ".join(reasons)
    chain = [str(s) for s in root.get("chain") or ()]
    if len(chain) > 1:
        text += ". Chain: " + " \u2192 ".join(chain)
    others = [c for c in candidates if c.get("service") != root_service][:2]
    if others:
        text += ". Other candidates: " + ", ".join(
            f"{c.get('service')} ({_fmt_num(c.get('score'))})" for c in others
        )
    signals = [s for s in incident.get("signals") or () if isinstance(s, Mapping)]
    if signals:
        ranked = sorted(signals, key=lambda s: -float(s.get("weight", 0) or 0))[:5]
        text += ". Signals: " + ", ".join(_signal_text(s) for s in ranked)
    return text + "."


def deterministic_rca(incident: Mapping[str, Any]) -> RcaDraft:
    """The evidence-based RCA written when no LLM is configured or every model failed."""
    root_service, affected = _services(incident)
    everyone = (root_service, *affected)
    impact = (
        f"{len(everyone)} service{'s' if len(everyone) != 1 else ''} affected: {', '.join(everyone)}. "
        f"Severity {incident.get('severity', '?')}, score {_fmt_num(incident.get('score'))}, "
        f"detected in {incident.get('service', root_service)} on the {incident.get('path', '?')} path, "
        f"anomalous since {incident.get('opened_at', '?')}."
    )
    signals = [s for s in incident.get("signals") or () if isinstance(s, Mapping)]
    groups = signal_groups(signals)[:2]
    if groups:
        fix = f"In {root_service}: " + "; also ".join(FIXES[g] for g in groups) + "."
    else:
        generic = GENERIC_FIX.format(service=root_service)
        fix = generic[0].upper() + generic[1:] + "."
    confidence = (incident.get("root_cause") or {}).get("confidence", 0.0)
    conf = _num(confidence)
    return RcaDraft(
        root_cause=_root_cause_text(incident, root_service),
        impact=impact,
        affected_services=everyone,
        suggested_fix=fix,
        confidence=min(1.0, max(0.0, conf)),
    )


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def _text_field(obj: Mapping[str, Any], key: str) -> str | RcaParseError:
    value = obj[key]
    if not isinstance(value, str) or not value.strip():
        return RcaParseError(f"{key}: expected a non-empty string")
    if len(value) > MAX_TEXT_CHARS:
        return RcaParseError(f"{key}: longer than {MAX_TEXT_CHARS} characters")
    return value.strip()


def _services_field(value: Any) -> tuple[str, ...] | RcaParseError:
    if not isinstance(value, list) or len(value) > MAX_SERVICES:
        return RcaParseError(f"affected_services: expected a list of at most {MAX_SERVICES} strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item or len(item) > MAX_SERVICE_CHARS:
            return RcaParseError(f"affected_services[{i}]: expected a string of 1..{MAX_SERVICE_CHARS} chars")
    return tuple(value)


def parse_rca_json(text: str) -> RcaDraft | RcaParseError:
    """Validate an LLM answer against the fixed RCA schema; a ```json fenced block is accepted."""
    body = text.strip()
    if not body.startswith("{"):
        fenced = _FENCE.findall(body)
        if len(fenced) != 1:
            return RcaParseError("expected one JSON object (optionally in one ```json block)")
        body = fenced[0].strip()
    try:
        obj = json.loads(body)
    except ValueError as exc:
        return RcaParseError(f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return RcaParseError("expected a JSON object")
    if set(obj) != RCA_KEYS:
        missing, extra = sorted(RCA_KEYS - set(obj)), sorted(set(obj) - RCA_KEYS)
        return RcaParseError(f"keys: missing {missing}, unexpected {extra}")
    texts = {k: _text_field(obj, k) for k in ("root_cause", "impact", "suggested_fix")}
    services = _services_field(obj["affected_services"])
    confidence = obj["confidence"]
    for value in (*texts.values(), services):
        if isinstance(value, RcaParseError):
            return value
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not math.isfinite(confidence)
        or not 0 <= confidence <= 1
    ):
        return RcaParseError("confidence: expected a number in [0, 1]")
    assert isinstance(services, tuple)
    return RcaDraft(
        root_cause=str(texts["root_cause"]),
        impact=str(texts["impact"]),
        affected_services=services,
        suggested_fix=str(texts["suggested_fix"]),
        confidence=float(confidence),
    )
