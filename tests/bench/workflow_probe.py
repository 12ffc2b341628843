"""Would a workflow invariant catch the silent failures? A probe on the OpenStack development set.

Issue 11 item 3 asks for a mechanism that detects a failure with no error line. Three failing rounds of
``../shared/data/openstack-dev/`` have none (Neutron_Test_112, Nova_Test_185, Nova_Test_27, all
``assertion_only``). Read against their controls, each is a workflow that stops:

- Nova_Test_27 (missing call in nova/compute/api.py): nova-api takes the attach request, but nova-compute
  never logs ``Attaching volume``/iSCSI and cinder never logs ``Attach volume completed``;
- Neutron_Test_112 (l3 router_info): the instance spawns, but the guest never reaches the metadata
  service: neutron-metadata-agent and nova-api's metadata lines never appear;
- Nova_Test_185 (ec2utils return value): the guest fetches metadata, but 4 of its ~33 keys
  (public-keys/openssh-key, hostname, ...) are never requested.

Each workload (boot, metadata, attach, detach, delete) runs ONCE per round, so a round's own history
never holds the step that goes missing: an invariant has to be learnt across rounds. This probe
measures, per mechanism and per source of history, how many of the 3 no-error failing rounds it
catches and how many of the 45 fault-free rounds (plus the 18 "fault fired, nothing failed" round1s
and the 24 failing rounds that do log an error) it fires on. Sources of history:

- ``within``: the round's own past only (what ``logclaw eval`` gives: a fresh engine per round);
- ``earlier``: every round of the same campaign (Nova / Cinder / Neutron) that ended before this one
  started, fault rounds included: an engine running continuously over this lab deployment;
- ``earlier_ff``: as ``earlier``, fault-free rounds only (an upper bound for an engine that learns
  only from stretches in which it raised no incident);
- ``loo``: the campaign's fault-free rounds of the other tests, earlier or later (optimistic: it
  uses rounds recorded after the judged one).

Mechanisms (a template = (service, first 160 chars of the masked first line), ``udfs.templates.mask``):

- ``presence``: templates present in every one of >= ``--min-support`` history rounds and absent
  from this whole round; score = how many. Offline (known only when the round ends), an upper bound.
- ``follow``: for each template's first occurrence in the round (the anchor), the templates that
  followed it within ``--delta`` s in every history round where it occurred (>= ``--min-support``
  of them); score = the most such followers missing after one anchor. Online (decided at anchor +
  delta).
- ``trace_end``: a request id whose last template (after ``--idle`` s without records) was seen in
  >= n request ids of the history and never as a last one (rule of succession: P <= 1/(n+2)).
  Online. ``within`` here learns from the round's earlier request ids.

The volume-drop test is ``tests.bench.silence_probe``. A round1 counts only what fires at or after
inject - 60 s (eval's window); a fault-free round counts anything. For a score, the table gives the
lowest threshold that fires on at most one fault-free round and what it then catches.

Run: ``python -m tests.bench.workflow_probe [--out bench-out/workflow_probe.json]`` (~1-3 min per
history source: decoding plus the follow sets).

Measured 2026-12-06 (defaults: min-support 5, delta 60 s, idle 60 s; counts are rounds, of 3 no-error
failing / 45 fault-free / 18 no-failure / 24 failing-with-error). "ff<=1" = the lowest score threshold
that fires on at most one fault-free round, and what it catches at that threshold:

    mechanism   history     any score > 0                  ff<=1 threshold  caught at it (noerr/ff/nofail/fail)
    trace_end   within      3/3  45/45 18/18 21/24         >= 135           0/3 1 0 0
    presence    earlier     1/3  13/45  2/18  5/24  (off)  >= 11            0/3 1 0 4
    trace_end   earlier     1/3  27/45  9/18  8/24         >= 108           0/3 1 2 0
    follow      earlier     2/3  39/45 14/18 11/24         >= 191           0/3 1 0 2
    presence    earlier_ff  2/3  21/45 11/18 14/24  (off)  >= 19            1/3 1 2 11  (Neutron_112)
    trace_end   earlier_ff  1/3  28/45 11/18 15/24         >= 164           0/3 1 1 2
    follow      earlier_ff  2/3  30/45 14/18  9/24         >= 242           0/3 1 0 0
    presence    loo         3/3  16/45  8/18 24/24  (off)  >= 5             2/3 1 4 24  (Nova_27, Neutron_112)
    trace_end   loo         2/3  22/45  9/18  8/24         >= 90            1/3 1 1 1   (Nova_27)
    follow      loo         3/3  45/45 18/18 16/24         >= 238           0/3 1 0 0

(off) = offline, known only at the end of the round. The volume-drop test (silence_probe) for
comparison: alpha 1e-4 / 1 min fires on 41/45 fault-free rounds and 3/3; alpha 1e-7 / 3 min on 7/45
and 2/3, both times in services unrelated to the stopped workflow (cinder-api, keystone,
neutron-server near the workload's clean-up), so not a detection of the failure.
Reading: an online mechanism reaches 1 of 3 at <= 1 fault-free round only with ``loo`` history, which
uses rounds recorded after the judged one; under the honest continuous model (``earlier``) nothing
does, and Nova_Test_27 is the first Nova round of its campaign, so no earlier history exists for it.
Fault-free rounds miss many "always followed" templates only by timing jitter (follow: up to 240
missing followers on a control round), which is why the follow rules cannot separate. The one
``trace_end``/``earlier`` score on Neutron_Test_112 (97) is a nova-compute ``prlimit`` subprocess
request, the same end that scores 107 on Nova_Test_266's control round: chance, not the failure. What
``presence``/``loo`` finds is the failure itself (Nova_Test_27: 70 attach/iSCSI/cinder templates;
Neutron_Test_112: 20 metadata templates), but only at the round's end and only from later rounds.
On the replay question: ``logclaw eval`` builds a fresh engine per round (``run_stream``), so the
engine's history is the round's 3-12 minutes; feeding it a campaign's rounds continuously in time
order (``earlier``) would be an honest model of a deployment; feeding it the round's own control or
other later rounds (``loo``) would not. With ``--idle 180`` the trace_end rows are no better
(earlier >= 97: 0/3; loo >= 85: 0/3).
"""

