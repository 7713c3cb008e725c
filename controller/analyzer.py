"""The analyzer: metric provider + judges, for every rollout due at this look.

Groups what all due rollouts need by PromQL template and sends ONE query per template
(``providers``) for the current step's cumulative counts; for rollouts whose evidence has
no reference yet, ONE range query per template for the stable revision's recent
intervals (``analysis.history``). Each rollout's answers, with the evidence its state
kept, go through ``analysis.looks`` (pure: the same code the benchmark drives), and the
judges (``analysis.judge``) decide. What leaves here is a ``Judgement`` for the state
machine, carrying the evidence to keep.

I/O only through the provider it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from controller.analysis import judge, looks
from controller.analysis.types import (
    HistogramCounts,
    Measurement,
    Outcome,
    Quality,
    RatioCounts,
    StepWindow,
)
from controller.judging import AnalysisRequest
from controller.policy.durations import format_duration
from controller.policy.model import Analysis, DistributionCheck, RatioCheck
from controller.providers import HistoryResult, MetricProvider, SeriesResult
from controller.providers.presets import Part, Series, Template, templates_for
from controller.rollout.machine import Judgement

log = structlog.get_logger(__name__)
_ORDER = (Quality.OK, Quality.RESET, Quality.STALE, Quality.NO_DATA, Quality.ERROR)
FIRST_SAMPLES = "waiting for the step's first samples"
Plan = dict[str, dict[Series, Template]]


class MetricAnalyzer:
    def __init__(self, provider: MetricProvider,
                 on_unusable: Callable[[Quality], None] = lambda quality: None) -> None:
        self.provider = provider
        self._on_unusable = on_unusable  # counts queries that gave no usable data

    def judge(self, requests: Sequence[AnalysisRequest], now: Any) -> Mapping[str, Judgement]:
        needs: dict[Template, list[Part]] = {}
        history_needs: dict[tuple[Template, int, int], list[Part]] = {}
        plans: list[Plan] = []
        for i, request in enumerate(requests):
            analysis = request.policy.spec.analysis
            plan = {check.name: templates_for(check, check.provider or analysis.provider)
                    for check in analysis.checks}
            plans.append(plan)
            interval = int(analysis.interval.total_seconds())
            part = Part(group=str(i), namespace=request.namespace, service=request.service,
                        revisions=(request.canary_revision, request.baseline_revision),
                        window_seconds=max(1, int((now - request.step_started_at)
                                                  .total_seconds())),
                        interval_seconds=interval)
            for templates in plan.values():
                for template in templates.values():
                    needs.setdefault(template, []).append(part)
            history = int(analysis.history.total_seconds())
            if history > 0:
                stable = Part(group=str(i), namespace=request.namespace,
                              service=request.service, revisions=(request.baseline_revision,),
                              window_seconds=interval, interval_seconds=interval)
                for check in analysis.checks:
                    if not looks.needs_history(check, self._ledger(request, check)):
                        continue
                    for template in plan[check.name].values():
                        waiting = history_needs.setdefault((template, history, interval), [])
                        if stable not in waiting:
                            waiting.append(stable)
        answers: dict[Template, Mapping[str, SeriesResult]] = {}
        for template, parts in needs.items():
            try:
                answers[template] = self.provider.fetch(template, parts, now)
            except ValueError as err:  # e.g. a name that may not enter PromQL
                answers[template] = {p.group: SeriesResult(Quality.ERROR, str(err))
                                     for p in parts}
        histories: dict[tuple[Template, int], Mapping[str, HistoryResult]] = {}
        for (template, seconds, interval), parts in history_needs.items():
            try:
                histories[(template, interval)] = self.provider.fetch_history(
                    template, parts, now - timedelta(seconds=seconds), now, interval)
            except ValueError as err:
                histories[(template, interval)] = {p.group: HistoryResult(Quality.ERROR, str(err))
                                                   for p in parts}
        return {request.key: self._judge_one(request, str(i), plans[i], answers, histories, now)
                for i, request in enumerate(requests)}

    @staticmethod
    def _ledger(request: AnalysisRequest, check: looks.Check) -> looks.Ledger:
        try:
            return looks.from_json(check, request.evidence.get(check.name))
        except ValueError as err:
            log.warning("evidence unreadable; starting afresh", check=check.name, error=str(err),
                        key=request.key)
            return looks.empty(check)

    def _judge_one(self, request: AnalysisRequest, group: str, plan: Plan,
                   answers: Mapping[Template, Mapping[str, SeriesResult]],
                   histories: Mapping[tuple[Template, int], Mapping[str, HistoryResult]],
                   now: Any) -> Judgement:
        analysis = request.policy.spec.analysis
        interval = int(analysis.interval.total_seconds())
        timing = looks.analysis_timing(analysis, request.step, request.step_started_at, now)
        young = now - request.step_started_at < analysis.interval
        measurements: dict[str, looks.Evidence] = {}
        keep: dict[str, Any] = {}
        closing: dict[str, Any] = {}
        changed = False
        short: list[tuple[str, _Found]] = []
        for check in analysis.checks:
            ledger = self._ledger(request, check)
            results = {kind: answers[t].get(group, SeriesResult(Quality.ERROR, "no answer"))
                       for kind, t in plan[check.name].items()}
            if "errors" in results and results["errors"].quality == Quality.NO_DATA and (
                    results["total"].quality == Quality.OK):
                # A revision that never answered 5xx has no error series at all: zero
                # errors, known because its request series exists.
                results["errors"] = SeriesResult(Quality.OK)
            quality = max((r.quality for r in results.values()), key=_ORDER.index)
            detail = "; ".join(r.detail for r in results.values() if r.detail)
            if quality == Quality.NO_DATA and young:
                # The step's first samples have not arrived yet: not missing, not healthy.
                measurements[check.name] = Measurement(Quality.NO_DATA, (), FIRST_SAMPLES)
                keep[check.name] = closing[check.name] = looks.to_json(ledger)
                continue
            if quality != Quality.OK:
                self._on_unusable(quality)
            if looks.needs_history(check, ledger):
                ledger, found = self._with_history(check, ledger, plan[check.name], histories,
                                                   group, request, interval)
                changed = True  # kept at once: the range query is asked once per rollout
                if found.short:
                    short.append((check.name, found))
            try:
                if quality not in (Quality.OK, Quality.RESET):
                    raise _Unusable(detail or str(quality))
                cumulative = (_ratio_window(results, request) if isinstance(check, RatioCheck)
                              else _histogram_window(results["histogram"], request))
                seen = looks.look(check, ledger, cumulative, timing)
            except _Unusable:
                measurements[check.name] = Measurement(quality, (), detail or str(quality))
                keep[check.name] = closing[check.name] = looks.to_json(ledger)
                continue
            except ValueError as err:
                measurements[check.name] = Measurement(Quality.ERROR, (), str(err))
                keep[check.name] = closing[check.name] = looks.to_json(ledger)
                continue
            if quality == Quality.RESET:
                # A counter reset: this look's counts cannot be trusted; keep the ledger.
                measurements[check.name] = Measurement(quality, (), detail)
                keep[check.name] = closing[check.name] = looks.to_json(ledger)
                continue
            measurements[check.name] = seen.measurement
            keep[check.name] = looks.to_json(seen.keep)
            closing[check.name] = looks.to_json(seen.closing)
            changed = changed or seen.closed_block
        verdict = judge(analysis, measurements, min_requests=request.min_requests,
                        certify=request.certify)
        outcome = {Outcome.PASS: "pass", Outcome.FAIL: "fail"}.get(verdict.outcome, "continue")
        missing = tuple(m for m in verdict.missing
                        if not (young and measurements.get(m) is not None
                                and measurements[m].detail == FIRST_SAMPLES))
        return Judgement(outcome, verdict.reason, missing=bool(missing),  # type: ignore[arg-type]
                         evidence=keep, closing=closing,
                         changed=changed or outcome != "continue",
                         notice=history_notice(request.baseline_revision, analysis, short))

    def _with_history(self, check: looks.Check, ledger: looks.Ledger,
                      templates: Mapping[Series, Template],
                      histories: Mapping[tuple[Template, int], Mapping[str, HistoryResult]],
                      group: str, request: AnalysisRequest,
                      interval: int) -> tuple[looks.Ledger, _Found]:
        """The ledger with stable's history as its reference, and what was found of it."""
        wanted = int(request.policy.spec.analysis.history.total_seconds()) // interval
        stable = request.baseline_revision

        def none(result: HistoryResult | None) -> tuple[looks.Ledger, _Found]:
            why = "no answer" if result is None else (result.detail or str(result.quality))
            return looks.with_reference(check, ledger, []), _Found(0, wanted, why)

        if isinstance(check, RatioCheck):
            total = histories.get((templates["total"], interval), {}).get(group)
            errors = histories.get((templates["errors"], interval), {}).get(group)
            if total is None or total.quality != Quality.OK:
                return none(total)
            n = list(total.values.get(stable, ()))
            e = list(errors.values.get(stable, ())) if errors is not None and (
                errors.quality == Quality.OK) else [0.0] * len(n)
            pairs = [RatioCounts(min(max(x, 0.0), max(t, 0.0)), max(t, 0.0))
                     for x, t in zip(e, n, strict=False)]
            used = sum(1 for p in pairs if p.total > 0)
            return looks.with_reference(check, ledger, pairs), _Found(used, wanted)
        if isinstance(check, DistributionCheck):
            return ledger, _Found(wanted, wanted)
        result = histories.get((templates["histogram"], interval), {}).get(group)
        if result is None or result.quality != Quality.OK:
            return none(result)
        hists = []
        for buckets in result.buckets.get(stable, ()):
            try:
                hists.append(per_bucket(buckets))
            except ValueError:
                continue
        try:
            used = sum(1 for h in hists if h.total > 0)
            return looks.with_reference(check, ledger, hists), _Found(used, wanted)
        except ValueError as err:
            log.warning("stable's history unusable for its latency bounds", error=str(err),
                        key=request.key)
            return looks.with_reference(check, ledger, []), _Found(0, wanted, str(err))


@dataclass(frozen=True)
class _Found:
    """How much of stable's history a check got: intervals with traffic, of those asked."""

    intervals: int
    wanted: int
    why: str = ""

    @property
    def short(self) -> bool:
        """Fewer than half the intervals asked for: stable's variation is not known yet."""
        return self.intervals * 2 < self.wanted


def history_notice(stable: str, analysis: Analysis,
                   short: Sequence[tuple[str, _Found]]) -> str | None:
    """What people are told once per rollout when stable's history is short: the evidence
    is then weighed as if traffic varied a lot until the rollout's own intervals show how it
    varies, which costs time and exposure (measured: docs/architecture.md, "history")."""
    if not short:
        return None
    interval = format_duration(analysis.interval)
    parts = []
    for name, found in short:
        why = f": {found.why}" if found.why else ""
        parts.append(f"{name} {found.intervals} of {found.wanted}{why}")
    return (f"stable revision {stable} has little history in Prometheus ({interval} "
            f"intervals with traffic in the last {format_duration(analysis.history)}: "
            f"{'; '.join(parts)}); until this rollout's own intervals show how its traffic "
            "varies, the evidence is weighed as if it varied a lot: slower promotion, more "
            "exposure before a rollback")


class _Unusable(ValueError):
    pass


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
