"""Issue 13 on the paths users meet: broker -> job (the local tansu broker, the job on the MiniCluster
in Kafka mode, as ``logclaw run`` runs it) and ``logclaw replay`` with a traces file.

- One tenant's record dated 2099 no longer stops another tenant's detection (item 4, item 14).
- A dead letter for an 838 KB message no longer fails the job (item 3, item 14).
- A malformed span id is dead-lettered, not a failed replay (item 13).
- Bad input through the whole path: generated and mutated payloads, the job keeps running with no
  restart and every input is indexed or dead-lettered (the standing suite's in-suite size).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from connectors import otlp
from connectors.broker import LocalBroker
from jobs.config import JobConfig
from tests.test_job_kafka import (
    TopicReader,
    Topics,
    as_kafka,
    cascade_messages,
    count_at_least,
    events_of,
    kafka_job,
    produce,
    uninterrupted_events,
    without_emitted_at,
)
from udfs.records import Level, LogRecord
from udfs.scenarios.library import DEFAULT_BASE_MS

Y2099_MS = 4_070_908_800_000  # 2099-01-01T00:00:00Z


def _record(tenant: str, service: str, time_ms: int, body: str, level: Level = Level.INFO) -> LogRecord:
    from types import MappingProxyType

    empty = MappingProxyType({})
    return LogRecord(tenant, service, "", time_ms * 1_000_000, 0, int(level), level, level.name, body, False, "", "",
                     None, "", "", "", "", empty, empty, empty)  # fmt: skip


def _run_job(broker: LocalBroker, topics: Topics, tmp_path: Path, **overrides: Any) -> tuple[Any, JobConfig]:
    from jobs.detect import build_pipeline, configure, sources
    from jobs.runtime import local_env

    cfg = JobConfig.from_env({}, mode="kafka", bootstrap_servers=broker.bootstrap, logs_topic=topics.logs,
                             incidents_topic=topics.incidents, dead_letter_topic=topics.dead, group_id=topics.group,
                             store_path=str(tmp_path / "logclaw.db"), checkpoint_interval_ms=0, parallelism=2,
                             **overrides)  # fmt: skip
    env = local_env(cfg, with_kafka=True)
    configure(env, cfg)  # no checkpoints: no restart strategy, so any failure leaves the job FAILED
    logs, spans = sources(env, cfg)
    build_pipeline(env, cfg, logs, spans)
    return env.execute_async("logclaw-hardening-test"), cfg


def _victim_messages() -> list[list[LogRecord]]:
    return [[r._replace(tenant="victim") for r in m] for m in cascade_messages()]


def _watch(broker: LocalBroker, topics: Topics, client: Any, want_events: int, want_dead: int,
           timeout_s: float = 200) -> tuple[list[dict[str, Any]], list[Any], str]:  # fmt: skip
    incidents = TopicReader(broker.bootstrap, topics.incidents)
    dead = TopicReader(broker.bootstrap, topics.dead)
    try:
        deadline = time.monotonic() + timeout_s
        got = incidents.poll_until(count_at_least(want_events), deadline)
        letters = dead.poll_until(count_at_least(want_dead), deadline)
        status = str(client.get_job_status().result())
    finally:
        client.cancel().result()
        incidents.close()
        dead.close()
    return events_of(got), letters, status


# --- item 4 + 14: one tenant's clock on the live path --------------------------------------------------------


@kafka_job
@pytest.mark.timeout(400)
def test_a_tenants_record_dated_2099_is_dead_lettered_and_the_victim_tenant_still_gets_its_incident_via_broker(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topics = Topics(broker, "h-clock")
    victim = _victim_messages()
    expected = uninterrupted_events(victim)
    assert [e["event"] for e in expected][:1] == ["opened"] and {e["tenant"] for e in expected} == {"victim"}
    # The attacker's INFO line dated 2099, stamped as a producer other than ingest may stamp it (Kafka
    # timestamp = event time; `logclaw ingest` itself refuses it and stamps receive time),
    # first on both partitions: without the skew check it moved every subtask's watermark to 2099.
    evil = [_record("mallory", "clock", Y2099_MS, "all is well")]
    evil_at = produce(broker.bootstrap, topics.logs, [(b"mallory/clock", otlp.encode_logs_proto(evil), p, Y2099_MS)
                                                      for p in (0, 1)])  # fmt: skip
    produce(broker.bootstrap, topics.logs, as_kafka(victim))
    client, _ = _run_job(broker, topics, tmp_path)
    events, letters, status = _watch(broker, topics, client, len(expected), len(evil_at))
    assert status.endswith("RUNNING")
    assert without_emitted_at(events) == expected  # the victim's incident, as if mallory had not written
    dead = sorted((json.loads(m.value()) for m in letters), key=lambda d: d["partition"])
    assert [(d["partition"], d["offset"], [e["reason"] for e in d["errors"]]) for d in dead] == [
        (p, o, ["future_timestamp"]) for p, o in sorted(evil_at)]


# --- item 3 + 14: an oversized dead letter on the live path ---------------------------------------------------


@kafka_job
@pytest.mark.timeout(400)
def test_an_838_kb_message_with_one_bad_timestamp_is_dead_lettered_truncated_and_the_job_keeps_running_via_broker(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topics = Topics(broker, "h-big")
    messages = cascade_messages()
    expected = uninterrupted_events(messages)
    filler = "x" * 8_000
    big_records = [_record("big", "bulk", DEFAULT_BASE_MS + i, f"{i} {filler}") for i in range(104)]
    big_records.append(_record("big", "bulk", 0, "no time at all")._replace(time_unix_nano=7))
    big = otlp.encode_logs_proto(big_records)
    assert 830_000 < len(big) < 850_000  # base64 in a JSON dead letter: > 1 MB, Kafka's default limit
    big_at = produce(broker.bootstrap, topics.logs, [(b"big/bulk", big, 0, DEFAULT_BASE_MS)])
    produce(broker.bootstrap, topics.logs, as_kafka(messages))
    client, _ = _run_job(broker, topics, tmp_path)
    events, letters, status = _watch(broker, topics, client, len(expected), 1)
    assert status.endswith("RUNNING")
    assert without_emitted_at(events) == expected
    assert len(letters) == 1 and len(letters[0].value()) < 1_000_000
    letter = json.loads(letters[0].value())
    assert (letter["topic"], letter["partition"], letter["offset"]) == (topics.logs, *big_at[0])
    assert [(e["reason"], e["record_index"]) for e in letter["errors"]] == [("absurd_timestamp", 104)]
    assert letter["payload_truncated"] is True and letter["payload_bytes"] == len(big)
    assert big.startswith(base64.b64decode(letter["payload_base64"]))


# --- item 13: one malformed span id in a replay's traces file --------------------------------------------------


@pytest.mark.flink
@pytest.mark.timeout(400)
def test_replay_with_one_malformed_span_id_dead_letters_that_span_and_finishes(tmp_path: Path) -> None:
    from connectors.simulate_io import write_jsonl
    from jobs.cli import main

    messages = cascade_messages()
    write_jsonl(tmp_path / "logs.jsonl", [otlp.encode_logs_json(m) for m in messages])
    start = DEFAULT_BASE_MS * 1_000_000
    base = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "GET /cart", "kind": 2,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 5)}
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]}
    spans = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [
        base, {**base, "spanId": "zz-not-hex-zz"}, {**base, "spanId": "ef" * 8, "parentSpanId": "cd" * 8}]}]}]}
    write_jsonl(tmp_path / "traces.jsonl", [json.dumps(spans).encode()])
    out = tmp_path / "out"
    assert main(["replay", "--logs", str(tmp_path / "logs.jsonl"), "--traces", str(tmp_path / "traces.jsonl"),
                 "--out", str(out), "--quiet"]) == 0
    dead = [json.loads(line) for line in (out / "dead-letter.jsonl").read_text().splitlines()]
    assert [(d["topic"], [(e["reason"], e["record_index"]) for e in d["errors"]]) for d in dead] == [
        ("file", [("bad_trace_id", 1)])]
    events = [json.loads(line) for line in (out / "incidents.jsonl").read_text().splitlines()]
    assert any(e["event"] == "opened" for e in events)


# --- the standing suite, in-suite size: bad input through broker -> job ----------------------------------------


@kafka_job
@pytest.mark.timeout(600)
def test_generated_and_mutated_payloads_through_broker_and_job_are_all_accounted_for_with_no_restart(
    broker: LocalBroker, tmp_path: Path
) -> None:
    from tests.bench.bad_input_bench import generate, run_job

    payloads = list(generate(seed=13, count=300))
    assert {p.kind for p in payloads} == {"logs", "spans"}
    tally = run_job(payloads, broker, str(tmp_path / "store.sqlite"), timeout_s=300)
    print(f"\nbad input via broker -> job: {tally}")
    assert tally.status.endswith("RUNNING") and tally.restarts == tally.failures == 0
    assert (tally.indexed, tally.dead_letters, tally.dead_records) == (
        tally.expected_indexed, tally.expected_dead_letters, tally.expected_dead_records)
    assert tally.expected_dead_letters > 100 and tally.expected_indexed > 500