from __future__ import annotations

import argparse
import bisect
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from connectors.files import iter_lines
from connectors.otlp import decode_logs
from udfs.templates import mask
from udfs.timefmt import parse_time_ms

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "openstack-dev"
NO_ERROR = ("Neutron_Test_112", "Nova_Test_185", "Nova_Test_27")
KINDS = ("noerr", "ff", "nofail", "fail")
WINDOW_BEFORE_MS = 60_000
"""eval counts an alarm from inject - 60 s (labels' ``window``)."""
Key = tuple[str, str]


@dataclass
class Round:
    name: str
    test: str
    campaign: str
    kind: str
    """noerr (failing, no error line), fail (failing with one), nofail (fault fired, nothing failed), ff."""
    start_ms: int
    end_ms: int
    inject_ms: int | None
    times: list[int] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)
    traces: list[str] = field(default_factory=list)

    def counts_from(self) -> int:
        """Alarms at or after this time count (any time for a fault-free round)."""
        return -(2**62) if self.inject_ms is None else self.inject_ms - WINDOW_BEFORE_MS


def _kind(label: dict) -> str:
    if label["fault_free"]:
        return "ff"
    case = label["cases"][0]
    if not case["failure"]:
        return "nofail"
    return "noerr" if label["test"] in NO_ERROR else "fail"


def load(data: Path) -> list[Round]:
    """Every round, records in event-time order, sorted by the round's start."""
    labels = json.loads((data / "labels.json").read_text())["streams"]
    rounds = []
    for name, label in sorted(labels.items()):
        rows: list[tuple[int, Key, str]] = []
        for line in iter_lines(data / label["test"] / f"{label['round']}.otlp.jsonl.gz"):
            for r in decode_logs(line).records:
                rows.append((r.time_ms, (r.service, mask(r.body.split("\n", 1)[0][:300])[:160]), r.trace_id))
        rows.sort(key=lambda x: x[0])
        case = (label.get("cases") or [{}])[0]
        inject = case.get("inject_time")
        rounds.append(Round(
            name=name, test=label["test"], campaign=label["test"].split("_")[0], kind=_kind(label),
            start_ms=rows[0][0], end_ms=rows[-1][0], inject_ms=parse_time_ms(inject) if inject else None,
            times=[t for t, _, _ in rows], keys=[k for _, k, _ in rows], traces=[tr for _, _, tr in rows],
        ))
    rounds.sort(key=lambda r: r.start_ms)
    return rounds


def history(rounds: list[Round], i: int, source: str) -> list[Round]:
    me = rounds[i]
    if source == "earlier":
        return [r for r in rounds[:i] if r.campaign == me.campaign and r.end_ms < me.start_ms]
    if source == "earlier_ff":
        return [r for r in rounds[:i] if r.campaign == me.campaign and r.end_ms < me.start_ms and r.kind == "ff"]
    if source == "loo":
        return [r for r in rounds if r.campaign == me.campaign and r.kind == "ff" and r.test != me.test]
    return []


# ---- mechanisms: each returns, per round, a score (0 = silent) over what counts for that round ----

def presence_scores(rounds: list[Round], source: str, min_support: int) -> dict[str, int]:
    sets = {r.name: set(r.keys) for r in rounds}
    out = {}
    for i, me in enumerate(rounds):
        hist = history(rounds, i, source)
        if len(hist) < min_support:
            out[me.name] = 0
            continue
        always = set.intersection(*(sets[h.name] for h in hist))
        out[me.name] = len(always - sets[me.name])
    return out


def _follow_sets(r: Round, delta_ms: int) -> dict[Key, tuple[int, set[Key]]]:
    """Anchor (first occurrence) -> (its time, templates in the following delta), complete windows only."""
    first: dict[Key, int] = {}
    for t, k in zip(r.times, r.keys, strict=True):
        first.setdefault(k, t)
    out = {}
    for k, t in first.items():
        if t + delta_ms <= r.end_ms:
            lo, hi = bisect.bisect_right(r.times, t), bisect.bisect_right(r.times, t + delta_ms)
            out[k] = (t, set(r.keys[lo:hi]))
    return out


