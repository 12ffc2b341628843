"""Keyed state of the service window per (tenant, service) and its versioned codec.

``OpenBucket`` accumulates a bucket the watermark has not passed; ``ServiceState`` holds the closed
buckets (zero-filled history), the details of the recent ones, the template miner and the episode
flags. Codecs are JSON-able dicts with ``SCHEMA_VERSION``, never pickle; the job stores the state in
four parts ("core", "memory", "open" per bucket, "templates") so a message writes only what it touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from udfs import history as tmpl_history
from udfs.anomaly import (
    BucketAgg,
    Sample,
)
from udfs.templates import TemplateMiner

SCHEMA_VERSION = 4
"""4 stores the template history (``memory``) apart from the core (notables change it with most
messages, the core changes at bucket close); 3 stores the closed-bucket history by columns with runs
of zeros collapsed; 2 added the template history and per-bucket discoveries; 1-3 are still read (a
core of 1-3 carries its template history inside)."""
READABLE_VERSIONS = (1, 2, 3, 4)


@dataclass
class OpenBucket:
    """Accumulator for a bucket the watermark has not passed yet."""

    total: int = 0
    failures: int = 0
    client_errors: int = 0
    groups: dict[str, int] = field(default_factory=dict)
    max_http: float = 0.0
    max_severity: float = 0.0
    max_structural: float = 0.0
    first_failure_ms: int = -1
    novel_failures: int = 0
    samples: list[Sample] = field(default_factory=list)
    novel_ids: list[str] = field(default_factory=list)
    novel_exceptions: int = 0
    template_counts: dict[str, int] = field(default_factory=dict)
    discoveries: int = 0
    """Alarming templates this service logged for the first time in this bucket."""
    first_novel_ms: int = -1
    """Event time of the bucket's first record with such a template, or -1."""
    novel_texts: list[str] = field(default_factory=list)
    """Masked text of the record that discovered each of ``novel_ids`` (same order): unlike the
    template, which generalizes as records arrive, it does not depend on arrival order."""
    novel_times: list[int] = field(default_factory=list)
    """Event time of the earliest record of each of ``novel_ids`` (same order)."""

    def add(self, agg: BucketAgg) -> None:
        self.total += agg.total
        self.failures += agg.failures
        self.client_errors += agg.client_errors
        for name, n in agg.groups:
            self.groups[name] = self.groups.get(name, 0) + n
        self.max_http = max(self.max_http, agg.max_http)
        self.max_severity = max(self.max_severity, agg.max_severity)
        self.max_structural = max(self.max_structural, agg.max_structural)
        if agg.first_failure_ms >= 0 and (self.first_failure_ms < 0 or agg.first_failure_ms < self.first_failure_ms):
            self.first_failure_ms = agg.first_failure_ms


@dataclass
class ServiceState:
    """Keyed state of one (tenant, service). Owned by the step: callers must not share it."""

    tenant: str
    service: str
    namespace: str = ""
    open: dict[int, OpenBucket] = field(default_factory=dict)
    history: list[list[int]] = field(default_factory=list)
    """Closed buckets, oldest first: [start_ms, total, failures, anomalous(0/1)]; zero-filled."""
    recent: list[OpenBucket] = field(default_factory=list)
    """Details (groups, maxima, samples) of the last ``recent_buckets`` closed buckets."""
    closed_until_ms: int = -1
    """Buckets starting before this are closed; records for them are late."""
    anomalous: bool = False
    onset_ms: int = -1
    immediate_seen: dict[str, int] = field(default_factory=dict)
    first_seen_ms: int = -1
    late_records: int = 0
    suppressed_immediate: int = 0
    templates: TemplateMiner | None = None
    memory: tmpl_history.TemplateHistory = field(default_factory=tmpl_history.TemplateHistory)
    """The service's alarming templates and observation counts (surprise of a new template)."""
    base_total: int = 0
    """Sum of ``total`` over the baseline rows (``history[:-recent_buckets]`` not anomalous), kept
    up to date by ``window._append_history``; never stored: -1 after decoding means "sum it again"."""
    base_failures: int = 0


def new_state(tenant: str, service: str, namespace: str = "") -> ServiceState:
    return ServiceState(tenant=tenant, service=service, namespace=namespace)


# ---- codec: versioned JSON-able dicts, never pickle -------------------------------------------


def encode_bucket(b: OpenBucket) -> list[Any]:
    """One bucket's codec form; adapters also store open buckets on their own (``decode_parts``
    reads them back)."""
    return [
        b.total,
        b.failures,
        b.client_errors,
        b.groups,
        b.max_http,
        b.max_severity,
        b.max_structural,
        b.first_failure_ms,
        b.novel_failures,
        [list(s) for s in b.samples],
        b.novel_ids,
        b.novel_exceptions,
        b.template_counts,
        b.discoveries,
        b.first_novel_ms,
        b.novel_texts,
        b.novel_times,
    ]


def _bucket_from_json(v: list[Any]) -> OpenBucket:
    return OpenBucket(
        int(v[0]),
        int(v[1]),
        int(v[2]),
        {str(k): int(n) for k, n in v[3].items()},
        float(v[4]),
        float(v[5]),
        float(v[6]),
        int(v[7]),
        int(v[8]),
        [Sample(*s) for s in v[9]],
        [str(i) for i in v[10]],
        int(v[11]),
        {str(k): int(n) for k, n in v[12].items()},
        int(v[13]) if len(v) > 13 else 0,
        int(v[14]) if len(v) > 14 else -1,
        [str(t) for t in v[15]] if len(v) > 15 else [],
        [int(t) for t in v[16]] if len(v) > 16 else [],
    )


