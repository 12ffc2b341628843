"""Benchmark (not a test): spans/s beside records/s through the detection job with an otlp_spans input.

    python -m tests.bench.span_bench [--cluster mini|standalone] [--mode thread|process] [--hours 2]
                                     [--spans-per-record 4 | --spans-per-s N --span-seconds S]
                                     [--per-message 200] [--repeat 1]
                                     [--out bench-out/span_bench.json]

Input: job_bench's steady logs (``--hours`` of event time, ~16 records/s, ``--per-message`` records per message)
and, over the same event time, the routed span chain of ``udfs.scenarios.latency`` (healthy, with jitter, stalls
and expected 404s; CLIENT and SERVER spans, ~5 spans per request) at ``--spans-per-record`` spans per log record
(~63 spans per second of event time: four hours of a small system replayed in a minute, a backfill's shape,
where every RED bucket, timer and trace expiry serves few spans), or at ``--spans-per-s`` spans per second of
event time over the first ``--span-seconds`` of it (a live system's density: ``--spans-per-s 25000
--span-seconds 60``, a minute of 25,000 spans/s beside the logs' shortest input, ten minutes of ~16 records/s),
in full messages of ``--per-message`` spans of one service (``span_requests_of``). Both as OTLP protobuf
pre-produced round-robin to their own 2-partition topics on the local tansu broker, the logs framed by start and
end markers as in job_bench (b). The Kafka job (``jobs.detect`` graph with ``spans_topic`` set) runs on the
MiniCluster or on a standalone cluster (``--cluster``, as job_bench).

Rates: records/s = records / (last logs end marker - first start marker), as in job_bench; spans/s = spans /
(the moment the job's committed offsets of the spans topic reach its end - first start marker). The Kafka
source commits the offsets of a checkpoint once it completes, and an aligned checkpoint completes only after
every operator has processed everything before its barrier: a committed end offset means every span went
through decode, the trace timeline (held there until the watermark passes its end) and the RED state.
Checkpoints every ``--checkpoint-ms``; the spans' end is seen up to that much late, so spans/s is a lower
bound. CPU per thread as in job_bench, and spans per CPU-second of the bench's processes (JVM, broker,
client): the figure to compare when other processes share the machine. Target in issue 12: >= 50k spans/s
on the standalone cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.bench import job_bench as jb
from tests.bench.engine_bench import command, machine, print_machine, write_json

TARGET_SPANS_S = 50_000
SPANS_PER_REQUEST = 5.1
"""Of the routed chain (35 % of requests 7 spans, 35 % 5, 30 % 3)."""


def generate_spans(workdir: Path, info: dict[str, Any], spans_per_record: float, per_message: int,
                   spans_per_s: float | None = None, span_seconds: float | None = None) -> dict[str, Any]:
    """The routed chain over the logs' event time, ``spans.protobin`` (length-prefixed protobuf)."""
    from connectors.otlp import encode_spans_proto
    from udfs.scenarios import latency
    from udfs.scenarios.library import span_requests_of
    from udfs.scenarios.traffic import Stream

    rate = info["records"] / max(1.0, (info["last_ms"] - info["first_ms"]) / 1000)
    stream = Stream(0)
    start, end = info["first_ms"] * 1_000_000, info["last_ms"] * 1_000_000
    if span_seconds is not None:
        end = min(end, start + int(span_seconds * 1e9))
    density = spans_per_s if spans_per_s is not None else spans_per_record * rate
    latency.chain(stream, "default", start, end, stalls=True, routes=True, per_s=density / SPANS_PER_REQUEST)
    spans = sorted(stream.spans, key=lambda s: s.start_unix_nano)
    msgs = span_requests_of(spans, per_message, max_span_ms=2**40)  # full messages, as job_bench's logs
    with (workdir / "spans.protobin").open("wb") as fh:
        for m in msgs:
            body = encode_spans_proto(m)
            fh.write(struct.pack(">QI", m[0].start_unix_nano // 1_000_000, len(body)) + body)
    return {"spans": len(spans), "span_messages": len(msgs), "spans_per_record": round(len(spans) / info["records"], 2),
            "spans_per_s_of_event_time": round(len(spans) / max(1.0, (end - start) / 1e9)),
            "spans_proto_bytes": (workdir / "spans.protobin").stat().st_size}


def span_messages(workdir: Path) -> Iterator[tuple[int, bytes]]:
    with (workdir / "spans.protobin").open("rb") as fh:
        while head := fh.read(12):
            ts, n = struct.unpack(">QI", head)
            yield ts, fh.read(n)


def _produce(producer: Any, topic: str, messages: Iterator[tuple[int, bytes]]) -> dict[int, int]:
    """Round-robin over the partitions; messages per partition."""
    counts: dict[int, int] = {}
    for i, (ts, body) in enumerate(messages):
        p = i % jb.PARTITIONS
        while True:
            try:
                producer.produce(topic, body, partition=p, timestamp=ts)
                break
            except BufferError:  # the client's queue is full: wait for the broker to take some
                producer.poll(0.5)
        producer.poll(0)
        counts[p] = counts.get(p, 0) + 1
    return counts


def wait_committed(bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout_s: float) -> float | None:
    """perf_counter time at which ``group``'s committed offsets of ``topic`` reach ``ends`` (polled every 0.2 s)."""
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            got = probe.committed([TopicPartition(topic, p) for p in ends], timeout=5)
            if all(tp.offset >= ends[tp.partition] for tp in got):
                return time.perf_counter()
            time.sleep(0.2)
        return None
    finally:
        probe.close()


def run(workdir: Path, info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from confluent_kafka import Producer

    from connectors.broker import LocalBroker
    from jobs.config import JobConfig

    run_id = uuid.uuid4().hex[:8]
    logs_topic, spans_topic, incidents_topic = f"bench-logs-{run_id}", f"bench-spans-{run_id}", f"bench-inc-{run_id}"
    row: dict[str, Any] = {"cluster": args.cluster, "mode": args.mode, "parallelism": args.parallelism,
                           "records": info["records"], "spans": info["spans"], "checkpoint_ms": args.checkpoint_ms}
    with LocalBroker(log_path=workdir / f"tansu-{run_id}.log") as broker:
        broker.create_topics([logs_topic, spans_topic], partitions=jb.PARTITIONS)
        broker.create_topics([incidents_topic, f"bench-dead-{run_id}"], partitions=1)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20,
                             "queue.buffering.max.kbytes": 262144})
        starts = {f"bench-start-p{p}": p for p in range(jb.PARTITIONS)}
        ends = {f"bench-end-p{p}": p for p in range(jb.PARTITIONS)}
        t0 = time.perf_counter()
        for tenant, p in starts.items():
            ts = info["first_ms"] - 1000
            producer.produce(logs_topic, jb._oom_request(tenant, ts), partition=p, timestamp=ts)
        _produce(producer, logs_topic, jb.proto_messages(workdir))
        for tenant, p in ends.items():
            ts = info["last_ms"] + 1000
            producer.produce(logs_topic, jb._oom_request(tenant, ts), partition=p, timestamp=ts)
        span_ends = _produce(producer, spans_topic, span_messages(workdir))
        if producer.flush(180) != 0:
            raise RuntimeError("pre-produce: not every message was acknowledged within 180 s")
        row["produce_s"] = round(time.perf_counter() - t0, 2)
        cfg = JobConfig(mode="kafka", bootstrap_servers=broker.bootstrap, logs_topic=logs_topic,
                        spans_topic=spans_topic, incidents_topic=incidents_topic,
                        dead_letter_topic=f"bench-dead-{run_id}", group_id=f"bench-{run_id}", index_logs=False,
                        out_dir=str(workdir / f"out-{run_id}"), execution_mode=args.mode,
                        parallelism=args.parallelism, checkpoint_interval_ms=args.checkpoint_ms)
        consumer = jb._consumer(broker.bootstrap, incidents_topic)
        submitted = time.perf_counter()
        if args.cluster == "standalone":
            stop = jb.start_standalone(cfg, args.mode, workdir, args.taskmanagers)
        else:
            stop = jb.start_minicluster(cfg, args.mode)
        try:
            # One wait for every marker: a fast job can open a partition's end marker before the other's
            # start marker is read, and a wait for the starts alone would drop it.
            snaps: list[Any] = []

            def on_seen(tenant: str, _: float) -> None:
                if not snaps:
                    snaps.append(jb.cpu_snapshot())

            got = jb.wait_opened(consumer, set(starts) | set(ends), 1200, on_seen)
            if not set(starts) | set(ends) <= set(got):
                raise RuntimeError(f"markers not seen within 1200 s: {sorted(got)}")
            snap0 = snaps[0]
            t_first = min(got[t] for t in starts)
            t_logs = max(got[t] for t in ends)
            t_spans = wait_committed(broker.bootstrap, cfg.group_id, spans_topic, span_ends, 1200)
            snap1 = jb.cpu_snapshot()
            if t_spans is None:
                raise RuntimeError("the spans topic was not committed to its end within 1200 s")
            row["submit_to_first_marker_s"] = round(t_first - submitted, 2)
            row["logs_s"], row["spans_s"] = round(t_logs - t_first, 2), round(t_spans - t_first, 2)
            row["records_per_s"] = round(info["records"] / (t_logs - t_first))
            row["spans_per_s"] = round(info["spans"] / (t_spans - t_first))
            row["items_per_s"] = round((info["records"] + info["spans"]) / (max(t_logs, t_spans) - t_first))
            row["cpu"] = jb.cpu_report(snap0, snap1, time.perf_counter() - t_first, jb.jvm_thread_names())
            # Under load from other processes the wall-clock rate says little; CPU-seconds do (JIT and
            # the log path included, so a lower bound of what the span operators alone would do).
            row["spans_per_cpu_s"] = round(info["spans"] / max(1e-9, sum(row["cpu"]["by_process"].values())))
        finally:
            with contextlib.suppress(Exception):
                stop()
            consumer.close()
    return row


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m tests.bench.span_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cluster", choices=("mini", "standalone"), default="mini")
    parser.add_argument("--taskmanagers", type=int, default=2, help="standalone: TaskManagers (default 2)")
    parser.add_argument("--mode", choices=("thread", "process"), default="thread")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--hours", type=float, default=2.0, help="event time of the input (default 2 h)")
    parser.add_argument("--spans-per-record", type=float, default=4.0, help="spans per log record (default 4)")
    parser.add_argument("--spans-per-s", type=float, default=None,
                        help="spans per second of event time instead (a live system's density)")
    parser.add_argument("--span-seconds", type=float, default=None,
                        help="spans over this many seconds of event time only (default: all of the logs')")
    parser.add_argument("--per-message", type=int, default=200, help="records or spans per message (default 200)")
    parser.add_argument("--checkpoint-ms", type=int, default=2_000, help="checkpoint interval (default 2000)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-out/span_bench.json"))
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json_out:  # the child: one measured run in a fresh JVM
        workdir = Path(args.workdir)
        info = json.loads((workdir / "input.json").read_text(encoding="utf-8"))
        Path(args.json_out).write_text(json.dumps(run(workdir, info, args)), encoding="utf-8")
        return 0
    meta = machine() | {"command": command("tests.bench.span_bench", argv), "target_spans_per_s": TARGET_SPANS_S}
    print_machine(meta)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="span-bench-") as tmp:
        workdir = Path(tmp)
        info = jb.generate(workdir, args.hours, args.per_message, files=1)
        info |= generate_spans(workdir, info, args.spans_per_record, args.per_message, args.spans_per_s,
                               args.span_seconds)
        (workdir / "input.json").write_text(json.dumps(info), encoding="utf-8")
        meta["input"] = {k: v for k, v in info.items() if k != "files"}
        print(f"input: {info['records']} records in {info['messages']} messages, {info['spans']} spans in "
              f"{info['span_messages']} messages ({info['spans_per_record']} per record, "
              f"{info['spans_per_s_of_event_time']} per second of event time)", flush=True)
        for rep in range(args.repeat):
            out_json = workdir / f"row-{uuid.uuid4().hex[:8]}.json"
            cmd = [sys.executable, "-m", "tests.bench.span_bench", *argv, "--workdir", str(workdir),
                   "--json-out", str(out_json)]
            print(f"run {rep + 1}/{args.repeat} (load average {os.getloadavg()[0]:.2f}) ...", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2400, check=False)
            if proc.returncode != 0 or not out_json.exists():
                print("  FAILED:\n    " + "\n    ".join((proc.stderr or proc.stdout).strip().splitlines()[-15:]))
                continue
            row = json.loads(out_json.read_text(encoding="utf-8"))
            rows.append(row)
            cpu = row["cpu"]
            print(f"  {row['spans_per_s']} spans/s ({row['spans']} in {row['spans_s']} s), {row['records_per_s']} "
                  f"records/s beside them ({row['records']} in {row['logs_s']} s); {row['items_per_s']} items/s; "
                  f"{cpu['cores_busy']} cores busy; {row['spans_per_cpu_s']} spans per CPU-second; by process "
                  f"{cpu['by_process']}", flush=True)
            for name, sec in cpu["top_threads"][:10]:
                print(f"    {sec:>7} s  {name}")
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\ntarget: >= {TARGET_SPANS_S} spans/s on the standalone cluster. Load average at end {meta['loadavg_end']}")
    summary = [{k: r.get(k) for k in ("spans_per_s", "spans_per_cpu_s", "records_per_s", "spans", "records", "cluster",
                                      "mode", "parallelism", "checkpoint_ms")} for r in rows]  # fmt: skip
    write_json(args.out, {"meta": meta, "results": summary, "runs": rows})  # results: the report's table
    return 0


if __name__ == "__main__":
    sys.exit(main())
