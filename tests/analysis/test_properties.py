"""Properties of ``judge`` that must hold for every input (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.analysis import (
    HistogramCounts,
    Measurement,
    Outcome,
    Quality,
    RatioCounts,
    StepWindow,
    judge,
)
from controller.policy.model import Analysis

ANALYSIS = Analysis.model_validate({"alpha": 0.05, "checks": [
    {"name": "errors", "kind": "ratio", "tolerance": 0.2, "maxRate": 0.05},
    {"name": "p99", "kind": "latency", "quantile": 0.99, "tolerance": 0.1,
     "maxLatency": "300ms"},
    {"name": "slow", "kind": "latency", "threshold": "250ms", "maxShareAbove": 0.02},
    {"name": "psi", "kind": "distribution", "method": "psi"},
    {"name": "js", "kind": "distribution", "method": "jensenShannon", "threshold": 0.1,
     "reference": {"source": "training", "histogram": {"bounds": [0.25, 0.5, 0.75],
                                                        "counts": [10, 40, 40, 10]}}},
]})
RATIO_ONLY = Analysis.model_validate({"alpha": 0.05, "checks": [
    {"name": "errors", "kind": "ratio", "tolerance": 0.2, "maxRate": 0.02}]})
LAT = (0.1, 0.2, 0.3, 0.5)
PRED = (0.25, 0.5, 0.75)
RANK = {Outcome.FAIL: 0, Outcome.CONTINUE: 1, Outcome.PASS: 2}

count = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)
small = st.integers(min_value=0, max_value=3000)


def histogram(bounds: tuple[float, ...]) -> st.SearchStrategy[HistogramCounts]:
    return st.lists(count, min_size=len(bounds) + 1, max_size=len(bounds) + 1).map(
        lambda c: HistogramCounts(bounds, tuple(c)))


def windows(counts: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[StepWindow[Any], ...]]:
    return st.lists(st.builds(StepWindow, counts, counts), min_size=0, max_size=5).map(tuple)


quality = st.sampled_from(list(Quality))
measurements = st.fixed_dictionaries({
    # Any non-negative counts, including more errors than requests.
    "errors": st.builds(Measurement, quality, windows(st.builds(RatioCounts, count, count))),
    "p99": st.builds(Measurement, quality, windows(histogram(LAT))),
    "slow": st.builds(Measurement, quality, windows(histogram(LAT))),
    "psi": st.builds(Measurement, quality, windows(histogram(PRED))),
    "js": st.builds(Measurement, quality, windows(histogram(PRED))),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(measurements, st.integers(min_value=0, max_value=10_000), st.booleans())
def test_judge_never_raises_and_is_deterministic(ms: dict[str, Measurement[Any]],
                                                 min_requests: int, certify: bool) -> None:
    first = judge(ANALYSIS, ms, min_requests=min_requests, certify=certify)
    again = judge(ANALYSIS, ms, min_requests=min_requests, certify=certify)
    assert first == again
    assert first.outcome != Outcome.INCONCLUSIVE
    assert len(first.checks) == 5
    assert set(first.missing) == {c.check for c in first.checks if c.quality != Quality.OK}
    if first.outcome == Outcome.PASS:
        assert not first.missing and all(c.outcome == Outcome.PASS for c in first.checks)
    if first.outcome == Outcome.FAIL:
        assert any(c.outcome == Outcome.FAIL and c.quality == Quality.OK for c in first.checks)


step = st.tuples(small, st.integers(min_value=1, max_value=50_000), small,
                 st.integers(min_value=1, max_value=500_000))


@settings(max_examples=200, deadline=None)
@given(st.lists(step, min_size=1, max_size=4), st.data(), st.booleans())
def test_more_canary_errors_never_make_the_outcome_better(
        steps: list[tuple[int, int, int, int]], data: st.DataObject, certify: bool) -> None:
    steps = [(min(ce, cn), cn, min(se, sn), sn) for ce, cn, se, sn in steps]
    k = data.draw(st.integers(min_value=0, max_value=len(steps) - 1))
    extra = data.draw(st.integers(min_value=1, max_value=1000))
    worse = list(steps)
    ce, cn, se, sn = worse[k]
    worse[k] = (min(ce + extra, cn), cn, se, sn)

    def outcome(s: list[tuple[int, int, int, int]]) -> Outcome:
        m = Measurement(Quality.OK, tuple(StepWindow(RatioCounts(b, bn), RatioCounts(c, n))
                                          for c, n, b, bn in s))
        return judge(RATIO_ONLY, {"errors": m}, min_requests=100, certify=certify).outcome

    assert RANK[outcome(worse)] <= RANK[outcome(steps)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5000), min_size=5, max_size=5),
       st.integers(min_value=1, max_value=2000), st.booleans())
def test_slower_canary_requests_never_make_the_latency_outcome_better(
        canary: list[int], moved: int, certify: bool) -> None:
    stable = HistogramCounts(LAT, (40_000, 30_000, 25_000, 4_000, 1_000))
    analysis = Analysis.model_validate({"alpha": 0.05, "checks": [
        {"name": "p99", "kind": "latency", "quantile": 0.99, "maxLatency": "300ms"}]})
    fast = list(canary)
    fast[0] += moved                     # the same requests, fast ...
    slow = list(canary)
    slow[-1] += moved                    # ... or in the +Inf bucket

    def outcome(c: list[int]) -> Outcome:
        m = Measurement(Quality.OK, (StepWindow(stable, HistogramCounts(LAT, tuple(c))),))
        return judge(analysis, {"p99": m}, min_requests=100, certify=certify).outcome

    assert RANK[outcome(slow)] <= RANK[outcome(fast)]
