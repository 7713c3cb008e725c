"""The latency check (``kind: latency``) on Prometheus histogram buckets.

Pure. A latency regression shows as more requests in the tail, so both modes reduce to
a share of requests above one bucket bound and reuse the error-rate check's sequential
test (``evidence.relative``: conditional-binomial mixture SPRT with per-step exposure,
Lindon, Sanden and Shirikian, KDD 2022; Howard et al. 2021):

* quantile mode (``quantile: 0.99``): the bound is the upper edge of the bucket that
  holds stable's q-quantile (pooled over all steps), so stable's share above it is at
  most 1 - q; the test compares the canary's share above that bound with stable's share
  times 1 + tolerance. Buckets can only resolve a quantile to its bucket, and this is the
  finest comparison they support. The bound is chosen from stable's data alone and
  settles quickly; a change of bound between looks switches between two valid tests.
* threshold mode (``threshold: 500ms``): the share above the bucket bound nearest the
  threshold (the reason names the bound used).

Absolute guards, anytime-valid (Beta-binomial mixture on the canary's requests of all
steps, as the error rate's ``maxRate``): ``maxLatency`` fails only with evidence that
more than 1 - q of the canary's requests are slower than the smallest bound >= maxLatency
(which implies its q-quantile is above maxLatency); ``maxShareAbove`` likewise with the
smallest bound >= threshold. Quantiles in the reason are Prometheus' interpolation.
"""

from __future__ import annotations

from datetime import timedelta

from controller.analysis import evidence, histograms, text
from controller.analysis.evidence import Finding
from controller.analysis.histograms import BadHistogram
from controller.analysis.sequential import StepEvents
from controller.analysis.types import HistogramCounts, Measurement, Quality
from controller.policy.model import LatencyCheck


def _seconds(d: timedelta) -> float:
    return d.total_seconds()


def evaluate(check: LatencyCheck, m: Measurement[HistogramCounts], *, alpha_share: float,
             alpha_pass: float) -> Finding:
    """Evidence of the latency check; ``alpha_share`` is the check's share of alpha."""
    if not m.windows:
        return evidence.missing(check.name, Quality.NO_DATA, "no steps measured yet")
    try:
        flat = [h for w in m.windows for h in (w.canary, w.baseline)]
        bounds, merged = histograms.on_common_bounds(flat)
    except BadHistogram as err:
        return evidence.missing(check.name, Quality.ERROR, f"unusable histogram: {err}")
    canary, stable = merged[0::2], merged[1::2]
    width = len(bounds) + 1
    pooled_c = histograms.column_sums(canary, width)
    pooled_b = histograms.column_sums(stable, width)
    n_c, n_b = sum(pooled_c), sum(pooled_b)
    if n_c <= 0:
        return evidence.missing(check.name, Quality.NO_DATA, "no canary requests yet")

    numbers: dict[str, float] = {"canary_requests": n_c, "baseline_requests": n_b}
    guard: evidence.Guard | None = None
    notes: list[str] = []
    if check.quantile is not None:
        q = check.quantile
        if n_b <= 0:
            return evidence.missing(check.name, Quality.NO_DATA,
                                    "no stable requests to place the quantile")
        label = f"p{100 * q:g}"
        index = histograms.quantile_bucket(bounds, pooled_b, q)
        numbers["quantile"] = q
        numbers["canary_quantile_seconds"] = histograms.quantile(bounds, pooled_c, q)
        numbers["baseline_quantile_seconds"] = histograms.quantile(bounds, pooled_b, q)
        head = (f"{label} {text.seconds(numbers['canary_quantile_seconds'])} vs "
                f"{text.seconds(numbers['baseline_quantile_seconds'])} stable; ")
        if check.max_latency is not None:
            limit = _seconds(check.max_latency)
            numbers["max_latency_seconds"] = limit
            j = histograms.bound_at_or_above(bounds, limit)
            if j is None:
                notes.append(f"maxLatency {text.seconds(limit)} is above every bucket bound: "
                             "not tested")
            else:
                numbers["max_latency_bound_seconds"] = bounds[j]
                guard = evidence.Guard(
                    "max-latency guard", histograms.above(pooled_c, j), n_c, 1.0 - q,
                    f"{label} above maxLatency {text.seconds(limit)} "
                    f"(more than {text.pct(1 - q)} above {text.seconds(bounds[j])})",
                    f"{label} below maxLatency {text.seconds(limit)}")
    else:
        assert check.threshold is not None
        limit = _seconds(check.threshold)
        numbers["threshold_seconds"] = limit
        index = histograms.nearest_bound(bounds, limit)
        head = (f"threshold {text.seconds(limit)} -> nearest bucket bound "
                f"{text.seconds(bounds[index])}; ")
        if check.max_share_above is not None:
            numbers["max_share_above"] = check.max_share_above
            j = histograms.bound_at_or_above(bounds, limit)
            if j is None:
                notes.append(f"threshold {text.seconds(limit)} is above every bucket bound: "
                             "maxShareAbove not tested")
            else:
                numbers["max_share_bound_seconds"] = bounds[j]
                guard = evidence.Guard(
                    "max-share guard", histograms.above(pooled_c, j), n_c,
                    check.max_share_above,
                    f"share above {text.seconds(bounds[j])} over maxShareAbove "
                    f"{text.pct(check.max_share_above)}",
                    f"share above {text.seconds(bounds[j])} below maxShareAbove "
                    f"{text.pct(check.max_share_above)}")

    bound = bounds[index]
    numbers["tail_bound_seconds"] = bound
    tail_c, tail_b = histograms.above(pooled_c, index), histograms.above(pooled_b, index)
    numbers["canary_tail_share"] = tail_c / n_c
    numbers["canary_tail_requests"] = tail_c
    numbers["baseline_tail_requests"] = tail_b
    k = 1 + (guard is not None)
    steps = [StepEvents(histograms.above(c, index), sum(c), histograms.above(b, index), sum(b))
             for c, b in zip(canary, stable, strict=True)]
    rel = evidence.relative(steps, check.tolerance, alpha_lower=alpha_share / k,
                            alpha_pass=alpha_pass,
                            what=f"share above {text.seconds(bound)}")
    numbers.update(rel.numbers)
    stable_share, summary = evidence.rate_summary(
        f"share above {text.seconds(bound)}", (tail_c, n_c), (tail_b, n_b), rel.interval)
    if stable_share is not None:
        numbers["baseline_tail_share"] = stable_share
    summary = head + summary
    if notes:
        summary += "; " + "; ".join(notes)
    return evidence.rate_finding(check.name, summary, numbers, rel, guard, "e_guard",
                                 alpha_pass=alpha_pass, requests=sum(canary[-1]))
