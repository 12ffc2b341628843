"""State survives an upgrade: the detection job on a real standalone Flink cluster is stopped with a
savepoint (REST ``POST /jobs/:id/stop``, as ``logclaw down`` does) while an incident is open, and a new
job submitted from that savepoint (``flink run -s``, as ``logclaw up`` does) carries on: the incident
stays open (no second "opened"), its resolution arrives, and templates seen before the stop are not
novel after it. The whole run reproduces the pure engine over the uninterrupted stream.

The same stream split where the job is stopped, with the second half fed to a fresh engine, shows what
a lost state would look like (checked below, so the test can fail): a new incident opened at 00:09
with templates flagged novel that the first half had already logged 203 times.
Budget: a few minutes of wall clock on 2 cores (two job starts on one cluster).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.broker import LocalBroker, free_port
from connectors.flink_cluster import StandaloneCluster, latest_savepoint
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
def cluster(tmp_path: Path) -> Iterator[StandaloneCluster]:
    started = prepare_cluster(tmp_path / "stack", rest_port=free_port(), checkpoint_dir=tmp_path / "checkpoints")
    try:
        yield started.start()
    finally:
        started.stop()


def novel_templates(events: list[dict[str, Any]]) -> set[str]:
    return {t["template"] for e in events for t in e.get("templates", []) if t["novel"]}


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
    cluster: StandaloneCluster, broker: LocalBroker, tmp_path: Path
) -> None:
    before, after, tail = messages()
    want_before = expected_events(before)
    want = expected_events([*before, *after, *tail])
    lost = expected_events([*after, *tail])  # what a job that lost its state would emit
    assert [e["event"] for e in want_before] == ["opened", "updated", "updated"]
    assert [e["event"] for e in want[len(want_before):]] == ["resolved"]
    assert "opened" in [e["event"] for e in lost] and novel_templates(lost) - novel_templates(want)

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
    job_ids: list[str] = []
    try:
        job_ids.append(submit_detect(cluster, env, savepoint=resume_point(savepoints, fresh=False)))
        cluster.wait_for_job_state(job_ids[0], "RUNNING", 180, all_running=True)
        produce(broker.bootstrap, topics["otlp_logs"], before)
        got = reader.until(lambda evs: len(distinct(evs)) >= len(want_before), 300)
        assert distinct(got) == sorted(want_before, key=lambda e: (e["incident_id"], e["detected_at"], e["event"]))

        kept = stop_job(cluster, job_ids[0], savepoints)  # `logclaw down`
        assert kept is not None and (kept / "_metadata").is_file() and kept.parent == savepoints.resolve()
        assert cluster.job(job_ids[0])["state"] == "FINISHED"
        assert resume_point(savepoints, fresh=True) is None
        assert resume_point(savepoints, fresh=False) == latest_savepoint(savepoints) == kept.resolve()

        produce(broker.bootstrap, topics["otlp_logs"], after)  # while no job runs
        job_ids.append(submit_detect(cluster, env, savepoint=resume_point(savepoints, fresh=False)))  # `logclaw up`
        cluster.wait_for_job_state(job_ids[1], "RUNNING", 180, all_running=True)
        assert cluster.checkpoint_counts(job_ids[1]).get("restored", 0) == 1
        produce(broker.bootstrap, topics["otlp_logs"], tail)
        got = reader.until(lambda evs: any(e["event"] == "resolved" for e in evs), 300)
    finally:
        reader.close()
        for job_id in job_ids:
            if cluster.job(job_id)["state"] == "RUNNING":
                cluster.cancel(job_id)

    resumed = distinct(got)[len(want_before):]
    assert [e["event"] for e in resumed] == ["resolved"]  # the open incident closed, none re-opened as new
    assert {e["incident_id"] for e in got} == {want_before[0]["incident_id"]}
    assert novel_templates(resumed) <= novel_templates(want_before)  # history kept: nothing novel again
    assert distinct(got) == sorted(want, key=lambda e: (e["incident_id"], e["detected_at"], e["event"]))
