"""Bad input through the whole path (issue 13's standing suite): generated and mutated OTLP payloads,
protobuf and OTLP/JSON, logs and spans, through the job's decoder (pure) and, with ``--job``, through
the local broker into the detection job on the MiniCluster.

Run: ``python -m tests.bench.bad_input_bench [--payloads N] [--seed S] [--job] [--job-payloads M]
[--ingest] [--ingest-payloads K]``.

Every payload is either a valid request, a *structured* mutation whose record count is still known
(oversized integers, 31- and 5000-digit numbers, bad times, 2099 times, bad trace/span ids, deep
nesting, invalid UTF-8 inside a string, oversized bodies, wrong types) or a *byte* mutation of one
(truncation, bit flips, inserted/deleted/duplicated bytes, two payloads spliced). The decoder must
never raise and must account for every input: each record decodes or is one decode error (a message
it cannot read at all is one whole-message error), and where the count is known, decoded +
dead-lettered = sent. No decoded value may hold an integer the state codec cannot store.

On the job path the same payloads go through the broker; the job must stay RUNNING with 0 restarts,
and the logs it indexed plus the records it dead-lettered must equal what the pure decoder found.

With ``--ingest`` the logs payloads are POSTed (protobuf or JSON as generated, half gzipped, ~4% with a
fault in the request head or encoding) to ``logclaw ingest`` (a subprocess) in front of the broker while
the job reads the topic. Every record sent must be accepted, rejected with a reason (partial success) or
in a request refused with a reason (4xx); what ingest accepted must be what reached the topic, and all of
it indexed or dead-lettered by the job, with 0 restarts. A record's count is the payload's where known,
else what the codec finds in it (a request it cannot read at all counts as an unreadable request).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from connectors.otlp import (
    decode_logs,
    decode_spans,
    encode_logs_json,
    encode_logs_proto,
    encode_spans_json,
    encode_spans_proto,
    latest_event_time_unix_nano,
)
from udfs.records import Decoded, DecodedSpans, Level, LogRecord, Span, SpanStatus

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: event times are in the past, as real logs are
Y2099_NS = 4_070_908_800_000_000_000
INT_MIN, UINT_MAX = -(2**63), 2**64 - 1
_SERVICES = ("checkout", "payment-api", "order-service", "frontend")
_BODIES = ("GET /api/v1/cart 200 in 12 ms", "connection pool exhausted", "OutOfMemoryError: Java heap space",
           "user login ok", "timeout calling payment-api after 5000 ms")


@dataclass(frozen=True)
class Payload:
    kind: str  # "logs" | "spans"
    mutation: str
    data: bytes
    sent: int | None  # records/spans in the payload when still known, else None


# --- generation -------------------------------------------------------------------------------------------


def _records(rng: random.Random, seq: int, n: int) -> list[LogRecord]:
    tenant = f"bench-{seq % 3}"
    out = []
    for i in range(n):
        service = rng.choice(_SERVICES)
        level = rng.choice((Level.INFO, Level.INFO, Level.WARN, Level.ERROR))
        attrs: dict[str, Any] = {"http.route": "/api/v1/cart", "n": rng.randrange(-1000, 1000)}
        if rng.random() < 0.3:
            attrs["http.response.status_code"] = rng.choice((200, 404, 503))
        time_ns = (BASE_MS + seq * 1_000 + i) * 1_000_000
        out.append(LogRecord(
            tenant, service, "", time_ns, 0, int(level), level, level.name, f"{rng.choice(_BODIES)} #{seq}.{i}",
            False, f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64) | 1:016x}", None, "", "", "", "bench",
            MappingProxyType({"tenant.id": tenant, "service.name": service}), MappingProxyType({}),
            MappingProxyType(attrs),
        ))  # fmt: skip
    return out


def _spans(rng: random.Random, seq: int, n: int) -> list[Span]:
    trace = f"{rng.getrandbits(128) | 1:032x}"
    start = (BASE_MS + seq * 1_000) * 1_000_000
    return [Span(f"bench-{seq % 3}", rng.choice(_SERVICES), trace, f"{rng.getrandbits(64) | 1:016x}", "", f"op{i}",
                 2, start + i, start + i + 1_000_000, rng.choice(list(SpanStatus)), "") for i in range(n)]


HUGE_INTS: list[Any] = ["5" + "0" * 30, "9" * 5000, 2**70, 5e31, 1e300, str(2**63), "-" + "9" * 25, str(2**64)]
BAD_TIMES: list[Any] = [0, "7", "-5", "abc", str(Y2099_NS), "9" * 5000, 2**70, 1.5, None, [], {}]
BAD_IDS: list[Any] = ["zz" * 16, "ab" * 15, "ab" * 17, 12, "", "AB" * 16, "not-hex!", "ab" * 16 + "\u00e9"]


_DEEP = "@@deep@@"


def _nested_text(depth: int) -> str:
    """An AnyValue nested ``depth`` arrays deep, as JSON text (too deep for json.dumps to write)."""
    return '{"arrayValue": {"values": [' * depth + '{"stringValue": "leaf"}' + "]}}" * depth


def _attributes(rec: dict[str, Any]) -> list[Any]:
    if not isinstance(rec.get("attributes"), list):
        rec["attributes"] = []
    attrs: list[Any] = rec["attributes"]
    return attrs


def _json_record_mutation(rng: random.Random, rec: dict[str, Any]) -> str:
    """Mutate one OTLP/JSON log record in place (its count stays known); return the mutation's name."""
    choice = rng.randrange(9)
    if choice == 0:
        _attributes(rec).append({"key": "n", "value": {"intValue": rng.choice(HUGE_INTS)}})
        return "huge_int_attribute"
    if choice == 1:
        key = rng.choice(("http.status_code", "http.response.status_code"))
        _attributes(rec).append({"key": key, "value": {"stringValue": rng.choice(HUGE_INTS[:2])}})
        return "huge_status"
    if choice == 2:
        rec[rng.choice(("timeUnixNano", "observedTimeUnixNano"))] = rng.choice(BAD_TIMES)
        return "bad_time"
    if choice == 3:
        rec[rng.choice(("traceId", "spanId"))] = rng.choice(BAD_IDS)
        return "bad_id"
    if choice == 4:
        rec["body"] = {"stringValue": f"{_DEEP}{rng.choice((5, 63, 64, 65, 200, 900, 5000))}"}
        return "deep_nesting"
    if choice == 5:
        rec["body"] = {"stringValue": "x" * rng.choice((70_000, 300_000, 1_000_000))}
        return "oversized_body"
    if choice == 6:
        rec["severityNumber"] = rng.choice([*HUGE_INTS, "BOGUS", -1, 25])
        return "bad_severity"
    if choice == 7:
        rec[rng.choice(("body", "attributes", "severityText", "traceId"))] = rng.choice([7, "x", [1], {"a": 1}, True])
        return "wrong_type"
    rec["timeUnixNano"] = str(Y2099_NS)
    return "future_time"


