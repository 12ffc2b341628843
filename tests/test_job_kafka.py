"""The detection job in Kafka mode on the local MiniCluster against the local broker (tansu).

(a) The cascade scenario (OTLP protobuf, message timestamp = event time) plus garbage goes to a logs
topic; the job, started with ``execute_async``, writes incident events keyed by fingerprint to the
incidents topic and the garbage to the dead-letter topic, and keeps running. The events equal what
the in-memory engine (``udfs.engine``) gives for the same messages.

(b) ``logclaw run`` as a subprocess with checkpoints every 2 s: the first part of the stream, a
completed checkpoint after the first incident events, then SIGKILL of the Flink JVM and the driver,
the rest of the stream, a restart with ``--from-checkpoint``: the events on the topic, deduplicated,
equal those of an uninterrupted run (the engine's, which (a) shows the job reproduces).

Event time only advances with data, so the incident is not resolved here (no later traffic): the
expected events are the engine's without its end-of-input flush.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connectors import otlp
from connectors.broker import LocalBroker, free_port
from jobs.config import JobConfig
from udfs.engine import Engine
from udfs.records import LogRecord
from udfs.scenarios.library import DEFAULT_BASE_MS, build, requests_of

ROOT = Path(__file__).resolve().parent.parent
SPLIT_MS = DEFAULT_BASE_MS + 400_000  # 00:06:40: the fault starts at 00:06:00; (b) stops the job here

KAFKA_JOB = [pytest.mark.flink, pytest.mark.broker, pytest.mark.integration]


def kafka_job(test: Any) -> Any:
    for mark in KAFKA_JOB:
        test = mark(test)
    return test


# --- input and expectations ---------------------------------------------------------------------------


def cascade_messages() -> list[list[LogRecord]]:
    return requests_of(build("cascade", scale=0.25).records, 200)


def uninterrupted_events(messages: Sequence[Sequence[LogRecord]]) -> list[dict[str, Any]]:
    """The engine's events for the messages in order, without the end-of-input flush (an unbounded
    source never ends, so its watermark stays at the newest event time minus the out-of-orderness)."""
    engine = Engine()
    for message in messages:
        engine.feed(message)
    return engine.events


def garbage() -> list[bytes]:
    """Random bytes, a truncated protobuf request and invalid JSON (seeded: the same every run)."""
    rng = random.Random(7)
    valid = otlp.encode_logs_proto(cascade_messages()[0])
    return [bytes(rng.randrange(256) for _ in range(64)), valid[: len(valid) // 2], b'{"resourceLogs": [{"resource":']


class Topics:
    def __init__(self, broker: LocalBroker, prefix: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.logs, self.incidents, self.dead = (f"{prefix}-{n}-{tag}" for n in ("logs", "incidents", "dead"))
        self.group = f"{prefix}-job-{tag}"
        broker.create_topics([self.logs], partitions=2)
        broker.create_topics([self.incidents, self.dead], partitions=1)


def produce(bootstrap: str, topic: str, values: Sequence[tuple[bytes, bytes, int, int]]) -> list[tuple[int, int]]:
    """Produce (key, value, partition, timestamp_ms) in order; return each one's acked (partition, offset)."""
    acked: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def on_delivery(i: int) -> Any:
        def done(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                acked[i] = (msg.partition() or 0, msg.offset() or 0)
        return done

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i, (key, value, partition, ts) in enumerate(values):
        for _ in range(1_000):
            try:
                producer.produce(topic, value, key=key, partition=partition, timestamp=ts, on_delivery=on_delivery(i))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0 and errors == []
    return [acked[i] for i in range(len(values))]


def as_kafka(messages: Sequence[Sequence[LogRecord]]) -> list[tuple[bytes, bytes, int, int]]:
    """Protobuf messages keyed tenant/service, timestamp = first record's event time; each service
    on a fixed partition (two services per partition, so both source subtasks have data)."""
    services = sorted({m[0].service for m in messages})
    return [(f"{m[0].tenant}/{m[0].service}".encode(), otlp.encode_logs_proto(m), services.index(m[0].service) % 2,
             m[0].time_ms) for m in messages]


# --- reading the output topics -----------------------------------------------------------------------------


class TopicReader:
    """Reads one single-partition topic from offset 0 by assign() (no group join), accumulating."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}",
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.messages: list[Message] = []

    def poll_until(self, done: Any, deadline: float) -> list[Message]:
        while not done(self.messages) and time.monotonic() < deadline:
            msg = self.consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                self.messages.append(msg)
        return self.messages

    def close(self) -> None:
        self.consumer.close()


def events_of(messages: Sequence[Message]) -> list[dict[str, Any]]:
    return [json.loads(m.value() or b"") for m in messages]


def without_emitted_at(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "emitted_at"} for e in events]


def count_at_least(n: int) -> Any:
    return lambda seen: len(seen) >= n


# --- (a) in-process: execute_async, garbage, dead letters ---------------------------------------------------


@kafka_job
@pytest.mark.timeout(300)
def test_kafka_job_detects_the_cascade_like_the_engine_and_dead_letters_garbage_against_local_broker(
    broker: LocalBroker, tmp_path: Path
) -> None:
    from jobs.detect import build_pipeline, configure, sources
    from jobs.runtime import local_env

    started = time.monotonic()
    topics = Topics(broker, "kafka-a")
    messages = cascade_messages()
    expected = uninterrupted_events(messages)
    # payment-api and order-service join at the same bucket close (one "updated"), notification-service later.
    assert [e["event"] for e in expected] == ["opened", "updated", "updated"]
    bad = garbage()
    # Garbage first, on both partitions, so every later incident proves the job survived it.
    bad_at = produce(broker.bootstrap, topics.logs, [(b"junk", v, i % 2, DEFAULT_BASE_MS) for i, v in enumerate(bad)])
    produce(broker.bootstrap, topics.logs, as_kafka(messages))

    cfg = JobConfig.from_env({}, mode="kafka", bootstrap_servers=broker.bootstrap, logs_topic=topics.logs,
                             incidents_topic=topics.incidents, dead_letter_topic=topics.dead, group_id=topics.group,
                             store_path=str(tmp_path / "logclaw.db"), checkpoint_interval_ms=0, parallelism=2)
    env = local_env(cfg, with_kafka=True)
    configure(env, cfg)
    logs, spans = sources(env, cfg)
    build_pipeline(env, cfg, logs, spans)
    client = env.execute_async("logclaw-kafka-test")
    incidents = TopicReader(broker.bootstrap, topics.incidents)
    dead = TopicReader(broker.bootstrap, topics.dead)
    try:
        deadline = time.monotonic() + 200
        got = incidents.poll_until(count_at_least(len(expected)), deadline)
        dead_letters = dead.poll_until(count_at_least(len(bad)), deadline)
        status = str(client.get_job_status().result())
    finally:
        client.cancel().result()
        incidents.close()
        dead.close()

    assert status.endswith("RUNNING")  # still running after the garbage and the incidents
    events = events_of(got)
    assert without_emitted_at(events) == expected
    assert [m.key() for m in got] == [e["fingerprint"].encode() for e in expected]
    opened = events[0]
    assert (opened["event"], opened["root_cause"]["service"]) == ("opened", "checkout")
    assert events[-1]["affected_services"] == ["payment-api", "order-service", "notification-service"]
    assert len({(e["incident_id"], e["fingerprint"]) for e in events}) == 1

    letters = sorted(((m.key(), json.loads(m.value() or b"")) for m in dead_letters),
                     key=lambda kd: (kd[1]["partition"], kd[1]["offset"]))
    want = sorted((p, o, v) for (p, o), v in zip(bad_at, bad, strict=True))
    assert [(k, d["topic"], d["partition"], d["offset"], d["payload_base64"]) for k, d in letters] == [
        (f"{topics.logs}-{p}-{o}".encode(), topics.logs, p, o, base64.b64encode(v).decode()) for p, o, v in want
    ]
    reasons = [sorted({err["reason"] for err in d["errors"]}) for _, d in letters]
    assert all(r and all(r) for r in reasons), reasons
    print(f"\n(a) {len(messages)} messages + {len(bad)} garbage -> {len(events)} events in "
          f"{time.monotonic() - started:.0f} s")


# --- (b) logclaw run as a subprocess: kill, restart from the last checkpoint ---------------------------------


def _rest(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


class RunProcess:
    """``logclaw run`` in its own session, stdout/stderr to files; killed (whole session) at the end."""

    def __init__(self, tmp: Path, name: str, topics: Topics, bootstrap: str, extra: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.out = tmp / f"{name}.out"
        # Not PYFLINK_*: a PyFlink job run earlier in this pytest process (loopback Python workers)
        # leaves PYFLINK_GATEWAY_DISABLED set, which would stop the child from starting its own JVM.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PYFLINK_")}
        env = {**inherited, "PYTHONPATH": str(ROOT), "LOGCLAW_INCIDENTS_TOPIC": topics.incidents,
               "LOGCLAW_DEAD_LETTER_TOPIC": topics.dead, "LOGCLAW_STORE_PATH": str(tmp / "logclaw.db")}
        cmd = [sys.executable, "-m", "jobs.cli", "run", "--bootstrap", bootstrap, "--logs-topic", topics.logs,
               "--group-id", topics.group, "--web-port", str(self.port), "--parallelism", "2",
               "--checkpoint-dir", str(tmp / "checkpoints"), "--checkpoint-interval-ms", "2000", *extra]
        with self.out.open("wb") as out, (tmp / f"{name}.err").open("wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out, stderr=err, start_new_session=True)
        self.job_id = ""

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines()

    def wait_running(self, deadline: float) -> str:
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in self.lines():
                if line.startswith("run: job ") and " running;" in line:
                    self.job_id = line.split()[2]
                    return self.job_id
            time.sleep(0.5)
        err = self.out.with_suffix(".err").read_text(errors="replace").splitlines()[-25:]
        raise AssertionError(f"logclaw run did not start (exit {self.proc.poll()}): {self.lines()}\n" + "\n".join(err))

    def checkpoints(self) -> Any:
        return _rest(self.port, f"/jobs/{self.job_id}/checkpoints")

    def kill_hard(self) -> None:
        """SIGKILL the MiniCluster JVM (the driver's child), then the driver: no cancel, no cleanup."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


@pytest.fixture
def runs() -> Iterator[list[RunProcess]]:
    started: list[RunProcess] = []
    yield started
    for run in started:
        run.close()


def _completed_after(run: RunProcess, after_ms: int, deadline: float) -> str:
    """External path of a checkpoint triggered after ``after_ms`` (epoch ms), once completed."""
    while time.monotonic() < deadline:
        latest = run.checkpoints()["latest"]["completed"]
        if latest and latest["trigger_timestamp"] > after_ms:
            return str(latest["external_path"]).removeprefix("file:")
        time.sleep(0.5)
    raise AssertionError("no checkpoint completed after the first incident events")


@kafka_job
@pytest.mark.timeout(400)
def test_logclaw_run_killed_mid_stream_resumes_from_checkpoint_without_losing_incidents_against_local_broker(
    broker: LocalBroker, tmp_path: Path, runs: list[RunProcess]
) -> None:
    started = time.monotonic()
    topics = Topics(broker, "kafka-b")
    messages = cascade_messages()
    expected = uninterrupted_events(messages)
    first = [m for m in messages if m[0].time_ms < SPLIT_MS]
    rest = messages[len(first):]
    before = [e for e in expected if e["detected_at"] < "2026-01-01T00:06:35"]
    assert 1 <= len(before) < len(expected)  # the kill falls inside the incident
    produce(broker.bootstrap, topics.logs, as_kafka(first))
    incidents = TopicReader(broker.bootstrap, topics.incidents)
    try:
        run1 = RunProcess(tmp_path, "run1", topics, broker.bootstrap)
        runs.append(run1)
        deadline = time.monotonic() + 300
        run1.wait_running(deadline)
        incidents.poll_until(count_at_least(len(before)), deadline)
        assert len(incidents.messages) >= len(before)
        seen_ms = int(time.time() * 1000)
        checkpoint = _completed_after(run1, seen_ms, deadline)
        run1.kill_hard()
        assert run1.proc.returncode == -signal.SIGKILL
        killed_at = time.monotonic()

        produce(broker.bootstrap, topics.logs, as_kafka(rest))  # arrives while the job is down
        run2 = RunProcess(tmp_path, "run2", topics, broker.bootstrap, ["--from-checkpoint", checkpoint])
        runs.append(run2)
        run2.wait_running(deadline)
        assert f"run: restoring from {checkpoint}" in run2.lines()

        def all_expected(seen: list[Message]) -> bool:
            return {_identity(e) for e in events_of(seen)} >= {_identity(e) for e in expected}

        incidents.poll_until(all_expected, deadline)
        restored = run2.checkpoints()["latest"]["restored"]
        run2.proc.send_signal(signal.SIGINT)  # Ctrl-C: stop with a savepoint (the next run resumes from it)
        assert run2.proc.wait(60) == 0
    finally:
        incidents.close()

    events = events_of(incidents.messages)
    unique: dict[tuple[str, str, str], dict[str, Any]] = {}
    for msg, event in zip(incidents.messages, events, strict=True):
        assert msg.key() == event["fingerprint"].encode()
        plain = without_emitted_at([event])[0]
        assert unique.setdefault(_identity(event), plain) == plain  # a duplicate is the same event, re-sent
    assert sorted(unique.values(), key=_identity) == sorted(without_emitted_at(expected), key=_identity)
    assert restored is not None and str(restored["external_path"]).removeprefix("file:") == checkpoint
    assert run2.lines()[-1].startswith(f"run: stopped; savepoint {tmp_path / '.logclaw' / 'savepoints'}/savepoint-")
    print(f"\n(b) {len(first)}+{len(rest)} messages, {len(events)} events on the topic ({len(unique)} unique);"
          f" restart after kill {time.monotonic() - killed_at:.0f} s; total {time.monotonic() - started:.0f} s")


def _identity(event: dict[str, Any]) -> tuple[str, str, str]:
    return (event["incident_id"], event["event"], event["detected_at"])


# --- logclaw run: its pure parts (fast, no JVM) ------------------------------------------------------------


def test_checkpoint_settings_are_flink2_keys_for_retained_checkpoints_and_restore(tmp_path: Path) -> None:
    from jobs.cli.run import checkpoint_settings

    base = {
        "execution.checkpointing.storage": "filesystem",
        "execution.checkpointing.dir": f"file://{tmp_path}/ck",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "3",
    }
    assert checkpoint_settings(tmp_path / "ck", None) == base
    chk = tmp_path / "ck" / "j" / "chk-4"
    assert checkpoint_settings(tmp_path / "ck", chk) == {**base, "execution.state-recovery.path": f"file://{chk}"}


def test_resolve_restore_path_picks_the_newest_completed_checkpoint(tmp_path: Path) -> None:
    from jobs.cli.run import resolve_restore_path
    from jobs.config import ConfigError

    def chk(job: str, n: int, mtime: int | None) -> Path:
        folder = tmp_path / job / f"chk-{n}"
        folder.mkdir(parents=True)
        if mtime is not None:
            (folder / "_metadata").write_bytes(b"meta")
            os.utime(folder / "_metadata", (mtime, mtime))
        return folder

    old, newer = chk("job-a", 7, 1_000), chk("job-b", 2, 2_000)
    chk("job-b", 3, None)  # in progress: no _metadata yet
    assert resolve_restore_path(tmp_path) == newer
    assert resolve_restore_path(tmp_path / "job-a") == old
    assert resolve_restore_path(old / "_metadata") == old
    with pytest.raises(ConfigError) as info:
        resolve_restore_path(tmp_path / "job-b" / "chk-3")
    assert str(info.value) == f"--from-checkpoint {tmp_path / 'job-b' / 'chk-3'}: no completed checkpoint " \
        "(chk-N/_metadata) there"


def test_run_flags_override_logclaw_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs import cli
    from jobs.cli import run as run_cmd

    for name in [n for n in os.environ if n.startswith("LOGCLAW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LOGCLAW_GROUP_ID", "from-env")
    monkeypatch.setenv("LOGCLAW_LOGS_TOPIC", "env-logs")
    monkeypatch.setenv("LOGCLAW_CHECKPOINT_INTERVAL_MS", "5000")
    args = cli.build_parser("run").parse_args(
        ["run", "--bootstrap", "k:9092", "--logs-topic", "flag-logs", "--web-port", "9999", "--parallelism", "3"])
    assert args._run is run_cmd.run
    cfg = run_cmd._config(args)
    assert cfg == JobConfig(mode="kafka", bootstrap_servers="k:9092", logs_topic="flag-logs", group_id="from-env",
                            web_port=9999, parallelism=3, checkpoint_interval_ms=5000)


def test_web_ui_status_tells_rest_from_dashboard_against_local_standin(tmp_path: Path) -> None:
    import http.server
    import threading

    from jobs.cli.run import web_ui_status

    def serve(pages: dict[str, bytes]) -> http.server.HTTPServer:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    overview = json.dumps({"taskmanagers": 1, "flink-version": "2.3.0"}).encode()
    page = b"<!-- licence -->" + b" " * 5000 + b"<html><head><title>Apache Flink Web Dashboard</title>"
    for pages, want in (({"/overview": overview, "/": page}, (True, True)), ({"/overview": overview}, (True, False)),
                        ({"/": page}, (False, False))):
        server = serve(pages)
        try:
            assert web_ui_status(server.server_address[1]) == want
        finally:
            server.shutdown()
            server.server_close()
    assert web_ui_status(free_port(), timeout_s=0.5) == (False, False)
