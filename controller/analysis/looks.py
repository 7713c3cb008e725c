"""One look at one check: the metric provider's cumulative counts of the current step and
what the rollout state kept (the check's ledger) in; what the judges see, and what to
keep, out.

Pure. Called by the controller's analyzer at every look and by the benchmark, so that the
benchmark judges exactly what the controller would. A look returns two ledgers: the one
to keep while the step goes on (it changes only when an interval closes, so the state is
written once an interval, not once a look), and the one to keep if the step ends at this
look (its open interval closed, so the evidence that passed the step is not dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from controller.analysis import latency
from controller.analysis.histograms import BadHistogram
from controller.analysis.ledger import (
    DriftLedger,
    EventLedger,
    Tally,
    capped,
    drift_from_json,
    drift_to_json,
    ledger_from_json,
    ledger_to_json,
    observe,
)
from controller.analysis.types import (
    EventMeasurement,
    HistogramCounts,
    LatencyBounds,
    Measurement,
    Quality,
    RatioCounts,
    StepWindow,
)
from controller.policy.model import Analysis, DistributionCheck, LatencyCheck, RatioCheck

Check = RatioCheck | LatencyCheck | DistributionCheck
Ledger = EventLedger | DriftLedger
Evidence = EventMeasurement | Measurement[Any]


@dataclass(frozen=True)
class Timing:
    """Where the rollout is in time: its current step and this look's moment."""

    step: int
    step_started_at: datetime
    now: datetime
    interval: timedelta
    warmup: timedelta


@dataclass(frozen=True)
class Looked:
    """The outcome of one look at one check."""

    measurement: Evidence
    keep: Ledger                  # the ledger while the step goes on
    closing: Ledger               # the ledger if the step ends now
    closed_block: bool = False    # an interval closed at this look (the state changed)


def empty(check: Check) -> Ledger:
    return DriftLedger() if isinstance(check, DistributionCheck) else EventLedger()


def to_json(ledger: Ledger) -> dict[str, Any]:
    if isinstance(ledger, DriftLedger):
        return {"drift": drift_to_json(ledger)}
    return {"events": ledger_to_json(ledger)}


def from_json(check: Check, raw: Any) -> Ledger:
    """A check's ledger from the state; a kept ledger of another kind (the policy changed
    the check) starts afresh."""
    if not isinstance(raw, dict):
        return empty(check)
    if isinstance(check, DistributionCheck):
        return drift_from_json(raw["drift"]) if "drift" in raw else DriftLedger()
    return ledger_from_json(raw["events"]) if "events" in raw else EventLedger()


# --- references: stable's own history --------------------------------------------------------


def with_reference(check: Check, ledger: Ledger,
                   history: Sequence[RatioCounts | HistogramCounts]) -> Ledger:
    """The ledger with stable's recent intervals (before the rollout) as its reference; for
    a latency check they also place its bounds. No history: unchanged."""
    if not isinstance(ledger, EventLedger) or ledger.reference_tried:
        return ledger
    ledger = replace(ledger, reference_tried=True)
    if not history:
        return ledger
    if isinstance(check, RatioCheck):
        reference = tuple((h.errors, h.total) for h in history if isinstance(h, RatioCounts))
        return replace(ledger, reference=reference)
    if isinstance(check, LatencyCheck):
        hists = [h for h in history if isinstance(h, HistogramCounts) and h.total > 0]
        if not hists:
            return ledger
        pooled = HistogramCounts(hists[0].bounds, tuple(
            sum(h.counts[i] for h in hists if len(h.counts) == len(hists[0].counts))
            for i in range(len(hists[0].counts))))
        bounds = latency.bounds_for(check, pooled)
        reference = tuple((latency.tally(h, h, bounds).baseline_events, h.total) for h in hists
                          if h.bounds == pooled.bounds)
        return replace(ledger, reference=reference, bound=bounds.relative,
                       guard_bound=bounds.guard)
    return ledger


# --- a look ----------------------------------------------------------------------------------


def needs_history(check: Check, ledger: Ledger) -> bool:
    """Whether stable's history should be fetched for this check's ledger now."""
    return isinstance(ledger, EventLedger) and not ledger.reference_tried and not (
        isinstance(check, DistributionCheck))


