"""The workflow probe's mechanisms on hand-built rounds (tests/bench/workflow_probe.py): which history
each source may use, and what each score counts. The probe's numbers go into the team notes, so its
logic is checked here, without the OpenStack data."""

from __future__ import annotations

from tests.bench.workflow_probe import (
    Round,
    follow_scores,
    history,
    presence_scores,
    row,
    trace_end_scores,
)

S = 1_000


def rnd(name: str, kind: str, start_s: int, events: list[tuple[int, str, str]], inject_s: int | None = None,
        campaign: str = "Nova", test: str | None = None) -> Round:
    """A round from (time s, template, request id) rows; every template belongs to service ``svc``."""
    events = sorted(events)
    return Round(
        name=name, test=test or name, campaign=campaign, kind=kind,
        start_ms=(start_s + events[0][0]) * S, end_ms=(start_s + events[-1][0]) * S,
        inject_ms=None if inject_s is None else (start_s + inject_s) * S,
        times=[(start_s + t) * S for t, _, _ in events], keys=[("svc", k) for _, k, _ in events],
        traces=[tr for _, _, tr in events],
    )


def workflow(skip: str = "") -> list[tuple[int, str, str]]:
    """boot at 0 s, attach at 100 s followed by 'attached' at 110 s, idle tick to 400 s."""
    rows = [(0, "boot", "r1"), (100, "attach", "r2"), (110, "attached", "r2")]
    rows += [(t, "tick", "") for t in range(0, 401, 50)]
    return [r for r in rows if r[1] != skip]


def test_earlier_history_is_the_same_campaign_ended_before_the_round_starts() -> None:
    a = rnd("a", "ff", 0, workflow())
    overlapping = rnd("b", "ff", 300, workflow())  # still running when c starts
    other_campaign = rnd("x", "ff", 0, workflow(), campaign="Cinder")
    c = rnd("c", "noerr", 500, workflow("attached"), inject_s=50)
    later = rnd("d", "ff", 2_000, workflow())
    rounds = sorted([a, overlapping, other_campaign, c, later], key=lambda r: r.start_ms)
    i = rounds.index(c)
    assert [r.name for r in history(rounds, i, "earlier")] == ["a"]
    assert [r.name for r in history(rounds, i, "loo")] == ["a", "b", "d"]  # fault-free, other tests, any time
    assert history(rounds, i, "within") == []


def test_presence_counts_templates_every_history_round_had_and_this_round_lacks() -> None:
    hist = [rnd(f"h{i}", "ff", i * 1_000, workflow()) for i in range(3)]
    judged = rnd("j", "noerr", 10_000, workflow("attached"), inject_s=50)
    rounds = [*hist, judged]
    assert presence_scores(rounds, "earlier", min_support=3)["j"] == 1
    assert presence_scores(rounds, "earlier", min_support=4)["j"] == 0  # too little history: no opinion
    assert presence_scores(rounds, "earlier", min_support=1)["h0"] == 0  # h0 has no history at all


def test_follow_counts_missing_followers_of_an_anchor_after_the_injection_window_opens() -> None:
    hist = [rnd(f"h{i}", "ff", i * 1_000, workflow()) for i in range(3)]
    judged = rnd("j", "noerr", 10_000, workflow("attached"), inject_s=50)
    too_early = rnd("k", "noerr", 20_000, workflow("attached"), inject_s=300)  # attach at 100 s < 300 - 60 s
    rounds = [*hist, judged, too_early]
    scores = follow_scores(rounds, "earlier", min_support=3, delta_ms=30 * S)
    assert scores["j"] == 1  # "attach" is always followed by "attached" within 30 s
    assert scores["k"] == 0
    assert scores["h2"] == 0


def test_trace_end_fires_on_a_request_ending_where_none_ended_before() -> None:
    rows = [(t, "get", f"q{t}") for t in range(0, 200, 10)]
    rows += [(t + 1, "done", f"q{t}") for t in range(0, 200, 10)]
    normal = rnd("n", "ff", 0, [*rows, (400, "tick", "")])
    stopped = rnd("s", "noerr", 0, [*rows, (250, "get", "late"), (400, "tick", "")], inject_s=200)
    assert trace_end_scores([normal], "within", idle_ms=60 * S)["n"] == 0
    assert trace_end_scores([stopped], "within", idle_ms=60 * S)["s"] == 20  # "get" seen in 20 requests, never last


def test_row_picks_the_lowest_threshold_with_at_most_one_fault_free_round() -> None:
    rounds = [rnd(f"f{i}", "ff", i * 1_000, workflow()) for i in range(3)] + [
        rnd("e", "noerr", 9_000, workflow(), inject_s=0)
    ]
    out = row(rounds, "t", {"f0": 9, "f1": 4, "f2": 0, "e": 5})
    assert out["threshold_for_ff_le_1"] == 5
    assert out["fired_at_threshold"]["noerr"] == ["e"]
    assert out["fired_at_threshold"]["ff"] == ["f0"]