def _structured_logs(rng: random.Random, seq: int) -> Payload:
    records = _records(rng, seq, rng.randrange(1, 12))
    doc = orjson.loads(encode_logs_json(records))
    recs = [r for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]
    names = sorted({_json_record_mutation(rng, rng.choice(recs)) for _ in range(rng.randrange(1, 4))})
    text = json.dumps(doc)
    while _DEEP in text:
        start = text.index('{"stringValue": "' + _DEEP)
        end = text.index('"}', start) + 2
        text = text[:start] + _nested_text(int(text[start + 17 + len(_DEEP):end - 2])) + text[end:]
    data = text.encode()
    if b"#" in data and rng.random() < 0.15:  # invalid UTF-8 or a lone surrogate in a string: bad JSON text
        pos = data.index(b"#")
        data = data[:pos] + rng.choice((b"\xff\xfe", b"\\ud800", b"\xc3")) + data[pos + 1:]
        return Payload("logs", "json_invalid_utf8", data, None)
    return Payload("logs", "json_" + "+".join(names), data, len(recs))


def _structured_proto(rng: random.Random, seq: int) -> Payload:
    records = _records(rng, seq, rng.randrange(1, 12))
    request = ExportLogsServiceRequest.FromString(encode_logs_proto(records))
    recs = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    target = rng.choice(recs)
    choice = rng.randrange(5)
    if choice == 0:
        target.trace_id = rng.choice((b"\x01" * 15, b"\x01" * 17, b"\x02"))
        name = "proto_bad_trace_id"
    elif choice == 1:
        target.time_unix_nano = rng.choice((Y2099_NS, 7, 2**64 - 1))
        name = "proto_bad_time"
    elif choice == 2:
        value = target.body
        for _ in range(rng.choice((10, 99, 100, 101, 500))):
            inner = type(value)()
            inner.CopyFrom(value)
            value.Clear()
            value.array_value.values.add().CopyFrom(inner)
        name = "proto_deep_nesting"
    elif choice == 3:
        target.body.string_value = "\u00a7MARK\u00a7"  # replaced by invalid UTF-8 below, same length
        name = "proto_invalid_utf8"
    else:
        attr = target.attributes.add()
        attr.key, attr.value.string_value = "http.status_code", "5" + "0" * 30
        name = "proto_huge_status"
    data = request.SerializeToString()
    if name == "proto_invalid_utf8":
        data = data.replace("\u00a7MARK\u00a7".encode(), b"\xff\xfeMARK\xfe\xff")
    return Payload("logs", name, data, len(recs))


def _structured_spans(rng: random.Random, seq: int) -> Payload:
    spans = _spans(rng, seq, rng.randrange(1, 8))
    if rng.random() < 0.5:
        doc = orjson.loads(encode_spans_json(spans))
        items = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
        target = rng.choice(items)
        field_name = rng.choice(("spanId", "traceId", "parentSpanId", "startTimeUnixNano", "endTimeUnixNano", "kind"))
        target[field_name] = rng.choice(BAD_IDS if "Id" in field_name else [*BAD_TIMES, *HUGE_INTS])
        return Payload("spans", f"json_span_bad_{field_name}", json.dumps(doc).encode(), len(items))
    request = ExportTraceServiceRequest.FromString(encode_spans_proto(spans))
    items_pb = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    rng.choice(items_pb).span_id = rng.choice((b"\x01" * 7, b"\x01" * 9))
    return Payload("spans", "proto_span_bad_span_id", request.SerializeToString(), len(items_pb))


