"""Issue 13, the pure parts: inputs that crashed the job or spoiled a whole message, each one record's
decode error (or a clamped value) now; the dead-letter builder's size bound; the start-up checks of
the limits; the state codec's defence. The Kafka/MiniCluster halves are in test_hardening_live.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest

from connectors.otlp import (
    DEAD_LETTER_PREFIX_BYTES,
    MAX_MESSAGE_BYTES,
    build_dead_letter,
    decode_logs,
    decode_spans,
    latest_event_time_unix_nano,
)
from jobs.config import ConfigError, JobConfig
from tests.bench.bad_input_bench import ints_in
from udfs.records import DecodeError, LogRecord, Span

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
INT64 = (-(2**63), 2**63 - 1)
UINT64_MAX = 2**64 - 1
Y2099 = 4_070_908_800_000_000_000  # 2099-01-01T00:00:00Z in ns


def request(*records: dict[str, Any], tenant: str = "t") -> bytes:
    resource = {"attributes": [{"key": "tenant.id", "value": {"stringValue": tenant}}]}
    return json.dumps({"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": list(records)}]}]}).encode()


def rec(body: str = "ok", **fields: Any) -> dict[str, Any]:
    return {"timeUnixNano": str(T0), "body": {"stringValue": body}, **fields}


def attr(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"attributes": [{"key": key, "value": value}]}


def reasons(errors: tuple[DecodeError, ...]) -> list[tuple[str, int]]:
    return [(e.reason, e.index) for e in errors]


def assert_state_safe(items: tuple[LogRecord, ...] | tuple[Span, ...]) -> None:
    """No int the state codec (orjson: int64/uint64) could choke on, and none beyond the decimal limit."""
    for item in items:
        for number in ints_in(tuple(item)):
            assert INT64[0] <= number <= UINT64_MAX, (item, number)
        orjson.dumps([list(ints_in(tuple(item)))])


# --- 2. an oversized integer is one record's problem, never the state codec's ------------------------------


def test_only_100_to_599_is_an_http_status_and_a_31_digit_status_does_not_reach_the_state() -> None:
    status_31 = "5" + "0" * 30
    decoded = decode_logs(request(
        rec("a", **attr("http.status_code", {"stringValue": status_31})),
        rec("b", **attr("http.status_code", {"intValue": "503"})),
        rec("c", **attr("http.response.status_code", {"intValue": "99"})),
        rec("d", **attr("http.response.status_code", {"stringValue": "600"})),
        rec("e", **attr("http.status_code", {"doubleValue": 1e300})),
        rec("f", **attr("http.status_code", {"stringValue": "0404"})),
    ))  # fmt: skip
    assert decoded.errors == ()
    assert [r.http_status for r in decoded.records] == [None, 503, None, None, None, None]
    assert decoded.records[0].attributes["http.status_code"] == status_31  # the attribute itself stays text
    assert_state_safe(decoded.records)


@pytest.mark.parametrize("fields", [
    attr("n", {"intValue": "5" + "0" * 30}),
    attr("n", {"intValue": 5e31}),  # a JSON number too big for int64 (orjson reads it as a float)
    attr("n", {"intValue": str(2**63)}),
    attr("n", {"arrayValue": {"values": [{"intValue": "-" + "9" * 25}]}}),
    {"severityNumber": "9" * 30},
    {"severityNumber": 2**31},
    {"observedTimeUnixNano": "1" + "0" * 25},
    {"timeUnixNano": str(2**64)},
], ids=["attr-31-digits", "attr-json-number", "attr-2^63", "nested", "severity-30-digits", "severity-2^31",
        "observed-26-digits", "time-2^64"])  # fmt: skip
def test_an_integer_out_of_its_range_is_a_decode_error_for_that_record_only(fields: dict[str, Any]) -> None:
    decoded = decode_logs(request(rec("before"), rec("bad", **fields), rec("after")))
    assert [r.body for r in decoded.records] == ["before", "after"]
    assert len(decoded.errors) == 1 and decoded.errors[0].index == 1
    assert decoded.errors[0].reason in ("int_out_of_range", "absurd_timestamp")
    assert_state_safe(decoded.records)


def test_int64_bounds_and_uint64_times_still_decode() -> None:
    decoded = decode_logs(request(rec(**attr("n", {"intValue": str(INT64[1])})),
                                  rec(**attr("n", {"intValue": INT64[0]}))))
    assert decoded.errors == ()
    assert [r.attributes["n"] for r in decoded.records] == [INT64[1], INT64[0]]


def test_spans_with_oversized_integers_are_one_span_each() -> None:
    good = {"traceId": "ab" * 16, "spanId": "cd" * 8, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 5)}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        good, {**good, "kind": "9" * 40}, {**good, "endTimeUnixNano": "9" * 40},
        {**good, "status": {"code": 2**40}},
    ]}]}]}  # fmt: skip
    decoded = decode_spans(json.dumps(doc).encode())
    assert len(decoded.spans) == 1
    assert [e.index for e in decoded.errors] == [1, 2, 3]
    assert {e.reason for e in decoded.errors} <= {"int_out_of_range", "absurd_timestamp"}
    assert_state_safe(decoded.spans)


def test_the_state_codec_clamps_an_oversized_integer_instead_of_failing_the_job() -> None:
    from jobs.operators import dumps

    out = orjson.loads(dumps({"a": [10**31, -(10**40), 7], "b": {"c": 2**64}}))
    assert out == {"a": [2**64 - 1, -(2**63), 7], "b": {"c": 2**64 - 1}}


# --- 9. a number over 4,300 digits rejects its record, not the message ---------------------------------------


@pytest.mark.parametrize("where", ["intValue", "time", "severity", "status"])
def test_a_5000_digit_number_is_one_records_error_not_the_whole_message(where: str) -> None:
    digits = "5" * 5000
    bad = {
        "intValue": rec(**attr("n", {"intValue": digits})),
        "time": rec(timeUnixNano=digits),
        "severity": rec(severityNumber=digits),
        "status": rec(**attr("http.status_code", {"stringValue": digits})),
    }[where]
    decoded = decode_logs(request(rec("before"), bad, rec("after")))
    assert all(e.reason != "internal_error" for e in decoded.errors)
    if where == "status":  # not a status, so no status; the record is fine otherwise
        assert [(r.body, r.http_status) for r in decoded.records] == [("before", None), ("ok", None), ("after", None)]
    else:
        assert [r.body for r in decoded.records] == ["before", "after"]
        assert [e.index for e in decoded.errors] == [1]


# --- 4. an event time too far ahead of receive time is the record's decode error -----------------------------


def test_records_more_than_the_skew_ahead_of_receive_time_are_dead_lettered_with_the_reason() -> None:
    received_ms = T0 // 1_000_000
    latest = latest_event_time_unix_nano(received_ms, max_future_skew_ms=300_000)
    assert latest == T0 + 300_000 * 1_000_000
    decoded = decode_logs(request(
        rec("now"), rec("skewed", timeUnixNano=str(T0 + 299_000_000_000)),
        rec("2099", timeUnixNano=str(Y2099)), rec("observed only", timeUnixNano="0", observedTimeUnixNano=str(Y2099)),
    ), latest_time_unix_nano=latest)  # fmt: skip
    assert [r.body for r in decoded.records] == ["now", "skewed"]
    assert reasons(decoded.errors) == [("future_timestamp", 2), ("future_timestamp", 3)]
    assert "maximum future skew" in decoded.errors[0].detail


def test_spans_starting_or_ending_beyond_the_skew_are_dead_lettered() -> None:
    latest = latest_event_time_unix_nano(T0 // 1_000_000, max_future_skew_ms=60_000)
    base = {"traceId": "ab" * 16, "spanId": "cd" * 8, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 1)}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        base, {**base, "startTimeUnixNano": str(Y2099), "endTimeUnixNano": str(Y2099)},
        {**base, "endTimeUnixNano": str(Y2099)},
    ]}]}]}  # fmt: skip
    decoded = decode_spans(json.dumps(doc).encode(), latest_time_unix_nano=latest)
    assert len(decoded.spans) == 1
    assert reasons(decoded.errors) == [("future_timestamp", 1), ("future_timestamp", 2)]


def test_max_future_skew_is_validated_at_start_up_naming_the_variable() -> None:
    assert JobConfig.from_env({}).max_future_skew_ms == 300_000
    assert JobConfig.from_env({"LOGCLAW_MAX_FUTURE_SKEW_MS": "60000"}).max_future_skew_ms == 60_000
    for bad in ("-1", "5", "abc", str(10**12)):
        with pytest.raises(ConfigError, match="LOGCLAW_MAX_FUTURE_SKEW_MS"):
            JobConfig.from_env({"LOGCLAW_MAX_FUTURE_SKEW_MS": bad})


# --- 3. a dead letter is bounded: topic/partition/offset, reasons and a payload prefix -----------------------


def test_an_838_kb_message_with_one_bad_timestamp_gives_a_bounded_dead_letter() -> None:
    big = "x" * 8_000
    payload = request(*[rec(f"{i} {big}") for i in range(104)], rec("bad", timeUnixNano="7"))
    assert 830_000 < len(payload) < 850_000
    decoded = decode_logs(payload, max_body_bytes=65_536)
    assert reasons(decoded.errors) == [("absurd_timestamp", 104)]
    letter = build_dead_letter(topic="otlp_logs", partition=3, offset=42, timestamp_ms=1234,
                               errors=decoded.errors, payload=payload)
    assert len(letter.encode()) <= DEAD_LETTER_PREFIX_BYTES * 2 < 1_000_000  # fits Kafka's default 1 MB too
    obj = json.loads(letter)
    assert (obj["topic"], obj["partition"], obj["offset"], obj["timestamp_ms"]) == ("otlp_logs", 3, 42, 1234)
    assert obj["errors"] == [{"reason": "absurd_timestamp", "detail": decoded.errors[0].detail, "record_index": 104}]
    assert obj["error_count"] == 1 and obj["payload_bytes"] == len(payload) and obj["payload_truncated"] is True
    prefix = base64.b64decode(obj["payload_base64"])
    assert payload.startswith(prefix) and 0 < len(prefix) <= DEAD_LETTER_PREFIX_BYTES


def test_a_small_dead_letter_keeps_the_whole_payload() -> None:
    letter = json.loads(build_dead_letter(topic="file", partition=-1, offset=-1, timestamp_ms=0,
                                          errors=(DecodeError("invalid_json", "x", -1),), payload=b"{oops"))
    assert letter["payload_base64"] == base64.b64encode(b"{oops").decode() and letter["payload_truncated"] is False


def test_a_dead_letter_with_half_a_million_errors_stays_under_the_bound() -> None:
    errors = tuple(DecodeError("absurd_timestamp", "d" * 5_000, i) for i in range(500_000))
    letter = build_dead_letter(topic="otlp_logs", partition=0, offset=1, timestamp_ms=0, errors=errors,
                               payload=b"\x00" * 5_000_000, max_bytes=200_000)
    assert len(letter.encode()) <= 200_000
    obj = json.loads(letter)
    assert obj["error_count"] == 500_000 and obj["reasons"] == {"absurd_timestamp": 500_000}
    assert 0 < len(obj["errors"]) < 500_000 and obj["errors"][0]["record_index"] == 0


def test_one_message_size_limit_in_config_topics_and_collector() -> None:
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    assert JobConfig.from_env({}).max_message_bytes == MAX_MESSAGE_BYTES == 8 * 1024 * 1024
    docs = yaml.safe_load_all((root / "deploy/kafka/topics.yaml").read_text())
    topics = {d["spec"]["topicName"]: d["spec"]["config"] for d in docs}
    assert topics["otlp_logs"]["max.message.bytes"] == topics["otlp_spans"]["max.message.bytes"] == MAX_MESSAGE_BYTES
    with pytest.raises(ConfigError, match="LOGCLAW_MAX_MESSAGE_BYTES"):
        JobConfig.from_env({"LOGCLAW_MAX_MESSAGE_BYTES": "100"})


def test_a_message_over_the_size_limit_is_dead_lettered_whole() -> None:
    payload = request(rec("x" * 2_000))
    decoded = decode_logs(payload, max_message_bytes=1_000)
    assert reasons(decoded.errors) == [("too_large", -1)]
    assert reasons(decode_spans(b"{" + b" " * 2_000 + b"}", max_message_bytes=1_000).errors) == [("too_large", -1)]


# --- 13. a malformed span id is that span's decode error ------------------------------------------------------


def test_one_malformed_span_id_is_one_spans_error() -> None:
    good = {"traceId": "ab" * 16, "spanId": "cd" * 8, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 1)}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [good, {**good, "spanId": "not-hex!"}, good]}]}]}
    decoded = decode_spans(json.dumps(doc).encode())
    assert len(decoded.spans) == 2 and reasons(decoded.errors) == [("bad_trace_id", 1)]


# --- the standing suite, in-suite size: generated and mutated payloads through the decoder -------------------


def test_2000_generated_and_mutated_payloads_never_raise_and_every_record_is_accounted_for() -> None:
    from tests.bench.bad_input_bench import generate, run_pure

    tally = run_pure(generate(seed=13, count=2_000), received_ms=T0 // 1_000_000 + 86_400_000)
    assert tally.violations == [] and tally.exceptions == 0
    assert tally.payloads == 2_000 and tally.sent_known == tally.accounted_known > 5_000
    assert tally.whole_messages > 100 and tally.decoded > 5_000
    for reason in ("int_out_of_range", "future_timestamp", "bad_trace_id", "too_deep", "invalid_utf8",
                   "invalid_protobuf", "invalid_json", "absurd_timestamp", "wrong_type"):
        assert tally.by_reason.get(reason, 0) > 0, (reason, tally.by_reason)


def test_a_dead_letter_the_topic_refuses_is_sent_without_its_payload_then_dropped_never_raised() -> None:
    from connectors.kafka_io import KafkaSinkError
    from jobs.operators import DeadLetterSink

    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def inc(self, by: int = 1) -> None:
            self.n += by

    class Producer:
        def __init__(self, refuse: int, transient: bool = False) -> None:
            self.refuse, self.transient, self.sent = refuse, transient, []  # type: list[bytes]

        def send(self, key: str, value: bytes) -> None:
            if self.transient:
                raise KafkaSinkError("not acknowledged within 30 s")
            if self.refuse:
                self.refuse -= 1
                raise KafkaSinkError("Broker: Message size too large", refused=True)
            self.sent.append(value)

    letter = build_dead_letter(topic="otlp_logs", partition=1, offset=9, timestamp_ms=0,
                               errors=(DecodeError("absurd_timestamp", "7 ns", 3),), payload=b"x" * 1000)
    sink = DeadLetterSink(JobConfig())
    sink.m, sink.m_cut, sink.m_dropped = Counter(), Counter(), Counter()
    sink.producer = Producer(refuse=1)
    sink._send(letter)
    sent = json.loads(sink.producer.sent[0])
    assert (sent["offset"], sent["payload_base64"], sent["errors"][0]["reason"]) == (9, "", "absurd_timestamp")
    assert "too large" in sent["refused"] and sink.m_cut.n == 1
    sink.producer = Producer(refuse=2)
    sink._send(letter)  # refused twice: dropped and counted, the job goes on
    assert sink.producer.sent == [] and sink.m_dropped.n == 1
    sink.producer = Producer(refuse=0, transient=True)
    with pytest.raises(KafkaSinkError):  # an unreachable broker still fails the job: restart, nothing lost
        sink._send(letter)
