"""OpenSearch writer (``OpenSearchSink``) and reader (``OpenSearchReader``) over opensearch-py.

Indices are per tenant, and for logs and anomalies per UTC *event* day:
``<prefix>-logs-<tenant>-YYYY.MM.DD``, ``<prefix>-anomalies-<tenant>-YYYY.MM.DD``,
``<prefix>-incidents-<tenant>``. Documents carry the deterministic ids of ``connectors.logstore``,
so a replay from a Flink checkpoint overwrites what it wrote (``index`` actions, explicit ``_id``).

The sink's retry policy is the only one: opensearch-py's transport retries are switched off
(``max_retries=0``, no ``retry_on_status``). Whole requests are retried on 429/502/503/504 and
connection errors with capped exponential backoff and jitter; inside a bulk response, items rejected
with 429/5xx are resent alone, items refused with another 4xx (mapping errors) go to the dead letter
with their reason. When attempts run out the sink raises ``SinkError`` so the job restarts from its
last checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

from connectors.logstore import (
    EVENT_RANK,
    LogDoc,
    MetricRow,
    check_keys,
    clamp_limit,
    format_time_ms,
    incident_event_id,
    incident_state,
    log_doc,
    log_doc_ids,
    merge_metric_rows,
    metric_doc_id,
    parse_time_ms,
    utc_day,
)
from udfs.records import LogRecord

TEMPLATES_DIR = Path(__file__).with_name("opensearch_templates")
FAMILIES = ("logs", "anomalies", "incidents", "incident_state", "metrics")
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
_INCIDENT_HELPER_FIELDS = ("detected_at_ms", "event_rank")
_NDJSON = {"content-type": "application/x-ndjson"}
_HASH_SUFFIX = re.compile(r"_[0-9a-f]{8}$")
_T = TypeVar("_T")
# unmapped_type: an index without the field (e.g. created before the templates) sorts instead of failing
_SORT_BY_TIME = [{"time_ms": {"order": "asc", "unmapped_type": "long"}}]
_SORT_BY_EVENT = [{"detected_at_ms": {"order": "asc", "unmapped_type": "long"}},
                  {"event_rank": {"order": "asc", "unmapped_type": "long"}}]


class SinkError(RuntimeError):
    """Writing failed after every allowed attempt (or the cluster refused the request outright)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per request (first try included); backoff ``base * 2**n`` capped, with jitter."""

    max_attempts: int = 6
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 10.0

    def delay_s(self, retry_number: int, rng: random.Random) -> float:
        """Delay before retry ``retry_number`` (1-based): half fixed, half random ("equal jitter")."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** (retry_number - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class SinkStats:
    """Counters the job exposes as metrics (all monotonic except the ``max_*`` high-water marks)."""

    requests: int = 0
    request_retries: int = 0
    item_retries: int = 0
    docs_written: int = 0
    dead_lettered: int = 0
    failures: int = 0
    flushes: int = 0
    max_buffered_docs: int = 0
    max_request_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class DeadLetter:
    """A document OpenSearch refused for good (e.g. ``mapper_parsing_exception``), with the reason."""

    index: str
    doc_id: str
    status: int
    error_type: str
    reason: str
    source: str


@dataclass
class _Doc:
    index: str
    doc_id: str
    lines: bytes  # action line + source line, each ending in "\n"
    source: str = field(repr=False)
    action: str = "index"  # or "update" (metrics: a scripted upsert that adds)


# Adds each count in params.add to the bucket's document; the upsert is the first message's counts.
METRICS_SCRIPT = ("for (e in params.add.entrySet()) { ctx._source[e.getKey()] = "
                  "(ctx._source[e.getKey()] == null ? 0 : ctx._source[e.getKey()]) + e.getValue(); }")


