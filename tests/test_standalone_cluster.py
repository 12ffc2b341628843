"""The detection job on a real standalone Flink cluster (start-cluster.sh from the PyFlink distribution,
configured from flink-conf/), submitted with ``flink run -py jobs/detect.py``, fed through the local
broker, checked through the REST API, and killed mid-stream (kill -9 of the TaskManager) to show that
recovery from the last checkpoint yields the same incident with only dedupable duplicates.

Expected incident events come from ``udfs.engine`` over the very same messages (the job must reproduce
them). Budget: a few minutes of wall clock on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from connectors import otlp
from connectors.broker import LocalBroker, free_port
from connectors.flink_cluster import StandaloneCluster, cluster_conf, load_conf, write_conf_dir
from connectors.simulate_io import KafkaMessage, produce_messages
from jobs.cli.stack import CONF_TEMPLATE, cluster_overrides, job_env, prepare_cluster, submit_detect
from jobs.steps import STEPS
from udfs.engine import Engine, EngineConfig
from udfs.records import LogRecord
from udfs.scenarios.library import build, requests_of

OUT_OF_ORDERNESS_MS = 5_000
STEP_NAMES = {s.name for s in STEPS.values()}
# PyFlink's key_by after a union is its own vertex with a fixed name PyFlink gives it (no .name() hook).
PYFLINK_INTERNAL = {"_stream_key_by_map_operator"}


Batches = list[list[LogRecord]]


def messages() -> tuple[Batches, Batches, Batches]:
    """The cascade scenario split before/after the kill point, plus a sparse quiet tail that moves event
    time past the incident's resolution (a stream has no end-of-input to flush it)."""
    cascade = build("cascade", scale=0.25)
    batches = requests_of(cascade.records, 200)
    tail = requests_of(build("steady", scale=0.25, base_ms=cascade.records[-1].time_ms + 1_000).records, 200)[::10]
    cut = len(batches) * 3 // 5  # after the fault (00:06) and its updates (00:07), before the end
    return batches[:cut], batches[cut:], tail


def expected_events(batches: Sequence[Sequence[LogRecord]]) -> list[dict[str, Any]]:
    """What the pure engine emits for ``batches`` with the job's event-time rules (no end-of-input)."""
    engine = Engine(EngineConfig(out_of_orderness_ms=OUT_OF_ORDERNESS_MS))
    for batch in batches:
        engine.feed(batch)
    return [without_wall_clock(e) for e in engine.events]


def without_wall_clock(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "emitted_at"}


def produce(bootstrap: str, topic: str, batches: Sequence[Sequence[LogRecord]]) -> int:
    msgs = (KafkaMessage(f"{b[0].tenant}/{b[0].service}".encode(), otlp.encode_logs_json(b), b[0].time_ms)
            for b in batches)
    assert produce_messages(bootstrap, topic, msgs) == len(batches)
    return sum(len(b) for b in batches)


