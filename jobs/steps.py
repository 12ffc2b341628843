"""Every operator's name (what the web UI shows) and uid (what savepoints are keyed by), in one table.

Changing a uid orphans that operator's state in existing savepoints: add new rows, never rename.
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar


class StepId(NamedTuple):
    name: str
    uid: str


STEPS: dict[str, StepId] = {
    "logs_source": StepId("otlp_logs source", "logclaw-logs-source-v1"),
    "spans_source": StepId("otlp_spans source", "logclaw-spans-source-v1"),
    "decode": StepId("decode, index logs, summarize", "logclaw-decode-v1"),
    "decode_spans": StepId("decode spans", "logclaw-decode-spans-v1"),
    "watermarks": StepId("event time: watermarks", "logclaw-watermarks-v1"),
    "trace_watermarks": StepId("event time: trace watermarks", "logclaw-trace-watermarks-v1"),
    "span_watermarks": StepId("event time: span watermarks", "logclaw-span-watermarks-v1"),
    "batches_keyed": StepId("key by (tenant, service)", "logclaw-batches-keyed-v1"),
    "traces_keyed": StepId("key by (tenant, trace)", "logclaw-traces-keyed-v1"),
    "service_window": StepId("service window (tenant, service)", "logclaw-service-window-v1"),
    "trace_timeline": StepId("trace timeline (tenant, trace)", "logclaw-trace-timeline-v1"),
    "span_red": StepId("span RED (tenant, service, operation)", "logclaw-span-red-v1"),
    "correlate": StepId("correlate incidents (tenant)", "logclaw-correlate-v1"),
    "incident_sink": StepId("incidents to topic and store", "logclaw-incident-sink-v1"),
    "dead_letter_sink": StepId("dead letters to topic and store", "logclaw-dead-letter-sink-v1"),
    "incident_end": StepId("end: incidents", "logclaw-incident-end-v1"),
    "dead_letter_end": StepId("end: dead letters", "logclaw-dead-letter-end-v1"),
}

_S = TypeVar("_S")


def step(stream: _S, key: str) -> _S:
    """Give ``stream``'s operator its name and uid from the table."""
    sid = STEPS[key]
    return stream.name(sid.name).uid(sid.uid)  # type: ignore[attr-defined, no-any-return]