def index_tenant(tenant: str) -> str:
    """``tenant`` as a legal, lower-case index-name part that never contains ``-``.

    Unchanged when already legal; otherwise sanitized and suffixed with ``_`` + 8 hex of its sha1,
    so two tenants never share an index and ``<prefix>-logs-<t>-*`` matches only tenant ``t``.
    """
    safe = re.sub(r"[^a-z0-9_]", "_", tenant.lower())[:80]
    if safe == tenant and safe and not _HASH_SUFFIX.search(safe):
        return safe
    return f"{safe}_{hashlib.sha1(tenant.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def logs_index(prefix: str, tenant: str, time_ms: int) -> str:
    return f"{prefix}-logs-{index_tenant(tenant)}-{utc_day(time_ms)}"


def anomalies_index(prefix: str, tenant: str, time_ms: int) -> str:
    return f"{prefix}-anomalies-{index_tenant(tenant)}-{utc_day(time_ms)}"


def incidents_index(prefix: str, tenant: str) -> str:
    return f"{prefix}-incidents-{index_tenant(tenant)}"


def incident_state_index(prefix: str, tenant: str) -> str:
    """One document per incident (id = incident id): its latest state, for the console's list."""
    return f"{prefix}-incident_state-{index_tenant(tenant)}"


def metrics_index(prefix: str, tenant: str, time_ms: int) -> str:
    """Per-bucket counts (``connectors.logstore.MetricRow``), per tenant and UTC event day (ISM deletes)."""
    return f"{prefix}-metrics-{index_tenant(tenant)}-{utc_day(time_ms)}"


def load_templates(prefix: str = "logclaw") -> dict[str, dict[str, Any]]:
    """Template name -> ``_index_template`` body, from ``opensearch_templates/<family>.json``
    (written for prefix ``logclaw``; patterns are rewritten for another prefix)."""
    templates = {}
    for family in FAMILIES:
        body = json.loads((TEMPLATES_DIR / f"{family}.json").read_text(encoding="utf-8"))
        patterns = body["index_patterns"]
        body["index_patterns"] = [prefix + pattern.removeprefix("logclaw") for pattern in patterns]
        templates[f"{prefix}-{family}"] = body
    return templates


def make_client(hosts: Any, auth: Any = None, timeout_s: float = 30.0,
                client_options: Mapping[str, Any] | None = None) -> OpenSearch:
    """An opensearch-py client whose own retries are off, so the caller's policy is the only one.
    ``client_options`` go to ``OpenSearch(...)`` as they are (TLS: ``verify_certs``, ``ca_certs``...)."""
    return OpenSearch(hosts=hosts, http_auth=auth, timeout=timeout_s, **(client_options or {}),
                      max_retries=0, retry_on_status=(), retry_on_timeout=False)


def _is_retryable(exc: TransportError) -> bool:
    return isinstance(exc, OSConnectionError) or exc.status_code in RETRYABLE_STATUSES


class _Retrier:
    def __init__(self, policy: RetryPolicy, sleep: Callable[[float], None], rng: random.Random,
                 stats: SinkStats) -> None:
        self.policy, self.sleep, self.rng, self.stats = policy, sleep, rng, stats

    def failed(self, what: str, attempt: int, exc: TransportError) -> None:
        """After failed attempt ``attempt``: back off, or raise ``SinkError`` when the failure is
        not transient or the attempts are used up."""
        if not _is_retryable(exc):
            self.stats.failures += 1
            raise SinkError(f"{what}: OpenSearch refused the request ({exc.status_code}): "
                            f"{exc.error}") from exc
        if attempt >= self.policy.max_attempts:
            self.stats.failures += 1
            raise SinkError(f"{what}: still failing after {attempt} attempts "
                            f"({exc.status_code}: {exc.error})") from exc
        self.stats.request_retries += 1
        self.sleep(self.policy.delay_s(attempt, self.rng))

    def call(self, what: str, send: Callable[[], _T]) -> _T:
        """``send()`` with whole-request retries; raises ``SinkError`` when attempts run out."""
        attempt = 0
        while True:
            attempt += 1
            self.stats.requests += 1
            try:
                return send()
            except TransportError as exc:
                self.failed(what, attempt, exc)


