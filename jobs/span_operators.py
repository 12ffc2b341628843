"""Flink operators of the spans path: decode spans, the trace timeline per (tenant, trace id) and the
RED state per (tenant, service, operation). Thin adapters over udfs.traces and udfs.red, as in
jobs/operators.py.

Spans outnumber log records, and in thread mode every call from Python into Flink (a state read or
write, a timer, an output element) costs more than the pure step it serves. So elements travel in
batches that apply the pure steps exactly as one element at a time would: the decoders emit one
element per (tenant, trace shard) of a message (its spans or observations in message order), the
timeline keeps the traces of a shard under one key and one timer per time, and emits one element per
(tenant, service, operation) of what it releases and one ``FactBatch`` per element; the timeline
logs an element (one write) and writes a trace about once per flush of the log, RED writes the
buckets an element touched and its clock; each keeps the decoded state while the stored one is what
it last wrote, takes an element's key from the element, and registers a timer only when it has not
already registered that one. tests/test_spans_persistence.py checks that what they store reads back
as what they hold.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext

from connectors.flink_sources import row_payload
from connectors.logstore import span_metric_rows
from connectors.otlp import decode_spans
from jobs.config import JobConfig
from jobs.event_time import KEYED
from jobs.operators import (
    DEAD_LETTER,
    MAX_CACHED,
    FactBatch,
    PendingTimers,
    _map_state,
    _value_state,
    dead_letter,
    dumps,
    latest_accepted_ns,
    loads,
    shard_elements,
    shard_key,
)
from jobs.sinks import open_writer
from udfs import red, traces
from udfs.anomaly import SpanTiming, TraceFact, TraceObservation
from udfs.engine import EngineConfig
from udfs.records import Span, SpanStatus

SPAN_TIMINGS = OutputTag("span-timings", KEYED)  # Row(red key, ((tenant, service, operation), red.WireBucket tuple))

COLLECT_EVERY = 50_000
"""Container allocations (net) between the interpreter's young-generation collections (Python's
default: 700). The timeline keeps a live system's last ~20 s of traces decoded, tens of thousands
of long-lived objects per shard, and every collection that reaches the older generations walks
them all, while the steps allocate a few containers per span. A TaskManager's Python operators
share one interpreter, so this is set for all of them once the span path runs. Measured (span
bench at 25,000 spans/s of event time, 2 TaskManagers, one run each, the older generations'
thresholds at 20 / 10 in that run and Python's 10 / 10 here): the timeline's CPU 87 -> 68 s, 16.2k
-> 18.5k spans/s; stand-in state, one process: 38.7 -> 33.7 µs of Python per span. Garbage left
uncollected in between is a few MB at most."""


def collect_less_often() -> None:
    """Raise the interpreter's young-generation threshold to ``COLLECT_EVERY`` (never lower it)."""
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 < COLLECT_EVERY:
        gc.set_threshold(COLLECT_EVERY, gen1, gen2)


def _span_shard(span: Span) -> str:
    return shard_key(span.tenant, span.trace_id)


def _span_start_ms(span: Span) -> int:
    return span.start_unix_nano // 1_000_000


class DecodeSpans(ProcessFunction):  # type: ignore[misc]
    """Bytes in; per message, one element per (tenant, trace shard) out (its spans). Bad spans and
    unreadable messages go to the dead-letter side output as logs do (one letter per message, every
    bad span listed)."""

    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg

    def open(self, ctx: RuntimeContext) -> None:
        self.writer = open_writer(self.cfg) if self.cfg.index_logs else None
        group = ctx.get_metrics_group()
        self.m_spans = group.counter("spans_in")
        self.m_errors = group.counter("span_decode_errors")

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterator[Any]:
        payload, _, _, _ = row_payload(value)
        decoded = decode_spans(payload, fmt=self.cfg.input_format, latest_time_unix_nano=latest_accepted_ns(self.cfg),
                               max_message_bytes=self.cfg.max_message_bytes)  # fmt: skip
        if decoded.errors:
            self.m_errors.inc(len(decoded.errors))
            yield DEAD_LETTER, dead_letter(self.cfg, self.cfg.spans_topic, value, decoded.errors)
        if not decoded.spans:
            return
        self.m_spans.inc(len(decoded.spans))
        if self.writer is not None:  # span counts and durations per bucket (latency charts)
            self.writer.write_metrics(span_metric_rows(decoded.spans))
            self.writer.flush()
        yield from shard_elements(decoded.spans, _span_shard, _span_start_ms)

    def close(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.flush()
            writer.close()


class TraceTimeline(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by (tenant, trace shard): the request timeline of each trace in the shard -> trace facts
    (one ``FactBatch`` per element); spans held until the watermark passes their end -> span
    timings with self time (side output, one element per operation); log timings passed on to RED
    as they come; each trace expires (``udfs.traces.expired``).

    Stored as traces, a log and chunks of timer lists (layout 3). Each trace is one MapState entry as of the
    shard's last flush; each element and each timer that changed a trace since then is one log entry
    (the element's spans or observations; the timer's time and the traces it stepped), by revision. A
    log of ``LOG_FLUSH_AT`` entries (or ``LOG_FLUSH_BYTES``) is flushed: the traces changed since the
    last flush are written (or removed, when they expired) and the log emptied. So an element writes
    one log entry where it wrote every trace it touched (a trace's spans come in one message per
    service: every span rewrote its trace), and a trace is written at most once per flush (all of
    them in one call). The traces due at a timer's time are MapState entries too, one chunk per
    element that scheduled traces then (``_chunk_key``: appended, never rewritten, which at a live
    system's density rewrote a list of tens of thousands of ids per element); a timer of the shard
    steps every trace due then, exactly as one timer per trace would, and removes its chunks. What
    the timers release goes to RED as partial buckets, one element per operation.

    Decoded traces and the shard's timer lists are cached per shard and trusted while the shard's
    stored revision is the one this instance last wrote (as in the service window); otherwise (a
    restore, a cache bound) the shard's traces are read back (all of them, so a trace not cached is a
    new one and needs no read) and its log replayed onto them, outputs discarded (they left with the
    element or timer that wrote the entry). Layout 1 (no log: every trace written by every element)
    reads with an empty log; the timer lists of layouts 1 and 2 (one entry per time, rewritten by
    every element) are still read when their timer fires."""

    LOG_FLUSH_AT = 256
    """Entries a shard's log holds at most: bounds the replay after a restore. Every call from Python
    into Flink's state costs far more than the pure step it serves once several Python operators
    share a TaskManager's interpreter (each call gives up and retakes its lock), and the flush costs a
    call per changed trace: the longer the log, the more of a trace's life (arrival, release, expiry)
    folds into entries already written, so a short-lived trace may never be written on its own.
    Measured (span bench, 2 TaskManagers): 64 -> 256 entries, with the log emptied in one call, cut
    the timeline's CPU per span by about a quarter."""
    MAX_TRACES = 50_000
    """Decoded traces cached per shard: a bound on memory (a trace is ~1 KiB decoded once its spans
    are released, ~2.7 KiB while they are held: tracemalloc over the span bench's chain). A shard's
    live set is its requests of the last settle and straggler intervals (``udfs.traces.expired``),
    ~20-30 s of them: this holds ~2,000 requests/s per shard (8,000 per tenant) before traces are
    read back one by one as they come."""
    LOG_FLUSH_BYTES = 4 * 1024 * 1024
    """...or this many bytes of entries, whichever comes first: large messages must not grow a log
    without bound (the heap backend copies it into every checkpoint until it is flushed)."""

    def __init__(self, engine_cfg: EngineConfig) -> None:
        self.cfg = engine_cfg.traces
        self.red_cfg = engine_cfg.red

    def open(self, ctx: RuntimeContext) -> None:
        collect_less_often()
        self.traces = _map_state(ctx, "trace-timelines", Types.STRING())  # trace id -> TraceState at the last flush
        self.log = _map_state(ctx, "trace-log", Types.LONG())  # revision -> an element's items since then
        self.due = _map_state(ctx, "trace-timer-chunks", Types.LONG())  # _chunk_key(time, n) -> trace ids due then
        self.due_v2 = _map_state(ctx, "trace-timers", Types.LONG())  # layout 2: event time ms -> trace ids
        self.revision = _value_state(ctx, "trace-shard-revision", Types.LONG())
        self.cache: dict[str, dict[str, traces.TraceState]] = {}  # shard -> trace id -> decoded state
        self.dirty: dict[str, set[str]] = {}  # shard -> traces changed since the last flush (expired: not cached)
        self.complete: set[str] = set()  # shards whose every stored trace is cached
        self.logged: dict[str, list[int]] = {}  # shard -> its log's keys
        self.log_bytes: dict[str, int] = {}  # shard -> its log's bytes
        self.written: dict[str, int] = {}  # shard -> the revision this instance last wrote
        self.scheduled: dict[str, dict[str, int]] = {}  # shard -> trace id -> its time in self.due, as written
        self.due_ids: dict[str, dict[int, list[str]]] = {}  # shard -> time -> trace ids, as in self.due
        self.due_chunks: dict[str, dict[int, int]] = {}  # shard -> time -> its chunks in self.due
        self.timers = PendingTimers()

    def _begin(self, shard: str) -> tuple[int, dict[str, traces.TraceState]]:
        """The shard's stored revision and its traces (read back unless the revision is ours)."""
        rev = self.revision.value() or 0
        cached = self.cache.get(shard)
        if cached is not None and self.written.get(shard) == rev and len(cached) < self.MAX_TRACES:
            return rev, cached
        overflow = False
        if cached is not None and self.written.get(shard) == rev:
            overflow = True
            self._flush(shard, cached)  # the bound: write what only memory holds, then start over
        if len(self.cache) >= MAX_CACHED:  # other shards' changes are in their logs
            memos = (self.cache, self.dirty, self.logged, self.log_bytes, self.scheduled, self.due_ids,
                     self.due_chunks, self.complete)
            for memo in memos:
                memo.clear()
        cached = self.cache[shard] = {}
        self.complete.discard(shard)
        if not overflow:  # (past the bound the shard holds too many to read back: one by one as they come)
            stored = list(self.traces.items())
            if len(stored) < self.MAX_TRACES:
                for trace_id, raw in stored:
                    cached[trace_id] = traces.decode_state(loads(raw))
                self.complete.add(shard)
        self.scheduled[shard] = {}  # what this instance remembers of the shard's timers goes too
        self.due_ids[shard] = {}
        self.due_chunks[shard] = {}
        self.timers.forget(shard)
        self._replay(shard, cached)
        return rev, cached

    def _replay(self, shard: str, cached: dict[str, traces.TraceState]) -> None:
        raw = list(self.log.items())
        entries = sorted((int(k), loads(v)) for k, v in raw)
        self.logged[shard] = [k for k, _ in entries]
        self.log_bytes[shard] = sum(len(v) for _, v in raw)
        self.dirty[shard] = set()
        for _, entry in entries:
            if entry and entry[0] == "t":  # a timer: its time, the traces it stepped
                self._step_due(shard, cached, int(entry[1]), entry[2])
            else:
                self._apply(shard, cached, [_decode_item(x) for x in entry])

    def _apply(self, shard: str, cached: dict[str, traces.TraceState], items: Iterable[Span | TraceObservation]
               ) -> list[TraceFact | SpanTiming]:  # fmt: skip
        emit: list[TraceFact | SpanTiming] = []
        dirty = self.dirty[shard]
        for item in items:
            state = self._load(shard, cached, item.trace_id)
            if state is None:
                state = cached[item.trace_id] = traces.new_state(item.tenant, item.trace_id)
            if isinstance(item, Span):
                emit.extend(traces.fold_span(state, item, self.cfg))
            else:
                emit.extend(traces.fold_observation(state, item, self.cfg))
            dirty.add(item.trace_id)
        return emit

    def _step_due(self, shard: str, cached: dict[str, traces.TraceState], timestamp: int, ids: Iterable[str]
                  ) -> tuple[list[TraceFact | SpanTiming], list[traces.TraceState], list[str]]:  # fmt: skip
        """Step the traces due at ``timestamp``: what they release, the ones kept, the ones stepped."""
        emit: list[TraceFact | SpanTiming] = []
        kept: list[traces.TraceState] = []
        stepped: list[str] = []
        dirty = self.dirty[shard]
        for trace_id in ids:
            state = self._load(shard, cached, trace_id)
            if state is None:
                continue
            step = traces.on_timer(state, timestamp, self.cfg)
            if traces.expired(step.state, timestamp, self.cfg):  # eviction rule (udfs.traces.expired)
                del cached[trace_id]
                dirty.add(trace_id)  # removed at the flush
                stepped.append(trace_id)
            else:
                if step.emit:
                    dirty.add(trace_id)
                    stepped.append(trace_id)
                kept.append(step.state)
            emit.extend(step.emit)
        return emit, kept, stepped

    def _flush(self, shard: str, cached: dict[str, traces.TraceState]) -> None:
        """Write the traces changed since the last flush in one call (remove the expired ones, a call
        each: Flink has no bulk remove); empty the log."""
        changed: dict[str, str] = {}
        for trace_id in self.dirty.get(shard, ()):
            state = cached.get(trace_id)
            if state is None:
                self.traces.remove(trace_id)
            else:
                changed[trace_id] = dumps(traces.encode_state(state))
        if changed:
            self.traces.put_all(changed)
        if self.logged.get(shard):
            self.log.clear()  # the current key is the shard: one call, not one per entry
        self.dirty[shard] = set()
        self.logged[shard] = []
        self.log_bytes[shard] = 0

    def _commit(self, shard: str, rev: int) -> None:
        self.revision.update(rev + 1)
        if len(self.written) >= MAX_CACHED:
            self.written.clear()
        self.written[shard] = rev + 1

    def _load(self, shard: str, cached: dict[str, traces.TraceState], trace_id: str) -> traces.TraceState | None:
        state = cached.get(trace_id)
        if state is None and shard not in self.complete and trace_id not in self.dirty[shard]:  # dirty: expired
            raw = self.traces.get(trace_id)
            if raw is not None:
                state = cached[trace_id] = traces.decode_state(loads(raw))
        return state

    def _schedule(self, shard: str, states: Iterable[traces.TraceState], ctx: Any) -> None:
        """Put each trace under its next timer's time (unless it is there already) and make sure the
        shard has that timer."""
        due: dict[int, list[str]] = {}
        scheduled = self.scheduled.setdefault(shard, {})
        for state in states:
            at_ms = traces.next_timer(state, self.cfg)
            if scheduled.get(state.trace_id) != at_ms:
                due.setdefault(at_ms, []).append(state.trace_id)
                scheduled[state.trace_id] = at_ms
        known = self.due_ids.setdefault(shard, {})
        chunks = self.due_chunks.setdefault(shard, {})
        for at_ms, ids in due.items():
            if at_ms not in known:  # not written by this instance since the shard's state was last read
                known[at_ms] = self._read_due(shard, at_ms)
            known[at_ms].extend(ids)
            self.due.put(_chunk_key(at_ms, chunks[at_ms]), dumps(ids))
            chunks[at_ms] += 1
            self.timers.register(ctx, shard, at_ms)

    def _read_due(self, shard: str, at_ms: int) -> list[str]:
        """The trace ids stored under ``at_ms`` (its chunks, read until the first missing one)."""
        ids: list[str] = []
        n = 0
        while (raw := self.due.get(_chunk_key(at_ms, n))) is not None:
            ids.extend(loads(raw))
            n += 1
        self.due_chunks.setdefault(shard, {})[at_ms] = n
        return ids

    def process_element(self, items: tuple[Any, ...], ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        if not items:  # a decoder's tick (jobs.operators.TICK_KEY): it only moves the watermark
            return
        if isinstance(items[0], SpanTiming):  # log timings: to RED as they come (udfs.engine does the same)
            yield from route(items, self.red_cfg)
            return
        shard = shard_key(items[0].tenant, items[0].trace_id)  # the element's key (shard_elements), not asked of Flink
        rev, cached = self._begin(shard)
        emit = self._apply(shard, cached, items)
        self._log(shard, cached, rev, [_encode_item(x) for x in items])
        self._commit(shard, rev)
        self._schedule(shard, [cached[trace_id] for trace_id in dict.fromkeys(x.trace_id for x in items)], ctx)
        yield from route(emit, self.red_cfg)

    def _log(self, shard: str, cached: dict[str, traces.TraceState], rev: int, entry: list[Any]) -> None:
        raw = dumps(entry)
        self.log.put(rev + 1, raw)
        self.logged[shard].append(rev + 1)
        self.log_bytes[shard] = self.log_bytes.get(shard, 0) + len(raw)
        if len(self.logged[shard]) >= self.LOG_FLUSH_AT or self.log_bytes[shard] >= self.LOG_FLUSH_BYTES:
            self._flush(shard, cached)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        shard = ctx.get_current_key()
        self.timers.fired(shard, timestamp)
        rev, cached = self._begin(shard)
        ids = self.due_ids[shard].pop(timestamp, None)
        if ids is None:
            ids = self._read_due(shard, timestamp)
        for n in range(self.due_chunks[shard].pop(timestamp, 0)):
            self.due.remove(_chunk_key(timestamp, n))
        legacy = self.due_v2.get(timestamp)
        if legacy is not None:
            ids = [*ids, *loads(legacy)]
            self.due_v2.remove(timestamp)
        if not ids:
            return
        ids = list(dict.fromkeys(ids))
        scheduled = self.scheduled[shard]
        for trace_id in ids:
            if scheduled.get(trace_id) == timestamp:
                del scheduled[trace_id]
        emit, kept, stepped = self._step_due(shard, cached, timestamp, ids)
        for trace_id in stepped:
            if trace_id not in cached:
                scheduled.pop(trace_id, None)
        if stepped:
            self._log(shard, cached, rev, ["t", timestamp, stepped])
        if not cached and self.logged[shard]:  # the shard's last trace expired: nothing left behind
            self._flush(shard, cached)
        self._commit(shard, rev)
        self._schedule(shard, kept, ctx)
        yield from route(emit, self.red_cfg)


CHUNKS_PER_TIME = 1 << 20
"""Chunk numbers per timer time in ``_chunk_key``: a shard would need a million elements scheduling
traces at one time (100,000 a second with 10 s settle intervals) to run out; event times stay below
2**43 ms (the year 2248) for the key to fit a LONG, far past what the decoders accept."""


def _chunk_key(at_ms: int, n: int) -> int:
    """The timeline's MapState key of the ``n``-th chunk of trace ids due at ``at_ms``."""
    return at_ms * CHUNKS_PER_TIME + n


def _encode_item(item: Span | TraceObservation) -> list[Any]:
    """A span or observation in the timeline's log: what the trace step reads (not a span's status
    message)."""
    if isinstance(item, Span):
        return ["s", *item[:9], int(item.status)]
    return ["o", *item]


def _decode_item(v: list[Any]) -> Span | TraceObservation:
    if v[0] == "s":
        return Span._make([*v[1:10], SpanStatus(v[10]), ""])
    return TraceObservation(*v[1:])


def route(items: Iterable[TraceFact | SpanTiming], cfg: red.RedConfig) -> Iterator[Any]:
    """Trace facts to the correlator (main output, one batch); span timings to their RED state as
    partial buckets (side output, one element per (tenant, service, operation): its partial buckets,
    ``red.partials``). Every element between two Python operators is pickled and handed through
    Java; an operation's spans of one timer fill one or two buckets, so this sends a few summaries
    where it sent every span."""
    facts: list[TraceFact] = []
    timings: list[SpanTiming] = []
    for item in items:
        if isinstance(item, TraceFact):
            facts.append(item)
        else:
            timings.append(item)
    if facts:
        yield FactBatch(facts[0].tenant, tuple(facts))
    if timings:
        for key, parts in red.partials(timings, cfg).items():
            yield SPAN_TIMINGS, Row(red_key(key), (key, tuple(parts)))


def red_key(names: tuple[str, str, str]) -> str:
    """The job's key of a (tenant, service, operation)."""
    return "\x1f".join(names)


class SpanRed(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by (tenant, service, operation): RED buckets from span timings; event-time timers close
    them (latency / span-error anomalies) and evict the key after its TTL.

    Stored like the service window: each open bucket one MapState entry (an element rewrites only
    the buckets it touched), the core (recent window, baseline, episodes) written at bucket close,
    and with every change a small clock ``[revision, last_ms, late_spans]``: an element moves the
    last span's time and may count a late span, which the core would otherwise hold only in the
    cache until the next close. Decoded state cached while the revision is ours. Layout 2: the clock
    replaces the LONG ``red-revision`` of layout 1, which is still read (its core's clock then)."""

    def __init__(self, engine_cfg: EngineConfig) -> None:
        self.cfg = engine_cfg.red

    def open(self, ctx: RuntimeContext) -> None:
        self.core = _value_state(ctx, "red-core")
        self.buckets = _map_state(ctx, "red-open-buckets", Types.LONG())  # bucket start ms -> bucket
        self.clock = _value_state(ctx, "red-clock")  # [revision, last_ms, late_spans]
        self.revision = _value_state(ctx, "red-revision", Types.LONG())  # layout 1: read, then cleared
        self.cache: dict[str, tuple[int, red.RedState]] = {}
        self.timers = PendingTimers()
        group = ctx.get_metrics_group()
        self.m_spans = group.counter("spans_counted")
        self.m_late = group.counter("late_spans")
        self.m_anomalies = group.counter("anomalies_spans")
        self.uncounted = 0  # spans counted here, not yet added to m_spans

    def _load(self, key: str, names: tuple[str, str, str] | None) -> tuple[int, red.RedState | None]:
        raw = self.clock.value()
        clock = loads(raw) if raw is not None else None
        rev = clock[0] if clock is not None else self.revision.value()
        if clock is None and rev is not None:
            self.revision.clear()  # layout 1: the next save writes the clock
        if rev is None:
            return 0, red.new_state(*names) if names is not None else None
        cached = self.cache.get(key)
        if cached is not None and cached[0] == rev:
            return cached
        self.timers.forget(key)  # not what this instance wrote: neither are its timers
        core = self.core.value()
        if core is None:
            return rev, red.new_state(*names) if names is not None else None
        state = red.decode_parts(loads(core), {int(k): loads(v) for k, v in self.buckets.items()})
        if clock is not None:  # newer than the core's own clock
            state.last_ms, state.late_spans = int(clock[1]), int(clock[2])
        return rev, state

    def _save(self, key: str, rev: int, state: red.RedState, core: bool) -> None:
        if core or rev == 0:
            self.core.update(dumps(red.encode_core(state)))
        self.clock.update(dumps([rev + 1, state.last_ms, state.late_spans]))
        if len(self.cache) >= MAX_CACHED:
            self.cache.clear()
        self.cache[key] = (rev + 1, state)

    METRIC_EVERY = 1_000
    """Spans counted between updates of the spans_counted metric (a call into Java each): a metric
    that lags by a fraction of a second of traffic, instead of a call per element."""

    def process_element(self, value: tuple[tuple[str, str, str], tuple[red.WireBucket, ...]],
                        ctx: KeyedProcessFunction.Context) -> Iterator[Any]:  # fmt: skip
        names, parts = value
        key = red_key(names)  # the element's key (route), without asking Flink for it
        rev, state = self._load(key, names)
        assert state is not None
        late = state.late_spans
        for part in parts:
            self.uncounted += red.add_partial(state, part)
        if self.uncounted >= self.METRIC_EVERY:
            self.m_spans.inc(self.uncounted)
            self.uncounted = 0
        if state.late_spans > late:
            self.m_late.inc(state.late_spans - late)
        for part in parts:
            start = part[0]
            if start in state.open:  # a late span's bucket is closed (and not open)
                self.buckets.put(start, dumps(red.encode_bucket(state.open[start])))
        self._save(key, rev, state, core=False)
        self.timers.register(ctx, key, red.next_timer(state, self.cfg))
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        key = ctx.get_current_key()
        self.timers.fired(key, timestamp)
        if self.uncounted:
            self.m_spans.inc(self.uncounted)
            self.uncounted = 0
        rev, state = self._load(key, None)
        if state is None:
            return
        before = list(state.open)
        step = red.on_timer(state, timestamp, self.cfg)
        if red.expired(state, timestamp, self.cfg):  # eviction rule: TTL after the operation's last span
            self.core.clear()
            self.buckets.clear()
            self.clock.clear()
            self.revision.clear()
            self.cache.pop(key, None)
            self.timers.forget(key)
        else:
            for start in before:
                if start not in state.open:
                    self.buckets.remove(start)
            self._save(key, rev, state, core=len(before) != len(state.open))
            self.timers.register(ctx, key, step.timer_at_ms)
        self.m_anomalies.inc(len(step.emit))
        yield from step.emit
