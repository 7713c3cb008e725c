"""Bucket arithmetic: Prometheus' histogram_quantile on known cases, merging, tails."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.analysis import histograms
from controller.analysis.histograms import BadHistogram
from controller.analysis.types import HistogramCounts

BOUNDS = (0.1, 0.2, 0.4, 0.8)


@pytest.mark.parametrize("counts, q, expected", [
    # 100 observations, uniform inside each bucket: linear interpolation.
    ((50, 30, 20, 0, 0), 0.5, 0.1),            # exactly the first bucket's upper edge
    ((50, 30, 20, 0, 0), 0.25, 0.05),          # first bucket starts at 0 (positive bound)
    ((50, 30, 20, 0, 0), 0.65, 0.15),          # halfway through (0.1, 0.2]
    ((50, 30, 20, 0, 0), 0.9, 0.3),            # halfway through (0.2, 0.4]
    ((0, 0, 0, 10, 10), 0.99, 0.8),            # in +Inf: the highest finite bound
    ((0, 0, 0, 0, 5), 0.5, 0.8),
])
def test_quantile_is_prometheus_histogram_quantile(counts: tuple[int, ...], q: float,
                                                   expected: float) -> None:
    assert histograms.quantile(BOUNDS, counts, q) == pytest.approx(expected)


def test_quantile_of_a_first_bucket_with_a_non_positive_bound_is_that_bound() -> None:
    assert histograms.quantile((0.0, 1.0), (10, 0, 0), 0.5) == 0.0
    assert math.isnan(histograms.quantile(BOUNDS, (0, 0, 0, 0, 0), 0.5))


def test_quantile_from_fine_buckets_approaches_the_sample_quantile() -> None:
    rng = np.random.default_rng(3)
    sample = rng.lognormal(mean=math.log(0.08), sigma=0.5, size=200_000)
    bounds = tuple(np.round(np.arange(0.005, 1.0, 0.005), 3))
    counts = np.bincount(np.searchsorted(bounds, sample, side="left"), minlength=len(bounds) + 1)
    estimate = histograms.quantile(bounds, counts.tolist(), 0.99)
    assert estimate == pytest.approx(float(np.quantile(sample, 0.99)), abs=0.005)


def test_quantile_bucket_leaves_at_most_one_minus_q_above() -> None:
    counts = (500, 300, 150, 40, 10)
    for q in (0.5, 0.8, 0.9, 0.95, 0.99):
        i = histograms.quantile_bucket(BOUNDS, counts, q)
        assert histograms.above(counts, i) <= (1 - q) * sum(counts) + 1e-9
        if i > 0:   # and the bound is the smallest such one
            assert histograms.above(counts, i - 1) > (1 - q) * sum(counts)


def test_merge_onto_common_bounds_keeps_totals_and_tolerates_unit_scaling() -> None:
    fine = HistogramCounts((0.1, 0.2, 0.30000000000000004, 0.4), (1, 2, 3, 4, 5))
    coarse = HistogramCounts((0.2, 0.4), (7, 8, 9))
    bounds, (a, b) = histograms.on_common_bounds([fine, coarse])
    assert bounds == (0.2, 0.4)
    assert a == (3, 7, 5) and b == (7, 8, 9)
    assert histograms.common_bounds([(0.1, 0.3), (0.2, 0.4)]) == ()


@pytest.mark.parametrize("h, message", [
    (HistogramCounts((0.1, 0.2), (1, 2)), "counts for 2 bounds"),
    (HistogramCounts((0.2, 0.1), (1, 2, 3)), "not increasing"),
    (HistogramCounts((0.1, math.inf), (1, 2, 3)), "not finite"),
    (HistogramCounts((0.1, 0.2), (1, -2, 3)), "negative"),
    (HistogramCounts((), (1,)), "no finite bucket bounds"),
])
def test_bad_histograms_are_reported(h: HistogramCounts, message: str) -> None:
    with pytest.raises(BadHistogram, match=message):
        histograms.validate(h)


def test_bound_lookups() -> None:
    assert histograms.nearest_bound(BOUNDS, 0.5) == 2          # 0.4 is nearer than 0.8
    assert histograms.nearest_bound((1.0, 2.0, 4.0), 3.0) == 2  # a tie goes to the larger
    assert histograms.bound_at_or_above(BOUNDS, 0.4) == 2
    assert histograms.bound_at_or_above(BOUNDS, 0.41) == 3
    assert histograms.bound_at_or_above(BOUNDS, 0.399999999999) == 2
    assert histograms.bound_at_or_above(BOUNDS, 0.9) is None
