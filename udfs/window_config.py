"""The service window's configuration: buckets, windows, significance levels and novelty odds,
every constant with its principle (the module docstring of ``udfs.window``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from udfs.signals import DEFAULT_WEIGHTS as GROUP_WEIGHTS


@dataclass(frozen=True)
class WindowConfig:
    bucket_ms: int = 10_000
    window_buckets: int = 30  # 300 s
    recent_buckets: int = 3  # the 30 s judged at each close
    baseline_buckets: int = 360  # one hour
    allowed_lateness_ms: int = 2_000
    alpha_enter: float = 1e-6
    alpha_exit: float = 1e-2
    min_failures: int = 5
    min_rate_ratio: float = 2.0
    prior_rate: float = 0.01
    prior_records: float = 50.0
    sustained_rate: float = 0.25
    sustained_failures: int = 30
    immediate_repeat_ms: int = 300_000
    max_samples: int = 5
    novelty_max_p: float = 0.25
    """A never-seen alarming template makes the service a candidate when its own history gives such a
    discovery in that bucket a probability of at most 1/4: odds of 3 to 1 against it, the least that
    counts as evidence rather than chance (udfs.history). Weaker surprises are left to the rate test."""
    max_history_templates: int = 300
    """Alarming templates remembered per service (the miner's own cap), least recently seen evicted."""
    group_weights: Mapping[str, float] = field(default_factory=lambda: {g.value: w for g, w in GROUP_WEIGHTS.items()})

    def __post_init__(self) -> None:
        if self.bucket_ms <= 0 or self.window_buckets < self.recent_buckets or self.recent_buckets < 1:
            raise ValueError("window: need bucket_ms > 0 and window_buckets >= recent_buckets >= 1")
        if not (0 < self.alpha_enter <= self.alpha_exit < 1):
            raise ValueError("window: need 0 < alpha_enter <= alpha_exit < 1")
