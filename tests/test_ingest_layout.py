"""The ingest lives in ``connectors/ingest/`` split along its data flow (keys, payloads, producer, the shared
intake, and the two receivers)."""

from __future__ import annotations

import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("limits", "keys", "payload", "traces", "producer", "intake", "metrics", "server", "handler", "grpc_receiver")


def test_the_ingest_package_is_split_in_small_files() -> None:
    for name in MODULES:
        module = importlib.import_module(f"connectors.ingest.{name}")
        lines = Path(str(module.__file__)).read_text().count("\n")
        assert lines <= 400, f"connectors/ingest/{name}.py has {lines} lines"
    assert not (ROOT / "connectors" / "otlp_http.py").exists()  # one name for the ingest, not two
