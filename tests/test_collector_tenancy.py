"""Tenancy of deploy/otel-collector/config.yaml (issue 13 item 5): the API key, never the client, picks
the tenant, for logs and for traces.

What is verified here: the YAML's pipelines, processor order and exact OTTL statements; and their
meaning, by running them through a small interpreter written for just the forms the config uses (the
resource processor's ``delete``/``insert``/``from_context: metadata.<header>`` actions; ``delete_key``
and ``set ... where`` on ``resource.attributes`` in a ``context: resource`` group; the filter
processor's ``resource.attributes[...] == nil`` condition; ``${env:NAME}`` expansion; OTTL's nil
comparisons). The interpreter follows the Collector's documented behaviour and source (contrib
``internal/coreinternal/attraction``: a missing header means no action, several values are joined with
";"), and refuses any other OTTL form, so a config edit it cannot model fails here instead of passing.

What is NOT verified: no OpenTelemetry Collector ran (no binary, Docker or network here), so the real
OTTL parser, the receiver's metadata handling, the ``${env:...}`` provider and the kafka exporter were
not exercised; that the config loads in a given otelcol-contrib release was not checked.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "otel-collector" / "config.yaml"
HEADER = "x-logclaw-api-key"
KEY_ATTR = "logclaw.api_key"
ENV = {"LOGCLAW_API_KEY_ACME": "k-acme-0123456789abcdef", "LOGCLAW_API_KEY_GLOBEX": "k-globex-fedcba9876543210"}
ACME_KEY, GLOBEX_KEY = ENV["LOGCLAW_API_KEY_ACME"], ENV["LOGCLAW_API_KEY_GLOBEX"]
SIGNALS = {"logs": ("log_statements", "log_record"), "traces": ("trace_statements", "span")}
TENANT_PROCESSORS = ["memory_limiter", "resource/api_key", "transform/tenant", "filter/unknown_tenant", "batch"]
STATEMENTS = [
    'delete_key(resource.attributes, "tenant.id")',
    'set(resource.attributes["tenant.id"], "acme") where resource.attributes["logclaw.api_key"] != "" and '
    'resource.attributes["logclaw.api_key"] == "${env:LOGCLAW_API_KEY_ACME}"',
    'set(resource.attributes["tenant.id"], "globex") where resource.attributes["logclaw.api_key"] != "" and '
    'resource.attributes["logclaw.api_key"] == "${env:LOGCLAW_API_KEY_GLOBEX}"',
    'delete_key(resource.attributes, "logclaw.api_key")',
]
DROP_WITHOUT_TENANT = ['resource.attributes["tenant.id"] == nil']


def load_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return loaded


# --- the interpreter ---------------------------------------------------------------------------------


class Unsupported(ValueError):
    """A config form the interpreter does not model (the test must not guess its meaning)."""


@dataclass
class Resource:
    attributes: dict[str, Any]
    records: list[str] = field(default_factory=lambda: ["record-1", "record-2"])


@dataclass
class Request:
    """One export request: its metadata (header -> values, as the receiver keeps them) and resources."""

    metadata: dict[str, list[str]]
    resources: list[Resource]


_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH = r'resource\.attributes\["([^"\\]*)"\]'
_STR = r'"((?:[^"\\]|\\.)*)"'
_VALUE = rf"(?:{_STR}|(nil))"
_CMP = rf"{_PATH}\s*(==|!=)\s*{_VALUE}"
_DELETE_KEY = re.compile(rf"delete_key\(resource\.attributes,\s*{_STR}\)")
_SET = re.compile(rf"set\({_PATH},\s*{_STR}\)(?:\s+where\s+(.+))?")


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """The Collector's ``${env:NAME}`` expansion; an unset variable becomes "" (it logs a warning)."""
    return _ENV_REF.sub(lambda m: env.get(m.group(1), ""), text)


def _literal(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw)


def ottl_condition(text: str, attributes: Mapping[str, Any]) -> bool:
    """``<path> (==|!=) <string|nil>`` terms joined by ``and``; nil equals only nil (OTTL semantics)."""
    terms = re.split(r"\s+and\s+(?=resource\.attributes\[)", text.strip())
    result = True
    for term in terms:
        m = re.fullmatch(_CMP, term.strip())
        if m is None:
            raise Unsupported(f"condition term not modelled: {term!r}")
        key, op, string, nil = m.groups()
        actual = attributes.get(key)
        expected = None if nil else _literal(string)
        equal = actual == expected if (actual is None) == (expected is None) else False
        result = result and (equal if op == "==" else not equal)
    return result


