"""Benchmark (not a test): what one call from a Python operator into Flink costs in thread mode.

    python -m tests.bench.state_call_bench [--parallelism 1,2] [--elements 4000]

A keyed process function on the local MiniCluster (thread mode, heap state backend, as flink-conf/)
makes each kind of call 20 times per element: value-state reads and writes (a LONG, a 20-character
and a 10,000-character string), map-state put/get/remove, an event-time timer, ``get_current_key``,
and a no-op for the measuring overhead. It prints, per kind, the wall time and the calling thread's
CPU time per call (``time.thread_time``: Java runs on the calling thread). With ``--parallelism 2``
two subtasks share the one embedded interpreter of the JVM, as the job's Python operators share a
TaskManager's, and each call gives the interpreter's lock up and takes it back: the figure that says
why the span path batches elements and keeps its state calls few (jobs/span_operators.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any


def _function() -> Any:
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

    class Calls(KeyedProcessFunction):  # type: ignore[misc]
        def open(self, ctx: RuntimeContext) -> None:
            self.text = ctx.get_state(ValueStateDescriptor("text", Types.STRING()))
            self.long = ctx.get_state(ValueStateDescriptor("long", Types.LONG()))
            self.map = ctx.get_map_state(MapStateDescriptor("map", Types.LONG(), Types.STRING()))
            self.wall: dict[str, float] = {}
            self.cpu: dict[str, float] = {}
            self.calls = 0

        def _time(self, kind: str, call: Any) -> None:
            t, c = time.perf_counter(), time.thread_time()
            call()
            self.wall[kind] = self.wall.get(kind, 0.0) + time.perf_counter() - t
            self.cpu[kind] = self.cpu.get(kind, 0.0) + time.thread_time() - c
            sum(range(300))  # a little Python work between calls, as an operator does

        def process_element(self, value: Any, ctx: Any) -> Iterator[str]:
            small, big = "x" * 20, "y" * 10_000
            for i in range(20):
                self._time("long value update", lambda i=i: self.long.update(i))
                self._time("long value read", lambda: self.long.value())
                self._time("20-char value update", lambda: self.text.update(small))
                self._time("10k-char value update", lambda: self.text.update(big))
                self._time("10k-char value read", lambda: self.text.value())
                self._time("map put, 20 chars", lambda i=i: self.map.put(i, small))
                self._time("map put, 10k chars", lambda i=i: self.map.put(i + 100, big))
                self._time("map get, 20 chars", lambda i=i: self.map.get(i))
                self._time("map remove", lambda i=i: self.map.remove(i))
                self._time("event-time timer", lambda i=i: ctx.timer_service().register_event_time_timer(1_000 + i))
                self._time("get_current_key", lambda: ctx.get_current_key())
                self._time("no-op (measuring)", lambda: None)
            self.calls += 20
            if value[1] >= self.total - 50:  # the last elements: report
                per_call = {k: [self.wall[k] / self.calls * 1e6, self.cpu[k] / self.calls * 1e6] for k in self.wall}
                yield json.dumps(per_call)

    return Calls


def run(parallelism: int, elements: int) -> dict[str, list[float]]:
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment

    from jobs.runtime import use_this_python

    use_this_python()
    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("state.backend.type", "hashmap")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(parallelism)
    fn = _function()()
    fn.total = elements
    pairs = Types.TUPLE([Types.INT(), Types.INT()])
    data = env.from_collection([(i % 50, i) for i in range(elements)], type_info=pairs)
    out = data.key_by(lambda x: x[0], key_type=Types.INT()).process(fn, Types.STRING())
    reports: list[dict[str, list[float]]] = []
    with out.execute_and_collect() as results:
        reports.extend(json.loads(x) for x in results)
    # one report per subtask (its own interpreter thread): the mean of theirs
    return {k: [sum(r[k][i] for r in reports) / len(reports) for i in (0, 1)] for k in reports[0]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parallelism", default="1,2", help="comma-separated subtask counts (default 1,2)")
    parser.add_argument("--elements", type=int, default=4_000, help="elements per run (default 4000)")
    args = parser.parse_args(argv)
    print(f"load average at start {[round(x, 2) for x in os.getloadavg()]}; {os.cpu_count()} cores", flush=True)
    rows = {int(p): run(int(p), args.elements) for p in args.parallelism.split(",")}
    kinds = list(next(iter(rows.values())))
    head = "".join(f" | p={p} wall µs | p={p} CPU µs" for p in rows)
    print(f"| call{head} |")
    print("|---" * (1 + 2 * len(rows)) + "|")
    for kind in kinds:
        cells = "".join(f" | {rows[p][kind][0]:.2f} | {rows[p][kind][1]:.2f}" for p in rows)
        print(f"| {kind}{cells} |")
    print(f"load average at end {[round(x, 2) for x in os.getloadavg()]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
