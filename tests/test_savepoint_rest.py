"""Savepoint plumbing without a JVM: ``stop_with_savepoint`` against a strict stand-in of Flink's REST
API (the two endpoints used, request shapes checked as Flink 2.3 documents them: ``POST
/jobs/:jobid/stop`` with ``{"drain", "targetDirectory"}`` answering ``{"request-id"}``, then ``GET
/jobs/:jobid/savepoints/:triggerid`` until ``status.id`` is COMPLETED with ``operation.location`` or
``operation.failure-cause``), the choice of the savepoint to resume, and ``logclaw down`` refusing to
stop anything when the savepoint fails. The real cluster path is tests/test_savepoint_resume.py.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from connectors import flink_cluster
from connectors.flink_cluster import ClusterError, StandaloneCluster, latest_savepoint, savepoints, stop_with_savepoint
from jobs.cli import stack

JOB = "a" * 32


class FlinkRestStandIn(ThreadingHTTPServer):
    """Answers the stop-with-savepoint calls; ``outcome`` is "ok" or "fail"; IN_PROGRESS twice first."""

    def __init__(self, outcome: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.outcome = outcome
        self.polls = 0
        self.job_polls = 0
        self.stop_bodies: list[Any] = []
        self.errors: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FlinkRestStandIn

    def log_message(self, *_args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if self.path != f"/jobs/{JOB}/stop":
            return self._answer(404, {"errors": ["Not found: " + self.path]})
        if self.headers.get("Content-Type") != "application/json":
            self.server.errors.append(f"content type {self.headers.get('Content-Type')}")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.stop_bodies.append(body)
        if set(body) - {"drain", "targetDirectory", "formatType", "triggerId"} or not isinstance(body["drain"], bool):
            return self._answer(400, {"errors": ["bad request body"]})
        self._answer(202, {"request-id": "trigger-1"})

    def do_GET(self) -> None:
        if self.path == f"/jobs/{JOB}":  # the job ends a moment after its savepoint completed, as seen on Flink
            self.server.job_polls += 1
            return self._answer(200, {"jid": JOB, "state": "RUNNING" if self.server.job_polls < 2 else "FINISHED"})
        if self.path != f"/jobs/{JOB}/savepoints/trigger-1":
            return self._answer(404, {"errors": ["Not found: " + self.path]})
        self.server.polls += 1
        if self.server.polls < 3:
            return self._answer(200, {"status": {"id": "IN_PROGRESS"}})
        target = self.server.stop_bodies[-1]["targetDirectory"]
        operation = ({"location": f"{target}/savepoint-aaaaaa-0123456789ab"} if self.server.outcome == "ok" else
                     {"failure-cause": {"class": "java.util.concurrent.CompletionException",
                                        "stack-trace": "CheckpointException: Task not running"}})
        self._answer(200, {"status": {"id": "COMPLETED"}, "operation": operation})


@pytest.fixture(params=["ok"])
def rest(request: pytest.FixtureRequest) -> Iterator[FlinkRestStandIn]:
    server = FlinkRestStandIn(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_stop_with_savepoint_posts_no_drain_to_the_target_and_polls_until_the_location(
    rest: FlinkRestStandIn, tmp_path: Path
) -> None:
    where = stop_with_savepoint(rest.url, JOB, tmp_path / "sp")
    assert rest.stop_bodies == [{"drain": False, "targetDirectory": (tmp_path / "sp").resolve().as_uri()}]
    assert rest.errors == [] and rest.polls == 3
    assert rest.job_polls == 2  # returned once the job had ended
    assert where == (tmp_path / "sp").resolve() / "savepoint-aaaaaa-0123456789ab"


@pytest.mark.parametrize("rest", ["fail"], indirect=True)
def test_a_failed_savepoint_is_a_cluster_error_with_flinks_cause(rest: FlinkRestStandIn, tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"savepoint of job a+ failed: java\.util\.concurrent\.CompletionException: "
                                           r"CheckpointException: Task not running"):
        stop_with_savepoint(rest.url, JOB, tmp_path)


def test_an_unknown_job_is_a_cluster_error(rest: FlinkRestStandIn, tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="404"):
        stop_with_savepoint(rest.url, "b" * 32, tmp_path)


def test_the_stop_waits_until_every_task_runs_and_then_takes_the_savepoint(
    rest: FlinkRestStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``logclaw run`` and ``down`` share this: Flink refuses a savepoint while tasks deploy."""
    answers = iter([False, False, True])
    stops_when_asked: list[int] = []

    def all_running(base_url: str, job_id: str) -> bool:
        stops_when_asked.append(len(rest.stop_bodies))
        return next(answers)

    monkeypatch.setattr(flink_cluster, "all_tasks_running", all_running)
    where = flink_cluster.stop_once_running(rest.url, JOB, tmp_path / "new" / "sp", tasks_wait_s=600.0)
    assert stops_when_asked == [0, 0, 0] and len(rest.stop_bodies) == 1  # asked thrice, stopped after
    assert where == (tmp_path / "new" / "sp").resolve() / "savepoint-aaaaaa-0123456789ab"
    assert (tmp_path / "new" / "sp").is_dir()  # created for Flink to write into
    stops_when_asked.clear()
    flink_cluster.stop_once_running(rest.url, JOB, tmp_path / "sp2", tasks_wait_s=0.0)
    assert stops_when_asked == []  # no time left to wait: try anyway


def _savepoint(root: Path, name: str, mtime_ns: int, complete: bool = True) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if complete:
        (folder / "_metadata").write_bytes(b"x")
        os.utime(folder / "_metadata", ns=(mtime_ns, mtime_ns))
    return folder