class IncidentReader:
    """Reads the incidents topic from the beginning; keeps (key, event) pairs."""

    def __init__(self, broker: LocalBroker, topic: str) -> None:
        self.consumer = Consumer(broker.consumer_config(f"{topic}-reader"))
        self.consumer.subscribe([topic])
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def until(self, done: Any, timeout_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while not done([e for _, e in self.seen]) and time.monotonic() < deadline:
            msg = self.consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                self.seen.append((bytes(msg.key() or b"").decode(), json.loads(msg.value() or b"null")))
        return [e for _, e in self.seen]

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[StandaloneCluster]:
    stack = tmp_path / "stack"
    started = prepare_cluster(stack, rest_port=free_port(), checkpoint_dir=tmp_path / "checkpoints",
                              extra={"restart-strategy.exponential-delay.initial-backoff": "1 s",
                                     "restart-strategy.exponential-delay.max-backoff": "5 s"})
    try:
        yield started.start()
    finally:
        started.stop()
        assert not started.pids("taskexecutor") and not started.pids("standalonesession")


def decode_vertex(info: dict[str, Any]) -> dict[str, Any]:
    return next(v for v in info["vertices"] if STEPS["decode"].name in v["name"])


def wait_for_metric(cluster: StandaloneCluster, job_id: str, vertex_id: str, metric: str, at_least: float,
                    timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    value = -1.0
    while time.monotonic() < deadline:
        value = cluster.vertex_metric_sum(job_id, vertex_id, metric)
        if value >= at_least:
            return value
        time.sleep(1.0)
    return value


def wait_for_checkpoint(cluster: StandaloneCluster, job_id: str, after: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        completed = cluster.checkpoint_counts(job_id).get("completed", 0)
        if completed > after:
            return completed
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint completed after #{after} within {timeout_s} s")


def wait_for_restore(cluster: StandaloneCluster, job_id: str, timeout_s: float) -> dict[str, int]:
    """Until the job restored from a checkpoint and runs again (the JobManager first has to notice the loss)."""
    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = cluster.checkpoint_counts(job_id)
        info = cluster.job(job_id)
        if counts.get("restored", 0) >= 1 and info["state"] == "RUNNING" and all(
            v["status"] == "RUNNING" for v in info["vertices"]
        ):
            return counts
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} did not restore and run within {timeout_s} s: {counts}")


@pytest.mark.integration
@pytest.mark.flink
@pytest.mark.broker
@pytest.mark.timeout(900)
def test_detect_job_on_standalone_cluster_survives_taskmanager_kill(
    cluster: StandaloneCluster, broker: LocalBroker, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {name: f"{name}-{run}" for name in ("otlp_logs", "incidents", "dead-letter")}
    broker.create_topics(topics.values())
    env = job_env(broker.bootstrap, tmp_path / "logclaw.db", LOGCLAW_LOGS_TOPIC=topics["otlp_logs"],
                  LOGCLAW_INCIDENTS_TOPIC=topics["incidents"], LOGCLAW_DEAD_LETTER_TOPIC=topics["dead-letter"],
                  LOGCLAW_GROUP_ID=f"detect-{run}", LOGCLAW_CHECKPOINT_INTERVAL_MS="2000",
                  LOGCLAW_OUT_OF_ORDERNESS_MS=str(OUT_OF_ORDERNESS_MS), LOGCLAW_IDLENESS_MS="5000")
    before, after, tail = messages()
    job_id = submit_detect(cluster, env)
    info = cluster.wait_for_job_state(job_id, "RUNNING", 180, all_running=True)

    # Every vertex is named from jobs/steps.py (a chain shows all its operators' names joined by " -> ").
    for vertex in info["vertices"]:
        assert vertex["name"] in PYFLINK_INTERNAL or any(n in vertex["name"] for n in STEP_NAMES), vertex["name"]
    for key in ("decode", "service_window", "trace_timeline", "correlate", "incident_sink", "dead_letter_sink"):
        assert any(STEPS[key].name in v["name"] for v in info["vertices"]), key

    reader = IncidentReader(broker, topics["incidents"])
    try:
        produced_before = produce(broker.bootstrap, topics["otlp_logs"], before)
        decode = decode_vertex(info)["id"]
        assert wait_for_metric(cluster, job_id, decode, "records_in", produced_before, 240) == produced_before
        want_before = expected_events(before)
        assert want_before and want_before[0]["event"] == "opened"
        got = reader.until(lambda evs: len({(e["event"], e["detected_at"]) for e in evs}) >= len(want_before), 240)
        assert sorted(map(without_wall_clock, got), key=_order) == sorted(want_before, key=_order)
        completed = wait_for_checkpoint(cluster, job_id, cluster.checkpoint_counts(job_id).get("completed", 0), 120)

        # kill -9 one of the two single-slot TaskManagers mid-stream, start a fresh one, let the restart
        # strategy recover (the job needs both slots again).
        tm_pids = cluster.pids("taskexecutor")
        assert len(tm_pids) == 2  # flink-conf: one slot each, parallelism 2
        os.kill(tm_pids[0], signal.SIGKILL)
        produced_after = produce(broker.bootstrap, topics["otlp_logs"], after)  # while the job is down
        cluster.start_taskmanager()
        cluster.wait_for_taskmanagers(2, 120)
        counts = wait_for_restore(cluster, job_id, 300)
        assert counts["restored"] >= 1 and counts["completed"] >= completed
        produce(broker.bootstrap, topics["otlp_logs"], tail)

        want = expected_events([*before, *after, *tail])
        assert [e["event"] for e in want][-1] == "resolved"
        got = reader.until(lambda evs: any(e["event"] == "resolved" for e in evs), 300)
        decode = decode_vertex(cluster.job(job_id))["id"]
        # Counters restart at 0 with the new TaskManager and REST serves them from a fetcher that
        # refreshes every ~10 s: poll (as above) instead of reading once.
        assert wait_for_metric(cluster, job_id, decode, "records_in", produced_after, 60) >= produced_after
    finally:
        reader.close()
        cluster.cancel(job_id)

    # Same incident ids, every distinct event exactly as the engine's, duplicates only re-sends of the
    # same event (same key, same content apart from the wall-clock emitted_at).
    assert {e["incident_id"] for e in got} == {e["incident_id"] for e in want}
    distinct: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key, event in reader.seen:
        assert key == event["fingerprint"]
        ident = (event["incident_id"], event["event"], event["detected_at"])
        assert distinct.setdefault(ident, without_wall_clock(event)) == without_wall_clock(event)
    assert sorted(distinct.values(), key=_order) == sorted(want, key=_order)


def _order(event: dict[str, Any]) -> tuple[str, str, str]:
    return event["incident_id"], event["detected_at"], event["event"]


# --- the generated configuration (no JVM) -------------------------------------------------------------


def test_local_conf_is_flink_conf_plus_overrides_without_a_missing_prometheus_plugin(tmp_path: Path) -> None:
    base = load_conf(CONF_TEMPLATE)
    overrides = cluster_overrides(tmp_path, rest_port=12345, rpc_port=23456, checkpoint_dir=tmp_path / "cp")
    conf = cluster_conf(base, overrides, has_prometheus=False)
    dropped = {k for k in base if k == "metrics.reporters" or k.startswith("metrics.reporter.prom.")}
    assert dropped == {"metrics.reporters", "metrics.reporter.prom.factory.class", "metrics.reporter.prom.port"}
    assert conf == {**{k: v for k, v in base.items() if k not in dropped}, **overrides}
    assert conf["execution.checkpointing.dir"] == (tmp_path / "cp").as_uri()
    assert conf["pipeline.jars"].count("file://") == 2 and conf["rest.port"] == 12345
    assert cluster_conf(base, overrides, has_prometheus=True) == {**base, **overrides}


def test_conf_dir_round_trips_through_flink_yaml(tmp_path: Path) -> None:
    home = tmp_path / "flink"
    (home / "conf").mkdir(parents=True)
    (home / "conf" / "log4j.properties").write_text("rootLogger.level = INFO\n")
    conf = {"rest.port": 4242, "env.java.opts.all": "--add-opens=a --add-opens=b", "a.b": True}
    out = write_conf_dir(tmp_path / "conf", conf, home)
    assert load_conf(out / "config.yaml") == conf
    assert (out / "workers").read_text() == "localhost\n" and (out / "masters").read_text() == "localhost:4242\n"
    two = write_conf_dir(tmp_path / "two", {**conf, "parallelism.default": 2, "taskmanager.numberOfTaskSlots": 1}, home)
    assert (two / "workers").read_text() == "localhost\nlocalhost\n"
    assert (out / "log4j.properties").read_text() == "rootLogger.level = INFO\n"
    nested = tmp_path / "nested.yaml"
    nested.write_text("rest:\n  port: 1\n  address: x\nstate.backend.type: rocksdb\n")
    assert load_conf(nested) == {"rest.port": 1, "rest.address": "x", "state.backend.type": "rocksdb"}
