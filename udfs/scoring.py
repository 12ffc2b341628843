"""Composite score: six weighted categories, thresholds and severity bands (DETECTION.md stage 2).

``score = 0.30·pattern + 0.25·statistical + 0.15·context + 0.10·http + 0.10·severity +
0.10·structural``; each category is the max of its signals, in [0, 1]. Everything here is
configuration with the published defaults, validated once at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

CATEGORIES = ("pattern", "statistical", "context", "http", "severity", "structural")

DEFAULT_WEIGHTS: Mapping[str, float] = {
    "pattern": 0.30,
    "statistical": 0.25,
    "context": 0.15,
    "http": 0.10,
    "severity": 0.10,
    "structural": 0.10,
}


class Breakdown(NamedTuple):
    """Category scores in [0, 1], before weighting."""

    pattern: float = 0.0
    statistical: float = 0.0
    context: float = 0.0
    http: float = 0.0
    severity: float = 0.0
    structural: float = 0.0

    def merge(self, other: Breakdown) -> Breakdown:
        """Category-wise max: the evidence of two anomalies together."""
        return Breakdown(*(max(a, b) for a, b in zip(self, other, strict=True)))


@dataclass(frozen=True)
class ScoreConfig:
    """Weights, the incident threshold and the severity bands (lower bounds, inclusive)."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    threshold: float = 0.4
    critical: float = 0.85
    high: float = 0.65
    medium: float = 0.45

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"score weights: unknown categories {sorted(unknown)}")
        missing = set(CATEGORIES) - set(self.weights)
        if missing:
            raise ValueError(f"score weights: missing categories {sorted(missing)}")
        if any(not (0.0 <= w <= 1.0) or math.isnan(w) for w in self.weights.values()):
            raise ValueError("score weights: every weight must be in [0, 1]")
        if abs(sum(self.weights.values()) - 1.0) > 1e-6:
            raise ValueError(f"score weights: must sum to 1, got {sum(self.weights.values()):.4f}")
        if not (0.0 < self.threshold < 1.0):
            raise ValueError("score threshold must be in (0, 1)")
        if not (self.critical >= self.high >= self.medium > 0.0):
            raise ValueError("severity bands must satisfy critical >= high >= medium > 0")

    def composite(self, b: Breakdown) -> float:
        w = self.weights
        total = sum(w[name] * value for name, value in zip(CATEGORIES, b, strict=True))
        return round(min(1.0, max(0.0, total)), 4)

    def severity(self, score: float) -> str:
        if score >= self.critical:
            return "critical"
        if score >= self.high:
            return "high"
        if score >= self.medium:
            return "medium"
        return "low"

    def weighted(self, b: Breakdown) -> dict[str, float]:
        """The contract's ``score_breakdown``: each category's weighted contribution."""
        return {name: round(self.weights[name] * v, 4) for name, v in zip(CATEGORIES, b, strict=True)}


def velocity_score(ratio: float) -> float:
    """Error-rate acceleration vs baseline -> [0, 1]; 5x scores 0.80 (DETECTION.md), log-scaled."""
    if ratio < 1.5:
        return 0.0
    return round(min(1.0, 0.8 * math.log(ratio) / math.log(5.0)), 4)


def blast_radius_score(services: int) -> float:
    """Anomalous services of a tenant in the same 300 s -> [0, 1]; 5+ scores 0.90."""
    table = {0: 0.0, 1: 0.0, 2: 0.5, 3: 0.7, 4: 0.85}
    return table.get(services, 0.9)


def significance_score(p_value: float) -> float:
    """Tail probability -> [0, 1]: -log10(p) / 12, so p = 1e-6 scores 0.5 and p <= 1e-12 scores 1."""
    if p_value <= 0.0:
        return 1.0
    return round(min(1.0, max(0.0, -math.log10(p_value) / 12.0)), 4)
