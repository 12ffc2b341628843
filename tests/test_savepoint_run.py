"""``logclaw run`` (the MiniCluster): SIGINT stops the job with a savepoint in ``--savepoint-dir`` and the
next ``logclaw run`` resumes from it (Flink counts one restore), ``--fresh`` does not. What the state
carries across is tested on the standalone cluster (tests/test_savepoint_resume.py); this checks the
command's own path end to end, against the local broker. Budget: three MiniCluster starts.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.broker import LocalBroker
from connectors.flink_cluster import latest_savepoint
from tests.test_job_kafka import RunProcess, Topics, _rest, kafka_job


@pytest.fixture
def runs() -> Iterator[list[RunProcess]]:
    started: list[RunProcess] = []
    yield started
    for run in started:
        run.close()


def _stop(run: RunProcess, timeout_s: float = 180) -> int:
    run.proc.send_signal(signal.SIGINT)
    return run.proc.wait(timeout_s)


@kafka_job
@pytest.mark.timeout(600)
def test_logclaw_run_stops_with_a_savepoint_and_the_next_run_resumes_from_it_unless_fresh(
    broker: LocalBroker, tmp_path: Path, runs: list[RunProcess]
) -> None:
    topics = Topics(broker, "run-sp")
    savepoints = ["--savepoint-dir", str(tmp_path / "savepoints")]
    first = RunProcess(tmp_path, "first", topics, broker.bootstrap, savepoints)
    runs.append(first)
    first.wait_running(time.monotonic() + 240)
    assert not any("restoring from" in line for line in first.lines())
    assert _stop(first) == 0, first.lines()
    kept = latest_savepoint(tmp_path / "savepoints")
    assert kept is not None and any(line.startswith(f"run: stopped; savepoint {kept}") for line in first.lines())

    second = RunProcess(tmp_path, "second", topics, broker.bootstrap, savepoints)
    runs.append(second)
    second.wait_running(time.monotonic() + 240)
    assert f"run: restoring from {kept}" in second.lines()
    deadline = time.monotonic() + 60
    while _rest(second.port, f"/jobs/{second.job_id}/checkpoints")["counts"]["restored"] != 1:
        assert time.monotonic() < deadline, "the second run did not report its restore"
        time.sleep(0.5)
    assert _stop(second) == 0
    assert latest_savepoint(tmp_path / "savepoints") != kept  # the second stop wrote a newer one

    third = RunProcess(tmp_path, "third", topics, broker.bootstrap, [*savepoints, "--fresh"])
    runs.append(third)
    third.wait_running(time.monotonic() + 240)
    assert not any("restoring from" in line for line in third.lines())
    assert _rest(third.port, f"/jobs/{third.job_id}/checkpoints")["counts"]["restored"] == 0
