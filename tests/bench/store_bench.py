"""Embedded store benchmark (not a test): how fast ``connectors.store.EmbeddedStore`` indexes raw logs.

    python -m tests.bench.store_bench [--records 200000] [--per-message 200] [--runs 3]
        [--baseline REF] [--no-retention-case] [--replay] [--hours 2] [--repeat 1]
        [--out bench-out/store_bench.json]

(a) writer: the ``steady`` scenario's records (8 services, ~30 % with a trace id) in messages of
    ``--per-message`` records, each written as the decode operator writes it: ``write_logs(records,
    metric_rows(summary))`` then ``flush()``, one message after the other into a fresh file; ``close()``
    at the end (it indexes the last rows) is inside the timing. Figures: records/s of wall time and
    records per CPU-second of this process (on a shared machine, CPU-s is the figure that compares
    across loads), bytes per record of the file after close (WAL checkpointed), and the row bytes the
    size limit counts. ``--runs`` runs, best and median.
(b) ``--baseline REF``: the same writer from ``connectors/`` and ``udfs/`` of git REF (e.g. the commit
    before schema 3), in a child process, for a before/after on the same machine and load.
(c) retention at work: a size limit of half of what (a) stored, so that in the second half every batch
    deletes about as many rows as it adds (the steady state of a full store).
(d) ``--replay``: ``tests.bench.job_bench --source files --mode thread`` (the whole job on the local
    MiniCluster, ``logclaw replay``'s path) with raw-log indexing off and on, ``--repeat`` runs each;
    the ratio on/off of records/s is what indexing costs the job.
(e) ``--opensearch``: ``connectors.opensearch.OpenSearchSink`` against the OpenSearch stand-in
    (``tests/standins/opensearch.py``, in its own process; no OpenSearch server runs here) at volume:
    bulk size (one bulk request per message of 50 / 200 / 1,000 / 5,000 records, as the decode
    operator flushes, and the sink's own buffer bound without a per-message flush) and concurrency (1,
    2, 4 writer processes, each its own sink, as parallel decode subtasks are). Figures: records/s,
    the writer's CPU-s per record (client side: what carries over to a real cluster), request bytes
    per record, and the stand-in's CPU-s (a Python server: its cost is not OpenSearch's).
Target (issue 16 item 2): the embedded store keeps >= 50,000 records/s of indexing.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench.engine_bench import command, machine, print_machine, write_json
from tests.bench.table import Column, print_table

TARGET_RECORDS_S = 50_000
ROOT = Path(__file__).resolve().parents[2]


def messages(records: int, per_message: int) -> list[tuple[list[Any], list[Any]]]:
    """(records, bucket rows) per message, as ``jobs.operators.DecodeAndSummarize`` writes them."""
    from connectors.logstore import metric_rows
    from udfs.batch import summarize
    from udfs.scenarios import library as scenarios
    from udfs.signals import SignalMatcher

    scale = 1.0
    found = list(scenarios.steady(scale=scale).records)
    while len(found) < records:
        scale *= 2 * records / max(1, len(found))
        found = list(scenarios.steady(scale=scale).records)
    found = found[:records]
    matcher = SignalMatcher()
    out = []
    for first in range(0, len(found), per_message):
        chunk = found[first:first + per_message]
        out.append((chunk, metric_rows(summarize(chunk, matcher, bucket_ms=10_000).batches)))
    return out


def write_once(msgs: list[tuple[list[Any], list[Any]]], path: Path, retention: Any = None) -> dict[str, Any]:
    """One writer run into a fresh file at ``path``, with ``retention`` (None: the job's defaults,
    ``RetentionSettings()``); figures of that run."""
    import inspect

    from connectors.store import EmbeddedStore
    from connectors.store_retention import RetentionSettings

    kwargs = {"retention": RetentionSettings() if retention is None else retention}
    if "retention" not in inspect.signature(EmbeddedStore).parameters:  # a --baseline ref from before the
        kwargs = {}  # caller passed retention: that store read the same defaults from LOGCLAW_STORE_* itself
    n = sum(len(m[0]) for m in msgs)
    t0, c0 = time.perf_counter(), time.process_time()
    store = EmbeddedStore(path, **kwargs)
    for records, rows in msgs:
        store.write_logs(records, rows)
        store.flush()
    store.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    row: dict[str, Any] = {"records": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                           "records_per_s": round(n / wall), "records_per_cpu_s": round(n / cpu),
                           "file_bytes": size, "bytes_per_record": round(size / n, 1),
                           "loadavg_1m": round(os.getloadavg()[0], 2)}
    with sqlite3.connect(path) as conn:
        row["rows_kept"] = conn.execute("SELECT COUNT(*) FROM logs").fetchone()[0]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "tenant_usage" in names:
            row["row_bytes_counted"] = conn.execute("SELECT coalesce(sum(bytes), 0) FROM tenant_usage").fetchone()[0]
    return row


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("records_per_s", "records_per_cpu_s", "bytes_per_record"):
        vals = [r[key] for r in runs]
        out[key] = {"best": max(vals) if key != "bytes_per_record" else min(vals),
                    "median": round(statistics.median(vals), 1)}
    return out


def run_writer(args: argparse.Namespace, workdir: Path, retention_mb: float | None = None) -> list[dict[str, Any]]:
    from connectors.store_retention import RetentionSettings

    msgs = messages(args.records, args.per_message)
    retention = None if retention_mb is None else RetentionSettings(retention_hours=0, max_mb=retention_mb)
    runs = []
    for i in range(args.runs):
        path = workdir / f"store-{time.monotonic_ns()}-{i}.db"
        runs.append(write_once(msgs, path, retention))
        r = runs[-1]
        print(f"  run {i + 1}: {r['records_per_s']:,} records/s, {r['records_per_cpu_s']:,} per CPU-s, "
              f"{r['bytes_per_record']} B/record, {r['rows_kept']:,} rows kept (load {r['loadavg_1m']})", flush=True)
        for p in path.parent.glob(path.name + "*"):
            p.unlink()
    return runs


def run_baseline(ref: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The writer of git ``ref`` in a child process (its connectors/ and udfs/, this bench)."""
    tree = workdir / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "connectors", "udfs"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    out = workdir / "baseline.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYFLINK_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(ROOT)])
    subprocess.run([sys.executable, "-m", "tests.bench.store_bench", "--records", str(args.records),
                    "--per-message", str(args.per_message), "--runs", str(args.runs), "--writer-only",
                    "--out", str(out)], cwd=tree, env=env, check=True)
    return json.loads(out.read_text(encoding="utf-8"))["writer"] | {"ref": ref}


