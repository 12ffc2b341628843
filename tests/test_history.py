"""The template history and its surprise estimator (udfs.history): pure, no JVM."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs import history
from udfs.history import HALF_LIFE_MS, TemplateHistory

BUCKET_MS = 10_000


def clean(buckets: int) -> TemplateHistory:
    h = TemplateHistory()
    for i in range(buckets):
        history.observe(h, False, (i + 1) * BUCKET_MS, BUCKET_MS)
    return h


def test_a_short_history_gives_little_credit_and_a_long_clean_one_a_lot() -> None:
    assert history.surprise(TemplateHistory()) == pytest.approx(0.95)  # nothing observed: no evidence
    assert history.surprise(clean(6)) > 0.3  # one minute
    assert 0.08 < history.surprise(clean(30)) < 0.1  # five minutes: the rule of three, 3 / 31
    assert history.surprise(clean(360)) < 0.01  # one hour


def test_the_bound_is_the_rule_of_three_for_a_clean_history() -> None:
    for b in (30, 100, 300):
        # Beta(1, B + 1)'s 95 % point; the counts decayed a little over the run.
        assert history.surprise(clean(b)) == pytest.approx(1 - 0.05 ** (1 / (b + 1)), rel=0.05)
        assert history.surprise(clean(b)) == pytest.approx(3 / b, rel=0.1)


def test_a_service_that_keeps_discovering_gives_its_next_discovery_no_credit() -> None:
    h = clean(30)
    calm = history.surprise(h)
    for i in range(10):
        history.observe(h, True, (31 + i) * BUCKET_MS, BUCKET_MS)
    assert history.surprise(h) > 0.3 > 3 * calm


def test_quiet_buckets_between_observations_count_as_exposure() -> None:
    h = TemplateHistory()
    history.observe(h, False, BUCKET_MS, BUCKET_MS)
    history.observe(h, False, 31 * BUCKET_MS, BUCKET_MS)  # idle for five minutes, then seen again
    assert h.buckets == pytest.approx(31, rel=1e-3)


def test_counts_decay_with_a_one_day_half_life_in_event_time() -> None:
    h = clean(100)
    before = h.buckets
    history.decay(h, h.updated_ms + HALF_LIFE_MS)
    assert h.buckets == pytest.approx(before / 2)


def test_remember_reports_only_the_first_occurrence_and_stays_bounded() -> None:
    h = TemplateHistory()
    assert history.remember(h, "t1", 17, 1_000, max_templates=2)
    assert not history.remember(h, "t1", 21, 2_000, max_templates=2)
    assert h.seen["t1"] == [2, 1_000, 2_000, 21]
    assert history.remember(h, "t2", 17, 3_000, max_templates=2)
    assert history.remember(h, "t3", 17, 4_000, max_templates=2)  # evicts t1, the least recently seen
    assert set(h.seen) == {"t2", "t3"}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 50)), max_size=40))
def test_codec_round_trips_and_surprise_stays_a_probability(steps: list[tuple[bool, int]]) -> None:
    h = TemplateHistory()
    t = 0
    for discovered, gap in steps:
        t += gap * BUCKET_MS
        history.observe(h, discovered, t, BUCKET_MS)
        history.remember(h, f"t{t}", 17, t, max_templates=5)
    again = history.decode(json.loads(json.dumps(history.encode(h))))
    assert history.encode(again) == history.encode(h)
    assert 0.0 < history.surprise(h) < 1.0


def test_decode_rejects_an_unknown_version() -> None:
    with pytest.raises(ValueError, match="schema_version"):
        history.decode({"schema_version": 99})