def follow_scores(rounds: list[Round], source: str, min_support: int, delta_ms: int) -> dict[str, int]:
    fs = {r.name: _follow_sets(r, delta_ms) for r in rounds}
    out = {}
    for i, me in enumerate(rounds):
        support: Counter[Key] = Counter()
        rules: dict[Key, set[Key]] = {}
        for h in history(rounds, i, source):
            for a, (_, s) in fs[h.name].items():
                support[a] += 1
                rules[a] = s.copy() if a not in rules else rules[a] & s
        best = 0
        for a, (t, s) in fs[me.name].items():
            if support[a] >= min_support and t >= me.counts_from():
                best = max(best, len(rules[a] - s))
        out[me.name] = best
    return out


def _trace_ends(r: Round, idle_ms: int) -> list[tuple[int, Key, set[Key]]]:
    """(decided at, last template, templates of the request) per request id idle before the round ends."""
    by: dict[str, list[tuple[int, Key]]] = defaultdict(list)
    for t, k, tr in zip(r.times, r.keys, r.traces, strict=True):
        if tr:
            by[tr].append((t, k))
    out = [
        (rs[-1][0] + idle_ms, rs[-1][1], {k for _, k in rs}) for rs in by.values() if rs[-1][0] + idle_ms <= r.end_ms
    ]
    return sorted(out, key=lambda x: x[0])


def trace_end_scores(rounds: list[Round], source: str, idle_ms: int) -> dict[str, int]:
    """Per round: the largest history count n of a template that ended a request and never had before."""
    ends = {r.name: _trace_ends(r, idle_ms) for r in rounds}
    out = {}
    for i, me in enumerate(rounds):
        seen: Counter[Key] = Counter()
        last: Counter[Key] = Counter()
        for h in history(rounds, i, source):
            for _, e, ks in ends[h.name]:
                last[e] += 1
                seen.update(ks)
        best = 0
        for at, e, ks in ends[me.name]:
            if at >= me.counts_from() and last[e] == 0:
                best = max(best, seen[e])
            if source == "within":
                last[e] += 1
                seen.update(ks)
        out[me.name] = best
    return out


# ---- report ----------------------------------------------------------------------------------

def fired(rounds: Iterable[Round], scores: dict[str, int], threshold: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {k: [] for k in KINDS}
    for r in rounds:
        if scores[r.name] >= threshold:
            out[r.kind].append(r.test)
    return out


def row(rounds: list[Round], label: str, scores: dict[str, int]) -> dict:
    """The lowest threshold that fires on at most one fault-free round, and what it catches then."""
    totals = Counter(r.kind for r in rounds)
    ff = sorted((scores[r.name] for r in rounds if r.kind == "ff"), reverse=True)
    threshold = max(1, (ff[1] + 1) if len(ff) > 1 else 1)
    at1 = fired(rounds, scores, 1)
    at = fired(rounds, scores, threshold)
    noerr = {r.test: scores[r.name] for r in rounds if r.kind == "noerr"}
    print(
        f"{label:<34} any>0: noerr {len(at1['noerr'])}/{totals['noerr']} ff {len(at1['ff'])}/{totals['ff']}"
        f" nofail {len(at1['nofail'])}/{totals['nofail']} fail {len(at1['fail'])}/{totals['fail']}"
        f" | ff<=1 needs >={threshold}: noerr {len(at['noerr'])}/{totals['noerr']} ff {len(at['ff'])}"
        f" nofail {len(at['nofail'])} fail {len(at['fail'])} | noerr scores {noerr} ff top {ff[:3]}"
    )
    return {"mechanism": label, "threshold_for_ff_le_1": threshold, "fired_any": at1, "fired_at_threshold": at,
            "noerr_scores": noerr, "ff_scores_desc": ff}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--min-support", type=int, default=5, help="history rounds a presence/follow rule needs")
    ap.add_argument("--delta", type=float, default=60.0, help="follow window after an anchor, s")
    ap.add_argument("--idle", type=float, default=60.0, help="a request id ends after this long without records, s")
    ap.add_argument("--sources", default="within,earlier,loo")
    ap.add_argument("--skip-follow", action="store_true", help="the follow sets are the slow part")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rounds = load(args.data)
    mechanisms: list[tuple[str, Callable[[str], dict[str, int]]]] = [
        ("presence", lambda s: presence_scores(rounds, s, args.min_support)),
        ("trace_end", lambda s: trace_end_scores(rounds, s, int(args.idle * 1000))),
    ]
    if not args.skip_follow:
        mechanisms.append(("follow", lambda s: follow_scores(rounds, s, args.min_support, int(args.delta * 1000))))
    rows = []
    for source in args.sources.split(","):
        for name, score in mechanisms:
            if source == "within" and name != "trace_end":
                continue  # a round's own past never holds its one workflow: nothing to learn
            rows.append(row(rounds, f"{name} history={source}", score(source)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
