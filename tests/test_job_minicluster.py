"""The real Flink job on the local MiniCluster, file source -> incidents.jsonl, against the pure engine.

One replay carries every DETECTION.md scenario, each rewritten into its own tenant, so a single JVM
run checks all of them, and tenant isolation on top: the job's incident events must equal the pure
steps' (udfs.engine) event for event, ids included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.otlp import encode_logs_json
from connectors.simulate_io import write_jsonl
from jobs.cli.replay import replay
from jobs.config import JobConfig
from udfs import engine
from udfs.scenarios import library as scenarios

pytestmark = [pytest.mark.flink, pytest.mark.timeout(600)]

NAMES = ("cascade", "error_spike", "oom_burst", "room_booked", "quiet_single_error", "two_tenants")


def _tenant(name: str, tenant: str) -> str:
    return f"{name}.{tenant}"


@pytest.fixture(scope="module")
def streams() -> tuple[list[list[Any]], dict[str, int]]:
    """All scenarios as messages, tenants renamed per scenario, merged in event-time order."""
    messages: list[list[Any]] = []
    for name in NAMES:
        sc = scenarios.build(name, scale=0.25)
        records = [r._replace(tenant=_tenant(name, r.tenant)) for r in sc.records]
        messages.extend(scenarios.requests_of(records, 200))
    messages.sort(key=lambda m: m[0].time_unix_nano)
    return messages, {}


def _write(messages: list[list[Any]], path: Path, garbage: bool = False) -> None:
    lines = [encode_logs_json(m) for m in messages]
    if garbage:
        lines.insert(len(lines) // 2, b"{this is not json")
        lines.insert(len(lines) // 3, b'{"resourceLogs": 7}')
    write_jsonl(path, lines)


# emitted_at is wall clock. Template text is what the miner had generalized to when the anomaly was
# built, which depends on how far parallel decoders had got: informative, not deterministic.
VOLATILE = ("emitted_at", "templates")


def _strip(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in events]


def _by_tenant(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e["tenant"], []).append(e)
    return out


@pytest.fixture(scope="module")
def job_run(streams: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    messages, _ = streams
    out = tmp_path_factory.mktemp("replay")
    logs = out / "all.otlp.jsonl.gz"
    _write(messages, logs, garbage=True)
    cfg = JobConfig.from_env({}, mode="files", log_files=(str(logs),), out_dir=str(out))
    return out, replay(cfg, len(messages) + 2, progress=None)


def test_job_on_minicluster_gives_the_same_incidents_as_the_pure_steps(streams: Any, job_run: Any) -> None:
    messages, _ = streams
    _, events = job_run
    expected = engine.run(messages)
    assert expected, "the scenarios must produce incidents, or this comparison proves nothing"
    got = _by_tenant(_strip(events))
    want = _by_tenant(_strip(expected))
    assert got == want


# See tests/test_detection.py NOVELTY_COLD_START: the synthetic tenant's first background error,
# discovered 1-4 minutes in, opens one extra incident in these two scenarios.
COLD_START = pytest.mark.xfail(strict=True, reason="novelty cold start of a synthetic tenant (issue 11)")


@pytest.mark.parametrize("name", [pytest.param(n, marks=COLD_START) if n in ("oom_burst", "room_booked") else n
                                  for n in NAMES])
def test_job_meets_every_scenario_expectation_per_tenant(job_run: Any, name: str) -> None:
    _, events = job_run
    sc = scenarios.build(name, scale=0.25)
    for exp in sc.expectations:
        tenant = _tenant(name, exp.tenant)
        opened = [e for e in events if e["event"] == "opened" and e["tenant"] == tenant]
        assert exp.min_incidents <= len(opened) <= exp.max_incidents, (tenant, [e["title"] for e in opened])
        if exp.root_cause:
            last = [e for e in events if e["incident_id"] == opened[0]["incident_id"] and e["event"] != "resolved"][
                -1
            ]
            assert last["root_cause"]["service"] == exp.root_cause
            assert set(last["affected_services"]) == set(exp.affected)


def test_job_sends_undecodable_lines_to_the_dead_letter_file_and_keeps_going(job_run: Any) -> None:
    out, events = job_run
    dead = [json.loads(line) for line in (out / "dead-letter.jsonl").read_text().splitlines()]
    assert sorted(e["errors"][0]["reason"] for e in dead) == ["invalid_json", "wrong_type"]
    assert all(e["payload_base64"] for e in dead)
    assert any(e["event"] == "resolved" for e in events)  # the stream went on to the end


def test_job_writes_logs_and_incidents_to_the_embedded_store(job_run: Any) -> None:
    from connectors.store import EmbeddedStore

    out, events = job_run
    with EmbeddedStore(out / "store.sqlite") as store:
        incidents = store.incidents("cascade.default")
        assert [i["incident_id"] for i in incidents] == sorted(
            {e["incident_id"] for e in events if e["tenant"] == "cascade.default"}
        )
        assert store.counts()["logs"] > 0
        assert store.search_logs("cascade.default", ["checkout"], 0, 2**62, text="redis pool exhausted", limit=3)


def test_replaying_the_same_file_twice_gives_the_same_ids(job_run: Any, tmp_path: Path) -> None:
    out, first = job_run
    cfg = JobConfig.from_env(
        {}, mode="files", log_files=(str(out / "all.otlp.jsonl.gz"),), out_dir=str(tmp_path), index_logs=False
    )
    second = replay(cfg, 1, progress=None)
    assert _strip(second) == _strip(first)


def test_replay_cli_exits_non_zero_with_a_clear_message_on_unreadable_input(tmp_path: Path, capsys: Any) -> None:
    from jobs.cli import main

    missing = tmp_path / "nope.jsonl"
    assert main(["replay", "--logs", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    assert main(["replay", "--logs", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- spans: the job with an otlp_spans input equals the pure engine (issue 12) -----------------------


def test_job_with_spans_gives_the_same_incidents_as_the_pure_steps(tmp_path: Path) -> None:
    """The latency-only chain fault: logs and spans from two files, read side by side, each with its
    own watermarks; the RED state, self time and span-aware root cause must match the engine's."""
    from connectors.otlp import encode_spans_json
    from udfs.scenarios import latency

    sc = latency.latency_chain(scale=0.25)
    messages = scenarios.requests_of(sc.records, 200)
    logs, traces_file = tmp_path / "logs.otlp.jsonl.gz", tmp_path / "traces.otlp.jsonl.gz"
    _write(messages, logs)
    write_jsonl(traces_file, [encode_spans_json(m) for m in scenarios.span_requests_of(sc.spans, 200)])
    cfg = JobConfig.from_env(
        {}, mode="files", log_files=(str(logs),), trace_files=(str(traces_file),), out_dir=str(tmp_path),
        index_logs=False,
    )
    events = replay(cfg, len(messages), progress=None)
    expected = engine.run(messages, sc.spans)
    opened = [e for e in expected if e["event"] == "opened"]
    assert len(opened) == 1 and opened[0]["fingerprint"].split(".")[1] == "latency"
    assert _strip(events) == _strip(expected)


def test_job_with_durations_in_logs_and_no_spans_gives_the_pure_engines_incidents(tmp_path: Path) -> None:
    """Issue 12 item 4: the latency-only chain fault seen only in access logs that state their duration
    (no spans input): log timings reach the RED state through the job as in the engine, event for event."""
    from tests.test_red_logs import _access_logs_only
    from udfs.scenarios import latency

    messages = scenarios.requests_of(_access_logs_only(latency.latency_chain(scale=0.25)), 200)
    logs = tmp_path / "logs.otlp.jsonl.gz"
    _write(messages, logs)
    cfg = JobConfig.from_env({}, mode="files", log_files=(str(logs),), out_dir=str(tmp_path), index_logs=False)
    events = replay(cfg, len(messages), progress=None)
    expected = engine.run(messages)
    opened = [e for e in expected if e["event"] == "opened"]
    assert len(opened) == 1 and opened[0]["fingerprint"].split(".")[1] == "latency"
    assert _strip(events) == _strip(expected)
