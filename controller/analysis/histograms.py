"""Prometheus-style histograms: validation, common buckets, pooling, quantiles, tails.

Pure. Bucket bounds are the finite ``le`` values; counts are per bucket (not
cumulative) and end with the +Inf bucket. Quantiles follow Prometheus'
``histogram_quantile`` (linear interpolation inside the bucket, 0 as the lower edge of
a first bucket with a positive bound, the highest finite bound for the +Inf bucket), so
the numbers in a verdict match what an SRE sees in Grafana.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

from controller.analysis.types import HistogramCounts

# Bounds closer than this (relative) are the same bound: Prometheus renders ``le`` with
# Go's shortest float formatting, and a provider may scale units (ms -> s).
_SAME = 1e-9


class BadHistogram(ValueError):
    """A histogram that cannot be judged; the message says why, for the verdict."""


def validate(h: HistogramCounts) -> None:
    if len(h.counts) != len(h.bounds) + 1:
        raise BadHistogram(f"{len(h.counts)} counts for {len(h.bounds)} bounds "
                           "(need one per bound plus +Inf)")
    if not h.bounds:
        raise BadHistogram("no finite bucket bounds")
    for b in h.bounds:
        if not math.isfinite(b):
            raise BadHistogram(f"bucket bound {b} is not finite")
    for lo, hi in zip(h.bounds, h.bounds[1:], strict=False):
        if not hi > lo:
            raise BadHistogram(f"bucket bounds not increasing ({hi} after {lo})")
    for c in h.counts:
        if not (math.isfinite(c) and c >= 0):
            raise BadHistogram(f"bucket count {c} is negative or not finite")


def _same(a: float, b: float) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return a == b
    return abs(a - b) <= _SAME * max(1.0, abs(a), abs(b))


def common_bounds(bound_sets: Iterable[Sequence[float]]) -> tuple[float, ...]:
    """The bounds present in every histogram (a coarsening all of them can be merged to)."""
    sets = [tuple(b) for b in bound_sets]
    if not sets:
        return ()
    result = sets[0]
    for other in sets[1:]:
        if other == result:
            continue
        kept: list[float] = []
        j = 0
        for b in result:                      # both increasing: one merge pass
            while j < len(other) and other[j] < b and not _same(other[j], b):
                j += 1
            if j < len(other) and _same(other[j], b):
                kept.append(b)
        result = tuple(kept)
    return result


def merge_to(h: HistogramCounts, bounds: Sequence[float]) -> tuple[float, ...]:
    """Counts of ``h`` re-bucketed onto ``bounds`` (a subset of its own bounds)."""
    if tuple(bounds) == tuple(h.bounds):
        return tuple(float(c) for c in h.counts)
    out = [0.0] * (len(bounds) + 1)
    k = 0
    for i, count in enumerate(h.counts):
        upper = h.bounds[i] if i < len(h.bounds) else math.inf
        while k < len(bounds) and upper > bounds[k] and not _same(upper, bounds[k]):
            k += 1
        out[k] += count
    return tuple(out)


def quantile(bounds: Sequence[float], counts: Sequence[float], q: float) -> float:
    """Prometheus' ``histogram_quantile(q, ...)`` of one histogram; NaN when empty."""
    total = sum(counts)
    if total <= 0:
        return math.nan
    rank = q * total
    cumulative = 0.0
    for i, count in enumerate(counts):
        if cumulative + count >= rank and (count > 0 or rank == 0):
            if i == len(bounds):
                return bounds[-1]
            if i == 0 and bounds[0] <= 0:
                return bounds[0]
            start = bounds[i - 1] if i > 0 else 0.0
            end = bounds[i]
            return start + (end - start) * (rank - cumulative) / count if count > 0 else start
        cumulative += count
    return bounds[-1]


def quantile_bucket(bounds: Sequence[float], counts: Sequence[float], q: float) -> int:
    """Index of the bound closing the bucket that holds the q-quantile: the share above
    ``bounds[i]`` is at most 1 - q. The last finite bound if the quantile is in +Inf."""
    total = sum(counts)
    cumulative = 0.0
    for i in range(len(bounds)):
        cumulative += counts[i]
        if cumulative >= q * total:
            return i
    return len(bounds) - 1


def above(counts: Sequence[float], index: int) -> float:
    """Observations strictly above ``bounds[index]``."""
    return float(sum(counts[index + 1:]))


def nearest_bound(bounds: Sequence[float], value: float) -> int:
    """Index of the bound nearest to ``value`` (the larger one on a tie)."""
    best = 0
    for i, b in enumerate(bounds):
        if abs(b - value) <= abs(bounds[best] - value):
            best = i
    return best


def bound_at_or_above(bounds: Sequence[float], value: float) -> int | None:
    """Index of the smallest bound >= ``value``; None if ``value`` is above every bound."""
    i = bisect.bisect_left(bounds, value)
    if i > 0 and _same(bounds[i - 1], value):
        return i - 1
    return i if i < len(bounds) else None


def on_common_bounds(
    histograms: Sequence[HistogramCounts],
) -> tuple[tuple[float, ...], list[tuple[float, ...]]]:
    """Validate histograms and re-bucket them onto the bounds they all share."""
    for h in histograms:
        if not isinstance(h, HistogramCounts):
            raise BadHistogram(f"expected histogram buckets, got {type(h).__name__}")
        validate(h)
    bounds = common_bounds(h.bounds for h in histograms)
    if not bounds:
        raise BadHistogram("the histograms share no bucket bound")
    return bounds, [merge_to(h, bounds) for h in histograms]


def column_sums(rows: Sequence[Sequence[float]], width: int) -> tuple[float, ...]:
    """Bucket-wise sum of several histograms with the same bounds."""
    total = [0.0] * width
    for row in rows:
        for i, c in enumerate(row):
            total[i] += c
    return tuple(total)
