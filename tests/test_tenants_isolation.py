"""The Tenants standing suite (issue 13): two tenants through ingest's key -> tenant mapping, the pure
engine, the embedded store and the ticket ledger; nothing of one is visible to, or counts for, the other.

Run here, in process: ``connectors.ingest.ApiKeys.tenant_of`` / ``prepare`` (the key -> tenant mapping of
``logclaw ingest``, without its HTTP server), ``udfs.engine.Engine`` on ``two_tenants`` and on a "twin"
tenant fed byte-for-byte the same data (same services, trace ids and bodies), ``EmbeddedStore`` in a
temporary SQLite file and ``TicketLedger`` with two worker owners on one file. Not covered here: the
Flink job, Kafka, OpenSearch and the ticketing worker end to end; the Collector edge is in
tests/test_collector_tenancy.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from connectors import ingest
from connectors.ledger import EventMark, LedgerBusy, LedgerKey, TicketLedger, plan
from connectors.logstore import LogReader
from connectors.otlp import decode_logs, encode_logs_json
from connectors.store import EmbeddedStore
from connectors.tickets.base import TicketRef
from udfs.engine import Engine
from udfs.records import LogRecord, Span
from udfs.scenarios.library import build, requests_of

SCALE = 0.1  # background phases at their floors; the fault keeps its full shape
TENANTS = ("acme", "globex")
KEYS = {"k-acme-0123456789abcdef": "acme", "k-globex-fedcba9876543210": "globex"}
ACME_KEY = "k-acme-0123456789abcdef"
TENANT_DERIVED = ("tenant", "incident_id", "fingerprint", "template_id", "emitted_at")


def key_lookup(keys: dict[str, str]) -> Callable[[str | None], str | None]:
    """Ingest's key -> tenant lookup (hashed keys, issue 13 item 11)."""
    lookup: Callable[[str | None], str | None] = ingest.ApiKeys(keys).tenant_of
    return lookup


def as_tenant(record: LogRecord, tenant: str) -> LogRecord:
    attrs = MappingProxyType({**record.resource_attributes, "tenant.id": tenant})
    return record._replace(tenant=tenant, resource_attributes=attrs)


def run_engine(records: Iterable[LogRecord], spans: Iterable[Span] = ()) -> Engine:
    eng = Engine()
    eng.feed_spans(sorted(spans, key=lambda s: s.start_unix_nano))
    for message in requests_of(sorted(records, key=lambda r: r.time_unix_nano), 200):
        eng.feed(message)
    eng.finish()
    return eng


def of(events: Sequence[dict[str, Any]], tenant: str) -> list[dict[str, Any]]:
    return [e for e in events if e["tenant"] == tenant]


def without_tenant_ids(node: Any) -> Any:
    """An event with every tenant-derived id removed (they must differ between tenants; all else may not)."""
    if isinstance(node, dict):
        return {k: without_tenant_ids(v) for k, v in node.items() if k not in TENANT_DERIVED}
    if isinstance(node, list):
        return [without_tenant_ids(v) for v in node]
    return node


@pytest.fixture(scope="module")
def scenario() -> Any:
    return build("two_tenants", scale=SCALE)


@pytest.fixture(scope="module")
def twins(scenario: Any) -> tuple[list[LogRecord], list[Span]]:
    """acme's cascade twice: as acme and, byte-for-byte the same, as globex."""
    acme = [r for r in scenario.records if r.tenant == "acme"]
    spans = [s for s in scenario.spans if s.tenant == "acme"]
    return acme + [as_tenant(r, "globex") for r in acme], spans + [s._replace(tenant="globex") for s in spans]


# --- engine ----------------------------------------------------------------------------------------------


def test_engine_gives_each_tenant_the_same_incidents_alone_as_beside_the_other(scenario: Any) -> None:
    mixed = run_engine(scenario.records, scenario.spans).events
    assert {e["tenant"] for e in mixed} <= set(TENANTS) and of(mixed, "acme")
    for tenant in TENANTS:
        alone = run_engine([r for r in scenario.records if r.tenant == tenant],
                           [s for s in scenario.spans if s.tenant == tenant]).events
        assert of(mixed, tenant) == alone, tenant


