"""What the Flink adapter stores of a service window is the whole state, after every step.

The job's ServiceWindow keeps the decoded state in a per-key cache and writes to Flink only the parts a
step says it changed (``Step.dirty``, ``Step.touched``, the buckets a close removed). The cache hides a
part that changed but was not written until a restore (or a cache clear) reads the state back: the job
then diverges from the engine only after a failure. This test mirrors those writes beside the pure
engine and reads the mirror back after every step, with messages out of event-time order (the case that
moves a discovery out of a later open bucket).
"""

from __future__ import annotations

from typing import Any

import pytest

from udfs import window, window_state
from udfs.batch import summarize
from udfs.engine import Engine, EngineConfig
from udfs.records import Level, LogRecord
from udfs.scenarios.library import build


class StoredParts:
    """The adapter's writes (jobs.operators.ServiceWindow._save), keyed like its Flink state."""

    def __init__(self) -> None:
        self.core: dict[tuple[str, str], Any] = {}
        self.templates: dict[tuple[str, str], Any] = {}
        self.memory: dict[tuple[str, str], Any] = {}
        self.buckets: dict[tuple[str, str], dict[str, Any]] = {}
        self.checked = 0

    def write(self, step: window.Step, first: bool, closed: list[int]) -> None:
        state = step.state
        key = (state.tenant, state.service)
        if "core" in step.dirty or first:
            self.core[key] = window_state.encode_part(state, "core")
        if "memory" in step.dirty or first:
            self.memory[key] = window_state.encode_part(state, "memory")
        if "templates" in step.dirty:
            self.templates[key] = window_state.encode_part(state, "templates")
        stored = self.buckets.setdefault(key, {})
        for start in step.touched:
            if start in state.open:
                stored[str(start)] = window_state.encode_bucket(state.open[start])
        for start in closed:
            stored.pop(str(start), None)
        read_back = window_state.decode_parts(self.core[key], stored, self.templates.get(key), self.memory[key])
        assert window_state.encode_state(read_back) == window_state.encode_state(state), key
        self.checked += 1


def _mirrored(monkeypatch: pytest.MonkeyPatch) -> StoredParts:
    parts = StoredParts()
    on_batch, on_timer = window.on_batch, window.on_timer

    def batch(state: window_state.ServiceState, *args: Any) -> window.Step:
        first = (state.tenant, state.service) not in parts.core
        step = on_batch(state, *args)
        parts.write(step, first, closed=[])
        return step

    def timer(state: window_state.ServiceState, *args: Any) -> window.Step:
        before = list(state.open)
        step = on_timer(state, *args)
        if step.dirty:
            parts.write(step, False, closed=[s for s in before if s not in step.state.open])
        return step

    monkeypatch.setattr(window, "on_batch", batch)
    monkeypatch.setattr(window, "on_timer", timer)
    return parts


def _swapped_messages(records: list[LogRecord], slice_ms: int = 1_500) -> list[list[LogRecord]]:
    """Messages of ``slice_ms`` of event time, each pair sent later-first: records of a bucket turn
    up after records of the next one (within the out-of-orderness bound, so none is late)."""
    slices: dict[int, list[LogRecord]] = {}
    for r in sorted(records, key=lambda r: r.time_unix_nano):
        slices.setdefault(r.time_unix_nano // 1_000_000 // slice_ms, []).append(r)
    ordered = [slices[k] for k in sorted(slices)]
    for i in range(0, len(ordered) - 1, 2):
        ordered[i], ordered[i + 1] = ordered[i + 1], ordered[i]
    return ordered


@pytest.mark.parametrize("name", ["cascade", "quiet_single_error", "two_tenants"])
def test_what_the_adapter_writes_reads_back_as_the_state_after_every_step(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _mirrored(monkeypatch)
    eng = Engine(EngineConfig())
    for message in _swapped_messages(list(build(name, scale=0.25).records)):
        eng.feed(message)
    eng.finish()
    assert parts.checked > 50


def test_an_earlier_record_that_moves_a_discovery_out_of_a_later_bucket_names_that_bucket() -> None:
    cfg = EngineConfig()
    eng = Engine(cfg)
    error = next(r for r in build("quiet_single_error", scale=0.25).records if r.level >= Level.ERROR)
    t0 = error.time_unix_nano // 1_000_000 // 60_000 * 60_000 + 60_000

    def at(ms: int) -> LogRecord:
        return error._replace(time_unix_nano=ms * 1_000_000, observed_time_unix_nano=ms * 1_000_000)

    eng.feed([at(t0 + 25_000)])
    state = eng.services[(error.tenant, error.service)]
    (batch,) = summarize([at(t0 + 12_000)], eng.matcher, bucket_ms=cfg.window.bucket_ms).batches
    step = window.on_batch(state, batch, cfg.window, eng.watermark_ms)
    assert step.touched == {t0 + 10_000, t0 + 20_000}
    assert state.open[t0 + 20_000].discoveries == 0 and state.open[t0 + 10_000].discoveries == 1
