"""The PNGs of ``logclaw report`` (matplotlib, Agg backend, no display). Each function takes the
loaded JSON (or builds its input from udfs) and writes one file; none reads the clock or the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from udfs import engine
from udfs.evaluation.metrics import error_rates, parse_time_ms
from udfs.scenarios import cascade as scenario_cascade
from udfs.scenarios import library as scenarios

SHORT = {
    "engine": "engine",
    "any_error": "any ERROR",
    "any_error_cooldown": "any ERROR\n+5 min cooldown",
    "busiest_minute": "most errors/min",
    "busiest_minute_cooldown": "most errors/min\n+5 min cooldown",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def detectors_chart(detectors: dict[str, Any], path: Path) -> None:
    """Per dataset: recall, precision, root cause top-1 (bars) and false incidents per hour (log)."""
    plt = _plt()
    names = list(detectors)
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    for row, dataset in enumerate(("openstack", "scenarios")):
        ax = axes[row][0]
        width = 0.27
        for i, metric in enumerate(("recall", "precision", "rc_top1")):
            vals = [detectors[d][dataset]["summary"].get(metric) or 0.0 for d in names]
            xs = [k + (i - 1) * width for k in range(len(names))]
            ax.bar(xs, vals, width, label=metric.replace("rc_top1", "root cause top-1"))
        ax.set_xticks(range(len(names)), [SHORT.get(d, d) for d in names], fontsize=8)
        ax.set_ylim(0, 1.3)
        ax.set_title(f"{dataset}: recall, precision, root cause (higher is better)")
        ax.legend(fontsize=8, loc="upper right", ncol=3)
        ax = axes[row][1]
        vals = [detectors[d][dataset]["summary"].get("false_per_hour") or 0.0 for d in names]
        bars = ax.bar(range(len(names)), vals, color="tab:red")
        for bar, v in zip(bars, vals, strict=True):
            ax.annotate(f"{v:g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=8)  # fmt: skip
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(0, max([*vals, 1]) * 3)
        ax.set_xticks(range(len(names)), [SHORT.get(d, d) for d in names], fontsize=8)
        ax.set_title(f"{dataset}: false incidents per fault-free hour (lower is better)")
    _save(fig, path)


def ttd_chart(detectors: dict[str, Any], path: Path) -> None:
    """Time-to-detect of every detected failing case, per detector and dataset (one dot per case)."""
    plt = _plt()
    names = list(detectors)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, dataset in zip(axes, ("openstack", "scenarios"), strict=True):
        for k, det in enumerate(names):
            ttd = [r["ttd_ms"] / 1000 for r in detectors[det][dataset]["streams"]
                   if r["failure"] and r["detected"] and r["ttd_ms"] is not None]  # fmt: skip
            xs = [k + 0.08 * ((i % 5) - 2) for i in range(len(ttd))]
            ax.scatter(xs, ttd, s=22, alpha=0.8)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(names)), [SHORT.get(d, d) for d in names], fontsize=8)
        ax.set_ylabel("detected_at - inject time (s)")
        ax.set_title(f"{dataset}: time to detect, one dot per detected failing case")
    _save(fig, path)


def cascade_timeline(path: Path, scale: float) -> dict[str, Any]:
    """Run the engine over the cascade scenario and plot each service's error share per 10 s bucket
    with the fault period and the incident events; returns what the plot shows, for the text."""
    sc = scenarios.build("cascade", scale=scale)
    events = engine.run(scenarios.requests_of(sc.records, 200), sc.spans)
    exp = sc.expectations[0]
    fault_ms = exp.fault_start_ms or 0
    t0 = sc.records[0].time_ms
    rates = error_rates(sc.records, exp.tenant)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for service, series in rates.items():
        ax.plot([(b - t0) / 60_000 for b, _ in series], [v for _, v in series], label=service, lw=1.2)
    ax.axvspan((fault_ms - t0) / 60_000, (fault_ms + scenario_cascade.FAULT_NS // 1_000_000 - t0) / 60_000,
               color="grey", alpha=0.15, label="injected fault (4 min)")  # fmt: skip
    styles = {"opened": ("tab:red", "-"), "updated": ("tab:orange", "--"), "resolved": ("tab:green", "-")}
    marks = []
    for e in events:
        at = parse_time_ms(e["resolved_at"] if e["event"] == "resolved" and e.get("resolved_at") else e["detected_at"])
        color, ls = styles[e["event"]]
        ax.axvline((at - t0) / 60_000, color=color, ls=ls, lw=1.0)
        marks.append({"event": e["event"], "at_s_after_fault": round((at - fault_ms) / 1000, 1),
                      "root_cause": e["root_cause"]["service"], "chain": e["root_cause"].get("chain", []),
                      "affected": e.get("affected_services", [])})  # fmt: skip
    for name, (color, ls) in styles.items():
        ax.plot([], [], color=color, ls=ls, label=f"incident {name}")
    ax.set_xlabel("minutes of event time since the first record")
    ax.set_ylabel("error share per 10 s bucket")
    ax.set_title("cascade scenario: error share per service and the engine's incident events")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    _save(fig, path)
    return {"records": len(sc.records), "spans": len(sc.spans), "fault_start_s": (fault_ms - t0) / 1000,
            "input_end_s_after_fault": (sc.records[-1].time_ms - fault_ms) / 1000, "events": marks}  # fmt: skip


def engine_throughput(bench: dict[str, Any], path: Path) -> None:
    """Records per CPU-second of the pure engine vs number of services (the load), plus scenarios."""
    plt = _plt()
    rows = bench.get("results", [])
    scaling = sorted((r for r in rows if "services, " in r.get("input", "")), key=lambda r: r["services"])
    fig, ax = plt.subplots(figsize=(8, 4.2))
    if scaling:
        xs = [r["services"] for r in scaling]
        ax.plot(xs, [r["best_records_per_cpu_s"] for r in scaling], "o-", label="best of runs (per CPU-s)")
        ax.plot(xs, [r["median_records_per_cpu_s"] for r in scaling], "s--", label="median (per CPU-s)")
        ax.plot(xs, [r["best_records_per_wall_s"] for r in scaling], "^:", label="best (per wall-s)")
        ax.set_xscale("log")
    for r in rows:
        if r not in scaling:
            ax.axhline(r["best_records_per_cpu_s"], color="grey", lw=0.8, ls=":")
            label = f"{r['input']}: {r['best_records_per_cpu_s']:,}/s"
            ax.annotate(label, (ax.get_xlim()[0], r["best_records_per_cpu_s"]), fontsize=7, va="bottom")
    target = bench.get("meta", {}).get("target_records_per_core_s")
    if target:
        ax.axhline(target, color="tab:red", lw=1, label=f"target {target:,}/s per core")
    ax.set_yscale("log")
    ax.set_xlabel("services in the input (load)")
    ax.set_ylabel("records / s, one core")
    ax.set_title("pure engine throughput vs load (udfs.engine, single process)")
    ax.legend(fontsize=8)
    _save(fig, path)


def job_charts(bench: dict[str, Any], tp_path: Path, lat_path: Path) -> bool:
    """Throughput per job case (bars) and, when Kafka runs measured it, the immediate-path latency
    distribution. Returns whether the latency plot was written."""
    plt = _plt()
    results = bench.get("results", [])
    fig, ax = plt.subplots(figsize=(9, 4))
    labels, vals = [], []
    for res in results:
        tp = (res.get("summary") or {}).get("records_per_s") or {}
        tms = f"\n{res['taskmanagers']} TM" if res.get("taskmanagers") else ""
        labels.append(f"{res['source']}\n{res.get('cluster', 'mini')}{tms}\n{res['mode']}\nindex {res['index_logs']}")
        sus = (res.get("summary") or {}).get("sustained_records_per_s") or {}
        vals.append(sus.get("median") or tp.get("median", 0))
    ax.bar(range(len(vals)), vals)
    target = bench.get("meta", {}).get("targets", {}).get("records_per_s_2_cores")
    if target:
        ax.axhline(target, color="tab:red", lw=1, label=f"target {target:,}/s on 2 cores")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("records / s (median of runs;\nsustained where measured)")
    rate = bench.get("meta", {}).get("input", {}).get("event_rate")
    ax.set_title("detection job: throughput per case" + (f" ({rate:,.0f} records/s of event time)" if rate else ""))
    _save(fig, tp_path)
    samples = {f"{r['mode']}" + (f", {r['taskmanagers']} TM" if r.get("taskmanagers") else ""):
               [x for run in r["runs"] for x in run.get("latency_ms", {}).get("samples_ms", [])]
               for r in results if r["source"] == "kafka"}  # fmt: skip
    samples = {k: v for k, v in samples.items() if v}
    if not samples:
        return False
    fig, ax = plt.subplots(figsize=(8, 4))
    for mode, vals_ms in samples.items():
        ax.hist(vals_ms, bins=30, alpha=0.6, label=f"{mode} mode (n={len(vals_ms)})")
    ax.axvline(1000, color="tab:red", lw=1, label="target p99 < 1000 ms")
    ax.set_xlabel("produce -> 'opened' consumed (ms)")
    ax.set_ylabel("samples")
    ax.set_title("immediate path latency (one OOM record per new tenant, Kafka in and out)")
    ax.legend(fontsize=8)
    _save(fig, lat_path)
    return True


def progress_chart(bench: dict[str, Any], path: Path) -> bool:
    """Records done against time since the first progress mark, one line per Kafka run, with the
    warm-up the sustained rate leaves out shaded. Returns whether there was a curve to draw."""
    runs = [(res, run) for res in bench.get("results", []) for run in res.get("runs", [])
            if (run.get("steady") or {}).get("curve")]  # fmt: skip
    if not runs:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (res, run) in enumerate(runs):
        t, r = zip(*run["steady"]["curve"], strict=True)
        tms = f"{res['taskmanagers']} TM " if res.get("taskmanagers") else ""
        sus = run["steady"].get("sustained_records_per_s")
        ax.plot(t, r, marker=".", ms=3, lw=1,
                label=f"{tms}{res['mode']} run {i + 1}" + (f": {sus:,}/s sustained" if sus else ""))
    warm = bench.get("meta", {}).get("warmup_s")
    if warm:
        ax.axvspan(0, warm, color="0.9", label=f"warm-up ({warm:g} s), left out")
    ax.set_xlabel("seconds since the first progress mark (wall clock)")
    ax.set_ylabel("records done")
    ax.set_title("detection job working off a backlog: progress marks per run")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def codec_chart(bench: dict[str, Any], path: Path) -> None:
    plt = _plt()
    rows = bench.get("results", [])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.bar(range(len(rows)), [r["best_records_per_cpu_s"] for r in rows])
    ax.set_xticks(range(len(rows)), [f"{r['format']}\n{r['attributes']} attrs" for r in rows], fontsize=8)
    ax.set_ylabel("records / CPU-s (best run)")
    ax.set_title("OTLP decode throughput (connectors.otlp)")
    _save(fig, path)
