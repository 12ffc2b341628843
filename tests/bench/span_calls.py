"""Benchmark (not a test): what the spans path asks of Flink per span, without a JVM.

    python -m tests.bench.span_calls [--hours 0.25] [--spans-per-s 63] [--out bench-out/span_calls.json]

span_bench's input (the routed chain at span_bench's rate, 63 spans per second of event time, or
``--spans-per-s``: a live system's density, where a bucket and a timer serve thousands of spans; 200-span
messages of one service, in start order) through the spans path's own adapters (jobs/span_operators.py: the
sharded trace timeline and RED) over counting stand-ins of Flink's keyed state and timers, the watermark moved
after each message (bounded out-of-orderness), then to the end of time. It counts per span what costs a call
from Python into Flink in thread mode (elements in, state reads and writes, timer registrations, timer firings)
and the Python CPU of the adapters and pure steps (process_time: it does not depend on the machine's load,
unlike span_bench's rates). Elements to the correlator are counted; its own work is not.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.bench.span_bench import SPANS_PER_REQUEST

RECORDS_PER_HOUR = 57_004
"""span_bench's logs (job_bench's steady input); spans come at 4 per record."""


class _Counting:
    """Keyed state and timers of one operator, counting every call into them."""

    def __init__(self, name: str, calls: collections.Counter[str]) -> None:
        self.name, self.calls = name, calls
        self.key = ""
        self.data: dict[tuple[str, str], Any] = {}
        self.timers: list[tuple[int, str]] = []
        self.registered: set[tuple[int, str]] = set()

    # RuntimeContext
    def get_state(self, desc: Any) -> Any:
        return _State(self, desc.get_name())

    def get_map_state(self, desc: Any) -> Any:
        return _State(self, desc.get_name())

    def get_metrics_group(self) -> Any:
        return self

    def counter(self, name: str) -> Any:
        return self

    def inc(self, n: int = 1) -> None:
        pass

    # KeyedProcessFunction.Context
    def timer_service(self) -> Any:
        return self

    def get_current_key(self) -> str:
        return self.key

    def register_event_time_timer(self, at_ms: int) -> None:
        self.calls[f"{self.name}: timer registrations"] += 1
        if (at_ms, self.key) not in self.registered:
            self.registered.add((at_ms, self.key))
            heapq.heappush(self.timers, (at_ms, self.key))


class _State:
    def __init__(self, op: _Counting, name: str) -> None:
        self.op, self.name = op, name

    def _count(self, what: str) -> None:
        self.op.calls[f"{self.op.name}: state {what}"] += 1

    def _map(self) -> dict[Any, Any]:
        return self.op.data.setdefault((self.name, self.op.key), {})  # type: ignore[no-any-return]

    def value(self) -> Any:
        self._count("reads")
        return self.op.data.get((self.name, self.op.key))

    def update(self, v: Any) -> None:
        self._count("writes")
        self.op.data[(self.name, self.op.key)] = v

    def clear(self) -> None:
        self._count("writes")
        self.op.data.pop((self.name, self.op.key), None)

    def get(self, k: Any) -> Any:
        self._count("reads")
        return self._map().get(k)

    def put(self, k: Any, v: Any) -> None:
        self._count("writes")
        self._map()[k] = v

    def put_all(self, d: dict[Any, Any]) -> None:
        self._count("writes")
        self._map().update(d)

    def remove(self, k: Any) -> None:
        self._count("writes")
        self._map().pop(k, None)

    def items(self) -> Any:
        self._count("reads")
        return list(self._map().items())


class _Operator:
    def __init__(self, fn: Any, name: str, calls: collections.Counter[str]) -> None:
        self.fn, self.ctx, self.calls, self.name = fn, _Counting(name, calls), calls, name
        fn.open(self.ctx)

    def element(self, key: str, value: Any) -> list[Any]:
        self.calls[f"{self.name}: elements"] += 1
        self.ctx.key = key
        return list(self.fn.process_element(value, self.ctx) or ())

    def advance(self, watermark: int) -> list[Any]:
        out: list[Any] = []
        timers = self.ctx.timers
        while timers and timers[0][0] <= watermark:
            at, key = heapq.heappop(timers)
            self.ctx.registered.discard((at, key))
            self.ctx.key = key
            self.calls[f"{self.name}: timers fired"] += 1
            out.extend(self.fn.on_timer(at, self.ctx) or ())
        return out


def measure(hours: float, spans_per_s: float = 4 * RECORDS_PER_HOUR / 3600) -> dict[str, Any]:
    from jobs.operators import shard_elements
    from jobs.span_operators import SPAN_TIMINGS, SpanRed, TraceTimeline, _span_shard, _span_start_ms
    from udfs import engine
    from udfs.scenarios import latency
    from udfs.scenarios.library import span_requests_of
    from udfs.scenarios.traffic import Stream

    stream = Stream(0)
    start = 1_700_000_000_000 * 1_000_000
    latency.chain(stream, "default", start, start + int(hours * 3600e9), stalls=True, routes=True,
                  per_s=spans_per_s / SPANS_PER_REQUEST)
    spans = sorted(stream.spans, key=lambda s: s.start_unix_nano)
    messages = span_requests_of(spans, 200, max_span_ms=2**40)
    calls: collections.Counter[str] = collections.Counter()
    cfg = engine.EngineConfig()
    timeline, red = _Operator(TraceTimeline(cfg), "trace timeline", calls), _Operator(SpanRed(cfg), "RED", calls)

    def onward(outputs: list[Any]) -> None:
        for item in outputs:
            if isinstance(item, tuple) and item and item[0] is SPAN_TIMINGS:
                red.element(item[1][0], item[1][1])
            else:
                calls["correlator: elements"] += 1

    t0, latest = time.process_time(), -(2**62)
    for msg in messages:
        for row, ts in shard_elements(msg, _span_shard, _span_start_ms):
            onward(timeline.element(row[0], row[1]))
            latest = max(latest, ts)
        onward(timeline.advance(latest - cfg.out_of_orderness_ms))
        red.advance(latest - cfg.out_of_orderness_ms)
    onward(timeline.advance(engine.END_OF_TIME))
    red.advance(engine.END_OF_TIME)
    cpu_s = time.process_time() - t0
    n = len(spans)
    per_span = {k: round(v / n, 3) for k, v in sorted(calls.items())}
    return {"spans": n, "messages": len(messages), "spans_per_s_of_event_time": round(spans_per_s),
            "python_cpu_us_per_span": round(cpu_s / n * 1e6, 1), "calls_per_span": per_span,
            "flink_calls_per_span": round(sum(calls.values()) / n, 3)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.span_calls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=0.25, help="event time of the input (default 0.25 h)")
    parser.add_argument("--spans-per-s", type=float, default=4 * RECORDS_PER_HOUR / 3600,
                        help="density: spans per second of event time (default span_bench's, 63)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/span_calls.json"))
    args = parser.parse_args(argv)
    row = measure(args.hours, args.spans_per_s)
    print(f"{row['spans']} spans in {row['messages']} messages: {row['flink_calls_per_span']} calls into Flink "
          f"per span, {row['python_cpu_us_per_span']} µs of Python CPU per span (adapters and pure steps)")
    for name, value in row["calls_per_span"].items():
        print(f"  {value:7.3f}  {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
