"""Would a volume-drop test catch the silent failures? A probe on the OpenStack development set.

Issue 11 asks for silent-failure detection ("a service's activity dropping far below its baseline
while its callers keep calling"). Before putting such a test in the engine this probe measures what
it would catch and cost, offline, on ``../shared/data/openstack-dev/`` (log records only):

- per (round, service), records per 10 s event-time bucket from the service's first record;
- at every bucket end after ``--min-buckets`` of history, the count of the last ``--window``
  buckets is judged against the service's own history before them: negative binomial with the
  mean and the overdispersion of its own bucket counts (method of moments; Poisson when the counts
  are not overdispersed), a silence is a lower tail below ``--alpha``;
- only while the rest of the tenant is active (the other services' count in the window at least
  half their own mean), so the end of a replay, or a quiet tenant, is not a silence;
- the first silence per (round, service) is reported.

A round "fires" when any of its services does. Fault-free rounds that fire are the cost; the three
failing rounds without an ERROR line (Neutron_Test_112, Nova_Test_185, Nova_Test_27) are what it
could catch. Run: ``python -m tests.bench.silence_probe [--window 6 --alpha 1e-4 --min-buckets 18]``.
Needs scipy.stats (the probe only; the engine never imports it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy.stats import nbinom, poisson

from connectors.files import iter_lines
from connectors.otlp import decode_logs
from udfs.timefmt import parse_time_ms

BUCKET_MS = 10_000
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "openstack-dev"


def bucket_counts(path: Path) -> tuple[dict[str, dict[int, int]], int, int]:
    """Service -> {bucket index: records}, the first bucket (absolute) and the number of buckets."""
    times: list[tuple[str, int]] = []
    for line in iter_lines(path):
        times.extend((r.service, r.time_unix_nano // 1_000_000 // BUCKET_MS) for r in decode_logs(line).records)
    first = min(b for _, b in times)
    counts: dict[str, dict[int, int]] = {}
    for svc, b in times:
        row = counts.setdefault(svc, {})
        row[b - first] = row.get(b - first, 0) + 1
    return counts, first, max(b for _, b in times) - first + 1


def lower_tail(recent: int, history: list[int], window: int) -> float:
    """P(count <= recent) over ``window`` buckets for the service's own bucket-count history."""
    mean = sum(history) / len(history)
    var = sum((x - mean) ** 2 for x in history) / max(1, len(history) - 1)
    if var > mean:
        size = mean * mean / (var - mean) * window
        return float(nbinom.cdf(recent, size, size / (size + mean * window)))
    return float(poisson.cdf(recent, mean * window))


def first_silences(
    counts: dict[str, dict[int, int]], n: int, window: int, alpha: float, min_buckets: int
) -> list[tuple[str, int, float]]:
    """(service, seconds from the round's start, p) of each service's first silence."""
    total = [sum(c.get(b, 0) for c in counts.values()) for b in range(n)]
    out: list[tuple[str, int, float]] = []
    for svc, c in sorted(counts.items()):
        start = min(c)
        seq = [c.get(b, 0) for b in range(n)]
        for end in range(start + min_buckets + window, n):
            history, recent = seq[start:end - window], sum(seq[end - window:end])
            if sum(history) == 0:
                continue
            others = sum(total[end - window:end]) - recent
            others_mean = (sum(total[start:end - window]) - sum(history)) / len(history) * window
            p = lower_tail(recent, history, window)
            if p < alpha and others >= 0.5 * others_mean:
                out.append((svc, end * BUCKET_MS // 1000, p))
                break
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--window", type=int, default=6, help="buckets of 10 s judged (default 6: one minute)")
    ap.add_argument("--alpha", type=float, default=1e-4, help="lower-tail probability that is a silence")
    ap.add_argument("--min-buckets", type=int, default=18, help="history a service needs first (3 min)")
    ap.add_argument("--out", type=Path, help="write the per-round results as JSON")
    args = ap.parse_args(argv)
    streams = json.loads((args.data / "labels.json").read_text())["streams"]
    rows = []
    for name, s in sorted(streams.items()):
        counts, first, n = bucket_counts(args.data / s["test"] / f"{s['round']}.otlp.jsonl.gz")
        case = (s.get("cases") or [{}])[0]
        inject = case.get("inject_time")
        rows.append({
            "stream": name,
            "kind": "fault_free" if s["fault_free"] else case.get("failure_kind"),
            "inject_s": parse_time_ms(inject) // 1000 - first * BUCKET_MS // 1000 if inject else None,
            "silences": [{"service": v, "at_s": t, "p": p} for v, t, p in
                         first_silences(counts, n, args.window, args.alpha, args.min_buckets)],
        })
        print(f"{name:<42} {rows[-1]['kind']:<15} {[(x['service'], x['at_s']) for x in rows[-1]['silences']][:3]}")
    free = [r for r in rows if r["kind"] == "fault_free"]
    silent = [r for r in rows if r["stream"].split("-")[2] in ("Neutron_Test_112", "Nova_Test_185", "Nova_Test_27")
              and r["kind"] == "assertion_only"]
    print(f"\nfault-free rounds with a silence: {sum(1 for r in free if r['silences'])} of {len(free)}")
    print(f"no-error failing rounds with a silence after the injection: "
          f"{sum(1 for r in silent if any(x['at_s'] >= (r['inject_s'] or 0) for x in r['silences']))} of {len(silent)}"
          " (a silence is not a root cause: see the services)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