def ottl_statement(text: str, attributes: dict[str, Any]) -> None:
    """Run one statement of a ``context: resource`` group on a resource's attributes."""
    if m := _DELETE_KEY.fullmatch(text.strip()):
        attributes.pop(_literal(m.group(1)), None)
        return
    if m := _SET.fullmatch(text.strip()):
        key, value, where = m.groups()
        if where is None or ottl_condition(where, attributes):
            attributes[key] = _literal(value)
        return
    raise Unsupported(f"statement not modelled: {text!r}")


def resource_actions(actions: Sequence[Mapping[str, Any]], attributes: dict[str, Any], request: Request) -> None:
    """The resource processor (contrib attraction): delete; insert/upsert from a value or from_context."""
    for action in actions:
        kind, key = action["action"], action["key"]
        if kind == "delete":
            attributes.pop(key, None)
            continue
        if kind not in ("insert", "upsert") or set(action) - {"key", "action", "value", "from_context"}:
            raise Unsupported(f"resource action not modelled: {action!r}")
        if "from_context" in action:
            source = action["from_context"]
            if not source.startswith("metadata."):
                raise Unsupported(f"from_context not modelled: {source!r}")
            values = request.metadata.get(source.removeprefix("metadata.").lower(), [])
            if not values:
                continue  # a missing key: no action
            value: Any = ";".join(values)
        else:
            value = action["value"]
        if kind == "insert" and key in attributes:
            continue
        attributes[key] = value


def run_pipeline(config: Mapping[str, Any], signal: str, request: Request, env: Mapping[str, str]) -> list[Resource]:
    """The resources (with their surviving records) the pipeline ``signal`` hands to its exporter."""
    statements_key, filter_context = SIGNALS[signal]
    resources = copy.deepcopy(request.resources)
    for name in config["service"]["pipelines"][signal]["processors"]:
        spec = config["processors"][name]
        kind = name.split("/")[0]
        if kind in ("memory_limiter", "batch"):
            continue
        if kind == "resource":
            for res in resources:
                resource_actions(spec["attributes"], res.attributes, request)
        elif kind == "transform":
            for group in spec.get(statements_key, []):
                if group.get("context") != "resource" or set(group) != {"context", "statements"}:
                    raise Unsupported(f"{name}: only plain `context: resource` groups are modelled")
                for res in resources:
                    for statement in group["statements"]:
                        ottl_statement(expand_env(statement, env), res.attributes)
        elif kind == "filter":
            conditions = spec.get(signal, {}).get(filter_context, [])
            for res in resources:
                res.records = [r for r in res.records
                               if not any(ottl_condition(expand_env(c, env), res.attributes) for c in conditions)]
            resources = [res for res in resources if res.records]
        else:
            raise Unsupported(f"processor not modelled: {name}")
    return resources


def exported(signal: str, metadata: Mapping[str, list[str]], *resource_attrs: Mapping[str, Any],
             config: Mapping[str, Any] | None = None, env: Mapping[str, str] = ENV) -> list[dict[str, Any]]:
    request = Request(dict(metadata), [Resource(dict(a)) for a in resource_attrs])
    return [r.attributes for r in run_pipeline(config or load_config(), signal, request, env)]


# --- the config's shape --------------------------------------------------------------------------------


def test_receiver_keeps_request_metadata_on_grpc_and_http() -> None:
    protocols = load_config()["receivers"]["otlp"]["protocols"]
    assert {name: p.get("include_metadata") for name, p in protocols.items()} == {"grpc": True, "http": True}


@pytest.mark.parametrize("signal", SIGNALS)
def test_pipeline_runs_key_then_tenant_then_filter_between_memory_limiter_and_batch(signal: str) -> None:
    """Logs AND traces: the key is copied before the transform, which runs before the filter."""
    assert load_config()["service"]["pipelines"][signal]["processors"] == TENANT_PROCESSORS


def test_resource_processor_deletes_a_client_sent_key_before_taking_the_header() -> None:
    assert load_config()["processors"]["resource/api_key"] == {"attributes": [
        {"key": KEY_ATTR, "action": "delete"},
        {"key": KEY_ATTR, "from_context": f"metadata.{HEADER}", "action": "insert"},
    ]}


@pytest.mark.parametrize("signal", SIGNALS)
def test_transform_deletes_tenant_first_sets_it_from_the_key_then_drops_the_key(signal: str) -> None:
    transform = load_config()["processors"]["transform/tenant"]
    assert transform["error_mode"] == "propagate"
    assert transform[SIGNALS[signal][0]] == [{"context": "resource", "statements": STATEMENTS}]


@pytest.mark.parametrize("signal", SIGNALS)
def test_filter_drops_records_and_spans_without_tenant_failing_closed(signal: str) -> None:
    spec = load_config()["processors"]["filter/unknown_tenant"]
    assert spec["error_mode"] == "propagate"
    assert spec[signal] == {SIGNALS[signal][1]: DROP_WITHOUT_TENANT}