def test_engine_state_keys_and_events_never_cross_tenants(scenario: Any) -> None:
    eng = run_engine(scenario.records, scenario.spans)
    assert {key[0] for key in eng.services} == set(TENANTS)
    assert all(key[0] == state.tenant for key, state in eng.services.items())
    assert all(key[0] == state.tenant for key, state in eng.traces.items())
    assert all(key == state.tenant for key, state in eng.tenants.items())
    restored = Engine.restore(eng.snapshot())
    assert {k: s.tenant for k, s in restored.services.items()} == {k: s.tenant for k, s in eng.services.items()}
    trace_ids = {t: {r.trace_id for r in scenario.records if r.tenant == t} for t in TENANTS}
    for event in eng.events:
        assert set(event["trace_ids"]) <= trace_ids[event["tenant"]], event["incident_id"]
        assert {e["trace_id"] for e in event["evidence"]} <= trace_ids[event["tenant"]] | {""}


def test_twin_tenant_with_identical_data_gets_its_own_incidents_ids_and_templates(
    twins: tuple[list[LogRecord], list[Span]],
) -> None:
    records, spans = twins
    events = run_engine(records, spans).events
    acme_alone = run_engine([r for r in records if r.tenant == "acme"], [s for s in spans if s.tenant == "acme"])
    acme, globex = of(events, "acme"), of(events, "globex")
    assert acme == acme_alone.events and acme
    assert [without_tenant_ids(e) for e in globex] == [without_tenant_ids(e) for e in acme]
    for field in ("incident_id", "fingerprint"):
        assert not {e[field] for e in acme} & {e[field] for e in globex}, field
    templates = {t: {x["template_id"] for e in of(events, t) for x in e["templates"]} for t in TENANTS}
    assert not templates["acme"] & templates["globex"]


# --- ingest's key -> tenant mapping ----------------------------------------------------------------------


def test_only_an_exact_configured_key_names_a_tenant() -> None:
    tenant_of = key_lookup(KEYS)
    assert tenant_of(ACME_KEY) == "acme"
    for presented in (None, "", "acme", "globex", ACME_KEY[:-1], ACME_KEY.upper(), ACME_KEY + "x"):
        assert tenant_of(presented) is None, presented


def test_forged_tenant_id_counts_for_the_keys_tenant_only(scenario: Any) -> None:
    """A client holding acme's key sends globex's records (tenant.id: globex): they become acme's."""
    forged = [r for r in scenario.records if r.tenant == "globex"][:500]
    body = encode_logs_json(forged)
    assert b'"globex"' in body
    tenant = key_lookup(KEYS)(ACME_KEY)
    assert tenant == "acme"
    ready = ingest.prepare(body, tenant=tenant, fmt="json", received_unix_nano=forged[-1].time_unix_nano,
                    max_body_bytes=4 * 1024 * 1024)
    assert (ready.accepted, ready.rejected) == (len(forged), 0)
    decoded = decode_logs(ready.payload, fmt="proto")
    assert {(r.tenant, r.resource_attributes["tenant.id"]) for r in decoded.records} == {("acme", "acme")}
    eng = Engine()
    eng.feed(decoded.records)
    eng.finish()
    assert {k[0] for k in eng.services} == {"acme"} and set(eng.tenants) <= {"acme"}
    assert {k[0] for k in eng.traces} <= {"acme"}
    assert all(e["tenant"] == "acme" for e in eng.events)


# --- embedded store --------------------------------------------------------------------------------------


def test_every_log_reader_query_is_scoped_by_a_tenant_argument() -> None:
    for name in ("search_logs", "trace_logs", "incident_events"):
        assert list(inspect.signature(getattr(LogReader, name)).parameters)[1] == "tenant", name
        tenant = inspect.signature(getattr(EmbeddedStore, name)).parameters["tenant"]
        assert tenant.default is inspect.Parameter.empty, name  # no "all tenants" default