def run_replay(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``tests.bench.job_bench`` files/thread, index off and on; the ratio of their rates."""
    out = workdir / "job_bench.json"
    argv = ["--source", "files", "--mode", "thread", "--repeat", str(args.repeat), "--hours", str(args.hours),
            "--per-message", str(args.per_message), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYFLINK_")}
    subprocess.run([sys.executable, "-m", "tests.bench.job_bench", *argv], cwd=ROOT, env=env, check=True)
    results = json.loads(out.read_text(encoding="utf-8"))["results"]
    by_index: dict[str, Any] = {}
    for res in results:
        runs = res["runs"]
        by_index[res["index_logs"]] = {
            key: [r[key] for r in runs if key in r] for key in ("records_per_s", "end_to_end_records_per_s",
                                                                 "store_mib", "wall_s")}
    row: dict[str, Any] = {"command": command("tests.bench.job_bench", argv), "index_off": by_index.get("off"),
                           "index_on": by_index.get("on")}
    for key in ("records_per_s", "end_to_end_records_per_s"):
        off = (by_index.get("off") or {}).get(key) or []
        on = (by_index.get("on") or {}).get(key) or []
        if off and on:
            row[f"ratio_on_off_{key}"] = round(statistics.median(on) / statistics.median(off), 3)
    return row


# --- (e) OpenSearch ---------------------------------------------------------------------------------

_STANDIN = """
import json, sys, time
from tests.standins.opensearch import OpenSearchStandin

class Drop(list):
    def append(self, item):  # keep no request bodies: a bench sends hundreds of MB
        pass

standin = OpenSearchStandin(requests=Drop())
with standin.running():
    print(standin.url, flush=True)
    sys.stdin.read()  # until the bench closes stdin
    print(json.dumps({"cpu_s": round(time.process_time(), 3), "docs": standin.doc_count(),
                      "violations": standin.violations[:5], "n_violations": len(standin.violations)}), flush=True)
"""


def opensearch_writer(url: str, part: int, parts: int, records: int, per_message: int, flush_each: bool,
                      max_buffer_docs: int) -> dict[str, Any]:
    """One writer process's share (every ``parts``-th message): its sink's figures."""
    from connectors.opensearch import OpenSearchSink

    msgs = messages(records, per_message)[part::parts]
    sink = OpenSearchSink([url], max_buffer_docs=max_buffer_docs)
    sent = {"bytes": 0, "requests": 0}
    bulk = sink.client.bulk

    def counted(*args: Any, **kwargs: Any) -> Any:
        sent["bytes"] += len(kwargs.get("body") or args[0])
        sent["requests"] += 1
        return bulk(*args, **kwargs)

    sink.client.bulk = counted  # type: ignore[method-assign]
    n = sum(len(m[0]) for m in msgs)
    t0, c0 = time.perf_counter(), time.process_time()
    for records_, rows in msgs:
        sink.write_logs(records_, rows)
        if flush_each:
            sink.flush()
    sink.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"records": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "requests": sent["requests"],
            "request_bytes": sent["bytes"], "docs_written": sink.stats.docs_written,
            "retries": sink.stats.request_retries + sink.stats.item_retries, "failures": sink.stats.failures}


def run_opensearch_case(records: int, per_message: int, writers: int, flush_each: bool,
                        max_buffer_docs: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYFLINK_")}
    server = subprocess.Popen([sys.executable, "-c", _STANDIN], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert server.stdin is not None and server.stdout is not None
    try:
        url = server.stdout.readline().strip()
        procs = [subprocess.Popen([sys.executable, "-m", "tests.bench.store_bench", "--opensearch-writer", url,
                                   "--part", f"{i}/{writers}", "--records", str(records), "--per-message",
                                   str(per_message), "--max-buffer-docs", str(max_buffer_docs),
                                   *([] if flush_each else ["--no-flush-each"])],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for i in range(writers)]
        outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        server.stdin.close()
        standin = json.loads(server.stdout.readline())
    finally:
        if server.poll() is None:
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    n = sum(o["records"] for o in outs)
    wall = max(o["wall_s"] for o in outs)
    return {"per_message": per_message, "writers": writers, "flush_each_message": flush_each,
            "max_buffer_docs": max_buffer_docs, "records": n, "records_per_s": round(n / wall),
            "writer_cpu_us_per_record": round(sum(o["cpu_s"] for o in outs) / n * 1e6, 1),
            "request_bytes_per_record": round(sum(o["request_bytes"] for o in outs) / n, 1),
            "requests": sum(o["requests"] for o in outs),
            "docs_per_request": round(sum(o["docs_written"] for o in outs) / max(1, sum(o["requests"] for o in outs))),
            "retries": sum(o["retries"] for o in outs), "failures": sum(o["failures"] for o in outs),
            "standin_cpu_s": standin["cpu_s"], "standin_docs": standin["docs"],
            "standin_violations": standin["n_violations"], "loadavg_1m": round(os.getloadavg()[0], 2)}


def run_opensearch(records: int) -> list[dict[str, Any]]:
    cases = [(50, 1, True, 5000), (200, 1, True, 5000), (1000, 1, True, 5000), (5000, 1, True, 5000),
             (200, 1, False, 5000), (200, 1, False, 500), (200, 2, True, 5000), (200, 4, True, 5000)]
    out = []
    for per_message, writers, flush_each, max_docs in cases:
        row = run_opensearch_case(records, per_message, writers, flush_each, max_docs)
        out.append(row)
        print(f"  {per_message:>5}/msg {writers} writer(s) {'flush/msg' if flush_each else f'buffer {max_docs}':>12}: "
              f"{row['records_per_s']:>7,} records/s, writer {row['writer_cpu_us_per_record']} us/record, "
              f"{row['request_bytes_per_record']} B/record, {row['docs_per_request']} docs/request, "
              f"stand-in {row['standin_cpu_s']} CPU-s, violations {row['standin_violations']} "
              f"(load {row['loadavg_1m']})", flush=True)
    return out


def _median(key: str) -> Any:
    return lambda r: f"{r[key]['median']:,}"


CASE_COLUMNS = (Column("case", 34, "case", left=True), Column("records/s", 12, _median("records_per_s")),
                Column("best", 10, lambda r: f"{r['records_per_s']['best']:,}"),
                Column("per CPU-s", 12, _median("records_per_cpu_s")),
                Column("B/record", 10, _median("bytes_per_record")))
"""The writer cases' summary table: medians over the runs (best: the fastest run)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m tests.bench.store_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="records written per run (default 200000)")
    parser.add_argument("--per-message", type=int, default=200, help="records per message (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="writer runs; best and median (default 3)")
    parser.add_argument("--baseline", metavar="REF", help="also the writer of this git ref (e.g. 98f9422)")
    parser.add_argument("--no-retention-case", action="store_true", help="skip (c), retention at work")
    parser.add_argument("--replay", action="store_true", help="also (d): the job with indexing off and on (minutes)")
    parser.add_argument("--hours", type=float, default=2.0, help="(d): event time of the steady input (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="(d): runs per case (default 1)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/store_bench.json"))
    parser.add_argument("--opensearch", action="store_true",
                        help="also (e): the OpenSearch writer against the stand-in (bulk size, concurrency)")
    parser.add_argument("--opensearch-records", type=int, default=100_000, help="(e): records per case")
    parser.add_argument("--writer-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--opensearch-writer", help=argparse.SUPPRESS)
    parser.add_argument("--part", default="0/1", help=argparse.SUPPRESS)
    parser.add_argument("--max-buffer-docs", type=int, default=5000, help=argparse.SUPPRESS)
    parser.add_argument("--no-flush-each", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.opensearch_writer:
        part, parts = (int(x) for x in args.part.split("/"))
        print(json.dumps(opensearch_writer(args.opensearch_writer, part, parts, args.records, args.per_message,
                                           not args.no_flush_each, args.max_buffer_docs)))
        return 0
    if not (1_000 <= args.records <= 10_000_000 and 1 <= args.per_message <= 5_000 and 1 <= args.runs <= 20):
        parser.error("--records in 1000..10000000, --per-message in 1..5000, --runs in 1..20")
    meta = machine() | {"command": command("tests.bench.store_bench", argv), "sqlite": sqlite3.sqlite_version}
    if not args.writer_only:
        print_machine(meta)
    result: dict[str, Any] = {"meta": meta}
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        workdir = Path(tmp)
        print(f"(a) writer: {args.records:,} records, {args.per_message} per message", flush=True)
        runs = run_writer(args, workdir)
        result["writer"] = {"runs_detail": runs} | summary(runs)
        if args.writer_only:
            write_json(args.out, result)
            return 0
        if args.baseline:
            print(f"(b) baseline: the writer of {args.baseline}", flush=True)
            result["baseline"] = run_baseline(args.baseline, args, workdir)
        if not args.no_retention_case:
            cap_mb = runs[0]["row_bytes_counted"] * 2.0 / 2 / 2**20 if runs[0].get("row_bytes_counted") else 0
            print(f"(c) retention at work: size limit {cap_mb:.1f} MiB (half of what (a) stored)", flush=True)
            rruns = run_writer(args, workdir, retention_mb=cap_mb)
            result["retention"] = {"max_mb": round(cap_mb, 2), "runs_detail": rruns} | summary(rruns)
        if args.replay:
            print("(d) replay: the job with raw-log indexing off and on", flush=True)
            result["replay"] = run_replay(args, workdir)
        if args.opensearch:
            print(f"(e) OpenSearch writer against the stand-in: {args.opensearch_records:,} records per case",
                  flush=True)
            result["opensearch"] = run_opensearch(args.opensearch_records)
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print_table(CASE_COLUMNS, [{"case": "writer", **result["writer"]},
                               *([{"case": f"baseline {result['baseline']['ref']}", **result["baseline"]}]
                                 if "baseline" in result else []),
                               *([{"case": f"retention at work (limit {result['retention']['max_mb']} MiB)",
                                   **result["retention"]}] if "retention" in result else [])], title="")
    w = result["writer"]["records_per_cpu_s"]["median"]
    speed_up = (f"; speed-up per CPU-s over the baseline x{w / result['baseline']['records_per_cpu_s']['median']:.2f}"
                if "baseline" in result else "")
    print(f"target >= {TARGET_RECORDS_S:,} records/s{speed_up}")
    if "replay" in result:
        rp = result["replay"]
        print(f"replay: index off {rp['index_off']}, on {rp['index_on']}; "
              f"ratio on/off {rp.get('ratio_on_off_records_per_s')}")
    print(f"load average at start {meta['loadavg_start']}, at end {meta['loadavg_end']} (a shared machine: "
          f"wall-time rates fall with load, per-CPU-s rates much less)")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
