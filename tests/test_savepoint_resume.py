"""State survives an upgrade: the detection job on a real standalone Flink cluster is stopped with a
savepoint (REST ``POST /jobs/:id/stop``, as ``logclaw down`` does) while an incident is open, and a new
job submitted from that savepoint (``flink run -s``, as ``logclaw up`` does) carries on: the incident
stays open (no second "opened"), its resolution arrives, and templates seen before the stop are not
novel after it. The whole run reproduces the pure engine over the uninterrupted stream.

The same stream split where the job is stopped, with the second half fed to a fresh engine, shows what
a lost state would look like (checked below, so the test can fail): a new incident opened at 00:09,
and "upstream request timed out after <NUM>", logged 16 times before the stop, flagged novel.

The resumed job runs on a second cluster, as after ``logclaw down`` / ``logclaw up`` (and as the Flink
Kubernetes Operator's savepoint upgrade redeploys): a thread-mode Python job cannot start a second time
in the same TaskManager JVM (pemja: ``NoSuchFieldException: loadedLibraryNames``, seen here when the
resumed job was submitted to the cluster that had run the first one).
Budget: a few minutes of wall clock on 2 cores (two clusters, two job starts).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.broker import LocalBroker, free_port
from connectors.flink_cluster import ClusterError, StandaloneCluster, latest_savepoint
from jobs.cli.stack import job_env, prepare_cluster, resume_point, stop_job, submit_detect
from tests.test_standalone_cluster import (
    OUT_OF_ORDERNESS_MS,
    IncidentReader,
    expected_events,
    messages,
    produce,
    without_wall_clock,
)


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[Callable[[str], StandaloneCluster]]:
    """Starts a standalone cluster per call (its own stack folder), stops them all at the end."""
    started: list[StandaloneCluster] = []

    def start(name: str) -> StandaloneCluster:
        cluster = prepare_cluster(tmp_path / name, rest_port=free_port(), checkpoint_dir=tmp_path / "checkpoints")
        started.append(cluster)
        return cluster.start()

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()


def novel_templates(events: list[dict[str, Any]]) -> set[str]:
    return {t["template"] for e in events for t in e.get("templates", []) if t["novel"]}


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """The event without the root-cause candidates (the chosen service, chain and confidence stay)."""
    root = {k: v for k, v in event["root_cause"].items() if k != "candidates"}
    return {**event, "root_cause": root}


def distinct(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One of each (incident, event, detected_at): re-sends after a restore are duplicates to dedup."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in events:
        seen.setdefault((e["incident_id"], e["event"], e["detected_at"]), without_wall_clock(e))
    return sorted(seen.values(), key=lambda e: (e["incident_id"], e["detected_at"], e["event"]))


@pytest.mark.integration
@pytest.mark.flink
@pytest.mark.broker
@pytest.mark.timeout(900)
def test_a_job_stopped_with_a_savepoint_and_resumed_keeps_its_open_incident_and_template_history(
    clusters: Callable[[str], StandaloneCluster], broker: LocalBroker, tmp_path: Path
) -> None:
    before, after, tail = messages()
    want_before = expected_events(before)
    want = expected_events([*before, *after, *tail])
    lost = expected_events([*after, *tail])  # what a job that lost its state would emit
    assert [e["event"] for e in want_before] == ["opened", "updated", "updated"]
    assert [e["event"] for e in want[len(want_before):]] == ["resolved"]
    forgotten = novel_templates(lost) - novel_templates(want)  # novel again only for a job without history
    assert "opened" in [e["event"] for e in lost] and forgotten == {"upstream request timed out after <NUM>"}
    assert any(r.body.startswith("upstream request timed out") for batch in before for r in batch)

    run = uuid.uuid4().hex[:8]
    topics = {name: f"{name}-{run}" for name in ("otlp_logs", "incidents", "dead-letter")}
    broker.create_topics(topics.values())
    env = job_env(broker.bootstrap, tmp_path / "logclaw.db", LOGCLAW_LOGS_TOPIC=topics["otlp_logs"],
                  LOGCLAW_INCIDENTS_TOPIC=topics["incidents"], LOGCLAW_DEAD_LETTER_TOPIC=topics["dead-letter"],
                  LOGCLAW_GROUP_ID=f"detect-{run}", LOGCLAW_CHECKPOINT_INTERVAL_MS="5000",
                  LOGCLAW_OUT_OF_ORDERNESS_MS=str(OUT_OF_ORDERNESS_MS), LOGCLAW_IDLENESS_MS="5000")
    savepoints = tmp_path / "savepoints"
    assert resume_point(savepoints, fresh=False) is None  # nothing to resume: the first job starts fresh
    reader = IncidentReader(broker, topics["incidents"])
    jobs: list[tuple[StandaloneCluster, str]] = []
    try:
        cluster = clusters("stack-1")
        jobs.append((cluster, submit_detect(cluster, env, savepoint=resume_point(savepoints, fresh=False))))
        cluster.wait_for_job_state(jobs[0][1], "RUNNING", 180, all_running=True)
        produce(broker.bootstrap, topics["otlp_logs"], before)
        got = reader.until(lambda evs: len(distinct(evs)) >= len(want_before), 300)
        assert distinct(got) == sorted(want_before, key=lambda e: (e["incident_id"], e["detected_at"], e["event"]))

        kept = stop_job(cluster, jobs[0][1], savepoints)  # `logclaw down`
        assert kept is not None and (kept / "_metadata").is_file() and kept.parent == savepoints.resolve()
        assert cluster.job(jobs[0][1])["state"] == "FINISHED"
        cluster.stop()
        assert resume_point(savepoints, fresh=True) is None
        assert resume_point(savepoints, fresh=False) == latest_savepoint(savepoints) == kept.resolve()

        produce(broker.bootstrap, topics["otlp_logs"], after)  # while no job runs
        cluster = clusters("stack-2")  # `logclaw up`
        jobs.append((cluster, submit_detect(cluster, env, savepoint=resume_point(savepoints, fresh=False))))
        cluster.wait_for_job_state(jobs[1][1], "RUNNING", 180, all_running=True)
        # Restored from the savepoint (under load a task failure may restore it once more: no checkpoint
        # had completed yet; seen here at load average 35).
        restored = cluster.rest(f"/jobs/{jobs[1][1]}/checkpoints")["latest"]["restored"]
        assert restored["is_savepoint"] and restored["external_path"].removeprefix("file:") == str(kept)
        produce(broker.bootstrap, topics["otlp_logs"], tail)
        got = reader.until(lambda evs: any(e["event"] == "resolved" for e in evs), 300)
    finally:
        reader.close()
        for on, job_id in jobs:  # best effort: the clusters are stopped anyway
            with contextlib.suppress(ClusterError):
                if on.pids("standalonesession") and on.job(job_id)["state"] == "RUNNING":
                    on.cancel(job_id)

    resumed = distinct(got)[len(want_before):]
    assert [e["event"] for e in resumed] == ["resolved"]  # the open incident closed, none re-opened as new
    assert {e["incident_id"] for e in got} == {want_before[0]["incident_id"]}
    assert not novel_templates(resumed) & forgotten  # history kept: a template seen before the stop is not novel
    assert novel_templates(resumed) == novel_templates(want[len(want_before):])  # only the truly new ones
    # The whole run as the engine's, but for the root-cause candidates' shared-trace counts and scores:
    # those hang on when trace summaries reach the correlator, and under load (average 35, other
    # sessions' tests) one run here counted 1039 shared traces where the engine counts 1064.
    assert [comparable(e) for e in distinct(got)] == [
        comparable(e) for e in sorted(want, key=lambda e: (e["incident_id"], e["detected_at"], e["event"]))]