def test_store_queries_return_only_the_asked_tenants_rows(
    tmp_path: Path, twins: tuple[list[LogRecord], list[Span]],
) -> None:
    records, spans = twins
    events = run_engine(records, spans).events
    acme_records = [r for r in records if r.tenant == "acme"]
    with EmbeddedStore(tmp_path / "store.db") as store:
        store.write_logs(records)
        store.write_incident_events(events)
        assert store.counts()["logs"] == len(records)  # identical records of two tenants: two rows
        start = min(r.time_ms for r in records)
        end = max(r.time_ms for r in records) + 1
        services = sorted({r.service for r in records})
        shared_traces = sorted({r.trace_id for r in acme_records if r.trace_id})[:50]
        for tenant in TENANTS:
            found = store.search_logs(tenant, services, start, end, min_severity_number=17, limit=10_000)
            text = store.search_logs(tenant, [], start, end, text="redis pool exhausted", limit=10_000)
            traced = store.trace_logs(tenant, shared_traces, limit=10_000)
            assert found and text and traced
            for doc in (*found, *text, *traced):
                assert doc["tenant"] == tenant
            assert len(found) == sum(1 for r in acme_records if r.severity_number >= 17)
            incidents = store.incidents(tenant)
            assert incidents and {i["tenant"] for i in incidents} == {tenant}
        for tenant, other in (TENANTS, TENANTS[::-1]):
            for incident_id in {e["incident_id"] for e in of(events, other)}:
                assert store.incident_events(tenant, incident_id) == []
                assert {e["tenant"] for e in store.incident_events(other, incident_id)} == {other}
        assert store.search_logs("initech", services, start, end, limit=10_000) == []
        assert store.trace_logs("initech", shared_traces) == []


# --- ticket ledger ---------------------------------------------------------------------------------------


def test_ledger_rows_claims_and_plans_are_per_tenant_even_for_one_fingerprint(tmp_path: Path) -> None:
    """Fingerprints already differ per tenant; the ledger must not rely on it, so both use one here."""
    path = tmp_path / "ledger.db"
    acme_key = LedgerKey("acme", "checkout.error_rate.abc", "jira")
    globex_key = LedgerKey("globex", acme_key.fingerprint, acme_key.destination)
    opened = EventMark("inc-1", "opened", 1_000, 0)
    with TicketLedger(path, owner="worker-1") as one, TicketLedger(path, owner="worker-2") as two:
        assert one.claim(acme_key, "inc-1").recovering is False
        assert two.get(globex_key) is None and plan(two.get(globex_key), opened) == "create"
        assert two.claim(globex_key, "inc-1").recovering is False  # acme's live claim does not block globex
        with pytest.raises(LedgerBusy):
            two.claim(acme_key, "inc-1")
        one.record(acme_key, "open", TicketRef("jira", "ACME-1"), opened, claimed=True)
        two.record(globex_key, "resolved", None, EventMark("inc-1", "resolved", 2_000, 2), claimed=True)
        assert [(r.key, r.state, r.ref) for r in one.rows("acme")] == [
            (acme_key, "open", TicketRef("jira", "ACME-1"))]
        assert [(r.key, r.state, r.ref) for r in one.rows("globex")] == [(globex_key, "resolved", None)]
        assert plan(one.get(acme_key), EventMark("inc-1", "updated", 1_500, 1)) == "update"


def test_ledger_keys_built_from_engine_events_never_collide_across_tenants(scenario: Any) -> None:
    events = run_engine(scenario.records, scenario.spans).events
    keys = {t: {LedgerKey(e["tenant"], e["fingerprint"], "jira") for e in of(events, t)} for t in TENANTS}
    fingerprints = {t: {k.fingerprint for k in keys[t]} for t in TENANTS}
    assert keys["acme"] and not fingerprints["acme"] & fingerprints["globex"]
