"""``ConsoleReader`` over OpenSearch: the incident list from ``<prefix>-incident_state-<tenant>``,
events from ``<prefix>-incidents-<tenant>``, logs from ``<prefix>-logs-<tenant>-*``, bucket counts
from ``<prefix>-metrics-<tenant>-*``. Every query targets only the tenant's indices and filters on
the tenant again; credentials stay in the client (``store_info`` names the host only)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from connectors.console_read import IncidentPage, IncidentQuery, page_limit
from connectors.logstore import MAX_LIMIT, METRIC_FIELDS, LogDoc, MetricRow, clamp_limit
from connectors.opensearch import OpenSearchReader, incident_state_index, index_tenant
from connectors.security import OpenSearchAccess

_DESC = {"order": "desc", "unmapped_type": "long"}
_ASC = {"order": "asc", "unmapped_type": "long"}


class OpenSearchConsoleReader:
    kind = "opensearch"

    def __init__(self, url: str, auth: Any = None, index_prefix: str = "logclaw",
                 client_options: Mapping[str, Any] | None = None) -> None:
        self.reader = OpenSearchReader([url], auth, index_prefix, client_options=client_options)
        self.prefix = index_prefix
        parts = urlsplit(url)
        self._where = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    @classmethod
    def from_access(cls, access: OpenSearchAccess, index_prefix: str = "logclaw") -> OpenSearchConsoleReader:
        """The reader for ``access``: its URL, basic auth, CA bundle and certificate verification."""
        return cls(access.url, access.auth(), index_prefix, client_options=access.client_options())

    def _search(self, index: str, tenant: str, filters: list[dict[str, Any]], *,
                must: list[dict[str, Any]] | None = None,
                sort: list[dict[str, Any]] | None = None, size: int = 100, start: int = 0,
                aggs: dict[str, Any] | None = None) -> dict[str, Any]:
        query: dict[str, Any] = {"filter": [{"term": {"tenant": tenant}}, *filters]}
        if must:
            query["must"] = must
        body: dict[str, Any] = {"query": {"bool": query}, "size": size}
        if sort:
            body["sort"] = sort
        if start:
            body["from"] = start
        if aggs:
            body["aggs"] = aggs
            body["track_total_hits"] = True
        client = self.reader.client
        response: dict[str, Any] = self.reader._retrier.call(
            f"POST {index}/_search",
            lambda: client.search(index=index, body=body, ignore_unavailable=True, allow_no_indices=True))
        return response

    @staticmethod
    def _sources(response: Mapping[str, Any], tenant: str) -> list[dict[str, Any]]:
        out = []
        for hit in response.get("hits", {}).get("hits", []):
            doc = dict(hit["_source"])
            if doc.get("tenant") == tenant:
                doc["_id"] = hit.get("_id", "")
                out.append(doc)
        return out

    def _logs_index(self, tenant: str) -> str:
        return f"{self.prefix}-logs-{index_tenant(tenant)}-*"

    def tenants(self) -> list[str]:
        """Tenants with incidents or metrics, from an aggregation over every tenant's indices (the one
        read that spans tenants: the picker of an operator running without ``--keys``)."""
        body = {"size": 0, "aggs": {"tenants": {"terms": {"field": "tenant", "size": 1000}}}}
        index = f"{self.prefix}-incident_state-*,{self.prefix}-metrics-*"
        client = self.reader.client
        response = self.reader._retrier.call(
            f"POST {index}/_search",
            lambda: client.search(index=index, body=body, ignore_unavailable=True, allow_no_indices=True))
        return sorted(str(b["key"]) for b in response.get("aggregations", {}).get("tenants", {}).get("buckets", []))

    def incidents(self, query: IncidentQuery) -> IncidentPage:
        filters: list[dict[str, Any]] = []
        if query.severity:
            filters.append({"term": {"severity": query.severity}})
        if query.service:
            filters.append({"term": {"services": query.service}})
        bounds = {k: v for k, v in (("gte", query.start_ms), ("lt", query.end_ms)) if v is not None}
        if bounds:
            filters.append({"range": {"opened_ms": bounds}})
        must = []
        if query.text:
            if not re.search(r"\w", query.text):
                return IncidentPage([], 0)
            must.append({"multi_match": {"query": query.text, "fields": ["title", "summary", "services"],
                                         "type": "cross_fields", "operator": "and"}})
        index = incident_state_index(self.prefix, query.tenant)
        state_filter = [{"term": {"state": query.state}}] if query.state else []
        aggs = {"severity": {"terms": {"field": "severity", "size": 10}},
                "state": {"terms": {"field": "state", "size": 10}}}
        counts = self._search(index, query.tenant, filters + state_filter, must=must, size=0, aggs=aggs)
        mttr = self._search(index, query.tenant, [*filters, {"term": {"state": "resolved"}}], must=must, size=0,
                            aggs={"mttr": {"avg": {"field": "duration_ms"}}})
        limit = page_limit(query.limit)
        start = max(0, min(query.offset, MAX_LIMIT - limit))
        page = self._search(index, query.tenant, filters + state_filter, must=must, size=limit, start=start,
                            sort=[{"opened_ms": _DESC}, {"incident_id": {"order": "asc"}}])
        rows = self._sources(page, query.tenant)
        for row in rows:
            row.pop("_id", None)
            row.pop("event_rank", None)
        by_state = _buckets(counts, "state")
        mttr_ms = mttr.get("aggregations", {}).get("mttr", {}).get("value")
        if query.state == "open":
            mttr_ms = None
        return IncidentPage(rows, sum(by_state.values()), _buckets(counts, "severity"), by_state, mttr_ms)

    def incident_events(self, tenant: str, incident_id: str) -> list[dict[str, Any]]:
        return self.reader.incident_events(tenant, incident_id)

    def search_logs(self, tenant: str, *, services: Sequence[str] = (), start_ms: int = 0, end_ms: int = 2**62,
                    min_severity_number: int = 0, text: str = "", limit: int = 100) -> list[LogDoc]:
        filters: list[dict[str, Any]] = [{"range": {"time_ms": {"gte": int(start_ms), "lt": int(end_ms)}}}]
        if services:
            filters.append({"terms": {"service": list(services)}})
        if min_severity_number > 0:
            filters.append({"range": {"severity_number": {"gte": int(min_severity_number)}}})
        must = []
        if text:
            if not re.search(r"\w", text):
                return []
            must.append({"multi_match": {"query": text, "fields": ["body", "exception_message"],
                                         "type": "cross_fields", "operator": "and"}})
        response = self._search(self._logs_index(tenant), tenant, filters, must=must, size=clamp_limit(limit),
                                sort=[{"time_ms": _DESC}])
        return self._sources(response, tenant)

    def log_context(self, tenant: str, service: str, time_ms: int, n: int = 15) -> list[LogDoc]:
        n = max(1, min(int(n), 200))
        index, by_service = self._logs_index(tenant), {"term": {"service": service}}
        before = self._search(index, tenant, [by_service, {"range": {"time_ms": {"lt": int(time_ms)}}}], size=n,
                              sort=[{"time_ms": _DESC}])
        after = self._search(index, tenant, [by_service, {"range": {"time_ms": {"gte": int(time_ms)}}}], size=n,
                             sort=[{"time_ms": _ASC}])
        return [*reversed(self._sources(before, tenant)), *self._sources(after, tenant)]

    def trace_logs(self, tenant: str, trace_id: str, limit: int = 500) -> list[LogDoc]:
        if not trace_id:
            return []
        response = self._search(self._logs_index(tenant), tenant, [{"term": {"trace_id": trace_id}}],
                                size=clamp_limit(limit), sort=[{"time_ms": _ASC}])
        return self._sources(response, tenant)

    def metrics(self, tenant: str, services: Sequence[str], start_ms: int, end_ms: int) -> list[MetricRow]:
        """At most 10,000 bucket rows (a day of 1 service; a chart of many services over a day should
        use a shorter range): one document per bucket, summed by the writer's scripted upsert."""
        filters: list[dict[str, Any]] = [{"range": {"bucket_ms": {"gte": int(start_ms), "lt": int(end_ms)}}}]
        if services:
            filters.append({"terms": {"service": list(services)}})
        response = self._search(f"{self.prefix}-metrics-{index_tenant(tenant)}-*", tenant, filters, size=MAX_LIMIT,
                                sort=[{"bucket_ms": _ASC}])
        return [MetricRow(tenant, str(d["service"]), int(d["bucket_ms"]),
                          *(int(d.get(name) or 0) for name in METRIC_FIELDS))
                for d in self._sources(response, tenant)]

    def newest_ms(self, tenant: str) -> int | None:
        response = self._search(f"{self.prefix}-metrics-{index_tenant(tenant)}-*", tenant, [], size=1,
                                sort=[{"bucket_ms": _DESC}])
        docs = self._sources(response, tenant)
        if docs:
            return int(docs[0]["bucket_ms"])
        response = self._search(incident_state_index(self.prefix, tenant), tenant, [], size=1,
                                sort=[{"detected_ms": _DESC}])
        docs = self._sources(response, tenant)
        return int(docs[0]["detected_ms"]) if docs else None

    def anomalies(self, tenant: str, start_ms: int, end_ms: int, limit: int = 200) -> list[dict[str, Any]]:
        response = self._search(f"{self.prefix}-anomalies-{index_tenant(tenant)}-*", tenant,
                                [{"range": {"time_ms": {"gte": int(start_ms), "lt": int(end_ms)}}}],
                                size=clamp_limit(limit), sort=[{"time_ms": _DESC}])
        return self._sources(response, tenant)

    def store_info(self) -> dict[str, Any]:
        return {"kind": "OpenSearch", "location": self._where, "size_bytes": None}

    def close(self) -> None:
        self.reader.close()


def _buckets(response: Mapping[str, Any], name: str) -> dict[str, int]:
    buckets = response.get("aggregations", {}).get(name, {}).get("buckets", [])
    return {str(b["key"]): int(b["doc_count"]) for b in buckets}
