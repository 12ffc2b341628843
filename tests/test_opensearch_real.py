"""Opt-in: the sink and reader against a real OpenSearch (set LOGCLAW_OPENSEARCH_URL to run).

Optional: LOGCLAW_OPENSEARCH_USER / LOGCLAW_OPENSEARCH_PASSWORD (basic auth) and
LOGCLAW_OPENSEARCH_VERIFY_CERTS=false for a local cluster with a self-signed certificate.
Everything is written under a fresh index prefix and deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.logstore import log_doc
from connectors.opensearch import OpenSearchReader, OpenSearchSink
from tests.test_store import T0_NS, incident_event, make_record

URL = os.environ.get("LOGCLAW_OPENSEARCH_URL", "")

pytestmark = [
    pytest.mark.opt_in,
    pytest.mark.skipif(not URL, reason="LOGCLAW_OPENSEARCH_URL is not set: no OpenSearch to test against "
                                       "(the stand-in tests in test_opensearch_sink.py cover the sink here)"),
]


def _connection() -> dict[str, Any]:
    user = os.environ.get("LOGCLAW_OPENSEARCH_USER")
    auth = (user, os.environ.get("LOGCLAW_OPENSEARCH_PASSWORD", "")) if user else None
    verify = os.environ.get("LOGCLAW_OPENSEARCH_VERIFY_CERTS", "true").lower() != "false"
    options = {} if verify else {"verify_certs": False, "ssl_show_warn": False}
    return {"auth": auth, "client_options": options}


@pytest.fixture
def sink_and_reader() -> Iterator[tuple[OpenSearchSink, OpenSearchReader]]:
    prefix = f"logclawtest{uuid.uuid4().hex[:8]}"
    sink = OpenSearchSink([URL], index_prefix=prefix, **_connection())
    reader = OpenSearchReader([URL], index_prefix=prefix, **_connection())
    try:
        yield sink, reader
    finally:
        # by name: clusters may refuse wildcard deletes (action.destructive_requires_name)
        for index in sink.client.indices.get(index=f"{prefix}-*", allow_no_indices=True):
            sink.client.indices.delete(index=index)
        for family in ("logs", "anomalies", "incidents"):
            sink.client.indices.delete_index_template(name=f"{prefix}-{family}", params={"ignore": 404})
        reader.close()
        sink.client.close()


def test_write_refresh_read_back_against_real_opensearch(
        sink_and_reader: tuple[OpenSearchSink, OpenSearchReader]) -> None:
    sink, reader = sink_and_reader
    assert len(sink.ensure_templates()) == 3
    records = [make_record(tenant=tenant, time_unix_nano=T0_NS + i * 1_000_000, body=f"{tenant} pool {i}")
               for tenant in ("acme", "globex") for i in range(3)]
    events = [incident_event("inc-aaaaaaaa", "opened", "2024-05-01T03:47:05Z"),
              incident_event("inc-aaaaaaaa", "resolved", "2024-05-01T04:02:05Z")]
    sink.write_logs(records)
    sink.write_logs(records)  # replay: same ids, no duplicates
    sink.write_incident_events(events)
    sink.flush()
    assert sink.dead_letters == [] and sink.stats.docs_written == 14
    sink.client.indices.refresh(index=f"{sink.prefix}-*")

    start_ms = T0_NS // 1_000_000
    acme = reader.search_logs("acme", ["payment-api"], start_ms, start_ms + 1000)
    assert acme == [log_doc(r) for r in records[:3]]
    assert [d["body"] for d in reader.search_logs("globex", [], 0, 2**62, text="POOL 2")] == ["globex pool 2"]
    assert reader.trace_logs("acme", [records[0].trace_id]) == acme
    assert reader.incident_events("acme", "inc-aaaaaaaa") == events
    assert reader.incident_events("globex", "inc-aaaaaaaa") == []