def _runs(values: list[int]) -> list[int]:
    """Counts with each run of zeros as one negative number (-n: n zeros); counts are never negative."""
    out: list[int] = []
    for v in values:
        if v == 0 and out and out[-1] < 0:
            out[-1] -= 1
        else:
            out.append(-1 if v == 0 else v)
    return out


def _unruns(runs: list[Any]) -> list[int]:
    out: list[int] = []
    for v in runs:
        out.extend([0] * -int(v) if int(v) < 0 else [int(v)])
    return out


def encode_history(rows: list[list[int]]) -> Any:
    """The zero-filled closed buckets by columns: the first start and the step (the others follow from
    them), totals and failures with runs of zeros collapsed, the anomalous rows' positions. An idle
    hour is a few bytes instead of 360 rows. Rows not evenly spaced, or with a negative count, keep the
    row form."""
    if not rows:
        return []
    step = rows[1][0] - rows[0][0] if len(rows) > 1 else 0
    if any(r[0] != rows[0][0] + i * step or r[1] < 0 or r[2] < 0 for i, r in enumerate(rows)):
        return rows  # uneven, or a count the run form cannot hold
    return {
        "start": rows[0][0],
        "step": step,
        "total": _runs([r[1] for r in rows]),
        "failures": _runs([r[2] for r in rows]),
        "anomalous": [i for i, r in enumerate(rows) if r[3]],
    }


def decode_history(obj: Any) -> list[list[int]]:
    """Rows [start_ms, total, failures, anomalous] from either form (schema 1 and 2 stored rows)."""
    if isinstance(obj, list):
        return [[int(x) for x in row] for row in obj]
    total, failures = _unruns(obj["total"]), _unruns(obj["failures"])
    if len(total) != len(failures):
        raise ValueError("service window state: history columns of different lengths")
    flagged = {int(i) for i in obj["anomalous"]}
    start, step = int(obj["start"]), int(obj["step"])
    pairs = enumerate(zip(total, failures, strict=True))
    return [[start + i * step, t, f, 1 if i in flagged else 0] for i, (t, f) in pairs]


def encode_part(state: ServiceState, part: str) -> Any:
    """One independently stored part of the state: "open" (the buckets the watermark has not passed;
    changes with every message), "core" (history, episode, counters; changes at bucket close),
    "memory" (the template history; changes when alarming records arrive and at bucket close) or
    "templates" (the miner; changes when notable records arrive). Adapters write only dirty parts."""
    if part == "open":
        return {str(k): encode_bucket(b) for k, b in state.open.items()}
    if part == "templates":
        return state.templates.to_state() if state.templates is not None else None
    if part == "memory":
        return tmpl_history.encode(state.memory)
    if part != "core":
        raise ValueError(f"service window state: unknown part {part!r}")
    return {
        "schema_version": SCHEMA_VERSION,
        "tenant": state.tenant,
        "service": state.service,
        "namespace": state.namespace,
        "history": encode_history(state.history),
        "recent": [encode_bucket(b) for b in state.recent],
        "closed_until_ms": state.closed_until_ms,
        "anomalous": state.anomalous,
        "onset_ms": state.onset_ms,
        "immediate_seen": state.immediate_seen,
        "first_seen_ms": state.first_seen_ms,
        "late_records": state.late_records,
        "suppressed_immediate": state.suppressed_immediate,
    }


def encode_state(state: ServiceState) -> dict[str, Any]:
    return {
        **encode_part(state, "core"),
        "memory": encode_part(state, "memory"),
        "open": encode_part(state, "open"),
        "templates": encode_part(state, "templates"),
    }


def decode_parts(
    core: Mapping[str, Any], open_: Mapping[str, Any] | None, templates: Any, memory: Any = None
) -> ServiceState:
    """The state from its stored parts; ``memory`` None: a core of schema 1-3, which carries it inside."""
    parts = {**core, "open": open_ or {}, "templates": templates}
    if memory is not None:
        parts["memory"] = memory
    return decode_state(parts)


def decode_state(obj: Mapping[str, Any]) -> ServiceState:
    version = obj.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"service window state: unsupported schema_version {version!r} (this build reads {SCHEMA_VERSION})"
        )
    tpl = obj.get("templates")
    state = ServiceState(
        tenant=str(obj["tenant"]),
        service=str(obj["service"]),
        namespace=str(obj["namespace"]),
        open={int(k): _bucket_from_json(v) for k, v in obj["open"].items()},
        history=decode_history(obj["history"]),
        recent=[_bucket_from_json(v) for v in obj["recent"]],
        closed_until_ms=int(obj["closed_until_ms"]),
        anomalous=bool(obj["anomalous"]),
        onset_ms=int(obj["onset_ms"]),
        immediate_seen={str(k): int(v) for k, v in obj["immediate_seen"].items()},
        first_seen_ms=int(obj["first_seen_ms"]),
        late_records=int(obj["late_records"]),
        suppressed_immediate=int(obj["suppressed_immediate"]),
        templates=TemplateMiner.from_state(tpl) if tpl is not None else None,
        memory=tmpl_history.decode(obj["memory"]) if "memory" in obj else tmpl_history.TemplateHistory(),
    )
    state.base_total = state.base_failures = -1  # summed again at the next bucket close
    return state
