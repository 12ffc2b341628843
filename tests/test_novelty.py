"""The tenant's judgement of novelty (udfs.novelty): pure, no JVM."""

from __future__ import annotations

import json

from udfs import novelty, tenant_state
from udfs.anomaly import ServiceAnomaly, SignalInfo, TemplateInfo
from udfs.scoring import Breakdown
from udfs.tenant_state import new_state

T0 = 1_767_225_600_000
MIN = 60_000


def hello(service: str, at_ms: int) -> ServiceAnomaly:
    return ServiceAnomaly("h-" + service, "t", service, "", "hello", "first_seen", at_ms, at_ms, Breakdown(), (), (),
                          (), ())


def novel(service: str, at_ms: int, p: float, buckets: float, discoveries: float, text: str,
          path: str = "windowed") -> ServiceAnomaly:
    s = 1.0 - p
    return ServiceAnomaly(
        f"a-{service}-{at_ms}", "t", service, "", path, "novel_template", at_ms + 12_000, at_ms,
        Breakdown(severity=0.7 * s, structural=s, statistical=s, context=0.7 * s),
        (SignalInfo("novel_template", s, f"p = {p}"),),
        (("novelty_p", p), ("history_buckets", buckets), ("history_discoveries", discoveries), ("bucket_ms", 1e4)),
        (), (TemplateInfo("id-" + text, text, 1, True),),
    )


def judge(state, a):  # type: ignore[no-untyped-def]
    return novelty.judge(state, a, max_p=0.25, max_known=2_000)


def test_a_large_tenant_that_discovered_much_at_start_up_still_finds_a_new_exception_news() -> None:
    """Forty services discovering two templates each in their first minutes is the tenant's start-up,
    not a noisy tenant: a young service's discovery of a template only it logs is not the tenant's routine."""
    state = new_state("t")
    services = [f"svc{i}" for i in range(40)]
    for s in services:
        assert judge(state, hello(s, T0)) is None
    for i, s in enumerate(services):
        for k in range(2):
            judge(state, novel(s, T0 + (i % 5 + k) * MIN, 0.6, 6 * (i % 5 + k), k, f"startup {s} {k}", "discovery"))
    later = novel("svc7", T0 + 60 * MIN, 0.02, 360, 2, "KeyError: 'currency'")
    judged = judge(state, later)
    assert judged is not None and judged.path == "windowed"


def test_a_large_tenant_whose_services_all_logged_one_shared_start_up_line_finds_news_an_hour_later() -> None:
    """A shared start-up line (every service's client refused while its dependencies came up) is the
    tenant's routine, 40 discoveries, yet an hour (360 buckets) outweighs it: p = 0.14."""
    state = new_state("t")
    services = [f"svc{i}" for i in range(40)]
    for s in services:
        judge(state, hello(s, T0))
    for i, s in enumerate(services):
        judge(state, novel(s, T0 + (i % 5) * MIN, 0.6, 6 * (i % 5), 0, "Connection refused: <*>:<*>", "discovery"))
    judged = judge(state, novel("svc7", T0 + 60 * MIN, 0.02, 360, 1, "KeyError: 'currency'"))
    assert judged is not None and judged.path == "windowed"
    assert novelty.routine_discoveries(state, T0 + 60 * MIN) == 40  # 24 by mature services, 16 young but shared


def _startup_then_discovery(texts: list[str]) -> ServiceAnomaly | None:
    """Five services; four discover ``texts`` in their first minute; one more a minute later; then, five
    minutes in, a service with a clean 30-bucket history discovers a template no one else logged."""
    state = new_state("t")
    for s in ("a", "b", "c", "d", "e"):
        judge(state, hello(s, T0))
    for k, (s, text) in enumerate(zip("abcd", texts, strict=True)):
        assert judge(state, novel(s, T0 + k * 10_000, 0.9, k, 0, text, "discovery")) is None
    return judge(state, novel("e", T0 + 5 * MIN, 0.09, 30, 0, "connection reset by peer"))


def test_young_services_discovering_one_shared_line_is_routine_for_the_tenant() -> None:
    """Four services discovering the same line in their first minute is the tenant's background: the
    next never-seen line five minutes in is no news (4 routine discoveries in 30 buckets: p = 0.27)."""
    assert _startup_then_discovery(["upstream request timed out"] * 4) is None


def test_young_services_each_discovering_its_own_line_is_start_up_not_routine() -> None:
    """The same start-up with four lines each logged by one service only is start-up learning: the next
    never-seen line is news (no routine discovery in 30 buckets: p = 0.09)."""
    judged = _startup_then_discovery([f"startup {s}" for s in "abcd"])
    assert judged is not None and judged.path == "windowed"


def test_a_template_another_service_discovered_is_background_and_a_witness_is_kept_otherwise() -> None:
    state = new_state("t")
    for s in ("a", "b"):
        judge(state, hello(s, T0))
    assert judge(state, novel("a", T0 + 30 * MIN, 0.05, 180, 0, "connection reset by peer")) is not None
    assert judge(state, novel("b", T0 + 40 * MIN, 0.05, 240, 0, "connection reset by peer")) is None
    assert "b" not in state.witnesses  # known: background, not a candidate root cause
    assert judge(state, novel("b", T0 + 41 * MIN, 0.6, 246, 0, "disk quota", "discovery")) is not None


def test_a_silent_service_is_as_old_as_its_tenant() -> None:
    """A service first seen long after its tenant (idle until it failed) has the tenant's exposure."""
    state = new_state("t")
    judge(state, hello("api", T0))
    judge(state, hello("volume", T0 + 5 * MIN))
    report = novel("volume", T0 + 5 * MIN + 10_000, 0.78, 1, 0, "Traceback: NoneType", "discovery")
    judged = judge(state, report)
    assert judged is not None and judged.path == "windowed"
    assert judged.breakdown.statistical > 0.85  # re-weighted by the tenant's confidence
    assert "judged over its tenant" in judged.signals[0].detail


def test_the_start_up_record_survives_the_codec_and_layout_2_still_reads() -> None:
    state = new_state("t")
    for s in ("a", "b"):
        judge(state, hello(s, T0))
    judge(state, novel("a", T0, 0.9, 0, 0, "upstream request timed out", "discovery"))
    judge(state, novel("b", T0 + 10_000, 0.9, 1, 0, "upstream request timed out", "discovery"))
    obj = json.loads(json.dumps(tenant_state.encode_state(state)))
    assert obj["schema_version"] == 3 and obj["discoverers"] == {"upstream request timed out": ["a", 1]}
    back = tenant_state.decode_state(obj)
    assert (back.young, back.discoverers) == (state.young, state.discoverers)
    assert novelty.routine_discoveries(back, T0 + MIN) == 2
    old = {k: v for k, v in obj.items() if k not in ("young", "discoverers")} | {"schema_version": 2}
    assert tenant_state.decode_state(old).young == []