def _valid(rng: random.Random, seq: int) -> Payload:
    if rng.random() < 0.25:
        spans = _spans(rng, seq, rng.randrange(1, 8))
        encode_s = rng.choice((encode_spans_json, encode_spans_proto))
        return Payload("spans", "valid", encode_s(spans), len(spans))
    records = _records(rng, seq, rng.randrange(1, 12))
    encode = rng.choice((encode_logs_json, encode_logs_proto))
    return Payload("logs", "valid", encode(records), len(records))


def _bytes_mutation(rng: random.Random, base: Payload, other: Payload) -> Payload:
    data = bytearray(base.data)
    choice = rng.randrange(6)
    if choice == 0:
        del data[rng.randrange(len(data) + 1):]
        name = "truncated"
    elif choice == 1:
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        name = "bit_flips"
    elif choice == 2:
        pos = rng.randrange(len(data) + 1)
        data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        name = "inserted_bytes"
    elif choice == 3:
        pos = rng.randrange(len(data))
        del data[pos:pos + rng.randrange(1, 9)]
        name = "deleted_bytes"
    elif choice == 4:
        pos = rng.randrange(len(data))
        chunk = data[pos:pos + rng.randrange(1, 64)]
        data[pos:pos] = chunk
        name = "duplicated_chunk"
    else:
        data = data[:rng.randrange(len(data) + 1)] + other.data[rng.randrange(len(other.data) + 1):]
        name = "spliced"
    return Payload(base.kind, f"bytes_{name}", bytes(data), None)


def generate(seed: int, count: int) -> Iterator[Payload]:
    """``count`` payloads, the same for the same seed: ~15% valid, ~45% structured, ~40% byte mutations."""
    rng = random.Random(seed)
    for seq in range(count):
        roll = rng.random()
        if roll < 0.15:
            yield _valid(rng, seq)
        elif roll < 0.35:
            yield _structured_logs(rng, seq)
        elif roll < 0.50:
            yield _structured_proto(rng, seq)
        elif roll < 0.60:
            yield _structured_spans(rng, seq)
        else:
            yield _bytes_mutation(rng, _valid(rng, seq), _valid(rng, seq + 1))


# --- the pure path -----------------------------------------------------------------------------------------


