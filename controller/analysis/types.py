"""What the judges take in and give back: per-step counts in, verdicts with evidence out.

Pure: plain frozen dataclasses, no I/O. The metric provider turns Prometheus answers
into ``Measurement``s (one per check), the judges (``controller.analysis.judge``) turn
them into a ``Verdict``, and the rollout state machine acts on the verdict.

Counts are *cumulative per step*: ``StepWindow`` holds what one revision served while
the traffic split was constant, from the start of that step until now (the current
step) or until the step closed (past steps, kept in the rollout state). A judge sees
every step so far and nothing else, so its verdict is a pure function of the counts and
never depends on how often it looked.

Latency histograms carry their bucket bounds in **seconds** (the metric provider scales
the preset's or the query's unit); other histograms (predictions, features) carry their
bounds as the metric has them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from controller.analysis.ledger import Look


class Outcome(StrEnum):
    """What the rollout should do. ``INCONCLUSIVE`` is decided by the state machine from
    the step deadline; the judge itself never returns it (it cannot know the time)."""

    PASS = "pass"
    FAIL = "fail"
    CONTINUE = "continue"
    INCONCLUSIVE = "inconclusive"


class Quality(StrEnum):
    """Whether a measurement can be judged. Anything but ``OK`` is never healthy."""

    OK = "ok"
    NO_DATA = "no-data"
    STALE = "stale"
    RESET = "counter-reset"
    ERROR = "error"


@dataclass(frozen=True)
class RatioCounts:
    """Errors and requests of one revision (``errors <= total``)."""

    errors: float
    total: float


@dataclass(frozen=True)
class HistogramCounts:
    """Observations per bucket (not cumulative). ``bounds`` are the finite upper bounds
    (Prometheus ``le``), increasing; ``counts`` has one more entry, the +Inf bucket."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    @property
    def total(self) -> float:
        return float(sum(self.counts))


Counts = RatioCounts | HistogramCounts
C = TypeVar("C", RatioCounts, HistogramCounts)


@dataclass(frozen=True)
class StepWindow(Generic[C]):
    """The counts of one step (one constant traffic split), cumulative since it began."""

    baseline: C
    canary: C


@dataclass(frozen=True)
class Measurement(Generic[C]):
    """Every step so far for one check; the last window is the current step."""

    quality: Quality
    windows: tuple[StepWindow[C], ...]
    detail: str = ""


@dataclass(frozen=True)
class LatencyBounds:
    """Where a latency check counts slow requests (seconds), fixed for a rollout: the
    relative test's bound and the guard's (None: no guard, or one above every bucket)."""

    relative: float
    guard: float | None = None
    note: str = ""


@dataclass(frozen=True)
class EventMeasurement:
    """What an event-rate check (error rate, or a latency check's slow requests) sees at
    one look: its blocks (``ledger.Look``); for a latency check, the bounds its blocks were
    tallied at and the current step's histograms (only to state quantiles in words)."""

    quality: Quality
    look: Look
    detail: str = ""
    bounds: LatencyBounds | None = None
    display: StepWindow[HistogramCounts] | None = None


@dataclass(frozen=True)
class CheckVerdict:
    """One check's outcome. ``reason`` is one line for Slack and Kubernetes Events; every
    number in it is also in ``numbers`` (statistic, e-value, p-value, estimate, interval,
    sample sizes)."""

    check: str
    outcome: Outcome
    reason: str
    numbers: Mapping[str, float] = field(default_factory=dict)
    quality: Quality = Quality.OK


@dataclass(frozen=True)
class Verdict:
    """The combined outcome of all checks at one look; ``missing`` names the checks that
    had no usable data (their verdicts say why)."""

    outcome: Outcome
    reason: str
    checks: tuple[CheckVerdict, ...]
    missing: tuple[str, ...]
