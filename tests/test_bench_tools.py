"""The benchmarks' own arithmetic (percentiles, CPU accounting, cost split), so their numbers can be trusted.

Fast: no JVM, no broker; the engine runs over one minute of three services.
"""

from __future__ import annotations

import os

from tests.bench import engine_bench, job_bench
from udfs import engine, window


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(x) for x in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert job_bench._percentiles(samples) == {"n": 100, "min": 1.0, "p50": 50.0, "p90": 90.0, "p99": 99.0,
                                               "max": 100.0}
    assert job_bench._percentiles([7.0]) == {"n": 1, "min": 7.0, "p50": 7.0, "p90": 7.0, "p99": 7.0, "max": 7.0}
    assert job_bench._percentiles([]) == {"n": 0}


def test_cpu_report_sums_thread_deltas_by_process_and_names_jvm_threads() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    before = {(10, 11): ("jvm", "Source: x", 0), (10, 12): ("jvm", "C2 Compiler", 5 * hz),
              (20, 20): ("python worker", "python", 0)}
    after = {(10, 11): ("jvm", "Source: x", 3 * hz), (10, 12): ("jvm", "C2 Compiler", 6 * hz),
             (20, 20): ("python worker", "python", 2 * hz), (10, 13): ("jvm", "new thread", hz)}
    names = {11: "Source: logs -> decode (1/2)#0", 13: "service window (2/2)#0"}
    report = job_bench.cpu_report(before, after, wall_s=2.0, names=names)
    assert report == {
        "window_s": 2.0, "cpu_s": 7.0, "cores_busy": 3.5,
        "by_process": {"jvm": 5.0, "python worker": 2.0},
        "top_threads": [["jvm: Source: logs -> decode (1/2)", 3.0], ["python worker: python [python worker 20]", 2.0],
                        ["jvm: C2 Compiler", 1.0], ["jvm: service window (2/2)", 1.0]],
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
