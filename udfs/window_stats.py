"""Statistics of a service's recent window against its baseline (the binomial tail test)."""

from __future__ import annotations

from typing import NamedTuple

from scipy.special import bdtrc


class WindowStats(NamedTuple):
    recent_total: int
    recent_failures: int
    window_total: int
    window_failures: int
    baseline_rate: float
    p_value: float
    z: float
    rate_ratio: float


def tail_p_value(failures: int, total: int, rate: float) -> float:
    """P(X >= failures) for X ~ Binomial(total, rate); 1.0 without failures."""
    return float(bdtrc(failures - 1, total, rate)) if failures > 0 and total > 0 else 1.0