def test_the_newest_complete_savepoint_is_resumed_unless_fresh(tmp_path: Path) -> None:
    assert latest_savepoint(tmp_path / "none") is None and stack.resume_point(tmp_path / "none", False) is None
    old = _savepoint(tmp_path, "savepoint-111111-aaaaaaaaaaaa", 1_000_000_000)
    new = _savepoint(tmp_path, "savepoint-222222-bbbbbbbbbbbb", 2_000_000_000)
    _savepoint(tmp_path, "savepoint-333333-cccccccccccc", 3_000_000_000, complete=False)  # still being written
    (tmp_path / "chk-7").mkdir()  # not a savepoint
    assert savepoints(tmp_path) == [old, new]
    assert stack.resume_point(tmp_path, fresh=False) == new.resolve()
    assert stack.resume_point(tmp_path, fresh=True) is None
    assert latest_savepoint(old) == old.resolve()  # a savepoint folder names itself


def test_down_stops_nothing_and_exits_1_when_the_savepoint_fails(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("rest.port: 1\n")
    (tmp_path / "state.json").write_text(json.dumps({"job_id": JOB}))
    (tmp_path / "ui.pid").write_text("999999999\n")
    stopped: list[Path] = []

    def stop_pid_file(path: Path, timeout_s: float = 15.0) -> bool:
        stopped.append(path)
        return True

    monkeypatch.setattr(stack, "_stop_pid_file", stop_pid_file)

    def failing(cluster: Any, job_id: str, target: Path | None) -> Path:
        raise ClusterError("savepoint of job a failed: boom")

    monkeypatch.setattr(stack, "stop_job", failing)
    monkeypatch.setattr(StandaloneCluster, "pids", lambda self, daemon: [1])  # a JobManager runs
    args = argparse.Namespace(stack_dir=tmp_path, savepoint_dir=None, no_savepoint=False)
    assert stack.run_down(args) == 1
    assert stopped == [] and (tmp_path / "state.json").exists()  # still recorded: down can be retried
    assert "--no-savepoint" in capsys.readouterr().err


def test_a_port_left_in_time_wait_by_a_stopped_cluster_is_free_for_the_next_up() -> None:
    import socket
    import time

    from connectors.flink_cluster import _port_free

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection stays in TIME_WAIT
    time.sleep(0.1)
    client.close()
    assert not _port_free("127.0.0.1", port)  # still listening
    server.close()
    with socket.socket() as strict, pytest.raises(OSError):  # the check before: refused while TIME_WAIT lasts
        strict.bind(("127.0.0.1", port))
    assert _port_free("127.0.0.1", port)


def test_up_resumes_from_the_newest_savepoint_and_says_what_to_do_when_the_job_does_not_fit_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Cluster:
        rest_url, log_dir = "http://127.0.0.1:1", tmp_path / "log"

        def start(self) -> None:
            pass

    submitted: list[tuple[Path | None, bool]] = []

    def submit(cluster: Any, env: Any, *, savepoint: Path | None = None, allow_non_restored_state: bool = False) -> str:
        submitted.append((savepoint, allow_non_restored_state))
        raise ClusterError("flink run exited 1 without a job id: Cannot map checkpoint/savepoint state for operator")

    class Proc:
        pid = 4242

    downs: list[bool] = []
    monkeypatch.setattr(stack, "_spawn", lambda *a, **k: Proc())
    monkeypatch.setattr(stack, "_wait_for_line", lambda *a: "broker: bootstrap 127.0.0.1:9")
    monkeypatch.setattr(stack, "prepare_cluster", lambda *a, **k: Cluster())
    monkeypatch.setattr(stack, "submit_detect", submit)

    def down(args: argparse.Namespace, savepoint: bool = True) -> int:
        downs.append(savepoint)
        return 0

    monkeypatch.setattr(stack, "run_down", down)
    newest = _savepoint(tmp_path / "stack" / "savepoints", "savepoint-222222-bbbbbbbbbbbb", 2_000_000_000)
    _savepoint(tmp_path / "stack" / "savepoints", "savepoint-111111-aaaaaaaaaaaa", 1_000_000_000)
    import logging

    from jobs import cli

    monkeypatch.setenv("LOGCLAW_LOG_FORMAT", "text")  # run_up sets both for its children: restored after
    monkeypatch.setenv("LOGCLAW_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    args = cli.build_parser("up").parse_args(["up", "--stack-dir", str(tmp_path / "stack"), "--log-format", "json"])
    try:
        assert stack.run_up(args) == 1
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert submitted == [(newest.resolve(), False)] and downs == [False]  # cleanup cancels, no savepoint
    assert f"the job did not start from {newest.resolve()}" in err and "--allow-non-restored-state" in err
    assert "--fresh" in err and "Traceback" not in err



def test_a_cluster_that_closes_its_rest_port_when_the_job_ends_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``logclaw run``'s MiniCluster stops serving REST as soon as its one job has ended: the wait for the
    job's end takes the refused connection for the end instead of polling until the deadline."""
    server = FlinkRestStandIn("ok")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    job_polls: list[str] = []
    real_call = flink_cluster.rest_call

    def counting_call(base_url: str, path: str, **kw: Any) -> Any:
        if path == f"/jobs/{JOB}":
            job_polls.append(path)
            if len(job_polls) == 1:  # the cluster goes away once the savepoint is complete
                server.shutdown()
                server.server_close()
        return real_call(base_url, path, **kw)

    monkeypatch.setattr(flink_cluster, "rest_call", counting_call)
    where = stop_with_savepoint(server.url, JOB, tmp_path / "sp", timeout_s=60.0)
    assert where.name == "savepoint-aaaaaa-0123456789ab"
    assert len(job_polls) == 1  # refused: ended, no polling until the 60 s deadline