def ints_in(value: Any) -> Iterator[int]:
    """Every int inside a decoded record or span (fields, attributes, nested values)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from ints_in(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from ints_in(item)


def decode(payload: Payload, *, received_ms: int, skew_ms: int = 300_000) -> Decoded | DecodedSpans:
    latest = latest_event_time_unix_nano(received_ms, max_future_skew_ms=skew_ms)
    if payload.kind == "spans":
        return decode_spans(payload.data, latest_time_unix_nano=latest)
    return decode_logs(payload.data, default_time_unix_nano=BASE_MS * 1_000_000, latest_time_unix_nano=latest)


def violations(payload: Payload, decoded: Decoded | DecodedSpans) -> list[str]:
    """What is wrong with a decode under the contract (empty: fine)."""
    items = decoded.spans if isinstance(decoded, DecodedSpans) else decoded.records
    problems = []
    if any(e.reason == "internal_error" for e in decoded.errors):
        problems.append(f"internal_error: {[e.detail for e in decoded.errors if e.reason == 'internal_error']}")
    if decoded.errors and decoded.errors[0].index == -1:
        if items or len(decoded.errors) != 1:
            problems.append("a whole-message error next to records or other errors")
        elif payload.sent is not None and payload.mutation != "json_invalid_utf8" and "deep" not in payload.mutation:
            problems.append(f"whole-message error {decoded.errors[0].reason} for a payload with a known count")
    else:
        total = len(items) + len(decoded.errors)
        indexes = [e.index for e in decoded.errors]
        if len(set(indexes)) != len(indexes) or not all(0 <= i < total for i in indexes):
            problems.append(f"error indexes {indexes} do not fit {total} records")
        if payload.sent is not None and total != payload.sent:
            problems.append(f"decoded {len(items)} + dead-lettered {len(decoded.errors)} != sent {payload.sent}")
    for item in items:
        bad = [n for n in ints_in(tuple(item)) if not INT_MIN <= n <= UINT_MAX]
        if bad:
            problems.append(f"integer out of the state codec's range: {str(bad[0])[:40]}")
    return problems


@dataclass
class Tally:
    payloads: int = 0
    sent_known: int = 0
    decoded: int = 0
    dead_lettered: int = 0  # record errors plus whole-message errors
    whole_messages: int = 0
    accounted_known: int = 0  # decoded + dead-lettered over payloads whose count is known
    exceptions: int = 0
    violations: list[str] = field(default_factory=list)
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, payload: Payload, decoded: Decoded | DecodedSpans | None, problems: Sequence[str]) -> None:
        self.payloads += 1
        if decoded is None:
            self.exceptions += 1
        else:
            items = len(decoded.spans if isinstance(decoded, DecodedSpans) else decoded.records)
            self.decoded += items
            self.dead_lettered += len(decoded.errors)
            self.whole_messages += sum(1 for e in decoded.errors if e.index == -1)
            for e in decoded.errors:
                self.by_reason[e.reason] = self.by_reason.get(e.reason, 0) + 1
            if payload.sent is not None:
                self.sent_known += payload.sent
                if not (decoded.errors and decoded.errors[0].index == -1):
                    self.accounted_known += items + len(decoded.errors)
                else:
                    self.accounted_known += payload.sent  # one whole-message dead letter carries them all
        self.violations.extend(f"{payload.mutation}: {p}" for p in problems)


def run_pure(payloads: Iterator[Payload], *, received_ms: int, progress: Callable[[str], None] | None = None,
             every: int = 10_000) -> Tally:  # fmt: skip
    tally = Tally()
    started = time.monotonic()
    for payload in payloads:
        try:
            decoded: Decoded | DecodedSpans | None = decode(payload, received_ms=received_ms)
            assert decoded is not None
            problems = violations(payload, decoded)
        except Exception as exc:  # the very thing this suite exists to catch
            decoded, problems = None, [f"raised {type(exc).__name__}: {exc}"]
        tally.add(payload, decoded, problems)
        if progress and tally.payloads % every == 0:
            rate = tally.payloads / max(1e-9, time.monotonic() - started)
            progress(f"decoder: {tally.payloads} payloads, {tally.decoded} records decoded, {tally.dead_lettered}"
                     f" dead-lettered, {len(tally.violations)} violations ({rate:.0f} payloads/s)")
    return tally


# --- the job path: broker -> job (MiniCluster) ------------------------------------------------------------------


@dataclass
class JobTally:
    payloads: int = 0
    expected_indexed: int = 0
    expected_dead_letters: int = 0
    expected_dead_records: int = 0
    indexed: int = 0
    dead_letters: int = 0
    dead_records: int = 0
    restarts: int = -1  # the job's numRestarts metric
    failures: int = -1  # entries in the job's exception history
    status: str = ""
    seconds: float = 0.0

    @property
    def accounted(self) -> bool:
        return (self.indexed, self.dead_letters, self.dead_records) == (
            self.expected_indexed, self.expected_dead_letters, self.expected_dead_records)


def expected_on_job(payloads: Sequence[Payload], received_ms: int) -> tuple[int, int, int]:
    """(distinct log docs the store will hold, dead letters, dead-lettered records) per the pure decoder."""
    from connectors.logstore import log_doc_ids

    docs: set[str] = set()
    letters = records = 0
    for payload in payloads:
        decoded = decode(payload, received_ms=received_ms)
        if isinstance(decoded, Decoded):
            docs.update(log_doc_ids(decoded.records))
        if decoded.errors:
            letters += 1
            records += len(decoded.errors)
    return len(docs), letters, records


def run_job(payloads: Sequence[Payload], broker: Any, store_path: str, *, timeout_s: float = 300,
            progress: Callable[[str], None] | None = None, web_port: int = 0) -> JobTally:  # fmt: skip
    """Produce ``payloads`` to fresh logs/spans topics on ``broker`` (a running ``LocalBroker``), run
    the job until every input is accounted for or ``timeout_s`` passes, and count what it indexed and
    dead-lettered, its restarts and its status. Needs the Kafka jars."""
    from confluent_kafka import Producer

    topics = JobTopics.create(broker, "bad")
    tally = JobTally(payloads=len(payloads))
    started = time.monotonic()
    received_ms = int(time.time() * 1000)
    tally.expected_indexed, tally.expected_dead_letters, tally.expected_dead_records = expected_on_job(
        payloads, received_ms)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "message.max.bytes": 8 * 1024 * 1024})
    failures: list[str] = []
    for i, payload in enumerate(payloads):
        topic = topics.spans if payload.kind == "spans" else topics.logs
        while True:
            try:
                producer.produce(topic, payload.data, partition=i % 2, timestamp=BASE_MS,
                                 on_delivery=lambda err, _m: failures.append(str(err)) if err else None)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0 and not failures, failures
    job = RunningJob.start(broker.bootstrap, topics, store_path, web_port)
    try:
        job.watch(tally, timeout_s, progress, started)
    finally:
        job.stop()
    tally.seconds = time.monotonic() - started
    return tally


@dataclass(frozen=True)
class JobTopics:
    logs: str
    spans: str
    incidents: str
    dead: str
    tag: str

    @classmethod
    def create(cls, broker: Any, prefix: str) -> JobTopics:
        import uuid

        tag = uuid.uuid4().hex[:8]
        topics = cls(*(f"{prefix}-{n}-{tag}" for n in ("logs", "spans", "incidents", "dead")), tag=tag)
        broker.create_topics([topics.logs, topics.spans], partitions=2)
        broker.create_topics([topics.incidents, topics.dead], partitions=1)
        return topics


@dataclass
class RunningJob:
    """The detection job on the MiniCluster (``execute_async``, web UI on ``port`` for its metrics), with a
    fixed-delay restart strategy so that a failure shows as a restart instead of ending the run."""

    client: Any
    job_id: str
    port: int
    bootstrap: str
    topics: JobTopics
    store_path: str

    @classmethod
    def start(cls, bootstrap: str, topics: JobTopics, store_path: str, web_port: int = 0) -> RunningJob:
        from pyflink.common import Configuration

        from connectors.broker import free_port
        from connectors.store_retention import RetentionSettings
        from jobs.config import JobConfig
        from jobs.detect import build_pipeline, configure, sources
        from jobs.runtime import local_env

        port = web_port or free_port()
        cfg = JobConfig.from_env({}, mode="kafka", bootstrap_servers=bootstrap, logs_topic=topics.logs,
                                 spans_topic=topics.spans, incidents_topic=topics.incidents,
                                 dead_letter_topic=topics.dead, group_id=f"bad-job-{topics.tag}",
                                 store_path=store_path, checkpoint_interval_ms=0, parallelism=2, web_port=port,
                                 # This harness counts every record the job stored. Retention is by event time
                                 # behind the tenant's newest record (tests/test_retention.py): it would delete
                                 # the payloads dated 2026-01-01 once a receive-time-clamped record arrives.
                                 store_retention=RetentionSettings(retention_hours=0))
        env = local_env(cfg, with_kafka=True, web_ui=True)
        configure(env, cfg)
        restarts = Configuration()
        restarts.set_string("restart-strategy.type", "fixed-delay")
        restarts.set_string("restart-strategy.fixed-delay.attempts", "1000")
        restarts.set_string("restart-strategy.fixed-delay.delay", "1 s")
        env.configure(restarts)
        logs, spans = sources(env, cfg)
        build_pipeline(env, cfg, logs, spans)
        client = env.execute_async("logclaw-bad-input")
        return cls(client, str(client.get_job_id()), port, bootstrap, topics, store_path)

    def rest(self, path: str) -> Any:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/jobs/{self.job_id}{path}", timeout=5) as resp:
            return json.loads(resp.read())

    def watch(self, tally: JobTally, timeout_s: float, progress: Callable[[str], None] | None,
              started: float) -> JobTally:
        """Count logs indexed and dead letters until ``tally`` is accounted for or ``timeout_s`` passes,
        then read the job's restarts, failures and status into it."""
        from confluent_kafka import Consumer, TopicPartition

        from connectors.store import EmbeddedStore

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"reader-{self.topics.tag}",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(self.topics.dead, 0, 0)])
        deadline = time.monotonic() + timeout_s
        last_note = 0.0
        tally.indexed = tally.dead_letters = tally.dead_records = 0
        try:
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None:
                    letter = json.loads(msg.value() or b"")
                    tally.dead_letters += 1
                    tally.dead_records += int(letter.get("error_count", len(letter["errors"])))
                try:
                    with EmbeddedStore(self.store_path) as store:
                        tally.indexed = store.counts()["logs"]
                except Exception:
                    tally.indexed = 0
                if progress and time.monotonic() - last_note > 5:
                    last_note = time.monotonic()
                    progress(f"job: {tally.indexed}/{tally.expected_indexed} indexed, {tally.dead_letters}/"
                             f"{tally.expected_dead_letters} dead letters ({tally.dead_records}/"
                             f"{tally.expected_dead_records} records), {time.monotonic() - started:.0f} s")
                if tally.accounted:
                    break
            time.sleep(2)  # anything late (a duplicate after a restart) would show in the counts below
            while (msg := consumer.poll(0.5)) is not None:
                if msg.error() is None:
                    letter = json.loads(msg.value() or b"")
                    tally.dead_letters += 1
                    tally.dead_records += int(letter.get("error_count", len(letter["errors"])))
            with EmbeddedStore(self.store_path) as store:
                tally.indexed = store.counts()["logs"]
        finally:
            consumer.close()
        tally.restarts, tally.failures, tally.status = self.health()
        return tally

    def health(self) -> tuple[int, int, str]:
        """(numRestarts, entries in the exception history, job status) from the REST API."""
        restarts = -1
        for _ in range(30):  # the REST metric store fetches every few seconds
            metrics = self.rest("/metrics?get=numRestarts")
            if metrics:
                restarts = int(float(metrics[0]["value"]))
                break
            time.sleep(1)
        failures = len(self.rest("/exceptions").get("exceptionHistory", {}).get("entries", []))
        return restarts, failures, str(self.client.get_job_status().result())

    def stop(self) -> None:
        self.client.cancel().result()


