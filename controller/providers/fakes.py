"""An in-memory ``MetricProvider``: canned answers by template, every query recorded.

Shipped with the controller as httpx ships its test transport: the analyzer's tests (and a
user's) drive the real analyzer with it and assert on the queries it sent. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from controller.analysis.types import Quality
from controller.providers import HistoryResult, SeriesResult
from controller.providers.presets import Part, Template


@dataclass
class FakeProvider:
    """Answers ``fetch`` with ``values[template][revision]`` (a counter's value) and
    ``fetch_history`` with ``history[template][revision]`` (one increase per interval);
    ``failing[template]`` (quality, detail) answers every part of that template so. A part
    none of whose revisions has a value gets NO_DATA, as Prometheus's empty vector does."""

    values: dict[Template, dict[str, float]] = field(default_factory=dict)
    history: dict[Template, dict[str, list[float]]] = field(default_factory=dict)
    failing: dict[Template, tuple[Quality, str]] = field(default_factory=dict)
    fetches: list[tuple[Template, tuple[Part, ...]]] = field(default_factory=list)
    history_fetches: list[tuple[Template, tuple[Part, ...], datetime, datetime, int]] = field(
        default_factory=list)

    def fetch(self, template: Template, parts: Sequence[Part],
              now: datetime) -> Mapping[str, SeriesResult]:
        self.fetches.append((template, tuple(parts)))
        out: dict[str, SeriesResult] = {}
        for part in parts:
            if template in self.failing:
                out[part.group] = SeriesResult(*self.failing[template])
                continue
            known = self.values.get(template, {})
            found = {r: known[r] for r in part.revisions if r in known}
            out[part.group] = (SeriesResult(Quality.OK, values=found) if found else
                               SeriesResult(Quality.NO_DATA, "no series"))
        return out

    def fetch_history(self, template: Template, parts: Sequence[Part], start: datetime,
                      end: datetime, step_seconds: int) -> Mapping[str, HistoryResult]:
        self.history_fetches.append((template, tuple(parts), start, end, step_seconds))
        out: dict[str, HistoryResult] = {}
        for part in parts:
            if template in self.failing:
                out[part.group] = HistoryResult(*self.failing[template])
                continue
            known = self.history.get(template, {})
            found = {r: list(known[r]) for r in part.revisions if r in known}
            out[part.group] = (HistoryResult(Quality.OK, values=found) if found else
                               HistoryResult(Quality.NO_DATA, "no history"))
        return out
