"""Flink operators: thin adapters that read keyed state, call one pure step, write state back,
register the step's timer and yield its outputs. Business decisions live in ``udfs``.

State is stored as JSON strings written by the steps' versioned codecs (never pickle), with a
processing-time TTL as a safety net; the real eviction rules are event-time timers in the steps.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

import orjson
from pyflink.common import Duration, Row, Time, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig, ValueStateDescriptor

from connectors.flink_sources import row_payload
from connectors.logstore import metric_rows
from connectors.otlp import build_dead_letter, decode_logs, latest_event_time_unix_nano
from jobs.config import JobConfig
from jobs.event_time import KEYED_TIMED
from jobs.key_groups import spread_keys
from jobs.sinks import DeadLetterSink as DeadLetterSink  # where it was before jobs/sinks.py
from jobs.sinks import SinkMetrics, open_writer
from udfs import correlate, log_timings, tenant_state, window, window_state
from udfs.anomaly import ServiceAnomaly, SpanTiming, TraceFact, TraceObservation
from udfs.batch import WireBatch, from_wire, summarize, to_wire
from udfs.engine import EngineConfig
from udfs.signals import SignalMatcher

DEAD_LETTER = OutputTag("dead-letter", Types.STRING())
# Keyed by (tenant, trace shard): tuples of TraceObservation, or of SpanTiming (log records that state a duration,
# passed on to RED by the trace timeline, so RED's watermark stays the timeline's)
TRACE_OBSERVATIONS = OutputTag("trace-observations", KEYED_TIMED)
TICK_KEY = "\x1ftick"
"""Key of the empty element a message with no trace observation sends on that stream, timed like its
logs: the stream's watermark then moves with the logs' (as the engine's single watermark does) instead
of waiting for its idleness while no request fails, which held the correlator's watermark, and so
every windowed incident, up to that long (24 s lag after bucket close measured in job_bench)."""
PROGRESS = OutputTag("progress", Types.STRING())

# Background cleanup named explicitly, defaults off: PyFlink 2.3 builds its default RocksDB compaction-filter
# strategy with Duration.of_days(30), which needs a Py4J gateway that a standalone TaskManager's thread-mode
# interpreter does not have (FileNotFoundError launching one; the MiniCluster hides it). PyFlink 2.3 never
# sends the periodic compaction time to Java (only query_time_after_num_entries): a placeholder is enough.
STATE_TTL = (
    StateTtlConfig.new_builder(Time.days(7))
    .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
    .disable_cleanup_in_background()
    .cleanup_incrementally(5, False)
    .cleanup_in_rocksdb_compact_filter(1000, Duration(None))
    .build()
)


def _value_state(ctx: RuntimeContext, name: str, value_type: Any = None) -> Any:
    desc = ValueStateDescriptor(name, value_type or Types.STRING())
    desc.enable_time_to_live(STATE_TTL)
    return ctx.get_state(desc)


def _map_state(ctx: RuntimeContext, name: str, key_type: Any) -> Any:
    desc = MapStateDescriptor(name, key_type, Types.STRING())
    desc.enable_time_to_live(STATE_TTL)
    return ctx.get_map_state(desc)


def dumps(obj: Any) -> str:
    """State codec output as a compact JSON string (orjson: the stdlib encoder cost more than the
    steps themselves at every bucket close).

    orjson stores integers in int64/uint64 only. The decoder lets no larger one through, but state
    that cannot be written fails the job and every restart meets it again (a crash loop for every
    tenant), so an integer out of range is clamped to the nearest storable value instead."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:  # orjson.JSONEncodeError: "Integer exceeds 64-bit range"
        return orjson.dumps(_clamped(obj)).decode()


def _clamped(obj: Any) -> Any:
    if isinstance(obj, int) and not isinstance(obj, bool):
        return min(max(obj, _INT64_MIN), _UINT64_MAX)
    if isinstance(obj, dict):
        return {k: _clamped(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clamped(v) for v in obj]
    return obj


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


loads = orjson.loads


MAX_CACHED = 10_000
"""Decoded states and pending timers kept per instance: a bound on memory (a few KiB per key), not a
tuning; past it the cache starts over and states are read back from Flink."""


class PendingTimers:
    """The event-time timers this instance registered per key that have not fired yet. Registering
    one of them again is a call into Flink that Flink would ignore, so it is skipped. A fresh
    instance (after a restore) knows none and registers again, which is always safe."""

    def __init__(self) -> None:
        self.pending: dict[str, set[int]] = {}

    def register(self, ctx: Any, key: str, at_ms: int) -> None:
        seen = self.pending.get(key)
        if seen is None:
            if len(self.pending) >= MAX_CACHED:
                self.pending.clear()
            seen = self.pending[key] = set()
        if at_ms not in seen:
            seen.add(at_ms)
            ctx.timer_service().register_event_time_timer(at_ms)

    def fired(self, key: str, at_ms: int) -> None:
        """Call first thing in ``on_timer``: Flink has dropped the timer."""
        seen = self.pending.get(key)
        if seen is not None:
            seen.discard(at_ms)

    def forget(self, key: str) -> None:
        self.pending.pop(key, None)


class DecodeAndSummarize(ProcessFunction):  # type: ignore[misc]
    """Bytes in; per (tenant, service) summaries out. Undecodable input goes to the dead-letter side
    output with the original bytes and the reason; raw logs are indexed here, once per message."""

    def __init__(self, cfg: JobConfig, engine_cfg: EngineConfig, progress_every: int = 0) -> None:
        self.cfg = cfg
        self.engine_cfg = engine_cfg
        self.progress_every = progress_every

    def open(self, ctx: RuntimeContext) -> None:
        self.matcher = SignalMatcher()
        self.writer = open_writer(self.cfg) if self.cfg.index_logs else None
        self.sink_metrics = SinkMetrics(ctx, self.writer)
        group = ctx.get_metrics_group()
        self.m_records = group.counter("records_in")
        self.m_messages = group.counter("messages_in")
        self.m_errors = group.counter("decode_errors")
        self.m_indexed = group.counter("logs_indexed")
        self.messages = 0
        self.records = 0
        # Not ctx.get_index_of_this_subtask(): in thread mode PyFlink 2.3 calls a Java method Flink 2.x
        # removed. Progress only needs a distinct token per parallel instance.
        self.subtask = uuid.uuid4().hex

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterator[Any]:
        payload, _, _, ts_ms = row_payload(value)
        decoded = decode_logs(
            payload,
            fmt=self.cfg.input_format,
            max_body_bytes=self.cfg.max_body_bytes,
            default_time_unix_nano=ts_ms * 1_000_000,
            latest_time_unix_nano=latest_accepted_ns(self.cfg),
            max_message_bytes=self.cfg.max_message_bytes,
        )
        self.messages += 1
        self.m_messages.inc()
        if decoded.errors:
            self.m_errors.inc(len(decoded.errors))
            yield DEAD_LETTER, dead_letter(self.cfg, self.cfg.logs_topic, value, decoded.errors)
        records = decoded.records
        if records:
            self.records += len(records)
            self.m_records.inc(len(records))
            summary = summarize(
                records,
                self.matcher,
                bucket_ms=self.engine_cfg.window.bucket_ms,
                max_notables=self.cfg.max_notables,
                trace_sample=self.cfg.trace_sample,
            )
            if self.writer is not None:
                # Logs and the message's per-bucket counts (the console's charts) in one write, flushed
                # per message (one bulk request / one transaction): PyFlink has no checkpoint hook, so
                # nothing may sit in a buffer that the checkpoint already counts as done.
                self.m_indexed.inc(self.writer.write_logs(records, metric_rows(summary.batches)))
                self.writer.flush()
                self.sink_metrics.sync()
            for batch in summary.batches:  # keyed and timed here: see jobs.event_time; plain tuples: to_wire
                yield Row(f"{batch.tenant}\x1f{batch.service}", to_wire(batch)), batch.max_time_ms
            observed = False
            for element in shard_elements(summary.traces, _obs_shard, _obs_time):
                observed = True
                yield TRACE_OBSERVATIONS, element
            for element in shard_elements(log_timings.timings_of(records), _timing_shard, _timing_time):
                observed = True
                yield TRACE_OBSERVATIONS, element
            if not observed and summary.batches:
                yield TRACE_OBSERVATIONS, (Row(TICK_KEY, ()), max(b.max_time_ms for b in summary.batches))
        if self.progress_every and self.messages % self.progress_every == 0:
            yield PROGRESS, json.dumps({"subtask": self.subtask, "messages": self.messages, "records": self.records})

    def close(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.flush()
            writer.close()


TRACE_SHARDS = 4
"""Keys per tenant of the trace timeline (crc32 of the trace id): a message's spans and a timer's
released spans reach a few keys in bulk, not one key per trace. Each key costs an element per
message, a timer per settle interval and a RED element per operation at each timer, and every one of
those crosses between Python and Java, which is dear when several Python operators share a
TaskManager's interpreter (a state call: ~1.2-2.2 µs of CPU alone, 3.8-8.3 µs beside one other busy
Python thread: tests.bench.state_call_bench). So as few keys as still spread one tenant evenly
(jobs.key_groups) over the parallel instances the job runs with: 4 covers parallelism 1, 2
(deploy/) and 4; more instances than that serve more tenants, not more of one tenant's traces.
16 -> 4 halved the RED stage's CPU in the span bench (2 TaskManagers)."""

_T = TypeVar("_T")


@functools.lru_cache(maxsize=4096)
def _shard_keys(tenant: str) -> tuple[str, ...]:
    return spread_keys(f"{tenant}\x1f", TRACE_SHARDS)


def shard_key(tenant: str, token: str) -> str:
    return _shard_keys(tenant)[zlib.crc32(token.encode()) % TRACE_SHARDS]


def shard_elements(items: Iterable[_T], key_of: Callable[[_T], str], time_of: Callable[[_T], int]
                   ) -> Iterator[tuple[Row, int]]:  # fmt: skip
    """One keyed, timed element per trace shard: its items in order, timed by the latest of them (the
    watermark moves as far as it would item by item)."""
    groups: dict[str, list[_T]] = {}
    for item in items:
        groups.setdefault(key_of(item), []).append(item)
    for key, group in groups.items():
        yield Row(key, tuple(group)), max(time_of(x) for x in group)


def _obs_shard(obs: TraceObservation) -> str:
    return shard_key(obs.tenant, obs.trace_id)


def _obs_time(obs: TraceObservation) -> int:
    return obs.first_ms


def _timing_shard(t: SpanTiming) -> str:
    return shard_key(t.tenant, t.service)


def _timing_time(t: SpanTiming) -> int:
    return t.end_ms


def latest_accepted_ns(cfg: JobConfig) -> int:
    """The latest event time (ns) a record may carry when it is decoded now: receive time plus the
    configured skew. Receive time is this operator's clock, not the Kafka timestamp: `logclaw ingest`
    stamps messages with its receive time, but other producers (a Collector's kafka exporter,
    `logclaw simulate`) may stamp event time; on a backlog the clock is only later, never earlier."""
    return latest_event_time_unix_nano(int(time.time() * 1000), max_future_skew_ms=cfg.max_future_skew_ms)


def dead_letter(cfg: JobConfig, topic: str, value: Any, errors: Any) -> str:
    """The dead letter for one input message (a Kafka row or a file line), bounded in size."""
    payload, partition, offset, ts_ms = row_payload(value)
    return build_dead_letter(topic=topic if partition >= 0 else "file", partition=partition, offset=offset,
                             timestamp_ms=ts_ms, errors=errors, payload=payload, max_bytes=cfg.max_message_bytes)


class ServiceWindow(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by (tenant, service): buckets, baseline, immediate path; event-time timers close buckets.

    Stored so that a message writes only what it changed: each open bucket is one MapState entry
    (a message touches one or two; a bucket close removes one), the core (history, episode,
    counters) is written at bucket close, the template miner when notable records arrive, and a
    revision number with every change. The decoded state is cached per key and trusted while the
    stored revision is the one this instance last wrote, so the common path decodes nothing; after
    a restore or a state expiry the revision differs and the state is read back from Flink.
    """


    def __init__(self, engine_cfg: EngineConfig) -> None:
        self.cfg = engine_cfg.window

    def open(self, ctx: RuntimeContext) -> None:
        self.core = _value_state(ctx, "service-core")
        self.templates = _value_state(ctx, "service-templates")
        self.memory = _value_state(ctx, "service-memory")  # the template history (schema 4; inside the core before)
        self.buckets = _map_state(ctx, "service-open-buckets", Types.LONG())  # bucket start ms -> bucket
        self.revision = _value_state(ctx, "service-revision", Types.LONG())
        self.cache: dict[str, tuple[int, window_state.ServiceState]] = {}
        self.timers = PendingTimers()
        group = ctx.get_metrics_group()
        self.m_late = group.counter("late_records")
        self.m_immediate = group.counter("anomalies_immediate")
        self.m_windowed = group.counter("anomalies_windowed")

    def _load(self, key: str, tenant: str, service: str) -> tuple[int, window_state.ServiceState | None]:
        rev = self.revision.value()
        if rev is None:
            return 0, window_state.new_state(tenant, service) if tenant else None
        cached = self.cache.get(key)
        if cached is not None and cached[0] == rev:
            return cached
        self.timers.forget(key)  # not what this instance wrote: neither are its timers
        core = self.core.value()
        if core is None:  # expired by TTL apart from the revision: start over
            return rev, window_state.new_state(tenant, service) if tenant else None
        tpl = self.templates.value()
        memory = self.memory.value()
        buckets = {str(start): loads(raw) for start, raw in self.buckets.items()}
        return rev, window_state.decode_parts(
            loads(core), buckets, loads(tpl) if tpl is not None else None, loads(memory) if memory is not None else None
        )

    def _save(self, key: str, rev: int, step: window.Step, late_before: int, touched: Iterable[int],
              closed: Iterable[int]) -> None:  # fmt: skip
        state = step.state
        if state.late_records > late_before:
            self.m_late.inc(state.late_records - late_before)
        if "core" in step.dirty or rev == 0:
            self.core.update(dumps(window_state.encode_part(state, "core")))
        if "memory" in step.dirty or rev == 0:
            self.memory.update(dumps(window_state.encode_part(state, "memory")))
        if "templates" in step.dirty:
            self.templates.update(dumps(window_state.encode_part(state, "templates")))
        for start in touched:
            bucket = state.open.get(start)
            if bucket is not None:
                self.buckets.put(start, dumps(window_state.encode_bucket(bucket)))
        for start in closed:
            self.buckets.remove(start)
        self.revision.update(rev + 1)
        if len(self.cache) >= MAX_CACHED:
            self.cache.clear()
        self.cache[key] = (rev + 1, state)

    def _emit(self, step: window.Step, ctx: Any, key: str) -> Iterator[Any]:
        if step.timer_at_ms is not None:
            self.timers.register(ctx, key, step.timer_at_ms)
        for item in step.emit:
            if isinstance(item, ServiceAnomaly) and item.path in ("immediate", "windowed"):  # not hellos, reports
                (self.m_immediate if item.path == "immediate" else self.m_windowed).inc()
            yield item

    def process_element(self, wire: WireBatch, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        batch = from_wire(wire)
        key = ctx.get_current_key()
        rev, state = self._load(key, batch.tenant, batch.service)
        assert state is not None
        late = state.late_records
        step = window.on_batch(state, batch, self.cfg, ctx.timer_service().current_watermark())
        self._save(key, rev, step, late, touched=step.touched, closed=())
        yield from self._emit(step, ctx, key)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        key = ctx.get_current_key()
        self.timers.fired(key, timestamp)
        rev, state = self._load(key, "", "")
        if state is None:
            return
        before = list(state.open)
        # Close everything the watermark has passed, not just this timer's bucket: when a backlog moves
        # the watermark many buckets at once, one call closes them all (in order, as separate timers would).
        step = window.on_timer(state, self.cfg, max(timestamp, ctx.timer_service().current_watermark()))
        if step.dirty:
            closed = [start for start in before if start not in step.state.open]
            self._save(key, rev, step, step.state.late_records, touched=(), closed=closed)
        yield from self._emit(step, ctx, key)


class FactBatch(NamedTuple):
    """The trace facts of one trace timeline step, as one element to the tenant's correlator."""

    tenant: str
    facts: tuple[TraceFact, ...]


class Correlate(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by tenant: grouping, cooldown, life cycle, root cause. Emits contract events as JSON."""

    def __init__(self, engine_cfg: EngineConfig) -> None:
        self.cfg = engine_cfg.correlate

    def open(self, ctx: RuntimeContext) -> None:
        self.state = _value_state(ctx, "tenant-incidents")
        pending = MapStateDescriptor("tenant-pending", Types.LONG(), Types.STRING())
        pending.enable_time_to_live(STATE_TTL)
        self.pending = ctx.get_map_state(pending)  # event time ms -> JSON list of buffered items
        group = ctx.get_metrics_group()
        self.m = {
            "opened_immediate": group.counter("incidents_opened_immediate"),
            "opened_windowed": group.counter("incidents_opened_windowed"),
            "updated": group.counter("incidents_updated"),
            "resolved": group.counter("incidents_resolved"),
        }

    def _load(self, tenant: str) -> tenant_state.TenantState:
        raw = self.state.value()
        return tenant_state.decode_state(loads(raw)) if raw else tenant_state.new_state(tenant)

    def _finish(self, step: correlate.Step, ctx: Any) -> Iterator[str]:
        self.state.update(dumps(tenant_state.encode_state(step.state)))
        if step.timer_at_ms is not None:
            ctx.timer_service().register_event_time_timer(step.timer_at_ms)
        for event in step.emit:
            kind = event["event"]
            self.m[f"opened_{event['path']}" if kind == "opened" else kind].inc()
            yield json.dumps(event, sort_keys=True)

    def process_element(self, item: Any, ctx: KeyedProcessFunction.Context) -> Iterator[str]:
        if isinstance(item, ServiceAnomaly) and item.path == "immediate":
            step = correlate.on_anomaly(self._load(item.tenant), item, self.cfg)  # at once: the < 1 s path
            yield from self._finish(step, ctx)
            return
        # Everything else waits for the watermark and is applied in event-time order (see
        # correlate.enqueue); kept by event time so an append never rewrites the tenant's state.
        due: dict[int, list[Any]] = {}
        for one in item.facts if isinstance(item, FactBatch) else (item,):
            due.setdefault(one.at_ms, []).append(tenant_state.encode_pending(one))
        for at_ms, encoded in due.items():
            raw = self.pending.get(at_ms)
            self.pending.put(at_ms, dumps(_compact([*loads(raw), *encoded] if raw else encoded)))
            ctx.timer_service().register_event_time_timer(at_ms)
        if self.state.value() is None:
            self.state.update(dumps(tenant_state.encode_state(tenant_state.new_state(item.tenant))))

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[str]:
        if self.state.value() is None:
            return
        raw = self.pending.get(timestamp)
        due = [tenant_state.decode_pending(v) for v in _expanded(loads(raw))] if raw else []
        if raw:
            self.pending.remove(timestamp)
        yield from self._finish(correlate.on_timer(self._load(""), timestamp, self.cfg, due=due), ctx)


_CALLS = "calls"
"""Pending layout 2: ``["calls", n, *fact]`` stands for ``n`` span call facts alike but for their trace
ids (dated at a settle boundary, a tenant's calls of a whole interval share a time). A call fact's
trace id decides nothing (correlate.on_fact counts the edge; ties in event-time order change no
count), so the n facts are applied as n copies of the first. Layout 1 (a fact per entry) still reads."""


def _compact(encoded: list[Any]) -> list[Any]:
    out: list[Any] = []
    calls: dict[tuple[Any, ...], list[Any]] = {}
    for v in encoded:
        if v[0] == _CALLS or (v[0] == "fact" and v[3] == "call"):
            n, fact = (v[1], v[2:]) if v[0] == _CALLS else (1, v[1:])
            key = (fact[0], fact[2], fact[3], fact[4], fact[5])  # tenant, kind, a, b, at_ms
            row = calls.get(key)
            if row is None:
                row = calls[key] = [_CALLS, 0, *fact]
                out.append(row)
            row[1] += n
        else:
            out.append(v)
    return out


def _expanded(encoded: list[Any]) -> Iterator[list[Any]]:
    for v in encoded:
        if v[0] == _CALLS:
            for _ in range(int(v[1])):
                yield ["fact", *v[2:]]
        else:
            yield v
