"""The analyzer: metric provider + judges, for every rollout due at this tick.

Groups what all due rollouts need by PromQL template, sends ONE query per template
(``providers``), turns each rollout's answer into per-check ``Measurement``s (closed
steps from the rollout state, the current step from Prometheus), and lets the pure
judges (``controller.analysis``) decide. What leaves here is a ``Judgement`` for the state
machine, carrying the current step's counts so that a closing step keeps them.

I/O only through the provider it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from controller.analysis import judge
from controller.analysis.types import (
    HistogramCounts,
    Measurement,
    Outcome,
    Quality,
    RatioCounts,
    StepWindow,
)
from controller.judging import AnalysisRequest
from controller.policy.model import RatioCheck
from controller.providers import MetricProvider, SeriesResult
from controller.providers.presets import Part, Series, Template, templates_for
from controller.rollout.machine import Judgement

log = structlog.get_logger(__name__)
_ORDER = (Quality.OK, Quality.RESET, Quality.STALE, Quality.NO_DATA, Quality.ERROR)


class MetricAnalyzer:
    def __init__(self, provider: MetricProvider,
                 on_unusable: Callable[[Quality], None] = lambda quality: None) -> None:
        self.provider = provider
        self._on_unusable = on_unusable  # counts queries that gave no usable data

    def judge(self, requests: Sequence[AnalysisRequest],
              now: datetime) -> Mapping[str, Judgement]:
        needs: dict[Template, list[Part]] = {}
        plans: list[dict[str, dict[Series, Template]]] = []
        for i, request in enumerate(requests):
            analysis = request.policy.spec.analysis
            plan = {check.name: templates_for(check, check.provider or analysis.provider)
                    for check in analysis.checks}
            plans.append(plan)
            part = Part(group=str(i), namespace=request.namespace, service=request.service,
                        revisions=(request.canary_revision, request.baseline_revision),
                        window_seconds=max(1, int((now - request.step_started_at)
                                                  .total_seconds())),
                        interval_seconds=int(analysis.interval.total_seconds()))
            for templates in plan.values():
                for template in templates.values():
                    needs.setdefault(template, []).append(part)
        answers: dict[Template, Mapping[str, SeriesResult]] = {}
        for template, parts in needs.items():
            try:
                answers[template] = self.provider.fetch(template, parts, now)
            except ValueError as err:  # e.g. a name that may not enter PromQL
                answers[template] = {p.group: SeriesResult(Quality.ERROR, str(err))
                                     for p in parts}
        return {request.key: self._judge_one(request, str(i), plans[i], answers)
                for i, request in enumerate(requests)}

    def _judge_one(self, request: AnalysisRequest, group: str,
                   plan: Mapping[str, Mapping[Series, Template]],
                   answers: Mapping[Template, Mapping[str, SeriesResult]]) -> Judgement:
        analysis = request.policy.spec.analysis
        measurements: dict[str, Measurement[Any]] = {}
        current: dict[str, object] = {}
        for check in analysis.checks:
            results = {kind: answers[t].get(group, SeriesResult(Quality.ERROR, "no answer"))
                       for kind, t in plan[check.name].items()}
            if "errors" in results and results["errors"].quality == Quality.NO_DATA and (
                    results["total"].quality == Quality.OK):
                # A revision that never answered 5xx has no error series at all: zero
                # errors, known because its request series exists.
                results["errors"] = SeriesResult(Quality.OK)
            quality = max((r.quality for r in results.values()), key=_ORDER.index)
            if quality != Quality.OK:
                self._on_unusable(quality)
            detail = "; ".join(r.detail for r in results.values() if r.detail)
            closed = tuple(window_from_json(step[check.name]) for step in request.closed_steps
                           if check.name in step)
            window: StepWindow[Any] | None = None
            if quality in (Quality.OK, Quality.RESET):
                try:
                    window = (_ratio_window(results, request) if isinstance(check, RatioCheck)
                              else _histogram_window(results["histogram"], request))
                except ValueError as err:
                    quality, detail = Quality.ERROR, str(err)
            if window is not None and quality == Quality.OK:
                current[check.name] = window_to_json(window)
                measurements[check.name] = Measurement(quality, (*closed, window), detail)
            else:
                measurements[check.name] = Measurement(quality, closed, detail or str(quality))
        verdict = judge(analysis, measurements, min_requests=request.min_requests,
                        certify=request.certify)
        outcome = {Outcome.PASS: "pass", Outcome.FAIL: "fail"}.get(verdict.outcome, "continue")
        return Judgement(outcome, verdict.reason, missing=bool(verdict.missing),  # type: ignore[arg-type]
                         counts=current)


def _ratio_window(results: Mapping[Series, SeriesResult],
                  request: AnalysisRequest) -> StepWindow[RatioCounts]:
    def counts(revision: str) -> RatioCounts:
        total = results["total"].values.get(revision, 0.0)
        # No error series at all means no errors, once requests are known to exist.
        errors = min(results["errors"].values.get(revision, 0.0), total)
        return RatioCounts(errors=max(errors, 0.0), total=max(total, 0.0))

    return StepWindow(counts(request.baseline_revision), counts(request.canary_revision))


def _histogram_window(result: SeriesResult,
                      request: AnalysisRequest) -> StepWindow[HistogramCounts]:
    return StepWindow(per_bucket(result.buckets[request.baseline_revision]),
                      per_bucket(result.buckets[request.canary_revision]))


def per_bucket(cumulative: Mapping[float, float]) -> HistogramCounts:
    """Prometheus' cumulative ``le`` buckets -> counts per bucket (+Inf last)."""
    bounds = sorted(b for b in cumulative if not math.isinf(b))
    if math.inf not in cumulative:
        raise ValueError("histogram without a +Inf bucket")
    running, counts = 0.0, []
    for bound in (*bounds, math.inf):
        value = cumulative[bound]
        counts.append(max(value - running, 0.0))  # extrapolated increases can dip
        running = max(running, value)
    return HistogramCounts(tuple(bounds), tuple(counts))


def window_to_json(window: StepWindow[Any]) -> dict[str, Any]:
    """Compact form kept in the rollout state when a step closes."""
    if isinstance(window.canary, RatioCounts):
        return {"b": [window.baseline.errors, window.baseline.total],
                "c": [window.canary.errors, window.canary.total]}
    return {"bounds": list(window.canary.bounds), "b": list(window.baseline.counts),
            "c": list(window.canary.counts), "bb": list(window.baseline.bounds)}


def window_from_json(raw: Any) -> StepWindow[Any]:
    if "bounds" in raw:
        return StepWindow(HistogramCounts(tuple(raw.get("bb", raw["bounds"])), tuple(raw["b"])),
                          HistogramCounts(tuple(raw["bounds"]), tuple(raw["c"])))
    return StepWindow(RatioCounts(*raw["b"]), RatioCounts(*raw["c"]))
