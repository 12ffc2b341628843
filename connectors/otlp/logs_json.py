"""OTLP/JSON ``ExportLogsServiceRequest`` (already parsed) -> log records and decode errors."""

from __future__ import annotations

from typing import Any

from connectors.otlp.values import (
    _SEVERITY_BY_NAME,
    _Bad,
    _cap,
    _check_time,
    _field,
    _json_any,
    _json_enum,
    _json_id,
    _json_kv_dict,
    _json_kvs,
    _json_list,
    _json_object,
    _json_str,
    _json_time,
    _level,
    _lift,
    _Resource,
    _resource,
    _Scope,
    _whole,
    render_text,
)
from udfs.records import (
    Decoded,
    DecodeError,
    LogRecord,
)

# --------------------------------------------------------------------------------------------------
# OTLP/JSON logs.


def _json_resource(obj: Any) -> _Resource:
    resource = _json_object(obj, "resource")
    return _resource(_json_kvs(resource.get("attributes"), 0))


def _json_scope(obj: Any) -> _Scope:
    scope = _json_object(obj, "scope")
    return _json_str(scope.get("name"), "scope name"), _json_kvs(scope.get("attributes"), 0)


def _json_log(
    rec: Any, resource: _Resource, scope: _Scope, max_body: int, default_time: int, latest: int, index: int
) -> LogRecord | DecodeError:
    if not isinstance(rec, dict):
        return DecodeError("wrong_type", "a log record is not a JSON object", index)
    observed = _json_time(rec, "observedTimeUnixNano", "observed_time_unix_nano")
    time = _json_time(rec, "timeUnixNano", "time_unix_nano") or observed or default_time
    bad_time = _check_time(time, index, latest)
    if bad_time is not None:
        return bad_time
    number = _json_enum(_field(rec, "severityNumber", "severity_number"), _SEVERITY_BY_NAME, "severity")
    text = _json_str(_field(rec, "severityText", "severity_text"), "severityText")
    level = _level(number, text)
    body, truncated = _cap(render_text(_json_any(rec.get("body"), 0)), max_body)
    trace_id = _json_id(_field(rec, "traceId", "trace_id"), 16, "traceId")
    span_id = _json_id(_field(rec, "spanId", "span_id"), 8, "spanId")
    attrs, status, exc_type, exc_message, exc_stack = _lift(_json_kv_dict(rec.get("attributes"), 0))
    tenant, service, namespace, resource_attrs = resource
    return LogRecord(
        tenant, service, namespace, time, observed, number or int(level), level, text, body, truncated,
        trace_id, span_id, status, exc_type, exc_message, exc_stack, scope[0], resource_attrs, scope[1],
        attrs,
    )  # fmt: skip


def _json_groups(doc: Any, outer: tuple[str, str], inner: tuple[str, str], items: tuple[str, str]) -> Any:
    """Yield (resource_json, scope_json, records_list); a malformed envelope spoils the message."""
    if not isinstance(doc, dict):
        raise _Bad("wrong_type", "the request is not a JSON object")
    for group in _json_list(_field(doc, *outer), outer[0]):
        if not isinstance(group, dict):
            raise _Bad("wrong_type", f"an element of {outer[0]} is not a JSON object")
        for scoped in _json_list(_field(group, *inner), inner[0]):
            if not isinstance(scoped, dict):
                raise _Bad("wrong_type", f"an element of {inner[0]} is not a JSON object")
            yield group.get("resource"), scoped.get("scope"), _json_list(_field(scoped, *items), items[0])


def _decode_logs_json(doc: Any, max_body: int, default_time: int, latest: int) -> Decoded:
    records: list[LogRecord] = []
    errors: list[DecodeError] = []
    index = -1
    try:
        groups = list(
            _json_groups(doc, ("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"),
                         ("logRecords", "log_records"))
        )  # fmt: skip
    except _Bad as bad:
        return _whole(Decoded, bad.reason, bad.detail)
    for resource_json, scope_json, recs in groups:
        try:
            resource, scope = _json_resource(resource_json), _json_scope(scope_json)
        except _Bad as bad:
            errors.extend(DecodeError(bad.reason, bad.detail, index + 1 + k) for k in range(len(recs)))
            index += len(recs)
            continue
        for rec in recs:
            index += 1
            try:
                out = _json_log(rec, resource, scope, max_body, default_time, latest, index)
            except _Bad as bad:
                out = DecodeError(bad.reason, bad.detail, index)
            if isinstance(out, LogRecord):
                records.append(out)
            else:
                errors.append(out)
    return Decoded(tuple(records), tuple(errors))
