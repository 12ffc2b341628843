"""``logclaw report``'s performance parts over hand-made bench JSON: the load statement, the side-by-side
table as ratios, the sizing tables (TaskManagers, services, state bytes against 1 KiB), the spread
verdict and other benches' JSON. No JVM, no engine run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jobs.cli import report_perf


def run(source: str, mode: str, rate: int | None, load: float, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"source": source, "mode": mode, "loadavg_during": [load, load, load]} | extra
    if rate is not None:
        row["steady"] = {"sustained_records_per_s": rate, "curve": [[0.0, 0], [20.0, rate * 20]]}
    return row


def case(source: str, mode: str, rates: list[int | None], loads: list[float], **label: Any) -> dict[str, Any]:
    from tests.bench import job_bench

    runs = [run(source, mode, r, ld) for r, ld in zip(rates, loads, strict=True)]
    for r, rate in zip(runs, rates, strict=True):
        r["records_per_s"] = round((rate or 10_000) * 0.8)
        r["cpu"] = {"cores_busy": 1.8}
        if rate is None:
            r["steady"] = {"note": "input too short for a sustained rate: 2 progress marks over 1.0 s"}
    res = {"source": source, "mode": mode, "index_logs": "off", "cluster": "standalone", "runs": runs} | label
    res["summary"] = job_bench.summarize_case(runs)
    return res


def test_load_banner_states_a_loaded_machine_plainly() -> None:
    loaded = {"a.json": {"meta": {"loadavg_start": [6.5, 5, 4]}, "results": []}}
    quiet = {"a.json": {"meta": {"loadavg_start": [0.2, 0.1, 0.1]},
                        "results": [{"runs": [{"loadavg_during": [2.4, 1, 1]}]}]}}  # fmt: skip
    text = " ".join(report_perf.load_banner(loaded, nproc=2))
    assert text.startswith("**The benchmark figures below were measured on a loaded machine**: the 1-minute load "
                           "average was 6.5-6.5 on 2 cores")  # fmt: skip
    assert report_perf.load_banner(quiet, nproc=2)[0] == (
        "The benchmark figures below ran on a quiet machine: 1-minute load average 0.2-2.4 on 2 cores.")
    busy_during = {"a.json": {"meta": {"loadavg_start": [0.2]}, "results": [{"runs": [{"loadavg_during": [3.5]}]}]}}
    assert "loaded machine" in report_perf.load_banner(busy_during, nproc=2)[0]  # 3.5 > 1.5 x 2 cores
    assert report_perf.load_banner({}, nproc=2) == []
    engine_rows = {"e.json": {"meta": {"loadavg_start": [0.1]}, "results": [{"input": "x", "runs": 2}]}}  # a count
    assert report_perf.load_banner(engine_rows, nproc=2)[0].startswith("The benchmark figures below ran on a quiet")


def test_side_by_side_puts_every_detector_in_one_table_as_ratios_to_the_product() -> None:
    obj = {"meta": {"command": "python -m tests.bench.job_bench --compare", "nproc": 2, "cpu_model": "Xeon",
                    "ram_gib": 23.5, "loadavg_start": [0.3], "loadavg_end": [2.1],
                    "input": {"scenario": "steady", "records": 1_000_000, "records_per_message": 200}},
           "results": [case("kafka", "thread", [60_000, 64_000, 56_000], [2.0, 2.2, 2.1]),
                       case("kafka", "process", [12_000, 12_000, 12_000], [2.0, 2.0, 2.0]),
                       {"source": "python", "mode": "any_error", "index_logs": "off", "runs": [],
                        "summary": {"runs": 1, "records_per_s": {"median": 240_000}, "records_per_cpu_s":
                                    {"median": 250_000}, "loadavg_1m": {"median": 1.1}}}]}  # fmt: skip
    lines = report_perf.compare_section(obj)
    text = "\n".join(lines)
    assert "on 2 cores, `Xeon`, 23.5 GiB RAM, load average [0.3] at start and [2.1] at end." in text
    assert "| **LogClaw job, thread mode (the product)** | 60,000 (sustained) | 1.00 |" in text
    assert "| LogClaw job, process mode | 12,000 (sustained) | 0.20 |" in text
    assert "| baseline: any ERROR line, one Python process | 240,000 (whole input) | 4.00 | 250,000 |" in text
    assert ("- kafka/standalone/thread: sustained rate over 3 runs: spread 13.3 %, the farthest run 6.7 % from the "
            "median (every run within the +-15 % target).") in lines
    assert report_perf.compare_section(None)[2].startswith("*No `bench-out/job_bench_compare.json`")


def test_sizing_table_scales_from_the_first_row_and_flags_a_wide_spread(tmp_path: Path) -> None:
    scaling = {"meta": {"command": "python -m tests.bench.job_bench --taskmanagers 1,2", "nproc": 2, "warmup_s": 15,
                        "input": {"scenario": "steady", "records": 1_000_000}},
               "results": [case("kafka", "thread", [40_000, 42_000, 41_000], [2.0] * 3, taskmanagers=1,
                                parallelism=1),
                           case("kafka", "thread", [70_000, 50_000, 60_000], [2.0] * 3, taskmanagers=2,
                                parallelism=2)]}  # fmt: skip
    lines = report_perf.sizing_section(scaling, None, tmp_path)
    rows = [ln for ln in lines if ln.startswith(("| 1 |", "| 2 |"))]
    assert rows[0].startswith("| 1 | 1 | 41,000 (40,000-42,000, spread 4.9 %) | 1.00x |")
    assert rows[1].startswith("| 2 | 2 | 60,000 (50,000-70,000, spread 33.3 %) | 1.46x |")
    assert ("- kafka/standalone/thread/2 TM: sustained rate over 3 runs: spread 33.3 %, the farthest run 16.7 % from "
            "the median (**outside the +-15 % target**; see the load column).") in lines
    assert "![records done against time, per run](img/job_progress.png)" in lines
    scaling["results"][1]["runs"][0]["steady"]["half_ratio"] = 1.6  # load rose in the middle of the run
    scaling["results"][1]["runs"][1]["steady"]["half_ratio"] = 0.9  # within 15 %: steady
    notes = report_perf.sustained_notes(scaling)
    assert ("- kafka/standalone/thread/2 TM, run 1: **not steady**: the window's second half ran at 1.6 x the first "
            "half's rate (load average 2.0 during the run).") in notes
    assert not any("run 2: **not steady**" in n for n in notes)
    assert (tmp_path / "job_progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_state_line_says_when_an_idle_service_is_above_the_1_kib_target() -> None:
    state = {"service_states": 1000, "idle_service_bytes_mean": 2048, "idle_service_bytes_max": 2500,
             "service_core_bytes_mean": 1000, "core_history_bytes_mean": 690, "core_recent_bytes_mean": 150,
             "core_template_history_bytes_mean": 100, "template_state_bytes_per_service_mean": 1046,
             "bytes_per_template": 209, "templates": 5000, "template_miners": 1000, "tenant_state_bytes": 300,
             "tenant_states": 1, "target_idle_service_bytes": 1024}  # fmt: skip
    engine = {"meta": {"command": "python -m tests.bench.engine_bench"},
              "results": [{"input": "10 services, 5 min", "records": 5000, "best_records_per_cpu_s": 200_000,
                           "median_records_per_cpu_s": 190_000, "state": dict(state, service_states=10),
                           "event_time_s": 300},
                          {"input": "10000 services, 1 min", "records": 1_000_000, "best_records_per_cpu_s": 27_000,
                           "median_records_per_cpu_s": 26_000, "event_time_s": 60,
                           "state": dict(state, service_states=10_000, idle_service_bytes_mean=900)},
                          {"input": "1000 services, 5 min", "records": 500_000, "best_records_per_cpu_s": 50_000,
                           "median_records_per_cpu_s": 48_000, "state": state, "event_time_s": 300,
                           "live_state": {"trace_states": 100_000, "trace_state_bytes_mean": 180}}]}  # fmt: skip
    text = "\n".join(report_perf.engine_scaling(engine))
    assert "| 1000 services, 5 min | 500,000 | 50,000 / 48,000 | 0.25x | 100,000 | 2,048 / 2,500 | 209 | 180 |" in text
    # The longest input (its history the fullest), not the one with the most services.
    assert ("from the 1000 services, 5 min input (300 s of event time: the longest, so its bucket history is the "
            "fullest) after the end of input (every bucket closed): an idle service costs 2,048 B on average "
            "(max 2,500), **above** the 1 KiB target") in text  # fmt: skip
    assert "10,000 idle services: ~19.5 MiB of state values" in text


def test_other_benches_json_is_shown_with_its_command(tmp_path: Path) -> None:
    (tmp_path / "store_bench.json").write_text(json.dumps({
        "meta": {"command": "python -m tests.bench.store_bench", "loadavg_start": [1.0], "loadavg_end": [2.0]},
        "results": [{"store": "sqlite", "records_per_s": 52_000, "nested": {"x": 1}}]}))
    (tmp_path / "engine_bench.json").write_text("{}")
    lines = report_perf.other_benches(tmp_path, {"engine_bench.json"})
    assert lines[:3] == ["## Other benchmarks found in bench-out/", "", "### `store_bench.json`"]
    assert "| store | records_per_s |" in lines and "| sqlite | 52000 |" in lines
    assert report_perf.other_benches(tmp_path / "none", set()) == []
