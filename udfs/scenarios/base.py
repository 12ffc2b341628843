"""What every scenario is made of: its expectations, the scaled background phases and the finishing
step. Shared by the scenario modules (``library``, ``latency``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter

from udfs.records import LogRecord, Span
from udfs.scenarios.traffic import Stream

DEFAULT_BASE_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z in Unix milliseconds."""


@dataclass(frozen=True)
class Expectation:
    """What the engine should make of one tenant's part of a scenario (event time, Unix ms)."""

    tenant: str
    max_incidents: int
    min_incidents: int = 0
    root_cause: str | None = None
    affected: frozenset[str] = frozenset()
    fault_start_ms: int | None = None
    detect_within_ms: int | None = None
    immediate: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    records: tuple[LogRecord, ...]
    """Sorted by event time (stable)."""
    spans: tuple[Span, ...]
    """Sorted by start time (stable); empty unless the scenario has traces."""
    expectations: tuple[Expectation, ...]


@dataclass(frozen=True)
class _Phase:
    """A background duration: ``ms`` at scale 1, never shorter than ``floor_ms``."""

    ms: int
    floor_ms: int

    def ns(self, scale: float) -> int:
        return max(int(self.ms * scale), self.floor_ms) * 1_000_000


WARMUP = _Phase(15 * 60_000, 6 * 60_000)
TAIL = _Phase(10 * 60_000, 5 * 60_000)
STEADY = _Phase(60 * 60_000, 10 * 60_000)
QUIET = _Phase(20 * 60_000, 10 * 60_000)


def _check(scale: float) -> None:
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")


def _finish(name: str, description: str, stream: Stream, expectations: Iterable[Expectation]) -> Scenario:
    return Scenario(
        name=name,
        description=description,
        records=tuple(sorted(stream.records, key=attrgetter("time_unix_nano"))),
        spans=tuple(sorted(stream.spans, key=attrgetter("start_unix_nano"))),
        expectations=tuple(expectations),
    )


def _ms(t_ns: int) -> int:
    return t_ns // 1_000_000
