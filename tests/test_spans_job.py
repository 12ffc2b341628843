"""Spans as signals (issue 12) through the Flink job: the CPU and network-delay faults, with CLIENT and
SERVER spans, give the pure engine's events, event for event (MiniCluster, files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.otlp import encode_logs_json, encode_spans_json
from connectors.simulate_io import write_jsonl
from jobs.cli.replay import replay
from jobs.config import JobConfig
from udfs import engine
from udfs.scenarios import latency
from udfs.scenarios.library import requests_of, span_requests_of

pytestmark = [pytest.mark.flink, pytest.mark.timeout(600)]

VOLATILE = ("emitted_at", "templates")
"""Wall clock, and template text that depends on how far parallel decoders had got."""


def _strip(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in events]


@pytest.mark.parametrize("name", ["cpu_contention", "network_delay"])
def test_job_with_client_and_server_spans_gives_the_pure_engines_events(name: str, tmp_path: Path) -> None:
    sc = latency.SPAN_SCENARIOS[name](scale=0.25)
    messages = requests_of(sc.records, 200)
    logs, traces_file = tmp_path / "logs.otlp.jsonl.gz", tmp_path / "traces.otlp.jsonl.gz"
    write_jsonl(logs, [encode_logs_json(m) for m in messages])
    write_jsonl(traces_file, [encode_spans_json(m) for m in span_requests_of(sc.spans, 200)])
    cfg = JobConfig.from_env(
        {}, mode="files", log_files=(str(logs),), trace_files=(str(traces_file),), out_dir=str(tmp_path),
        index_logs=False,
    )
    events = replay(cfg, len(messages), progress=None)
    expected = engine.run(messages, sc.spans)
    opened = [e for e in expected if e["event"] == "opened"]
    last = [e for e in expected if e["event"] != "resolved"][-1]
    assert len(opened) == 1 and last["root_cause"]["service"] == "trips"
    assert _strip(events) == _strip(expected)
