"""A mergeable duration sketch: a sparse histogram over logarithmic bins (the DDSketch mapping).

Bin ``i`` holds values in ``(GAMMA**(i-1), GAMMA**i]`` microseconds with ``GAMMA = (1 + a) / (1 - a)``
and ``a = RELATIVE_ACCURACY`` (2 %): every quantile the sketch answers is within 2 % of a value that
was added (relative error), whatever the distribution. Merging is adding counts per bin, so the
sketch of a union is the union of sketches, bit for bit, in any order: what parallel operators and
per-bucket state need. Counts may be fractional (a decayed baseline); subtracting is exact.

Why not the ``ddsketch`` package (3.0.1 installs here): the binomial test needs the count above a
threshold bin, which it does not expose; its stores have no stable JSON codec (protobuf only, via
private fields); and it allocates dense bin arrays per sketch, where a 10 s bucket holds a few dozen
distinct bins. The mapping is the same one, so the accuracy statement carries over.

Bounded: at most ``MAX_BINS`` bins; past that the lowest bins collapse into the lowest kept one (the
slow tail, which detection reads, stays exact to 2 %). The sketch then holds the ``MAX_BINS`` highest
bins ever given, the lowest of them carrying everything below: the same whatever order values come
in and however they were grouped into sketches before a merge (a job that adds partial sketches ends
where an engine adding one value at a time does). Values at or below 1 µs share bin ``MIN_BIN``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

RELATIVE_ACCURACY = 0.02
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
MIN_BIN = 0
"""Bin of every value <= 1 µs (GAMMA**0)."""
MAX_BINS = 256
"""At 2 %, 256 bins cover 1 µs .. ~28 s at full accuracy, ~10 decades with the tail collapsing lowest."""

Sketch = dict[int, float]
"""bin index -> count (a plain dict, so the codec is a list of pairs)."""


def bin_of(value_us: float) -> int:
    """The bin of a duration in microseconds (monotone: larger values never get lower bins)."""
    if value_us <= 1.0:
        return MIN_BIN
    return max(MIN_BIN, math.ceil(math.log(value_us) / _LOG_GAMMA - 1e-9))


def value_of(b: int) -> float:
    """The representative value of bin ``b`` (µs): within RELATIVE_ACCURACY of every value in it."""
    if b <= MIN_BIN:
        return 1.0
    return 2.0 * GAMMA**b / (GAMMA + 1.0)


def add(sketch: Sketch, value_us: float, count: float = 1.0) -> None:
    b = bin_of(value_us)
    sketch[b] = sketch.get(b, 0.0) + count
    if len(sketch) > MAX_BINS:
        _collapse(sketch)


def merge(into: Sketch, other: Mapping[int, float], factor: float = 1.0) -> None:
    """``into += factor * other`` (factor -1 subtracts; bins that reach ~0 are dropped)."""
    for b, c in other.items():
        v = into.get(b, 0.0) + factor * c
        if abs(v) < 1e-9:
            into.pop(b, None)
        else:
            into[b] = v
    if len(into) > MAX_BINS:
        _collapse(into)


def _collapse(sketch: Sketch) -> None:
    bins = sorted(sketch)
    extra = bins[: len(bins) - MAX_BINS]
    keep = bins[len(extra)]
    sketch[keep] += sum(sketch.pop(b) for b in extra)


def scale(sketch: Sketch, factor: float, floor: float = 1e-3) -> None:
    """Multiply every count by ``factor`` (decay); bins under ``floor`` are forgotten."""
    for b in list(sketch):
        v = sketch[b] * factor
        if v < floor:
            del sketch[b]
        else:
            sketch[b] = v


def total(sketch: Mapping[int, float]) -> float:
    """Exactly rounded (fsum), so the answer never depends on the order the bins were stored in."""
    return math.fsum(sketch.values())


def count_above(sketch: Mapping[int, float], b: int) -> float:
    """Count in bins strictly above ``b`` (values > GAMMA**b µs)."""
    return math.fsum(c for k, c in sketch.items() if k > b)


def quantile(sketch: Mapping[int, float], q: float) -> float:
    """The q-quantile (µs) within RELATIVE_ACCURACY; 0.0 for an empty sketch."""
    return value_of(quantile_bin(sketch, q)) if sketch else 0.0


def quantile_bin(sketch: Mapping[int, float], q: float) -> int:
    """The bin holding the q-quantile: the lowest bin with at least q of the count at or below it."""
    n = total(sketch)
    if n <= 0:
        return MIN_BIN
    rank = q * n
    seen = 0.0
    for b in sorted(sketch):
        seen += sketch[b]
        if seen >= rank - 1e-9:
            return b
    return max(sketch)


def of(values_us: Iterable[float]) -> Sketch:
    sketch: Sketch = {}
    for v in values_us:
        add(sketch, v)
    return sketch


def encode(sketch: Mapping[int, float]) -> list[list[float]]:
    """JSON form: sorted [bin, count] pairs (counts kept as integers when they are whole)."""
    return [[b, int(c) if float(c).is_integer() else c] for b, c in sorted(sketch.items())]


def decode(pairs: Iterable[Iterable[float]]) -> Sketch:
    out: Sketch = {}
    for pair in pairs:
        b, c = pair
        out[int(b)] = float(c)
    return out
