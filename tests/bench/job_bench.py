"""Benchmark (not a test): the full detection job on the local MiniCluster, end to end.

    python -m tests.bench.job_bench [--mode thread|process] [--source files|kafka] [--repeat 3]
                                    [--hours 4] [--per-message 200] [--samples 40]
                                    [--out bench-out/job_bench.json]

Input: the ``steady`` scenario over ``--hours`` of event time (8 services, ~95 % INFO/DEBUG), in
messages of ``--per-message`` records across services (``requests_of(..., by_resource=False)``,
unbounded event-time span so every message is full). Generated once by the parent process; each
measured run is a child process (a fresh JVM), ``--repeat`` times per case; min/median reported.

(a) ``files``: ``jobs.cli.replay.replay`` over the messages as OTLP/JSON lines split into 2 files (one
    FileSource split per reader, so both parallel subtasks work), with ``index_logs`` off (pure
    detection) and on (embedded SQLite store). Rate = records between the first and the last
    progress line of the decode subtasks / the time between them; end to end = records / wall time
    of ``replay()`` including MiniCluster start.
(b) ``kafka``: the messages (OTLP protobuf) pre-produced round-robin to a 2-partition topic on the
    local tansu broker, each partition framed by a start and an end marker message (one OOM record
    of a marker tenant, which opens an incident at once on the immediate path). The Kafka job
    (``jobs.detect`` graph, Kafka-mode ``JobConfig``, ``local_env(with_kafka=True)``,
    ``execute_async``, checkpoints every 10 s) runs; rate = backlog records / (last end-marker
    incident consumed - first start-marker incident consumed) from ``logclaw.incidents``.
(c) immediate-path latency, same job, warmed up by (b): ``--samples`` single-OOM messages, each of a
    new tenant (so dedup cannot swallow it), one every ``--interval`` s; latency = produce call ->
    the ``opened`` event consumed from the incidents topic. A broker baseline (produce -> consume of
    a probe topic, same client settings, before the job starts) is reported beside it.

CPU: per-thread CPU time of the JVM (thread names from ``jstack``) and of every Python worker
process over the measured window, to show which operator chain is the bottleneck.
Targets in the issue: >= 50k records/s on 2 cores with 100-500 records per message; p99 < 1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.bench.engine_bench import command, machine, print_machine, write_json

TARGET_RECORDS_S = 50_000
TARGET_P99_MS = 1_000
PARTITIONS = 2
MARKER_SERVICE = "inventory"

# --- input ----------------------------------------------------------------------------------------


def generate(workdir: Path, hours: float, per_message: int, files: int, event_rate: float = 0.0) -> dict[str, Any]:
    """Write the steady input once: OTLP/JSON lines (``files`` files) and length-prefixed protobuf.

    ``event_rate`` > 0 compresses event time so the same records arrive at that many records per
    second of event time (a busy system) instead of the scenario's ~16/s (a quiet system replayed
    from a backlog, where every 10 s bucket of every service holds ~20 records and closing buckets,
    not records, dominates the cost)."""
    from connectors.otlp import encode_logs_json, encode_logs_proto
    from udfs.scenarios import library as scenarios

    sc = scenarios.steady(scale=hours)
    records = list(sc.records)
    natural = len(records) / max(1e-9, (records[-1].time_unix_nano - records[0].time_unix_nano) / 1e9)
    if event_rate > 0:
        t0, factor = records[0].time_unix_nano, natural / event_rate
        records = [
            r._replace(time_unix_nano=t, observed_time_unix_nano=t)
            for r in records
            for t in (t0 + int((r.time_unix_nano - t0) * factor),)
        ]
    msgs = scenarios.requests_of(records, per_message, max_span_ms=2**40, by_resource=False)
    paths = [workdir / f"logs-{i}.jsonl" for i in range(files)]
    handles = [p.open("wb") for p in paths]
    try:
        with (workdir / "logs.protobin").open("wb") as proto:
            for i, m in enumerate(msgs):
                handles[i % files].write(encode_logs_json(m) + b"\n")
                body = encode_logs_proto(m)
                proto.write(struct.pack(">QI", m[0].time_ms, len(body)) + body)
    finally:
        for h in handles:
            h.close()
    rate = event_rate if event_rate > 0 else natural
    info = {
        "scenario": f"steady (scale {hours:g}), {rate:.0f} records per second of event time",
        "event_rate": round(rate, 1), "records": len(records), "messages": len(msgs),
        "records_per_message": round(len(records) / len(msgs), 1), "files": [str(p) for p in paths],
        "first_ms": records[0].time_ms, "last_ms": records[-1].time_ms,
        "json_bytes": sum(p.stat().st_size for p in paths), "proto_bytes": (workdir / "logs.protobin").stat().st_size,
    }
    (workdir / "input.json").write_text(json.dumps(info), encoding="utf-8")
    return info


def proto_messages(workdir: Path) -> Iterator[tuple[int, bytes]]:
    with (workdir / "logs.protobin").open("rb") as fh:
        while head := fh.read(12):
            ts, n = struct.unpack(">QI", head)
            yield ts, fh.read(n)


# --- CPU by thread --------------------------------------------------------------------------------


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _ticks(path: str) -> tuple[str, int]:
    stat = Path(path).read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return stat[stat.index("(") + 1 : stat.rindex(")")], int(fields[11]) + int(fields[12])


def _cmd_kind(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = b" ".join(argv).decode(errors="replace")
    if pid == os.getpid():  # in local process mode PyFlink runs the Python workers here (loopback mode)
        return "client python (+ loopback Python workers)"
    if "java" in Path(argv[0].decode(errors="replace")).name:
        return "jvm"
    if "tansu" in text:
        return "tansu broker"
    return "python worker" if "python" in text or "pyflink" in text else Path(argv[0].decode()).name


EXTRA_ROOTS: list[int] = []
"""Processes measured besides this process tree: a standalone cluster's daemons (reparented to init)."""