class OpenSearchSink:
    """``LogWriter`` over ``_bulk``, with a bounded buffer.

    ``write_*`` buffers documents and flushes (blocking) whenever the next document would take the
    buffer past ``max_buffer_docs`` or ``max_batch_bytes``; one bulk request is one buffer, so the
    buffer and the request size stay bounded (a single document larger than ``max_batch_bytes`` is
    sent alone). Not thread-safe: one sink per operator instance. Refused documents go to ``dead_letter`` (a callback)
    and to ``dead_letters`` (the most recent ``dead_letter_keep``); none is dropped silently.
    """

    def __init__(
        self,
        hosts: Any,
        *,
        auth: Any = None,
        index_prefix: str = "logclaw",
        max_buffer_docs: int = 5000,
        max_batch_bytes: int = 5_000_000,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        dead_letter: Callable[[DeadLetter], None] | None = None,
        dead_letter_keep: int = 1000,
        timeout_s: float = 30.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if max_buffer_docs < 1 or max_batch_bytes < 1:
            raise ValueError("max_buffer_docs and max_batch_bytes must be positive")
        self.client = make_client(hosts, auth, timeout_s, client_options)
        self.prefix = index_prefix
        self.max_buffer_docs = max_buffer_docs
        self.max_batch_bytes = max_batch_bytes
        self.policy = retry or RetryPolicy()
        self.stats = SinkStats()
        self.dead_letters: list[DeadLetter] = []
        self._dead_letter_cb = dead_letter
        self._dead_letter_keep = dead_letter_keep
        self._retrier = _Retrier(self.policy, sleep, rng or random.Random(), self.stats)
        self._buffer: list[_Doc] = []
        self._buffer_bytes = 0

    def ensure_templates(self) -> list[str]:
        """Install (or overwrite) the composable index templates; returns their names."""
        templates = load_templates(self.prefix)
        for name, body in templates.items():
            put = functools.partial(self.client.indices.put_index_template, name=name, body=body)
            self._retrier.call(f"PUT _index_template/{name}", put)
        return list(templates)

    # -- LogWriter -------------------------------------------------------------------------------

    def write_logs(self, records: Sequence[LogRecord], metrics: Sequence[MetricRow] = ()) -> int:
        for doc_id, record in zip(log_doc_ids(records), records, strict=True):
            doc = log_doc(record)
            self._add(logs_index(self.prefix, record.tenant, record.time_ms), doc_id, doc, source=_log_source(doc))
        self.write_metrics(metrics)  # same buffer, so the same bulk request as the logs
        return len(records)

    def write_metrics(self, metrics: Sequence[MetricRow]) -> int:
        merged = merge_metric_rows(metrics)
        for row in merged:
            counts = row.counts()
            upsert = {"tenant": row.tenant, "service": row.service, "bucket_ms": row.bucket_ms,
                      "time": format_time_ms(row.bucket_ms), **counts}
            body = {"script": {"source": METRICS_SCRIPT, "lang": "painless", "params": {"add": counts}},
                    "upsert": upsert}
            self._add(metrics_index(self.prefix, row.tenant, row.bucket_ms), metric_doc_id(row), body,
                      action="update")
        return len(merged)

    def write_anomalies(self, anomalies: Sequence[Mapping[str, Any]]) -> int:
        for anomaly in anomalies:
            check_keys(anomaly, ("tenant", "anomaly_id", "service", "time_ms"), "anomaly")
            time_ms = int(anomaly["time_ms"])
            doc = dict(anomaly)
            doc.setdefault("time", format_time_ms(time_ms))
            index = anomalies_index(self.prefix, anomaly["tenant"], time_ms)
            self._add(index, str(anomaly["anomaly_id"]), doc)
        return len(anomalies)

    def write_incident_events(self, events: Sequence[Mapping[str, Any]]) -> int:
        for event in events:
            check_keys(event, ("tenant", "incident_id", "event", "detected_at"), "incident event")
            doc = dict(event)
            # helper fields for a stable sort; the reader strips them again
            doc["detected_at_ms"] = parse_time_ms(event["detected_at"])
            doc["event_rank"] = EVENT_RANK.get(event["event"], 9)
            self._add(incidents_index(self.prefix, event["tenant"]), incident_event_id(event), doc)
            # The list's row: events of one tenant arrive in order (one correlator per tenant), so the
            # last one written is the latest.
            self._add(incident_state_index(self.prefix, event["tenant"]), str(event["incident_id"]),
                      incident_state(event))
        return len(events)

    def flush(self) -> None:
        """Send the buffer as one bulk request; return when every doc is written or dead-lettered.
        On ``SinkError`` the unsent docs stay buffered (a caller may flush again; Flink restarts)."""
        if not self._buffer:
            return
        pending, self._buffer, self._buffer_bytes = self._buffer, [], 0
        self.stats.flushes += 1
        self._send(pending)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.client.close()

    # -- internals -------------------------------------------------------------------------------

    def _add(self, index: str, doc_id: str, doc: Mapping[str, Any], action: str = "index",
             source: str | None = None) -> None:
        if source is None:
            source = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if action == "index":  # the same bytes as json.dumps({"index": {...}}), the index escaped once
            action_line = f"{_index_action(index)}{json.dumps(doc_id)}}}}}"
        else:
            meta: dict[str, Any] = {"_index": index, "_id": doc_id}
            meta["retry_on_conflict"] = 5  # two decode subtasks may add to one bucket at once
            action_line = json.dumps({action: meta}, separators=(",", ":"))
        lines = f"{action_line}\n{source}\n".encode("utf-8", "surrogatepass")
        if self._buffer and self._buffer_bytes + len(lines) > self.max_batch_bytes:
            self.flush()
        self._buffer.append(_Doc(index, doc_id, lines, source, action))
        self._buffer_bytes += len(lines)
        self.stats.max_buffered_docs = max(self.stats.max_buffered_docs, len(self._buffer))
        if len(self._buffer) >= self.max_buffer_docs or self._buffer_bytes >= self.max_batch_bytes:
            self.flush()

    def _send(self, pending: list[_Doc]) -> None:
        """One attempt budget for the flush: each bulk request (whole or resending rejected items)
        is one attempt."""
        attempt = 0
        try:
            while pending:
                attempt += 1
                what = f"POST _bulk ({len(pending)} docs)"
                body = b"".join(doc.lines for doc in pending)
                self.stats.max_request_bytes = max(self.stats.max_request_bytes, len(body))
                self.stats.requests += 1
                try:
                    response = self.client.bulk(body=body, headers=_NDJSON)
                except TransportError as exc:
                    self._retrier.failed(what, attempt, exc)
                    continue
                pending = self._settle(pending, response)
                if not pending:
                    return
                if attempt >= self.policy.max_attempts:
                    self.stats.failures += 1
                    raise SinkError(f"{what}: {len(pending)} docs still rejected after {attempt} attempts "
                                    f"(first: {pending[0].index}/{pending[0].doc_id})")
                self.stats.item_retries += len(pending)
                self._retrier.sleep(self.policy.delay_s(attempt, self._retrier.rng))
        except SinkError:
            self._buffer = pending + self._buffer
            self._buffer_bytes = sum(len(doc.lines) for doc in self._buffer)
            raise

    def _settle(self, sent: list[_Doc], response: Any) -> list[_Doc]:
        """Count written items, dead-letter refused ones; return the items to resend."""
        items = response.get("items") if isinstance(response, Mapping) else None
        if not isinstance(items, list) or len(items) != len(sent):
            raise SinkError(f"POST _bulk: malformed response for {len(sent)} docs: {response!r:.300}")
        retry = []
        for doc, item in zip(sent, items, strict=True):
            result = item.get(doc.action) if isinstance(item, Mapping) else None
            if not isinstance(result, Mapping) or result.get("_id") != doc.doc_id:
                raise SinkError(f"POST _bulk: response item {item!r:.200} does not match {doc.doc_id}")
            status = result.get("status")
            if not isinstance(status, int):
                raise SinkError(f"POST _bulk: response item without status: {item!r:.200}")
            if 200 <= status < 300:
                self.stats.docs_written += 1
            elif status == 429 or status >= 500:
                retry.append(doc)
            else:
                self._dead_letter(doc, status, result.get("error"))
        return retry

    def _dead_letter(self, doc: _Doc, status: int, error: Any) -> None:
        error = error if isinstance(error, Mapping) else {"reason": str(error)}
        letter = DeadLetter(doc.index, doc.doc_id, status, str(error.get("type", "")),
                            str(error.get("reason", "")), doc.source)
        self.stats.dead_lettered += 1
        self.dead_letters.append(letter)
        del self.dead_letters[:-self._dead_letter_keep]
        if self._dead_letter_cb is not None:
            self._dead_letter_cb(letter)


@functools.lru_cache(maxsize=1024)
def _index_action(index: str) -> str:
    """The start of an ``index`` action line, up to the id's value (an index per tenant and day)."""
    return '{"index":{"_index":' + json.dumps(index) + ',"_id":'


def _log_source(doc: Mapping[str, Any]) -> str:
    """A log document as JSON, with orjson (a log document's largest cost was json.dumps). The same
    JSON as ``_add``'s encoder for a log document: ``log_doc`` holds no NaN/Infinity (attributes turn
    them into strings); what orjson refuses (a lone surrogate, an int past 64 bits) takes that encoder."""
    try:
        return orjson.dumps(doc).decode()
    except TypeError:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class OpenSearchReader:
    """``LogReader`` over ``_search``; every query has a ``term`` filter on the tenant and targets
    only that tenant's indices."""

    def __init__(self, hosts: Any, auth: Any = None, index_prefix: str = "logclaw", *,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
                 timeout_s: float = 30.0, client_options: Mapping[str, Any] | None = None) -> None:
        self.client = make_client(hosts, auth, timeout_s, client_options)
        self.prefix = index_prefix
        self.stats = SinkStats()
        self._retrier = _Retrier(retry or RetryPolicy(max_attempts=3), sleep, random.Random(), self.stats)

    def search_logs(self, tenant: str, services: Sequence[str], start_ms: int, end_ms: int, *,
                    min_severity_number: int = 0, text: str | None = None, limit: int = 50) -> list[LogDoc]:
        filters: list[dict[str, Any]] = [
            {"range": {"time_ms": {"gte": int(start_ms), "lt": int(end_ms)}}},
        ]
        if services:
            filters.append({"terms": {"service": list(services)}})
        if min_severity_number > 0:
            filters.append({"range": {"severity_number": {"gte": int(min_severity_number)}}})
        must = []
        if text is not None:
            if not re.search(r"\w", text):
                return []
            must.append({"multi_match": {"query": text, "fields": ["body", "exception_message"],
                                         "type": "cross_fields", "operator": "and"}})
        return self._search(f"{self.prefix}-logs-{index_tenant(tenant)}-*", tenant, filters, must,
                            _SORT_BY_TIME, clamp_limit(limit))

    def trace_logs(self, tenant: str, trace_ids: Sequence[str], *, limit: int = 100) -> list[LogDoc]:
        wanted = [trace_id for trace_id in trace_ids if trace_id]
        if not wanted:
            return []
        return self._search(f"{self.prefix}-logs-{index_tenant(tenant)}-*", tenant,
                            [{"terms": {"trace_id": wanted}}], [], _SORT_BY_TIME,
                            clamp_limit(limit))

    def incident_events(self, tenant: str, incident_id: str) -> list[dict[str, Any]]:
        docs = self._search(incidents_index(self.prefix, tenant), tenant,
                            [{"term": {"incident_id": incident_id}}], [],
                            _SORT_BY_EVENT, 1000)
        for doc in docs:
            for helper in _INCIDENT_HELPER_FIELDS:
                doc.pop(helper, None)
        return docs

    def close(self) -> None:
        self.client.close()

    def _search(self, index: str, tenant: str, filters: list[dict[str, Any]], must: list[dict[str, Any]],
                sort: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"filter": [{"term": {"tenant": tenant}}, *filters]}
        if must:
            query["must"] = must
        body = {"query": {"bool": query}, "sort": sort, "size": size}
        response = self._retrier.call(
            f"POST {index}/_search",
            lambda: self.client.search(index=index, body=body, ignore_unavailable=True,
                                       allow_no_indices=True))
        hits = response.get("hits", {}).get("hits", [])
        return [dict(hit["_source"]) for hit in hits if hit["_source"].get("tenant") == tenant]
