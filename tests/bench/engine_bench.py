"""Benchmark (not a test): records/s of the pure detection engine, ``udfs.engine.Engine.feed``, by keys.

    python -m tests.bench.engine_bench [--runs 5] [--per-message 200] [--services 10,100,1000,10000]
                                       [--minutes 10] [--max-records 0] [--live-traces 100000]
                                       [--profile] [--out bench-out/engine_bench.json]

Full size: the defaults (10,000 services x 10 min is ~10 million records, ~5 min a run). ``make bench``
uses ``--runs 2 --minutes 5 --max-records 1000000`` (10,000 services then get 1 min).

Single process, single core. Every run builds a fresh ``Engine`` and feeds every message of the
input, then ``finish()`` (end of input: all timers fire); the best and the median of ``--runs`` runs
are reported, as records per CPU-second of this process (the per-core figure; waiting for a core on
a shared machine does not count) and per wall-second.

Inputs (event time only, no clock): the ``steady`` scenario at scale 1 (8 services, 60 min, ~95 %
INFO/DEBUG), the ``cascade`` scenario at scale 1 (with its spans, fed first as ``engine.run`` does),
the same background traffic (``udfs.scenarios.traffic.shop``) for 10, 100, 1,000 and 10,000
synthetic services over ``--minutes`` of event time (shortened to ``--max-records``, one minute at
least), and 1,000 services with ``--live-traces`` trace timelines alive at once (every request's
trace id mapped into the engine's 1/16 trace sample, the input cut at the last of those traces).
Messages hold ``--per-message`` records across services (``requests_of(..., by_resource=False)``);
``max_span_ms`` is unbounded so that low-rate inputs still make full messages.

Also reported: the cost split (summarize = per-record signals; keyed steps = service window, trace
timeline, correlate; the rest is engine plumbing and timers), RSS, and the keyed state in bytes as
the job stores it (compact JSON of the versioned codecs: ``window_state`` core with the
``history`` template history, the template miner, ``traces``, ``tenant_state``, ``red``): per idle
service (after ``finish()``, every bucket closed; target <= 1 KiB), per template, per live trace
(before ``finish()``). With ``--profile``, the top functions of one cProfile'd steady run.
Target in the issue: >= 100k records/s per core.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import hashlib
import io
import json
import math
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from tests.bench.table import Column, print_table
from udfs import correlate, engine, red, tenant_state, traces, window, window_state
from udfs.records import Level, LogRecord, Span
from udfs.scenarios import library as scenarios
from udfs.scenarios import traffic

TARGET_PER_CORE = 100_000
TARGET_IDLE_SERVICE_BYTES = 1024
"""Issue 16: an idle service should cost at most 1 KiB of keyed state (a million services in ~1 GiB)."""

# --- the machine ----------------------------------------------------------------------------------


def _meminfo_kib(field: str) -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def code_fingerprint() -> str:
    """sha256 over the job's Python sources (udfs, connectors, jobs), to tell which code was measured."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted(p for d in ("udfs", "connectors", "jobs") for p in (root / d).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def machine() -> dict[str, Any]:
    """What the numbers were measured on (``nproc`` = CPUs this process may run on)."""
    return {
        "code_sha256_16": code_fingerprint(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "ram_gib": round(_meminfo_kib("MemTotal") / 2**20, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def command(module: str, argv: Sequence[str]) -> str:
    return " ".join(["python", "-m", module, *argv])


def rss_mib() -> float:
    """Current resident set size of this process (VmRSS), MiB."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib() -> float:
    """Peak RSS of this process so far (``resource.getrusage``; KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_machine(meta: dict[str, Any]) -> None:
    print(f"machine: nproc={meta['nproc']} cpu={meta['cpu_model']!r} ram={meta['ram_gib']} GiB "
          f"python={meta['python']} load average at start {meta['loadavg_start']}; code {meta['code_sha256_16']}")
    print(f"command: {meta['command']}")


def write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {path}")


# --- inputs ---------------------------------------------------------------------------------------


class Input:
    def __init__(self, name: str, records: Sequence[LogRecord], spans: Sequence[Span], per_message: int) -> None:
        self.name = name
        self.records = len(records)
        self.spans = tuple(spans)
        self.services = len({(r.tenant, r.service) for r in records})
        self.info_share = sum(1 for r in records if r.level in (Level.INFO, Level.DEBUG)) / max(1, len(records))
        self.messages = scenarios.requests_of(records, per_message, max_span_ms=2**40, by_resource=False)
        self.services_per_message = statistics.fmean(len({(r.tenant, r.service) for r in m}) for m in self.messages)
        self.event_s = (records[-1].time_ms - records[0].time_ms) / 1000 if records else 0.0


def scenario_input(name: str, per_message: int) -> Input:
    sc = scenarios.build(name, scale=1.0)
    return Input(f"{name} (scale 1)", sc.records, sc.spans, per_message)


TRACE_INPUT_SERVICES = 1000
"""The live-traces input rewrites the 1000-services input, so its row compares with that one."""
SERVICE_RECORDS_S = 1.7
"""Mean records per second of one synthetic service (the scenarios' healthy background, 1.2-2.2/s)."""


def scaled_minutes(n: int, minutes: float, max_records: int) -> float:
    """``minutes``, shortened so ``n`` services make at most ``max_records`` records (0 = no cap), and
    never under one minute (six 10 s buckets: every service closes buckets and goes through its
    steady path, not only its first bucket)."""
    if max_records <= 0:
        return minutes
    return max(1.0, min(minutes, round(max_records / (n * SERVICE_RECORDS_S * 60), 1)))


def services_input(n: int, minutes: float, per_message: int) -> Input:
    """``n`` synthetic services with the scenarios' healthy background (1.2-2.2 records/s each)."""
    records = _service_records(n, minutes)
    return Input(f"{n} services, {minutes:g} min", records, (), per_message)


def _service_records(n: int, minutes: float) -> list[LogRecord]:
    stream = traffic.Stream(seed=0)
    start = scenarios.DEFAULT_BASE_MS * 1_000_000
    names = [f"svc-{i:04d}" for i in range(n)]
    traffic.shop(stream, "default", names, start, start + int(minutes * traffic.MIN_NS), traffic.Errors())
    return sorted(stream.records, key=lambda r: r.time_unix_nano)


def sampled_trace_ids(count: int, every: int, seed: int = 1) -> list[str]:
    """``count`` distinct 128-bit trace ids that fall in the engine's 1/``every`` trace sample (the
    same test ``udfs.batch`` applies: the last 8 hex digits divisible by ``every``)."""
    import random

    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < count:
        head, tail = rng.getrandbits(96), rng.getrandbits(32) // every * every
        out.add(f"{head:024x}{tail:08x}")
    return sorted(out)


def traces_input(n: int, minutes: float, live: int, per_message: int) -> Input:
    """The ``n``-services input with every request's trace id replaced by one in the engine's trace
    sample (the grouping kept: a request's records share their new id), cut where the ``live``-th
    distinct trace ends: every request steps a trace timeline, and ``live`` timelines are alive
    together at the end (the input spans less than the trace TTL). ``minutes`` must make at least
    ``live`` requests (~0.55 per record)."""
    records = _service_records(n, minutes)
    ids = iter(sampled_trace_ids(live + 1, engine.EngineConfig().trace_sample))
    mapped: dict[str, str] = {}
    out: list[LogRecord] = []
    for r in records:
        if r.trace_id and r.trace_id not in mapped:
            if len(mapped) == live:
                break
            mapped[r.trace_id] = next(ids)
        out.append(r._replace(trace_id=mapped[r.trace_id]) if r.trace_id else r)
    span_min = (out[-1].time_ms - out[0].time_ms) / 60_000
    return Input(f"{n} services, {live:,} live traces ({span_min:.1f} min)", out, (), per_message)


# --- runs -----------------------------------------------------------------------------------------


def with_spans(inp: Input) -> engine.Engine:
    """A fresh engine that has seen the input's spans (another topic in the job; not timed)."""
    eng = engine.Engine()
    eng.feed_spans(inp.spans)
    return eng


def feed_messages(eng: engine.Engine, inp: Input,
                  before_finish: Callable[[engine.Engine], None] | None = None) -> engine.Engine:
    for msg in inp.messages:
        eng.feed(msg)
    if before_finish is not None:
        before_finish(eng)
    eng.finish()
    return eng


def timed_runs(inp: Input, runs: int) -> tuple[list[float], list[float], engine.Engine]:
    """(CPU seconds, wall seconds) of each run: every message fed, then ``finish()``."""
    cpu_s, wall_s = [], []
    eng = None
    for _ in range(runs):
        eng = with_spans(inp)
        c, w = time.process_time(), time.perf_counter()
        feed_messages(eng, inp)
        cpu_s.append(time.process_time() - c)
        wall_s.append(time.perf_counter() - w)
    assert eng is not None
    return cpu_s, wall_s, eng


SPLIT_TARGETS: dict[str, tuple[tuple[Any, str], ...]] = {
    "summarize": ((engine, "summarize"),),  # per record: signals, bucket counts, notables
    "service_window": ((window, "on_batch"), (window, "on_timer")),  # keyed (tenant, service)
    "trace_timeline": ((traces, "on_observation"), (traces, "on_span")),  # keyed (tenant, trace)
    "correlate": ((correlate, "on_anomaly"), (correlate, "on_fact"),
                  (correlate, "on_timer")),  # keyed (tenant)
}
PLUMBING = "engine_plumbing"  # the rest: state dicts, timer heap, watermark, event bookkeeping


@contextlib.contextmanager
def split_timers(totals: dict[str, float]) -> Iterator[None]:
    """Wrap the pure steps the engine calls (module attributes, looked up per call) with CPU timers."""
    saved: list[tuple[Any, str, Any]] = []
    active = [False]  # a step called from inside another (correlate.on_timer -> on_anomaly) counts for the outer

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if active[0]:
                return fn(*args, **kwargs)
            active[0] = True
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.process_time() - t
                active[0] = False
        return wrapper

    try:
        for label, targets in SPLIT_TARGETS.items():
            for module, attr in targets:
                fn = getattr(module, attr)
                saved.append((module, attr, fn))
                setattr(module, attr, timed(label, fn))
        yield
    finally:
        for module, attr, fn in saved:
            setattr(module, attr, fn)


def cost_split(inp: Input, before_finish: Callable[[engine.Engine], None] | None = None) -> dict[str, float]:
    totals: dict[str, float] = {}
    eng = with_spans(inp)
    aside = [0.0]  # CPU of ``before_finish`` (state sizes), not the engine's

    def untimed(e: engine.Engine) -> None:
        t = time.process_time()
        if before_finish is not None:
            before_finish(e)
        aside[0] += time.process_time() - t

    with split_timers(totals):
        c = time.process_time()
        feed_messages(eng, inp, untimed)
        total = time.process_time() - c - aside[0]
    totals[PLUMBING] = max(0.0, total - sum(totals.values()))
    return {k: round(v / total, 4) for k, v in totals.items()} | {"total_cpu_s": round(total, 4)}


def _bytes(obj: Any) -> int:
    """Bytes the job stores for a codec's output: compact JSON (``jobs.operators.dumps`` is orjson)."""
    return len(orjson.dumps(obj))


def _mean(xs: Sequence[int]) -> int:
    return round(statistics.fmean(xs)) if xs else 0


def state_sizes(eng: engine.Engine) -> dict[str, Any]:
    """Bytes per keyed state after ``finish()``, from the codecs the job's state uses
    (``window_state.encode_part``: "core", "memory" = ``history.encode``, ``TemplateMiner.to_state``,
    ``traces.encode_state``, ``tenant_state.encode_state``, ``red.encode_state``), as compact JSON.

    After ``finish()`` every bucket is closed, so a service state is what an idle service costs:
    "core" (closed-bucket history, recent details, episode) + "memory" (template history) +
    "templates" (its miner) + "open" (empty). Values only: the job's state backend adds its key and TTL bytes."""
    core, tpl, open_, history, recent, memory, n_tpl = [], [], [], [], [], [], 0
    for st in eng.services.values():
        c = window_state.encode_part(st, "core")
        core.append(_bytes(c))
        history.append(_bytes(c["history"]))
        recent.append(_bytes(c["recent"]))
        memory.append(_bytes(window_state.encode_part(st, "memory")))
        open_.append(_bytes(window_state.encode_part(st, "open")))
        t = window_state.encode_part(st, "templates")
        if t is not None:
            tpl.append(_bytes(t))
            n_tpl += len(t["clusters"])
    per_service = [
        c + m + o + (tpl[i] if i < len(tpl) else 0) for i, (c, m, o) in enumerate(zip(core, memory, open_, strict=True))
    ]
    traces_b = [_bytes(traces.encode_state(st)) for st in eng.traces.values()]
    tenants_b = [_bytes(tenant_state.encode_state(st)) for st in eng.tenants.values()]
    red_b = [_bytes(red.encode_state(st)) for st in eng.red.values()]
    return {
        "service_states": len(core),
        "idle_service_bytes_mean": _mean(per_service),
        "idle_service_bytes_max": max(per_service, default=0),
        "service_core_bytes_mean": _mean(core),
        "service_core_bytes_max": max(core, default=0),
        "core_history_bytes_mean": _mean(history),
        "core_recent_bytes_mean": _mean(recent),
        "core_template_history_bytes_mean": _mean(memory),
        "service_open_bytes_mean": _mean(open_),
        "template_miners": len(tpl),
        "templates": n_tpl,
        "template_state_bytes_per_service_mean": _mean(tpl),
        "bytes_per_template": round(sum(tpl) / n_tpl) if n_tpl else 0,
        "trace_states_live": len(traces_b),
        "trace_state_bytes_mean": _mean(traces_b),
        "tenant_states": len(tenants_b),
        "tenant_state_bytes": sum(tenants_b),
        "red_states": len(red_b),
        "red_state_bytes_mean": _mean(red_b),
        "snapshot_bytes": len(eng.snapshot()),
        "target_idle_service_bytes": TARGET_IDLE_SERVICE_BYTES,
    }


def live_sizes(eng: engine.Engine) -> dict[str, Any]:
    """Keyed state at the end of the input, before ``finish()`` (open buckets, traces within their TTL)."""
    traces_b = [_bytes(traces.encode_state(st)) for st in eng.traces.values()]
    open_b = [_bytes(window_state.encode_part(st, "open")) for st in eng.services.values()]
    return {"services": len(open_b), "open_buckets_bytes_mean": _mean(open_b), "trace_states": len(traces_b),
            "trace_state_bytes_mean": _mean(traces_b), "trace_state_bytes_total": sum(traces_b),
            "rss_mib": round(rss_mib(), 1)}


def bench_input(inp: Input, runs: int) -> dict[str, Any]:
    rss_before = rss_mib()
    cpu_s, wall_s, eng = timed_runs(inp, runs)
    rss_after = rss_mib()
    opened = [e for e in eng.events if e["event"] == "opened"]
    row: dict[str, Any] = {
        "input": inp.name, "services": inp.services, "records": inp.records, "spans": len(inp.spans),
        "messages": len(inp.messages), "records_per_message": round(inp.records / max(1, len(inp.messages)), 1),
        "services_per_message": round(inp.services_per_message, 1),
        "info_debug_share": round(inp.info_share, 4), "event_time_s": round(inp.event_s),
        "runs": runs,
        "best_records_per_cpu_s": round(inp.records / min(cpu_s)),
        "median_records_per_cpu_s": round(inp.records / statistics.median(cpu_s)),
        "best_records_per_wall_s": round(inp.records / min(wall_s)),
        "median_records_per_wall_s": round(inp.records / statistics.median(wall_s)),
        "best_cpu_us_per_record": round(1e6 * min(cpu_s) / inp.records, 2),
        "incidents_opened": len(opened), "events": len(eng.events),
        "root_causes": sorted({e["root_cause"]["service"] for e in opened}),
        "counters": vars(eng.counters),
        "rss_mib_after_run": round(rss_after, 1), "rss_mib_delta_engine_live": round(rss_after - rss_before, 1),
        "state": state_sizes(eng),
    }
    live: dict[str, Any] = {}
    row["split"] = cost_split(inp, lambda eng: live.update(live_sizes(eng)))  # sizes not timed
    row["live_state"] = live
    return row


def profile(inp: Input, top: int) -> list[dict[str, Any]]:
    eng = with_spans(inp)
    prof = cProfile.Profile()
    prof.enable()
    feed_messages(eng, inp)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (path, line, fn), (_cc, ncalls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(path).name}:{line}({fn})", "calls": ncalls,
                     "tottime_s": round(tt, 4), "tottime_share": round(tt / total, 4), "cumtime_s": round(ct, 4)})
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:top]


# --- output ---------------------------------------------------------------------------------------


def _state(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r["state"][key]


def _live(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r.get("live_state", {}).get(key, 0)


def _share(label: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: f"{100 * r['split'].get(label, 0.0):.1f}%"


# The printed tables: rates per input, then the keyed state each input leaves (the JSON has every figure).
INPUT = Column("input", 40, "input", left=True)
RATE_COLUMNS = (INPUT, Column("svcs", 6, "services"), Column("records", 9, "records"),
                Column("rec/msg", 8, "records_per_message"), Column("svc/msg", 8, "services_per_message"),
                Column("best rec/cpu-s", 15, "best_records_per_cpu_s"), Column("median", 9, "median_records_per_cpu_s"),
                Column("best rec/wall-s", 16, "best_records_per_wall_s"), Column("us/rec", 8, "best_cpu_us_per_record"),
                Column("opened", 7, "incidents_opened"), Column("RSS MiB", 9, "rss_mib_after_run"))
STATE_COLUMNS = (INPUT, Column("svc states", 11, _state("service_states")),
                 Column("idle B/svc", 11, _state("idle_service_bytes_mean")),
                 Column("core B", 8, _state("service_core_bytes_mean")),
                 Column("history B", 10, _state("core_history_bytes_mean")),
                 Column("templates", 10, _state("templates")),
                 Column("tpl B/svc", 10, _state("template_state_bytes_per_service_mean")),
                 Column("B/template", 11, _state("bytes_per_template")),
                 Column("live traces", 12, _live("trace_states")),
                 Column("B/trace", 8, _live("trace_state_bytes_mean")),
                 Column("tenant B", 9, _state("tenant_state_bytes")))


def print_rows(rows: list[dict[str, Any]]) -> None:
    print_table(RATE_COLUMNS, rows, title="")
    print_table([INPUT, *(Column(label, 17, _share(label)) for label in (*SPLIT_TARGETS, PLUMBING))], rows,
                title="\ncost split (share of one instrumented run's CPU time):")
    print_table(STATE_COLUMNS, rows, title="\nkeyed state (compact JSON bytes of the versioned codecs; idle = after "
                "finish(), live = before it):")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m tests.bench.engine_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per input; best and median reported")
    parser.add_argument("--per-message", type=int, default=200, help="records per message (default 200)")
    parser.add_argument("--services", default="10,100,1000,10000", help="service counts for the scaling inputs")
    parser.add_argument("--minutes", type=float, default=10.0, help="event time of the scaling inputs")
    parser.add_argument("--max-records", type=int, default=0,
                        help="shorten a scaling input to at most this many records (1 min at least; default 0 = "
                        "no cap: 10,000 services x 10 min is ~10 million records)")
    parser.add_argument("--live-traces", type=int, default=100_000,
                        help="an input with this many live trace timelines (1000 services; 0 = none; default 100000)")
    parser.add_argument("--profile", action="store_true", help="cProfile one steady and one cascade run")
    parser.add_argument("--top", type=int, default=25, help="profile rows to show")
    parser.add_argument("--out", type=Path, default=Path("bench-out/engine_bench.json"))
    args = parser.parse_args(argv)
    if args.runs < 1 or args.per_message < 1 or not 0 < args.minutes <= 240:
        parser.error("--runs and --per-message must be >= 1, --minutes in (0, 240]")
    meta = machine() | {"command": command("tests.bench.engine_bench", argv),
                        "target_records_per_core_s": TARGET_PER_CORE}
    print_machine(meta)
    inputs: list[Callable[[], Input]] = [
        lambda: scenario_input("steady", args.per_message),
        lambda: scenario_input("cascade", args.per_message),
        *[functools.partial(services_input, int(n), scaled_minutes(int(n), args.minutes, args.max_records),
                            args.per_message) for n in args.services.split(",")],
    ]
    if args.live_traces > 0:
        n = TRACE_INPUT_SERVICES
        minutes = math.ceil(2 * args.live_traces / (n * SERVICE_RECORDS_S * 60))  # ~0.55 requests per record
        inputs.append(functools.partial(traces_input, n, minutes, args.live_traces, args.per_message))
    rows = []
    for make in inputs:
        inp = make()
        print(f"running {inp.name}: {inp.records} records in {len(inp.messages)} messages, {args.runs} runs ...",
              flush=True)
        rows.append(bench_input(inp, args.runs))
        del inp
    print_rows(rows)
    result: dict[str, Any] = {"meta": meta, "results": rows}
    for name in ("steady", "cascade") if args.profile else ():
        top = profile(scenario_input(name, args.per_message), args.top)
        result[f"profile_{name}_top_tottime"] = top
        print(f"\nprofile of one {name} run (cProfile, sorted by own time):")
        print(f"{'own s':>8}{'share':>7}{'calls':>10}{'cum s':>8}  function")
        for r in top:
            print(f"{r['tottime_s']:>8}{100 * r['tottime_share']:>6.1f}%{r['calls']:>10}{r['cumtime_s']:>8}"
                  f"  {r['function']}")
    best = max(r["best_records_per_cpu_s"] for r in rows[:2])
    worst = min(r["best_records_per_cpu_s"] for r in rows)
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(f"\ntarget >= {TARGET_PER_CORE} records/s per core: best scenario {best}, slowest input {worst}; "
          f"peak RSS {meta['peak_rss_mib']} MiB; load average at end {meta['loadavg_end']}")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