# --- the whole path: HTTP -> logclaw ingest -> broker -> job (MiniCluster) ----------------------------------------

INGEST_KEYS = {f"bench-ingest-key-{i}-0123456789abcdef": f"bench-{i}" for i in range(3)}
HTTP_FAULTS = ("no_key", "unknown_key", "text_content_type", "not_gzip", "brotli")
PROTO_TYPE, JSON_TYPE, KEY_HEADER = "application/x-protobuf", "application/json", "x-logclaw-api-key"
_REJECTED = re.compile(r"([a-z_]+) x(\d+) \(")


@dataclass(frozen=True)
class Post:
    """One OTLP/HTTP request for a logs payload: maybe gzipped, maybe with a fault in its head or encoding."""

    payload: Payload
    body: bytes
    headers: Mapping[str, str]
    fault: str  # one of HTTP_FAULTS, or "" when the request itself is well-formed


def posts(seed: int, count: int) -> Iterator[Post]:
    """``count`` requests carrying the logs payloads of ``generate(seed, ...)`` (ingest takes no spans): the
    Content-Type sniffed from the payload, half of them gzipped, ~4% with an HTTP fault (small bodies only,
    so that a refusal before the body is read still reaches the client)."""
    rng = random.Random(seed * 7_919 + 13)
    keys = sorted(INGEST_KEYS)
    logs = (p for p in generate(seed, 4 * count + 100) if p.kind == "logs")
    for payload in itertools.islice(logs, count):
        headers = {"Content-Type": JSON_TYPE if payload.data[:1] == b"{" else PROTO_TYPE, KEY_HEADER: rng.choice(keys)}
        body = payload.data
        if rng.random() < 0.5:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        fault = rng.choice(HTTP_FAULTS) if len(body) < 256 * 1024 and rng.random() < 0.04 else ""
        if fault in ("no_key", "unknown_key"):
            del headers[KEY_HEADER]
            if fault == "unknown_key":
                headers[KEY_HEADER] = "bench-unknown-key-0123456789abcdef"
        elif fault == "text_content_type":
            headers["Content-Type"] = "text/plain"
        elif fault == "not_gzip":
            body, headers["Content-Encoding"] = payload.data + b"\x00", "gzip"
        elif fault == "brotli":
            headers["Content-Encoding"] = "br"
        yield Post(payload, body, headers, fault)