def look(check: Check, ledger: Ledger, cumulative: StepWindow[Any], timing: Timing) -> Looked:
    """One look at ``check`` with the current step's cumulative counts (since the step
    began). Raises ValueError (BadHistogram) for counts that cannot be judged."""
    if isinstance(check, DistributionCheck):
        assert isinstance(ledger, DriftLedger)
        return _drift(ledger, cumulative, timing)
    assert isinstance(ledger, EventLedger)
    bounds: LatencyBounds | None = None
    display: StepWindow[HistogramCounts] | None = None
    if isinstance(check, RatioCheck):
        canary, stable = cumulative.canary, cumulative.baseline
        tally = Tally(canary.total, canary.errors, stable.total, stable.errors, canary.errors)
    else:
        display = cumulative
        if ledger.bound is None:
            # No history: stable's own data of this first look place the bounds.
            chosen = latency.bounds_for(check, cumulative.baseline)
            ledger = replace(ledger, bound=chosen.relative, guard_bound=chosen.guard)
        assert ledger.bound is not None
        bounds = LatencyBounds(ledger.bound, ledger.guard_bound)
        tally = latency.tally(cumulative.canary, cumulative.baseline, bounds)
    keep, seen = observe(ledger, tally, step=timing.step, step_started_at=timing.step_started_at,
                         now=timing.now, interval=timing.interval, warmup=timing.warmup)
    closed_block = len(keep.blocks) != len(ledger.blocks) or keep.step != ledger.step
    closing = keep
    if seen.current is not None and seen.current.tally.canary_exposure > 0:
        # The open block closed early: the step ends here. The next step's first block
        # gets its dispersion when it opens (``observe`` at the step change).
        closing = replace(keep, blocks=capped((*keep.blocks, seen.current)), anchor=tally,
                          block_started_at=timing.now)
    measurement = EventMeasurement(Quality.OK, seen, bounds=bounds, display=display)
    return Looked(measurement, keep, closing, closed_block)


def _hist(bounds: Sequence[float], counts: Sequence[float]) -> HistogramCounts:
    return HistogramCounts(tuple(bounds), tuple(counts))


def _drift(ledger: DriftLedger, cumulative: StepWindow[HistogramCounts],
           timing: Timing) -> Looked:
    canary, stable = cumulative.canary, cumulative.baseline
    if canary.bounds != stable.bounds or len(canary.counts) != len(stable.counts):
        raise BadHistogram("canary and stable histograms have different buckets")
    if ledger.step != timing.step or ledger.step_started_at != timing.step_started_at:
        closed = ledger.closed + ((ledger.latest,) if ledger.latest is not None else ())
        ledger = DriftLedger(closed=closed, step=timing.step,
                             step_started_at=timing.step_started_at)
    anchored = ledger.anchor is None and timing.now >= timing.step_started_at + timing.warmup
    if anchored:
        # The cumulative counts when warm-up ended (no warm-up: the step's start).
        anchor = ((stable.counts, canary.counts) if timing.warmup > timedelta(0) else
                  (tuple(0.0 for _ in stable.counts), tuple(0.0 for _ in canary.counts)))
        ledger = replace(ledger, anchor=anchor)
    windows = [StepWindow(_hist(bounds, b), _hist(bounds, c)) for bounds, b, c in ledger.closed]
    latest = ledger.latest
    if ledger.anchor is not None:
        b0, c0 = ledger.anchor
        latest = (canary.bounds,
                  tuple(max(x - y, 0.0) for x, y in zip(stable.counts, b0, strict=True)),
                  tuple(max(x - y, 0.0) for x, y in zip(canary.counts, c0, strict=True)))
        windows.append(StepWindow(_hist(latest[0], latest[1]), _hist(latest[0], latest[2])))
    due = ledger.saved_at is None or timing.now - ledger.saved_at >= timing.interval
    keep = replace(ledger, latest=latest, saved_at=timing.now) if due and latest else ledger
    closing = replace(ledger, latest=latest, saved_at=timing.now)
    # In the current step's warm-up the check has nothing new to say: OK, no windows (the
    # judges read that as "in warm-up", neither missing nor passing).
    shown = tuple(windows) if ledger.anchor is not None else ()
    if shown and timing.now < timing.step_started_at + timing.warmup + timing.interval and (
            not any(sum(w.canary.counts) for w in shown)):
        shown = ()    # warm-up just ended: the first predictions past it are on their way
    return Looked(Measurement(Quality.OK, shown), keep, closing, anchored or keep is not ledger)


def analysis_timing(analysis: Analysis, step: int, step_started_at: datetime,
                    now: datetime) -> Timing:
    return Timing(step, step_started_at, now, analysis.interval, analysis.warmup.duration)


def step_totals(evidence: Any, step: int) -> dict[str, dict[str, float]]:
    """Per check, what one step's intervals add up to (requests and events of both
    revisions): what a record of the step (lineage) keeps. Unreadable parts are skipped."""
    totals: dict[str, dict[str, float]] = {}
    if not isinstance(evidence, dict):
        return totals
    for name, raw in evidence.items():
        try:
            if isinstance(raw, dict) and "events" in raw:
                blocks = [b for b in ledger_from_json(raw["events"]).blocks if b.step == step]
                t = Tally()
                for b in blocks:
                    t = t.plus(b.tally)
                totals[name] = {"canary_requests": t.canary_exposure,
                                "canary_events": t.canary_events,
                                "stable_requests": t.baseline_exposure,
                                "stable_events": t.baseline_events}
            elif isinstance(raw, dict) and "drift" in raw:
                drift = drift_from_json(raw["drift"])
                windows = (*drift.closed, *((drift.latest,) if drift.latest else ()))
                if step < len(windows):
                    _, stable, canary = windows[step]
                    totals[name] = {"canary_requests": float(sum(canary)),
                                    "stable_requests": float(sum(stable))}
        except ValueError:
            continue
    return totals
