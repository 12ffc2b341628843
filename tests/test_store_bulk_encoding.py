"""The OpenSearch sink's fast encoding of log documents (orjson, an action-line prefix per index) gives
the bulk lines the standard encoder gave, for ordinary and awkward records (a float may be spelled
differently, e.g. ``1e-7`` for ``1e-07``: the same JSON number)."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from connectors.logstore import log_doc
from connectors.opensearch import _index_action, _log_source
from tests.test_store import make_record


def standard(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@pytest.mark.parametrize("overrides", [
    {},
    {"body": "ünïcødé ✓ \u2028 \"quoted\" \\ back\tslash\n", "attributes": MappingProxyType({"k": "€"})},
    {"attributes": MappingProxyType({"inf": float("inf"), "neg": -0.0, "small": 1e-7, "ratio": 0.1,
                                     "big": 2**63 - 1, "tags": ("a", 1, True, None)})},
    {"http_status": None, "span_id": "", "attributes": MappingProxyType({})},
])
def test_log_source_is_the_standard_json(overrides: dict[str, Any]) -> None:
    doc = log_doc(make_record(**overrides))
    assert json.loads(_log_source(doc)) == json.loads(standard(doc))
    if "inf" not in str(overrides):  # floats aside (1e-7 vs 1e-07: the same number), the same bytes
        assert _log_source(doc) == standard(doc)


@pytest.mark.parametrize("overrides", [
    {"body": "lone \udcff surrogate"},  # orjson refuses it: the standard encoder, as before
    {"attributes": MappingProxyType({"huge": 2**70})},  # past 64 bits
])
def test_what_orjson_refuses_takes_the_standard_encoder(overrides: dict[str, Any]) -> None:
    doc = log_doc(make_record(**overrides))
    assert _log_source(doc) == standard(doc)


def test_index_action_line_is_the_standard_json() -> None:
    for index, doc_id in [("logclaw-logs-acme-2024.05.01", "0af7651916cd43dd8448"),
                          ('odd"prefix-logs-x-2024.05.01', 'id "é" \\')]:
        line = f"{_index_action(index)}{json.dumps(doc_id)}}}}}"
        assert line == json.dumps({"index": {"_index": index, "_id": doc_id}}, separators=(",", ":"))