@dataclass
class IngestTally:
    """What the client sent and what ``logclaw ingest`` answered, and what reached the logs topic."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_fault: dict[str, Counter[int]] = field(default_factory=dict)  # HTTP fault -> answer statuses
    gzipped: int = 0
    json_bodies: int = 0
    records_sent: int = 0  # the payload's count where known, else the records the codec finds in it
    accepted: int = 0  # records of 200 answers less their rejected ones
    rejected: int = 0  # partial success: records refused with a reason in a 200 answer
    refused: int = 0  # records in requests answered 4xx (with a reason)
    refused_unreadable: int = 0  # requests answered 4xx that hold no readable record at all
    unanswered: int = 0  # requests without a final answer (5xx or no connection after retries)
    without_reason: int = 0  # 4xx answers or partial successes that give no reason
    retries: int = 0  # 503 (Retry-After) or a broken connection, then the same request again
    count_mismatches: int = 0  # payloads whose known count the codec does not find
    reasons: Counter[str] = field(default_factory=Counter)
    topic_messages: int = 0  # what ingest produced: messages on the logs topic and records in them
    topic_records: int = 0
    ingest_summary: str = ""  # logclaw ingest's last line
    seconds: float = 0.0

    def add(self, post: Post, known: int, status: int, rejected: int, message: str) -> None:
        self.requests += 1
        self.by_status[status] += 1
        self.gzipped += "Content-Encoding" in post.headers
        self.json_bodies += post.payload.data[:1] == b"{"
        if post.fault:
            self.by_fault.setdefault(post.fault, Counter())[status] += 1
        self.records_sent += known
        if status == 200:
            self.accepted += known - rejected
            self.rejected += rejected
            self.without_reason += bool(rejected) and not message
            for reason, n in _REJECTED.findall(message):
                self.reasons[f"200 {reason}"] += int(n)
        elif 400 <= status < 500:
            self.refused += known
            self.refused_unreadable += known == 0
            self.without_reason += not message
            self.reasons[f"{status} {re.split(r'[:(;0-9]', message, maxsplit=1)[0].strip()[:60]}"] += 1
        else:
            self.unanswered += 1

    @property
    def accounted(self) -> bool:
        return (self.unanswered == self.without_reason == self.count_mismatches == 0
                and self.records_sent == self.accepted + self.rejected + self.refused
                and self.accepted == self.topic_records)

    def figures(self) -> dict[str, Any]:
        return {k: (dict(sorted(v.items())) if isinstance(v, Counter) else v) for k, v in vars(self).items()
                if k not in ("by_fault", "reasons")} | {
            "by_fault": {f: dict(sorted(c.items())) for f, c in sorted(self.by_fault.items())},
            "reasons": dict(self.reasons.most_common()), "accounted": self.accounted}


def codec_count(payload: Payload, received_ms: int) -> tuple[int, bool]:
    """(records in ``payload``: its known count, else what the codec finds; whether the codec finds it)."""
    decoded = decode(payload, received_ms=received_ms)
    whole = bool(decoded.errors) and decoded.errors[0].index == -1
    found = 0 if whole else len(decoded.records) + len(decoded.errors)  # type: ignore[union-attr]
    if payload.sent is None:
        return found, True
    return payload.sent, whole or found == payload.sent


def answer_of(status: int, content_type: str, data: bytes) -> tuple[int, str]:
    """(records rejected, reason) from an ExportLogsServiceResponse (200) or a google.rpc.Status (else)."""
    from google.protobuf import json_format
    from google.rpc import status_pb2
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    message: Any = ExportLogsServiceResponse() if status == 200 else status_pb2.Status()
    try:
        if "json" in content_type:
            json_format.Parse(data or b"{}", message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(data)
    except Exception as exc:
        return 0, f"unreadable answer: {exc}"
    if status == 200:
        return int(message.partial_success.rejected_log_records), str(message.partial_success.error_message)
    return 0, str(message.message)


class IngestClient:
    """One keep-alive connection to ``logclaw ingest``; 503 and broken connections are retried."""

    def __init__(self, port: int) -> None:
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def send(self, post: Post, tally: IngestTally) -> tuple[int, int, str]:
        """(status, records rejected, reason); status 0 when no answer came after the retries."""
        import http.client

        last = ""
        for _attempt in range(30):
            try:
                self.conn.request("POST", "/v1/logs", body=post.body, headers=dict(post.headers))
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.conn.close()
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                last = f"{type(exc).__name__}: {exc}"
                tally.retries += 1
                time.sleep(0.2)
                continue
            if resp.status == 503:
                last = "503"
                tally.retries += 1
                time.sleep(min(1.0, float(resp.getheader("Retry-After") or 1)))
                continue
            return (resp.status, *answer_of(resp.status, resp.getheader("Content-Type") or "", data))
        return 0, 0, f"no answer: {last}"


class IngestProcess:
    """``logclaw ingest`` as a subprocess (its own interpreter: its GIL is not the job's) on a free port."""

    def __init__(self, bootstrap: str, topic: str, tmp: str) -> None:
        import os
        import subprocess
        from pathlib import Path

        from connectors.broker import free_port

        root = Path(__file__).resolve().parents[2]
        keys = Path(tmp) / "ingest-keys.json"
        keys.write_text(json.dumps(INGEST_KEYS))
        self.port = free_port()
        self.out, self.err = Path(tmp) / "ingest.out", Path(tmp) / "ingest.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYFLINK_")} | {"PYTHONPATH": str(root)}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobs.cli", "ingest", "--keys", str(keys), "--port", str(self.port),
                 "--grpc-port", "0", "--bootstrap", bootstrap, "--topic", topic],
                cwd=root, env=env, stdout=out, stderr=err)
        deadline = time.monotonic() + 60
        while "ingest: listening on" not in self.out.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"logclaw ingest did not start: {self.err.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> str:
        """SIGTERM, then its last line (messages, records accepted/rejected, responses by status)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except Exception:
                self.proc.kill()
                self.proc.wait(10)
        lines = self.out.read_text(errors="replace").splitlines()
        return next((line for line in reversed(lines) if line.startswith("ingest: stopped")), "")


def send_all(posts_: Iterator[Post], port: int, tally: IngestTally, *, clients: int = 16,
             progress: Callable[[str], None] | None = None, every: int = 5_000) -> None:
    """POST every request from ``clients`` threads and tally the answers."""
    import threading

    lock = threading.Lock()
    received_ms = int(time.time() * 1000)
    started = time.monotonic()

    def worker() -> None:
        client = IngestClient(port)
        while True:
            with lock:
                post = next(posts_, None)
            if post is None:
                return
            known, matches = codec_count(post.payload, received_ms)
            status, rejected, reason = client.send(post, tally)
            with lock:
                tally.count_mismatches += not matches
                tally.add(post, known, status, rejected, reason)
                if progress and tally.requests % every == 0:
                    rate = tally.requests / max(1e-9, time.monotonic() - started)
                    progress(f"ingest: {tally.requests} requests ({rate:.0f}/s), {tally.accepted} records accepted,"
                             f" {tally.rejected} rejected, {tally.refused} refused; {dict(tally.by_status)}")

    threads = [threading.Thread(target=worker, name=f"bench-client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def read_topic(bootstrap: str, topic: str, messages: int, timeout_s: float = 120) -> Iterator[tuple[bytes, int]]:
    """(value, timestamp ms) of the first ``messages`` messages of both partitions of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"topic-reader-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "fetch.message.max.bytes": 16 * 1024 * 1024})
    consumer.assign([TopicPartition(topic, p, 0) for p in (0, 1)])
    seen, deadline = 0, time.monotonic() + timeout_s
    try:
        while seen < messages and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen += 1
                yield msg.value() or b"", msg.timestamp()[1]
    finally:
        consumer.close()