# --- the config's meaning (interpreted, not run in a Collector) -------------------------------------------


@pytest.mark.parametrize("signal", SIGNALS)
def test_keyless_request_forging_tenant_is_dropped(signal: str) -> None:
    assert exported(signal, {}, {"service.name": "api", "tenant.id": "acme"}) == []


@pytest.mark.parametrize("signal", SIGNALS)
def test_valid_key_wins_over_forged_tenant_and_the_key_is_not_exported(signal: str) -> None:
    out = exported(signal, {HEADER: [ACME_KEY]},
                   {"service.name": "api", "tenant.id": "globex"}, {"service.name": "db"})
    assert out == [{"service.name": "api", "tenant.id": "acme"}, {"service.name": "db", "tenant.id": "acme"}]


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("values", [["k-unknown"], [ACME_KEY.upper()], [ACME_KEY + " "], [""],
                                    [ACME_KEY, GLOBEX_KEY]], ids=["unknown", "case", "space", "empty", "two"])
def test_unknown_empty_or_repeated_key_is_dropped(signal: str, values: list[str]) -> None:
    assert exported(signal, {HEADER: values}, {"service.name": "api", "tenant.id": "acme"}) == []


@pytest.mark.parametrize("signal", SIGNALS)
def test_client_sent_key_attribute_is_replaced_by_the_header(signal: str) -> None:
    """A client that knows acme's key cannot make it count by putting it in the payload."""
    forged = {"service.name": "api", "tenant.id": "acme", KEY_ATTR: ACME_KEY}
    assert exported(signal, {}, forged) == []
    assert exported(signal, {HEADER: [GLOBEX_KEY]}, forged) == [{"service.name": "api", "tenant.id": "globex"}]


@pytest.mark.parametrize("signal", SIGNALS)
def test_unset_key_variable_never_matches_an_empty_header(signal: str) -> None:
    only_acme = {"LOGCLAW_API_KEY_ACME": ACME_KEY}
    assert exported(signal, {HEADER: [""]}, {"service.name": "api"}, env=only_acme) == []
    assert exported(signal, {HEADER: [ACME_KEY]}, {"service.name": "api"}, env=only_acme) == [
        {"service.name": "api", "tenant.id": "acme"}]


# --- the interpreter catches the defect (mutations of the config) -----------------------------------------


def mutated(edit: Any) -> dict[str, Any]:
    config = copy.deepcopy(load_config())
    edit(config)
    return config


def test_without_the_delete_a_forged_tenant_would_pass() -> None:
    """The issue's defect: tenant.id only overwritten on a key match."""
    def drop_delete(config: dict[str, Any]) -> None:
        for key in ("log_statements", "trace_statements"):
            config["processors"]["transform/tenant"][key] = [
                {"context": "resource", "statements": STATEMENTS[1:]}]
    assert exported("logs", {}, {"tenant.id": "acme"}, config=mutated(drop_delete)) == [{"tenant.id": "acme"}]


def test_without_the_traces_processors_a_forged_span_tenant_would_pass() -> None:
    def bare_traces(config: dict[str, Any]) -> None:
        config["service"]["pipelines"]["traces"]["processors"] = ["memory_limiter", "batch"]
    assert exported("traces", {}, {"tenant.id": "acme"}, config=mutated(bare_traces)) == [{"tenant.id": "acme"}]


def test_without_the_empty_guard_an_unset_variable_would_admit_an_empty_header() -> None:
    def no_guard(config: dict[str, Any]) -> None:
        unguarded = [s.replace('resource.attributes["logclaw.api_key"] != "" and ', "") for s in STATEMENTS]
        config["processors"]["transform/tenant"]["log_statements"] = [
            {"context": "resource", "statements": unguarded}]
    out = exported("logs", {HEADER: [""]}, {}, config=mutated(no_guard), env={"LOGCLAW_API_KEY_ACME": ACME_KEY})
    assert out == [{"tenant.id": "globex"}]


def test_interpreter_follows_ottl_nil_comparisons_and_refuses_unmodelled_forms() -> None:
    assert ottl_condition('resource.attributes["k"] == nil', {}) is True
    assert ottl_condition('resource.attributes["k"] != ""', {}) is True
    assert ottl_condition('resource.attributes["k"] == ""', {}) is False
    assert ottl_condition('resource.attributes["k"] == "a" and resource.attributes["j"] != nil', {"k": "a"}) is False
    with pytest.raises(Unsupported):
        ottl_condition('resource.attributes["k"] == "a" or true', {})
    with pytest.raises(Unsupported):
        ottl_statement('set(attributes["tenant.id"], "acme")', {})
    with pytest.raises(Unsupported):
        ottl_statement('delete_matching_keys(resource.attributes, ".*")', {})
