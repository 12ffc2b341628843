"""The benchmarks' own arithmetic (percentiles, CPU accounting, cost split), so their numbers can be trusted.

Fast: no JVM, no broker; the engine runs over one minute of three services.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest

from tests.bench import engine_bench, job_bench
from udfs import batch, engine, window, window_state


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(x) for x in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert job_bench._percentiles(samples) == {"n": 100, "min": 1.0, "p50": 50.0, "p90": 90.0, "p99": 99.0,
                                               "max": 100.0}
    assert job_bench._percentiles([7.0]) == {"n": 1, "min": 7.0, "p50": 7.0, "p90": 7.0, "p99": 7.0, "max": 7.0}
    assert job_bench._percentiles([]) == {"n": 0}


def test_cpu_report_sums_thread_deltas_by_process_and_names_jvm_threads() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    before = {(10, 11): ("jvm", "Source: x", 0), (10, 12): ("jvm", "C2 CompilerThre", 5 * hz),
              (20, 20): ("python worker", "python", 0)}
    after = {(10, 11): ("jvm", "Source: x", 3 * hz), (10, 12): ("jvm", "C2 CompilerThre", 6 * hz),
             (20, 20): ("python worker", "python", 2 * hz), (10, 13): ("jvm", "new thread", hz)}
    names = {11: "Source: logs -> decode (1/2)#0", 12: "C2 CompilerThread0", 13: "service window (2/2)#0"}
    report = job_bench.cpu_report(before, after, wall_s=2.0, names=names)
    assert report == {
        "window_s": 2.0, "cpu_s": 7.0, "cores_busy": 3.5, "jit_cpu_s": 1.0, "jit_share": 0.143,  # 1 of 7 CPU-s
        "by_process": {"jvm": 5.0, "python worker": 2.0},
        "top_threads": [["jvm: Source: logs -> decode (1/2)", 3.0], ["python worker: python [python worker 20]", 2.0],
                        ["jvm: C2 CompilerThread0", 1.0], ["jvm: service window (2/2)", 1.0]],
        "by_stage": {"source, decode, summarize": 3.0, "python worker": 2.0, "JIT": 1.0, "service window": 1.0},
    }


def test_cost_split_shares_add_up_and_nested_steps_count_once() -> None:
    inp = engine_bench.services_input(3, minutes=1, per_message=50)
    assert inp.services == 3 and inp.records == sum(len(m) for m in inp.messages) > 100
    split = engine_bench.cost_split(inp)
    shares = {k: v for k, v in split.items() if k != "total_cpu_s"}
    assert set(shares) <= {*engine_bench.SPLIT_TARGETS, engine_bench.PLUMBING}
    assert shares["summarize"] > 0 and shares["service_window"] > 0
    assert abs(sum(shares.values()) - 1.0) < 0.01  # nothing counted twice, nothing lost
    assert window.on_batch.__name__ == "on_batch" and not hasattr(window.on_batch, "__wrapped__")  # restored
    assert not hasattr(vars(engine)["summarize"], "__wrapped__")


def test_bench_input_reports_the_engine_run_it_measured() -> None:
    inp = engine_bench.services_input(3, minutes=1, per_message=50)
    row = engine_bench.bench_input(inp, runs=2)
    reference = engine_bench.feed_messages(engine_bench.with_spans(inp), inp)
    assert row["records"] == reference.counters.records == inp.records
    assert row["counters"] == vars(reference.counters)
    assert row["state"]["service_states"] == 3
    assert row["state"]["snapshot_bytes"] == len(reference.snapshot())
    assert row["best_records_per_cpu_s"] >= row["median_records_per_cpu_s"] > 0


# --- job_bench: the sustained rate and its markers ---------------------------------------------------


def test_steady_rate_leaves_out_the_warm_up_and_ignores_a_constant_mark_delay() -> None:
    # 10 s of warm-up at 20k/s, then 30 s at 60k/s; every mark seen 0.3 s late (the immediate path).
    curve = [(t, 20_000 * t) for t in range(0, 11)] + [(t, 200_000 + 60_000 * (t - 10)) for t in range(11, 41)]
    points = [(100.3 + t, round(r)) for t, r in curve]
    out = job_bench.steady_rate(points, warmup_s=15)
    assert out["sustained_records_per_s"] == 60_000
    assert out["endpoint_records_per_s"] == 60_000 and out["half_ratio"] == 1.0
    assert out["steady_marks"] == 26 and out["steady_window_s"] == 25.0
    assert out["steady_records"] == 60_000 * 25
    assert out["warmup_records_per_s"] == round((200_000 + 60_000 * 5) / 15)  # slower: the warm-up is in it
    assert out["curve"][0] == [0.0, 0] and out["curve"][-1] == [40.0, 200_000 + 60_000 * 30]
    whole = job_bench.steady_rate(points, warmup_s=0)  # the warm-up left in: a lower, less steady figure
    assert whole["sustained_records_per_s"] < 60_000 and whole["half_ratio"] > 1.2


def test_steady_rate_refuses_a_window_too_short_and_says_why() -> None:
    points = [(float(t), 50_000 * t) for t in range(0, 20)]  # 19 s of backlog: 4 s after a 15 s warm-up
    out = job_bench.steady_rate(points, warmup_s=15)
    assert "sustained_records_per_s" not in out
    assert out["note"].startswith("input too short for a sustained rate: 5 progress marks over 4.0 s after 15 s")
    assert job_bench.steady_rate([], warmup_s=15) == {"warmup_s": 15, "marks": 0, "note": "no progress mark was seen"}


def test_marker_layout_spreads_marks_evenly_and_counts_the_records_before_each() -> None:
    counts = [200] * 10 + [50]  # 11 messages, round-robin over 2 partitions: p0 gets 6 (one short), p1 5
    layout = job_bench.marker_layout(counts, partitions=2, marks=4)
    assert layout.start_tenants == ["bench-start-p0", "bench-start-p1"]
    assert layout.end_tenants == ["bench-end-p0", "bench-end-p1"]
    assert [done for done, _ in layout.plan] == [0, 800, 1400, 2050]  # the last = every record
    assert layout.records_before["bench-mark-p1-2"] == (1, 600) and layout.records_before["bench-end-p0"] == (0, 1050)
    placed = sorted((i, t) for i, ts in layout.before.items() for t, _ in ts)
    assert placed == [(0, "bench-start-p0"), (1, "bench-start-p1"), (4, "bench-mark-p0-1"), (5, "bench-mark-p1-1"),
                      (7, "bench-mark-p1-2"), (8, "bench-mark-p0-2"), (11, "bench-end-p0"), (11, "bench-end-p1")]
    assert all(i % 2 == p for i, ts in layout.before.items() if i < len(counts) for _, p in ts)  # own partition
    assert len(set(layout.all_tenants)) == 8


def test_records_done_add_each_partitions_latest_mark() -> None:
    before = {"s0": (0, 0), "s1": (1, 0), "m0": (0, 500), "m1": (1, 400), "e0": (0, 1000), "e1": (1, 900)}
    # One source subtask reading both partitions: partition 0 runs ahead, partition 1 catches up later.
    seen = {"s0": 1.0, "m0": 2.0, "e0": 3.0, "s1": 3.5, "m1": 4.0, "other-tenant": 4.2}
    assert job_bench.progress_points(seen, before) == [(1.0, 0), (2.0, 500), (3.0, 1000), (3.5, 1000), (4.0, 1400)]


def test_spread_is_max_minus_min_over_the_median() -> None:
    assert job_bench.spread([60_000, 66_000, 54_000]) == {"n": 3, "min": 54_000, "median": 60_000, "max": 66_000,
                                                          "spread_pct": 20.0}
    assert job_bench.spread([]) is None


def test_compare_runs_the_product_its_process_variant_and_the_in_process_detectors() -> None:
    import argparse

    args = argparse.Namespace(compare=True, cluster="standalone", parallelism=2, source=None, mode=None,
                              taskmanagers="2")
    labels = [job_bench.case_label(c) for c in job_bench.cases(args)]
    assert [(x["source"], x["mode"]) for x in labels] == [("kafka", "thread"), ("kafka", "process"),
                                                          ("python", "engine"), ("python", "any_error"),
                                                          ("python", "busiest_minute")]
    assert labels[0]["taskmanagers"] == 2 and labels[0]["cluster"] == "standalone"
    scaling = argparse.Namespace(compare=False, cluster="standalone", parallelism=2, source="kafka", mode="thread",
                                 taskmanagers="1,2")
    assert [(x["taskmanagers"], x["parallelism"]) for x in map(job_bench.case_label, job_bench.cases(scaling))] == [
        (1, 1), (2, 2)]  # one single-slot TaskManager per parallel subtask


def test_python_detectors_count_the_input_they_decoded(tmp_path: Path) -> None:
    info = job_bench.generate(tmp_path, hours=0.05, per_message=100, files=1, with_json=False)
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert sum(counts) == info["records"] and len(counts) == info["messages"]
    rows = {d: job_bench.run_python(tmp_path, info, d) for d in job_bench.PYTHON_DETECTORS}
    assert {r["records"] for r in rows.values()} == {info["records"]}
    assert rows["any_error"]["incidents_opened"] >= rows["busiest_minute"]["incidents_opened"] > 0


def test_loops_continue_event_time_with_their_own_seed(tmp_path: Path) -> None:
    one = job_bench.generate(tmp_path, hours=0.05, per_message=100, files=1, with_json=False)
    times = [ts for ts, _ in job_bench.proto_messages(tmp_path)]
    two = job_bench.generate(tmp_path, hours=0.05, per_message=100, files=1, loops=2, with_json=False)
    times2 = [ts for ts, _ in job_bench.proto_messages(tmp_path)]
    assert two["records"] > one["records"] and times2[: len(times)] == times
    assert times2 == sorted(times2) and two["last_ms"] - two["first_ms"] > 1.9 * (one["last_ms"] - one["first_ms"])


# --- engine_bench: keys and state bytes ----------------------------------------------------------------


def test_state_sizes_are_the_codecs_compact_json() -> None:
    inp = engine_bench.services_input(3, minutes=2, per_message=50)
    eng = engine_bench.feed_messages(engine_bench.with_spans(inp), inp)
    s = engine_bench.state_sizes(eng)
    st = next(iter(eng.services.values()))
    core = len(orjson.dumps(window_state.encode_part(st, "core")))
    tpl = len(orjson.dumps(window_state.encode_part(st, "templates")))
    assert window_state.encode_part(st, "open") == {}  # after finish(): idle
    sizes = sorted(len(orjson.dumps(window_state.encode_part(x, p))) for x in eng.services.values()
                   for p in ("core",))
    assert s["service_core_bytes_max"] == sizes[-1] and core in sizes
    assert s["idle_service_bytes_mean"] == round(sum(
        sum(len(orjson.dumps(window_state.encode_part(x, p))) for p in ("core", "memory"))
        + 2 + len(orjson.dumps(x.templates.to_state()))
        for x in eng.services.values()) / 3)  # 2 = "{}", the empty open buckets
    assert s["bytes_per_template"] * s["templates"] == pytest.approx(s["template_state_bytes_per_service_mean"] * 3,
                                                                      rel=0.01)
    assert tpl > 0 and s["target_idle_service_bytes"] == 1024


def test_live_traces_input_keeps_that_many_timelines_alive() -> None:
    ids = engine_bench.sampled_trace_ids(500, every=16)
    assert len(set(ids)) == 500 and all(batch._sampled(t, 16) for t in ids)
    inp = engine_bench.traces_input(20, minutes=1, live=500, per_message=100)
    live: dict[str, int] = {}
    engine_bench.feed_messages(engine_bench.with_spans(inp), inp,
                               lambda e: live.update(n=len(e.traces), sizes=engine_bench.live_sizes(e)["trace_states"]))
    assert live == {"n": 500, "sizes": 500}


def test_scaled_minutes_caps_records_but_keeps_a_minute() -> None:
    assert engine_bench.scaled_minutes(10, 5, 1_000_000) == 5
    assert engine_bench.scaled_minutes(10_000, 5, 1_000_000) == 1.0  # 10,000 x 1.7/s x 60 s = 1.02 M
    assert engine_bench.scaled_minutes(1000, 5, 0) == 5  # no cap
