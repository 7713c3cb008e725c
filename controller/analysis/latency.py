"""The latency check (``kind: latency``) on Prometheus histogram buckets.

Pure. A latency regression shows as more requests in the tail, so both modes reduce to
slow requests among requests, judged by the error rate's tests (``events``: the
conditional-binomial mixture SPRT with per-interval tempering, Lindon, Sanden and
Shirikian, KDD 2022; Howard et al. 2021):

* quantile mode (``quantile: 0.99``): slow means above the upper edge of the bucket that
  holds stable's q-quantile, so stable's share above it is at most 1 - q; the test
  compares the canary's share above that bound with stable's times 1 + tolerance.
  Buckets can only resolve a quantile to its bucket, and this is the finest comparison
  they support;
* threshold mode (``threshold: 500ms``): slow means above the bucket bound nearest the
  threshold (the reason names the bound used).

The bound is chosen ONCE per rollout (``bounds_for``), from stable's own recent history
when there is one, else from stable's first interval, and then fixed: every block is
tallied at the same bound, so the blocks add up to one test.

Absolute guards, anytime-valid on the canary's slow requests past warm-up (a cold start is
slow by definition; ``warmup``): ``maxLatency`` fails only with evidence that more than
1 - q of the canary's requests are slower than the smallest bound >= maxLatency (which
implies its q-quantile is above maxLatency); ``maxShareAbove`` likewise with the smallest
bound >= threshold. Quantiles in the reason are Prometheus' interpolation, of the current
step's histograms.
"""

from __future__ import annotations

from dataclasses import replace

from controller.analysis import histograms, text
from controller.analysis.events import GuardSpec, event_finding
from controller.analysis.evidence import Finding
from controller.analysis.histograms import BadHistogram
from controller.analysis.ledger import Tally
from controller.analysis.types import EventMeasurement, HistogramCounts, LatencyBounds
from controller.policy.model import LatencyCheck


def bounds_for(check: LatencyCheck, stable: HistogramCounts) -> LatencyBounds:
    """The check's bounds, from stable's histogram (its history, or its first interval)."""
    histograms.validate(stable)
    bounds, counts = stable.bounds, stable.counts
    note = ""
    if check.quantile is not None:
        if sum(counts) <= 0:
            raise BadHistogram("no stable requests to place the quantile")
        relative = bounds[histograms.quantile_bucket(bounds, counts, check.quantile)]
        limit = check.max_latency
    else:
        assert check.threshold is not None
        relative = bounds[histograms.nearest_bound(bounds, check.threshold.total_seconds())]
        limit = check.threshold if check.max_share_above is not None else None
    guard = None
    if limit is not None:
        j = histograms.bound_at_or_above(bounds, limit.total_seconds())
        if j is None:
            note = (f"{text.seconds(limit.total_seconds())} is above every bucket bound: "
                    "its guard is not tested")
        else:
            guard = bounds[j]
    return LatencyBounds(relative, guard, note)


def _above(h: HistogramCounts, bound: float | None) -> float:
    if bound is None:
        return 0.0
    return float(sum(c for b, c in zip((*h.bounds, float("inf")), h.counts, strict=True)
                     if b > bound * (1 + 1e-9)))


def tally(canary: HistogramCounts, stable: HistogramCounts, bounds: LatencyBounds) -> Tally:
    """Requests and slow requests of both revisions (cumulative or per block)."""
    for h in (canary, stable):
        histograms.validate(h)
    return Tally(canary_exposure=canary.total, canary_events=_above(canary, bounds.relative),
                 baseline_exposure=stable.total, baseline_events=_above(stable, bounds.relative),
                 canary_guard_events=_above(canary, bounds.guard))


def guard_rate(check: LatencyCheck) -> float | None:
    """The share of slow requests the guard allows: 1 - q (maxLatency) or maxShareAbove."""
    if check.quantile is not None and check.max_latency is not None:
        return 1.0 - check.quantile
    return check.max_share_above


def evaluate(check: LatencyCheck, m: EventMeasurement, *, alpha_share: float,
             alpha_pass: float) -> Finding:
    """Evidence of the latency check; ``alpha_share`` is the check's share of alpha."""
    bounds = m.bounds
    if bounds is None:
        raise BadHistogram("the latency bounds were not chosen yet")
    rate = guard_rate(check)
    guard = None
    if rate is not None and bounds.guard is not None:
        slow = text.seconds(bounds.guard)
        if check.quantile is not None:
            assert check.max_latency is not None
            label = f"p{100 * check.quantile:g}"
            limit = text.seconds(check.max_latency.total_seconds())
            guard = GuardSpec("max-latency guard", rate,
                              f"{label} above maxLatency {limit} (more than {text.pct(rate)} "
                              f"above {slow})", f"{label} below maxLatency {limit}",
                              during_warmup=False)
        else:
            guard = GuardSpec("max-share guard", rate,
                              f"share above {slow} over maxShareAbove {text.pct(rate)}",
                              f"share above {slow} below maxShareAbove {text.pct(rate)}",
                              during_warmup=False)
    head = ""
    quantiles: dict[str, float] = {}
    if check.quantile is not None and m.display is not None:
        q = check.quantile
        c, b = m.display.canary, m.display.baseline
        if c.total > 0 and b.total > 0:
            quantiles = {"quantile": q,
                         "canary_quantile_seconds": histograms.quantile(c.bounds, c.counts, q),
                         "baseline_quantile_seconds": histograms.quantile(b.bounds, b.counts, q)}
            head = (f"p{100 * q:g} {text.seconds(quantiles['canary_quantile_seconds'])} vs "
                    f"{text.seconds(quantiles['baseline_quantile_seconds'])} stable; ")
    note = bounds.note
    if rate is not None and bounds.guard is None and not note:
        given = check.max_latency if check.quantile is not None else check.threshold
        assert given is not None
        note = (f"{'maxLatency' if check.quantile is not None else 'threshold'} "
                f"{text.seconds(given.total_seconds())} is above every bucket bound: not tested")
    elif check.threshold is not None:
        head = (f"threshold {text.seconds(check.threshold.total_seconds())} -> nearest bucket "
                f"bound {text.seconds(bounds.relative)}; ")
    what = f"share above {text.seconds(bounds.relative)}"
    finding = event_finding(check.name, m.look, what=what, tolerance=check.tolerance,
                            guard=guard, gross_ratio=None,
                            alpha_share=alpha_share, alpha_pass=alpha_pass, head=head)
    finding.numbers.update(quantiles, tail_bound_seconds=bounds.relative)
    if bounds.guard is not None:
        finding.numbers["guard_bound_seconds"] = bounds.guard
    if check.max_latency is not None:
        finding.numbers["max_latency_seconds"] = check.max_latency.total_seconds()
    if check.threshold is not None:
        finding.numbers["threshold_seconds"] = check.threshold.total_seconds()
    if note:
        return replace(finding, summary=f"{finding.summary}; {note}")
    return finding
