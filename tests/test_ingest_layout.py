"""The ingest lives in ``connectors/ingest/`` split along its data flow (keys, payload, producer, server);
``connectors.otlp_http`` stays a thin module re-exporting the same objects, so its importers keep working."""

from __future__ import annotations

import importlib
from pathlib import Path

from connectors import ingest, otlp_http

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("limits", "keys", "payload", "producer", "server", "handler")
# Names other code and tests import from connectors.otlp_http, beyond its __all__.
ALSO_USED = ("inflate", "count_records", "with_tenant", "rejection_message", "export_response", "status_body",
             "tenant_problem", "IngestStats", "ConnectionTable", "RefusalLog", "MIN_API_KEY_CHARS",
             "MAX_TENANT_CHARS", "MESSAGE_HEADROOM_BYTES", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_INFLIGHT")


def test_the_ingest_package_is_split_in_small_files() -> None:
    for name in MODULES:
        module = importlib.import_module(f"connectors.ingest.{name}")
        lines = Path(str(module.__file__)).read_text().count("\n")
        assert lines <= 400, f"connectors/ingest/{name}.py has {lines} lines"
    thin = (ROOT / "connectors" / "otlp_http.py").read_text()
    assert "def " not in thin and "class " not in thin  # re-exports only


def test_connectors_otlp_http_re_exports_the_same_objects() -> None:
    assert set(otlp_http.__all__) <= set(ingest.__all__)
    for name in (*ingest.__all__, *ALSO_USED):
        assert getattr(otlp_http, name) is getattr(ingest, name), name