def expected_from_topic(values: Iterator[tuple[bytes, int]], tally: IngestTally, job: JobTally) -> None:
    """What the job must index and dead-letter for what ingest produced, by the job's own codec."""
    from connectors.logstore import log_doc_ids

    docs: set[str] = set()
    for value, ts_ms in values:
        decoded = decode(Payload("logs", "topic", value, None), received_ms=ts_ms)
        assert isinstance(decoded, Decoded)
        tally.topic_messages += 1
        tally.topic_records += len(decoded.records) + len(decoded.errors)
        docs.update(log_doc_ids(decoded.records))
        if decoded.errors:
            job.expected_dead_letters += 1
            job.expected_dead_records += len(decoded.errors)
    job.expected_indexed = len(docs)


def run_ingest(seed: int, count: int, broker: Any, tmp: str, *, timeout_s: float = 600, clients: int = 16,
               progress: Callable[[str], None] | None = None) -> tuple[IngestTally, JobTally]:
    """``count`` requests through ``logclaw ingest`` into a fresh logs topic on ``broker`` while the job reads
    it; then count what ingest produced and wait until the job has indexed or dead-lettered all of it."""
    topics = JobTopics.create(broker, "ingest")
    started = time.monotonic()
    tally, job_tally = IngestTally(), JobTally(payloads=count)
    job = RunningJob.start(broker.bootstrap, topics, f"{tmp}/store.sqlite")
    try:
        ingest = IngestProcess(broker.bootstrap, topics.logs, tmp)
        try:
            send_all(posts(seed, count), ingest.port, tally, clients=clients, progress=progress)
        finally:
            tally.ingest_summary = ingest.stop()
        tally.seconds = time.monotonic() - started
        produced = int(m.group(1)) if (m := re.search(r"stopped; (\d+) messages", tally.ingest_summary)) else 0
        expected_from_topic(read_topic(broker.bootstrap, topics.logs, produced), tally, job_tally)
        job.watch(job_tally, timeout_s, progress, started)
    finally:
        job.stop()
    job_tally.seconds = time.monotonic() - started
    return tally, job_tally


