"""Metric providers: where canary and baseline counts come from.

The boundary is one method, ``fetch``: a template and the rollouts that need it in,
per-rollout results with a data-quality flag out (Argo Rollouts' providers and Flagger's
"no values" sentinel, kept apart from judging). "No data" is a result, never a zero and
never an exception. ``presets`` (pure) builds the PromQL; ``prometheus`` is the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from controller.analysis.types import Quality
from controller.providers.presets import Part, Template

__all__ = ["HistoryResult", "MetricProvider", "Quality", "SeriesResult"]


@dataclass(frozen=True)
class SeriesResult:
    """One rollout's answer to one template: per revision, a counter value or the
    cumulative bucket counts by upper bound (``le``, +Inf included)."""

    quality: Quality
    detail: str = ""
    values: Mapping[str, float] = field(default_factory=dict)
    buckets: Mapping[str, Mapping[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryResult:
    """One rollout's answer to a range query: per revision, one value (a counter's increase)
    or one bucket map (a histogram's increases by ``le``) per interval, oldest first."""

    quality: Quality
    detail: str = ""
    values: Mapping[str, Sequence[float]] = field(default_factory=dict)
    buckets: Mapping[str, Sequence[Mapping[float, float]]] = field(default_factory=dict)


class MetricProvider(Protocol):
    def fetch(self, template: Template, parts: Sequence[Part],
              now: datetime) -> Mapping[str, SeriesResult]:
        """One query for all ``parts``; a result for every part's group."""

    def fetch_history(self, template: Template, parts: Sequence[Part], start: datetime,
                      end: datetime, step_seconds: int) -> Mapping[str, HistoryResult]:
        """One range query for all ``parts``: each interval's increase from ``start`` to
        ``end`` every ``step_seconds``; a result for every part's group."""