def _measured_pids() -> list[int]:
    return [p for root in (os.getpid(), *EXTRA_ROOTS) for p in _descendants(root)]


def cpu_snapshot() -> dict[tuple[int, int], tuple[str, str, int]]:
    """(pid, tid) -> (process kind, thread comm, utime + stime ticks) for this process tree."""
    snap: dict[tuple[int, int], tuple[str, str, int]] = {}
    for pid in _measured_pids():
        kind = _cmd_kind(pid)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError):
                    comm, ticks = _ticks(f"/proc/{pid}/task/{tid}/stat")
                    snap[(pid, int(tid))] = (kind, comm, ticks)
    return snap


def jvm_thread_names() -> dict[int, str]:
    """Native thread id -> Java thread name, from ``jstack`` of the JVMs in this process tree."""
    names: dict[int, str] = {}
    jstack = shutil.which("jstack")
    if not jstack:
        return names
    for pid in _measured_pids():
        if _cmd_kind(pid) != "jvm":
            continue
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run([jstack, str(pid)], capture_output=True, text=True, timeout=60).stdout
            for m in re.finditer(r'^"(.+?)" .*? nid=(0x[0-9a-f]+)', out, re.M):
                names[int(m.group(2), 16)] = m.group(1)
    return names


def cpu_report(before: dict[tuple[int, int], tuple[str, str, int]], after: dict[tuple[int, int], tuple[str, str, int]],
               wall_s: float, names: dict[int, str], top: int = 12) -> dict[str, Any]:
    hz = os.sysconf("SC_CLK_TCK")
    by_kind: dict[str, float] = {}
    threads: dict[str, float] = {}
    for key, (kind, comm, ticks) in after.items():
        used = (ticks - before.get(key, (kind, comm, 0))[2]) / hz
        if used <= 0:
            continue
        by_kind[kind] = by_kind.get(kind, 0.0) + used
        label = re.sub(r"#\d+$", "", names.get(key[1], comm)) if kind == "jvm" else f"{comm} [{kind} {key[0]}]"
        if len(label) > 110:  # a chained task's name lists every operator; keep the head and the subtask
            label = label[:90] + " ... " + label[-15:]
        threads[f"{kind}: {label}"] = threads.get(f"{kind}: {label}", 0.0) + used
    total = sum(by_kind.values())
    return {
        "window_s": round(wall_s, 2), "cpu_s": round(total, 2), "cores_busy": round(total / max(wall_s, 1e-9), 2),
        "by_process": {k: round(v, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top_threads": [[k, round(v, 2)] for k, v in sorted(threads.items(), key=lambda kv: -kv[1])[:top]],
    }


# --- (a) files ------------------------------------------------------------------------------------


def run_files(workdir: Path, info: dict[str, Any], mode: str, index_logs: bool, parallelism: int) -> dict[str, Any]:
    from jobs.cli.replay import replay
    from jobs.config import JobConfig

    out = Path(tempfile.mkdtemp(prefix="job-bench-out-", dir=workdir))
    cfg = JobConfig(mode="files", log_files=tuple(info["files"]), out_dir=str(out), index_logs=index_logs,
                    execution_mode=mode, parallelism=parallelism)
    marks: list[tuple[float, int]] = []
    snaps: list[Any] = []
    names: dict[int, str] = {}
    total = info["messages"]

    def progress(line: str) -> None:
        m = re.match(r"replay: (\d+)/", line)
        if not m:
            return
        marks.append((time.perf_counter(), int(m.group(1))))
        if len(marks) == 1:
            snaps.append(cpu_snapshot())
        elif int(m.group(1)) >= total * 0.9 and len(snaps) == 1:
            snaps.append(cpu_snapshot())
            names.update(jvm_thread_names())

    started = time.perf_counter()
    events = replay(cfg, total, progress=progress)
    wall = time.perf_counter() - started
    per_msg = info["records"] / total
    row: dict[str, Any] = {"source": "files", "mode": mode, "index_logs": index_logs, "parallelism": parallelism,
                           "records": info["records"], "messages": total, "wall_s": round(wall, 2),
                           "end_to_end_records_per_s": round(info["records"] / wall),
                           "incidents_opened": sum(1 for e in events if e["event"] == "opened")}
    if len(marks) >= 2:
        # From the first progress line to the one at >= 90 % (where the CPU snapshot was taken, before jstack).
        (t0, d0) = marks[0]
        (t1, d1) = next((m for m in marks if m[1] >= total * 0.9), marks[-1])
        row["first_progress_s"] = round(t0 - started, 2)
        row["records_per_s"] = round((d1 - d0) * per_msg / max(t1 - t0, 1e-9))
        row["measured_records"] = round((d1 - d0) * per_msg)
    if len(snaps) == 2:
        t_snap = next((t for t, d in marks if d >= total * 0.9), marks[-1][0])
        row["cpu"] = cpu_report(snaps[0], snaps[1], t_snap - marks[0][0], names)
    if index_logs:
        db = out / "logclaw.db"
        row["store_mib"] = round(db.stat().st_size / 2**20, 1) if db.exists() else 0.0
    shutil.rmtree(out, ignore_errors=True)
    return row


# --- (b) + (c) kafka ------------------------------------------------------------------------------


def _oom_request(tenant: str, time_ms: int) -> bytes:
    from connectors.otlp import encode_logs_proto
    from udfs.scenarios import library as scenarios
    from udfs.scenarios.traffic import Stream, oom_lines

    stream = Stream(0)
    oom_lines(stream, tenant, MARKER_SERVICE, time_ms * 1_000_000, 1, 1, scenarios.OOM_BODY)
    return encode_logs_proto(stream.records)


def _consumer(bootstrap: str, topic: str) -> Any:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    return consumer


def wait_opened(consumer: Any, tenants: set[str], timeout_s: float) -> dict[str, float]:
    """perf_counter time at which an ``opened`` event of each tenant was consumed (missing on timeout)."""
    seen: dict[str, float] = {}
    deadline = time.perf_counter() + timeout_s
    while set(seen) < tenants and time.perf_counter() < deadline:
        msg = consumer.poll(0.02)
        if msg is None or msg.error() is not None:
            continue
        now = time.perf_counter()
        event = json.loads(msg.value())
        if event.get("event") == "opened" and event.get("tenant") in tenants:
            seen.setdefault(event["tenant"], now)
    return seen


def broker_baseline(broker: Any, samples: int) -> list[float]:
    """Produce -> consume round trips (ms) through the broker alone, same client settings."""
    from confluent_kafka import Producer

    topic = f"bench-probe-{uuid.uuid4().hex[:6]}"
    broker.create_topics([topic], partitions=1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    consumer = _consumer(broker.bootstrap, topic)
    producer.produce(topic, json.dumps({"event": "opened", "tenant": "warm-up"}).encode())
    producer.flush(10)
    wait_opened(consumer, {"warm-up"}, 30)
    out = []
    for i in range(samples):
        tenant = f"probe-{i}"
        t0 = time.perf_counter()
        producer.produce(topic, json.dumps({"event": "opened", "tenant": tenant}).encode())
        producer.poll(0)
        got = wait_opened(consumer, {tenant}, 5)
        if tenant in got:
            out.append(1000 * (got[tenant] - t0))
        time.sleep(0.05)
    consumer.close()
    producer.flush(10)
    return out


def _percentiles(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"n": 0}
    s = sorted(ms)

    def pct(p: float) -> float:
        return round(s[min(len(s), max(1, math.ceil(p / 100 * len(s)))) - 1], 1)  # nearest rank

    return {"n": len(s), "min": round(s[0], 1), "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": round(s[-1], 1)}


def start_minicluster(cfg: Any, mode: str) -> Any:
    """The Kafka job on the local MiniCluster (one JVM, so one embedded Python in thread mode)."""
    from jobs.detect import build_pipeline, configure, sources
    from jobs.runtime import local_env

    env = local_env(cfg, with_kafka=True)
    configure(env, cfg)
    logs, spans = sources(env, cfg)
    build_pipeline(env, cfg, logs, spans)
    client = env.execute_async(f"logclaw-bench-{mode}")
    return lambda: client.cancel().result()


def start_standalone(cfg: Any, mode: str, workdir: Path, taskmanagers: int) -> Any:
    """The Kafka job submitted with ``flink run -py`` to a standalone cluster started from
    flink-conf/config.yaml (RocksDB state, checkpoints every 10 s) with ``taskmanagers`` TaskManagers
    of one slot each: one JVM, so one embedded Python, per parallel subtask."""
    from connectors.broker import free_port
    from jobs.cli.stack import job_env, prepare_cluster, submit_detect

    stack = workdir / f"cluster-{uuid.uuid4().hex[:6]}"
    cluster = prepare_cluster(stack, rest_port=free_port(), extra={
        "taskmanager.numberOfTaskSlots": 1, "parallelism.default": cfg.parallelism,
        "python.execution-mode": mode, "taskmanager.memory.process.size": "2048m",
        "python.fn-execution.bundle.time": cfg.effective_bundle_time_ms,
    })
    cluster.start()  # starts the TaskManagers the parallelism needs (one slot each)
    try:
        for _ in range(taskmanagers - len(cluster.pids("taskexecutor"))):
            cluster.start_taskmanager()
        cluster.wait_for_taskmanagers(taskmanagers, 120)
        EXTRA_ROOTS[:] = cluster.pids("taskexecutor") + cluster.pids("standalonesession")
        job_id = submit_detect(cluster, job_env(
            cfg.bootstrap_servers, stack / "logclaw.db", LOGCLAW_LOGS_TOPIC=cfg.logs_topic,
            LOGCLAW_INCIDENTS_TOPIC=cfg.incidents_topic, LOGCLAW_DEAD_LETTER_TOPIC=cfg.dead_letter_topic,
            LOGCLAW_GROUP_ID=cfg.group_id, LOGCLAW_INDEX_LOGS="false", LOGCLAW_PARALLELISM=str(cfg.parallelism),
            LOGCLAW_EXECUTION_MODE=mode, LOGCLAW_SPANS_TOPIC=cfg.spans_topic,
            LOGCLAW_CHECKPOINT_INTERVAL_MS=str(cfg.checkpoint_interval_ms),
        ))
    except BaseException:
        cluster.stop()
        raise

    def stop() -> None:
        with contextlib.suppress(Exception):
            cluster.cancel(job_id)
        cluster.stop()

    return stop


def run_kafka(workdir: Path, info: dict[str, Any], mode: str, parallelism: int, samples: int,
              interval_s: float, cluster: str = "mini", taskmanagers: int = 2,
              bundle_time_ms: int = 0) -> dict[str, Any]:
    from confluent_kafka import Producer

    from connectors.broker import LocalBroker
    from jobs.config import JobConfig

    run_id = uuid.uuid4().hex[:8]
    logs_topic, incidents_topic = f"bench-logs-{run_id}", f"bench-incidents-{run_id}"
    row: dict[str, Any] = {"source": "kafka", "mode": mode, "parallelism": parallelism, "format": "otlp_proto",
                           "records": info["records"], "messages": info["messages"], "partitions": PARTITIONS,
                           "cluster": cluster}
    if cluster == "standalone":
        row["taskmanagers"] = taskmanagers
    with LocalBroker(log_path=workdir / f"tansu-{run_id}.log") as broker:
        broker.create_topics([logs_topic], partitions=PARTITIONS)
        broker.create_topics([incidents_topic, f"bench-dead-{run_id}"], partitions=1)
        row["broker_baseline_ms"] = _percentiles(broker_baseline(broker, 20))
        # Pre-produce: per partition a start marker, its share of the messages, an end marker.
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20,
                             "queue.buffering.max.kbytes": 262144})
        first_ms, last_ms = info["first_ms"], info["last_ms"]
        starts = {f"bench-start-p{p}": p for p in range(PARTITIONS)}
        ends = {f"bench-end-p{p}": p for p in range(PARTITIONS)}
        t0 = time.perf_counter()
        for tenant, p in starts.items():
            producer.produce(logs_topic, _oom_request(tenant, first_ms - 1000), partition=p, timestamp=first_ms - 1000)
        for i, (ts, body) in enumerate(proto_messages(workdir)):
            producer.produce(logs_topic, body, partition=i % PARTITIONS, timestamp=ts)
            producer.poll(0)
        for tenant, p in ends.items():
            producer.produce(logs_topic, _oom_request(tenant, last_ms + 1000), partition=p, timestamp=last_ms + 1000)
        if producer.flush(120) != 0:
            raise RuntimeError("pre-produce: not every message was acknowledged within 120 s")
        row["produce_s"] = round(time.perf_counter() - t0, 2)

        cfg = JobConfig(mode="kafka", bootstrap_servers=broker.bootstrap, logs_topic=logs_topic,
                        incidents_topic=incidents_topic, dead_letter_topic=f"bench-dead-{run_id}",
                        group_id=f"bench-{run_id}", index_logs=False, out_dir=str(workdir / f"out-{run_id}"),
                        execution_mode=mode, parallelism=parallelism,
                        **({"bundle_time_ms": bundle_time_ms} if bundle_time_ms else {}))
        row["bundle_time_ms"] = cfg.effective_bundle_time_ms
        consumer = _consumer(broker.bootstrap, incidents_topic)
        submitted = time.perf_counter()
        if cluster == "standalone":
            stop = start_standalone(cfg, mode, workdir, taskmanagers)
        else:
            stop = start_minicluster(cfg, mode)
        try:
            got = wait_opened(consumer, set(starts), 300)
            snap0 = cpu_snapshot()
            if set(got) != set(starts):
                raise RuntimeError(f"start markers not seen within 300 s: {sorted(got)}")
            got.update(wait_opened(consumer, set(ends), 900))
            snap1 = cpu_snapshot()
            if not set(ends) <= set(got):
                raise RuntimeError(f"end markers not seen within 900 s: {sorted(got)}")
            t_first = min(got[t] for t in starts)
            t_last = max(got[t] for t in ends)
            row["submit_to_first_marker_s"] = round(t_first - submitted, 2)
            row["backlog_s"] = round(t_last - t_first, 2)
            row["records_per_s"] = round(info["records"] / (t_last - t_first))
            row["end_to_end_records_per_s"] = round(info["records"] / (t_last - submitted))
            row["cpu"] = cpu_report(snap0, snap1, time.perf_counter() - t_first, jvm_thread_names())
            row["latency_ms"], row["latency_missed"] = _latency(broker.bootstrap, logs_topic, consumer, last_ms,
                                                                samples, interval_s)
        finally:
            with contextlib.suppress(Exception):
                stop()
            consumer.close()
    return row


def _latency(bootstrap: str, topic: str, consumer: Any, last_ms: int, samples: int,
             interval_s: float) -> tuple[dict[str, Any], int]:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    lat: list[float] = []
    missed = 0
    for i in range(samples):
        tenant = f"bench-lat-{i}"
        body = _oom_request(tenant, last_ms + 2000 + i * 1000)  # in event-time order after the backlog
        t0 = time.perf_counter()
        producer.produce(topic, body, partition=i % PARTITIONS, timestamp=last_ms + 2000 + i * 1000)
        producer.poll(0)
        got = wait_opened(consumer, {tenant}, 15)
        if tenant in got:
            lat.append(1000 * (got[tenant] - t0))
        else:
            missed += 1
        time.sleep(max(0.0, interval_s - (time.perf_counter() - t0)))
    producer.flush(10)
    stats = _percentiles(lat)
    stats["samples_ms"] = [round(x, 1) for x in lat]
    return stats, missed


# --- driver ---------------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    info = json.loads((workdir / "input.json").read_text(encoding="utf-8"))
    if args.source == "files":
        row = run_files(workdir, info, args.mode, args.index_logs == "on", args.parallelism)
    else:
        row = run_kafka(workdir, info, args.mode, args.parallelism, args.samples, args.interval,
                        args.cluster, args.taskmanagers, args.bundle_time_ms)
    Path(args.json_out).write_text(json.dumps(row), encoding="utf-8")
    return 0


def cases(args: argparse.Namespace) -> list[list[str]]:
    out = []
    for source in ([args.source] if args.source else ["files", "kafka"]):
        for mode in ([args.mode] if args.mode else ["thread", "process"]):
            for index in (["off", "on"] if source == "files" else ["off"]):
                case = ["--source", source, "--mode", mode, "--index-logs", index]
                out.append(case + (["--cluster", args.cluster] if source == "kafka" else []))
    return out


def _median_min(rows: list[dict[str, Any]], key: str) -> str:
    vals = [r[key] for r in rows if key in r]
    return f"{min(vals)}/{round(statistics.median(vals))}/{max(vals)}" if vals else "-"


def summarize_case(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def stats(key: str, sub: str | None = None) -> dict[str, float] | None:
        vals = [(r[key][sub] if sub else r[key]) for r in rows if key in r and (sub is None or sub in r[key])]
        return {"min": min(vals), "median": statistics.median(vals), "max": max(vals)} if vals else None

    out = {"runs": len(rows), "records_per_s": stats("records_per_s"),
           "end_to_end_records_per_s": stats("end_to_end_records_per_s"), "cores_busy": None}
    busy = [r["cpu"]["cores_busy"] for r in rows if "cpu" in r]
    out["cores_busy"] = {"min": min(busy), "median": statistics.median(busy), "max": max(busy)} if busy else None
    if rows and "latency_ms" in rows[0]:
        out["latency_p50_ms"] = stats("latency_ms", "p50")
        out["latency_p99_ms"] = stats("latency_ms", "p99")
        pooled = [x for r in rows for x in r["latency_ms"].get("samples_ms", [])]
        out["latency_pooled_ms"] = {k: v for k, v in _percentiles(pooled).items()}
    return out


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"\n{'source':<7}{'cluster':<12}{'mode':<8}{'index':<6}{'runs':>5}{'rec/s min/med/max':>26}"
          f"{'end-to-end rec/s':>24}{'cores busy':>11}{'p50 ms':>8}{'p99 ms':>8}{'pooled p99':>11}")
    for res in results:
        rows, s = res["runs"], res["summary"]
        busy = s["cores_busy"]["median"] if s["cores_busy"] else "-"
        lat50 = s.get("latency_p50_ms") or {}
        lat99 = s.get("latency_p99_ms") or {}
        pooled = s.get("latency_pooled_ms") or {}
        print(f"{res['source']:<7}{res.get('cluster', 'mini'):<12}{res['mode']:<8}{res['index_logs']:<6}{len(rows):>5}"
              f"{_median_min(rows, 'records_per_s'):>26}{_median_min(rows, 'end_to_end_records_per_s'):>24}"
              f"{busy:>11}{lat50.get('median', '-'):>8}{lat99.get('median', '-'):>8}{pooled.get('p99', '-'):>11}")
    for res in results:
        last = next((r for r in reversed(res["runs"]) if "cpu" in r), None)
        if last is None:
            continue
        cpu = last["cpu"]
        print(f"\nCPU of the last {res['source']}/{res['mode']}/index {res['index_logs']} run over "
              f"{cpu['window_s']} s: {cpu['cpu_s']} CPU-s ({cpu['cores_busy']} cores); by process {cpu['by_process']}")
        for name, sec in cpu["top_threads"][:8]:
            print(f"  {sec:>7} s  {name}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m tests.bench.job_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("thread", "process"), help="only this execution mode (default both)")
    parser.add_argument("--source", choices=("files", "kafka"), help="only this source (default both)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--hours", type=float, default=4.0, help="event time of the steady input (default 4 h)")
    parser.add_argument("--per-message", type=int, default=200, help="records per message, 100-500 (default 200)")
    parser.add_argument("--event-rate", type=float, default=0.0,
                        help="records per second of event time: compress the input's event time to this rate "
                        "(a busy system); default 0 = the scenario's own ~16/s (a quiet system's backlog)")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--cluster", choices=("mini", "standalone"), default="mini",
                        help="Kafka runs: the local MiniCluster (one JVM) or a standalone cluster from flink-conf/ "
                        "with --taskmanagers TaskManagers of one slot each (default mini)")
    parser.add_argument("--taskmanagers", type=int, default=2, help="standalone: TaskManagers (default 2)")
    parser.add_argument("--bundle-time-ms", type=int, default=0,
                        help="Kafka runs: python.fn-execution.bundle.time (default 0 = the job's default)")
    parser.add_argument("--samples", type=int, default=40, help="latency samples per Kafka run (default 40)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between latency samples")
    parser.add_argument("--out", type=Path, default=Path("bench-out/job_bench.json"))
    parser.add_argument("--index-logs", choices=("off", "on"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json_out:
        return child(args)
    if not (1 <= args.repeat <= 10 and 0 < args.hours <= 24 and 1 <= args.per_message <= 5000 and args.samples >= 1):
        parser.error("--repeat in 1..10, --hours in (0, 24], --per-message in 1..5000, --samples >= 1")
    meta = machine() | {"command": command("tests.bench.job_bench", argv),
                        "targets": {"records_per_s_2_cores": TARGET_RECORDS_S, "immediate_p99_ms": TARGET_P99_MS}}
    print_machine(meta)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="job-bench-") as tmp:
        workdir = Path(tmp)
        info = generate(workdir, args.hours, args.per_message, files=args.parallelism, event_rate=args.event_rate)
        meta["input"] = {k: v for k, v in info.items() if k != "files"}
        print(f"input: {info['scenario']}: {info['records']} records in {info['messages']} messages "
              f"({info['records_per_message']} per message); {info['json_bytes'] >> 20} MiB JSON, "
              f"{info['proto_bytes'] >> 20} MiB protobuf", flush=True)
        for case in cases(args):
            res: dict[str, Any] = {"source": case[1], "mode": case[3], "index_logs": case[5], "runs": [],
                                   "cluster": case[7] if len(case) > 7 else "mini"}
            for rep in range(args.repeat):
                out_json = workdir / f"row-{uuid.uuid4().hex[:8]}.json"
                cmd = [sys.executable, "-m", "tests.bench.job_bench", *case, "--workdir", str(workdir),
                       "--json-out", str(out_json), "--parallelism", str(args.parallelism),
                       "--taskmanagers", str(args.taskmanagers), "--bundle-time-ms", str(args.bundle_time_ms),
                       "--samples", str(args.samples), "--interval", str(args.interval)]
                print(f"run {rep + 1}/{args.repeat}: {' '.join(case)} (load average {os.getloadavg()[0]:.2f}) ...",
                      flush=True)
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
                if proc.returncode != 0 or not out_json.exists():
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
                    print("  FAILED:\n    " + "\n    ".join(tail), flush=True)
                    res.setdefault("failures", []).append(tail)
                    continue
                row = json.loads(out_json.read_text(encoding="utf-8"))
                row["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
                res["runs"].append(row)
                lat = row.get("latency_ms", {})
                print(f"  {row.get('records_per_s', '-')} records/s (end to end {row['end_to_end_records_per_s']})"
                      + (f"; latency p50 {lat.get('p50')} ms p99 {lat.get('p99')} ms" if lat else ""), flush=True)
            res["summary"] = summarize_case(res["runs"])
            results.append(res)
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print_table(results)
    print(f"\ntargets: >= {TARGET_RECORDS_S} records/s on 2 cores; immediate p99 < {TARGET_P99_MS} ms. "
          f"Load average at end {meta['loadavg_end']}")
    write_json(args.out, {"meta": meta, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