def ingest_ok(tally: IngestTally, job: JobTally) -> bool:
    """Every input accounted for, every HTTP fault refused, the job never restarted."""
    summary = f" {tally.accepted} records accepted, {tally.rejected} rejected;"
    faults_refused = all(all(400 <= s < 500 for s in c) for c in tally.by_fault.values())
    return (tally.accounted and faults_refused and summary in tally.ingest_summary and job.accounted
            and job.restarts == job.failures == 0 and job.status.endswith("RUNNING"))


# --- command line -----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payloads", type=int, default=100_000, help="payloads through the pure decoder")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (same seed, same payloads)")
    parser.add_argument("--job", action="store_true", help="also send payloads through broker -> job (minutes)")
    parser.add_argument("--job-payloads", type=int, default=2_000, help="payloads through broker -> job")
    parser.add_argument("--ingest", action="store_true",
                        help="also POST requests through logclaw ingest -> broker -> job (the whole path)")
    parser.add_argument("--ingest-payloads", type=int, default=100_000, help="requests through the whole path")
    parser.add_argument("--clients", type=int, default=16, help="whole path: concurrent HTTP connections")
    parser.add_argument("--timeout-s", type=float, default=600, help="job path: give up after this long")
    parser.add_argument("--json-out", default="", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    received_ms = int(time.time() * 1000)
    started = time.monotonic()
    tally = run_pure(generate(args.seed, args.payloads), received_ms=received_ms, progress=say)
    figures: dict[str, Any] = {
        "decoder": {"payloads": tally.payloads, "records_sent_known": tally.sent_known,
                    "accounted_known": tally.accounted_known, "records_decoded": tally.decoded,
                    "dead_lettered": tally.dead_lettered, "whole_message_errors": tally.whole_messages,
                    "exceptions": tally.exceptions, "violations": len(tally.violations),
                    "seconds": round(time.monotonic() - started, 1),
                    "by_reason": dict(sorted(tally.by_reason.items()))},
    }  # fmt: skip
    for problem in tally.violations[:20]:
        say(f"violation: {problem}")
    ok = not tally.violations and tally.exceptions == 0 and tally.sent_known == tally.accounted_known
    if args.job:
        import tempfile

        from connectors.broker import LocalBroker

        with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
            payloads = list(generate(args.seed + 1, args.job_payloads))
            job = run_job(payloads, broker, f"{tmp}/store.sqlite", timeout_s=args.timeout_s, progress=say)
        figures["job"] = {k: getattr(job, k) for k in ("payloads", "expected_indexed", "indexed",
                                                        "expected_dead_letters", "dead_letters",
                                                        "expected_dead_records", "dead_records", "restarts",
                                                        "failures", "status")} | {"seconds": round(job.seconds, 1)}
        ok = ok and job.accounted and job.restarts == job.failures == 0 and job.status.endswith("RUNNING")
    if args.ingest:
        import tempfile

        from connectors.broker import LocalBroker

        with tempfile.TemporaryDirectory() as tmp, LocalBroker() as broker:
            sent, got = run_ingest(args.seed + 2, args.ingest_payloads, broker, tmp, timeout_s=args.timeout_s,
                                   clients=args.clients, progress=say)
        figures["ingest"] = sent.figures()
        figures["ingest_job"] = {k: getattr(got, k) for k in (
            "expected_indexed", "indexed", "expected_dead_letters", "dead_letters", "expected_dead_records",
            "dead_records", "restarts", "failures", "status")} | {
            "duplicates_collapsed": sent.topic_records - got.expected_dead_records - got.expected_indexed,
            "seconds": round(got.seconds, 1)}
        say(f"whole path: {sent.requests} requests, {sent.records_sent} records sent = {sent.accepted} accepted +"
            f" {sent.rejected} rejected (partial success) + {sent.refused} refused (4xx; {sent.refused_unreadable}"
            f" unreadable requests); topic {sent.topic_records} records in {sent.topic_messages} messages; job"
            f" {got.indexed} indexed + {got.dead_records} dead-lettered; restarts {got.restarts}, failures"
            f" {got.failures}, {got.status}")
        ok = ok and ingest_ok(sent, got)
    figures["ok"] = ok
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

