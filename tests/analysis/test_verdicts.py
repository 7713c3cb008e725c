"""Table tests for ``judge``: what a human reads for each situation, and why."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import pytest

from controller.analysis import (
    HistogramCounts,
    Measurement,
    Outcome,
    Quality,
    RatioCounts,
    StepWindow,
    Verdict,
    judge,
)
from controller.analysis.combine import holm
from controller.policy.model import Analysis
from tests.analysis.build import evidence

LAT = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)      # seconds
PRED = (0.2, 0.4, 0.6, 0.8)
STABLE_LAT = (3000, 4000, 2350, 560, 60, 20, 10)      # share above 0.3s: 0.9%; p99 in (0.2, 0.3]
STABLE_PRED = (2000, 3000, 2500, 1500, 1000)


def analysis(*checks: dict[str, Any], alpha: float = 0.05) -> Analysis:
    return Analysis.model_validate({"alpha": alpha, "checks": list(checks)})


ERRORS = {"name": "error-rate", "kind": "ratio", "tolerance": 0.2}
P99 = {"name": "p99", "kind": "latency", "quantile": 0.99, "tolerance": 0.2}
DRIFT = {"name": "drift", "kind": "distribution", "method": "psi"}


def ratio(*steps: tuple[float, float, float, float]) -> Measurement[RatioCounts]:
    """Steps of (canary errors, canary requests, stable errors, stable requests)."""
    return Measurement(Quality.OK, tuple(StepWindow(RatioCounts(se, sn), RatioCounts(ce, cn))
                                         for ce, cn, se, sn in steps))


def hist(bounds: tuple[float, ...], canary: tuple[float, ...], stable: tuple[float, ...],
         scale_c: float = 1.0, scale_s: float = 1.0) -> Measurement[HistogramCounts]:
    return Measurement(Quality.OK, (StepWindow(
        HistogramCounts(bounds, tuple(scale_s * x for x in stable)),
        HistogramCounts(bounds, tuple(scale_c * x for x in canary))),))


def run(a: Analysis, m: Mapping[str, Measurement[Any]], **kw: Any) -> Verdict:
    return judge(a, evidence(a, m), min_requests=kw.pop("min_requests", 200), **kw)


def test_clear_error_regression_fails_with_the_numbers_in_the_reason() -> None:
    v = run(analysis(ERRORS), {"error-rate": ratio((100, 5000, 475, 95000))})
    assert v.outcome == Outcome.FAIL
    (c,) = v.checks
    assert c.outcome == Outcome.FAIL and c.quality == Quality.OK
    assert c.reason.startswith("error rate 2% vs 0.5% stable, ratio 4")
    assert "FAIL: error rate above stable's x1.2: e=" in c.reason
    assert c.numbers["ratio_cs_lower"] > 1.2 and c.numbers["p_value"] <= 0.05
    assert v.reason.startswith("error-rate: error rate 2%")


def test_a_a_with_plenty_of_data_passes() -> None:
    v = run(analysis(ERRORS, P99, DRIFT), {
        "error-rate": ratio((500, 100_000, 4750, 950_000)),
        "p99": hist(LAT, STABLE_LAT, STABLE_LAT, 10, 100),
        "drift": hist(PRED, STABLE_PRED, STABLE_PRED, 5, 50),
    })
    assert v.outcome == Outcome.PASS, v.reason
    assert all(c.outcome == Outcome.PASS for c in v.checks)
    assert "within margin" in v.checks[0].reason and v.missing == ()


def test_tiny_samples_continue() -> None:
    v = run(analysis(ERRORS, P99), {
        "error-rate": ratio((1, 40, 5, 760)),
        "p99": hist(LAT, (10, 15, 10, 4, 1, 0, 0), STABLE_LAT, 1, 0.1),
    })
    assert v.outcome == Outcome.CONTINUE and v.missing == ()
    assert all(c.outcome == Outcome.CONTINUE for c in v.checks)
    assert "40 of 200 canary requests at this step" in v.checks[0].reason


def test_min_requests_holds_a_certified_canary() -> None:
    good = (500, 100_000, 4750, 950_000)
    m = {"error-rate": ratio(good, good)}
    assert run(analysis(ERRORS), m, min_requests=200_000).outcome == Outcome.CONTINUE
    assert run(analysis(ERRORS), m, min_requests=100).outcome == Outcome.PASS


def test_a_certificate_is_judged_on_the_current_step_only() -> None:
    """Issue 15: a certificate computed on counts pooled over all steps let a slow leak
    through; the step that passes must show the canary within its margin on its own."""
    m = {"error-rate": ratio((500, 100_000, 4750, 950_000), (0, 100, 4, 900))}
    v = run(analysis(ERRORS), m, min_requests=100)
    assert v.outcome == Outcome.CONTINUE
    assert "this step" in v.checks[0].reason


@pytest.mark.parametrize("quality", [Quality.NO_DATA, Quality.STALE, Quality.RESET,
                                     Quality.ERROR])
def test_missing_data_continues_and_is_listed(quality: Quality) -> None:
    v = run(analysis(ERRORS, P99), {
        "error-rate": ratio((500, 100_000, 4750, 950_000)),
        "p99": Measurement(quality, (), detail="query timed out"),
    })
    assert v.outcome == Outcome.CONTINUE
    assert v.missing == ("p99",)
    p99 = v.checks[1]
    assert p99.quality == quality and p99.outcome == Outcome.CONTINUE
    assert v.reason == f"waiting for data: p99 ({quality.value}: query timed out)"


def test_a_check_without_a_measurement_is_missing() -> None:
    v = run(analysis(ERRORS, P99), {"error-rate": ratio((500, 100_000, 4750, 950_000))})
    assert v.outcome == Outcome.CONTINUE and v.missing == ("p99",)
    assert v.checks[1].quality == Quality.NO_DATA


def test_evidence_of_harm_beats_a_missing_metric() -> None:
    v = run(analysis(ERRORS, P99), {
        "error-rate": ratio((100, 5000, 475, 95000)),
        "p99": Measurement(Quality.STALE, ()),
    })
    assert v.outcome == Outcome.FAIL and v.missing == ("p99",)


def test_no_canary_traffic_yet_is_no_data() -> None:
    v = run(analysis(ERRORS), {"error-rate": ratio((0, 0, 5, 1000))})
    assert v.outcome == Outcome.CONTINUE and v.missing == ("error-rate",)
    assert v.checks[0].quality == Quality.NO_DATA


@pytest.mark.parametrize("m, why", [
    (ratio((10, 5, 1, 100)), "more errors (10) than requests (5)"),
    (ratio((math.nan, 5, 1, 100)), "finite and non-negative"),
    (hist(LAT, (1, 2), STABLE_LAT), "counts for"),
])
def test_unusable_counts_are_an_error_not_a_crash(m: Measurement[Any], why: str) -> None:
    kind = ERRORS if isinstance(m.windows[0].canary, RatioCounts) else P99
    v = run(analysis(kind), {kind["name"]: m})   # type: ignore[dict-item]
    assert v.outcome == Outcome.CONTINUE and v.checks[0].quality == Quality.ERROR
    assert why in v.checks[0].reason


def test_wrong_kind_of_counts_is_an_error() -> None:
    v = run(analysis(P99), {"p99": ratio((1, 100, 1, 100))})
    assert v.checks[0].quality == Quality.ERROR and v.missing == ("p99",)


def test_latency_regression_fails_and_names_the_bucket_bound() -> None:
    slow = (2000, 3500, 2800, 1300, 300, 70, 30)      # 4% above 0.3s
    v = run(analysis(P99), {"p99": hist(LAT, slow, STABLE_LAT, 1, 10)})
    assert v.outcome == Outcome.FAIL
    reason = v.checks[0].reason
    assert reason.startswith("p99 ") and "share above 300ms 4% vs 0.9% stable" in reason
    assert v.checks[0].numbers["tail_bound_seconds"] == 0.3


def test_threshold_mode_uses_the_nearest_bound_and_says_so() -> None:
    check = {"name": "slow", "kind": "latency", "threshold": "450ms", "tolerance": 0.25}
    v = run(analysis(check), {"slow": hist(LAT, STABLE_LAT, STABLE_LAT, 1, 10)})
    assert "threshold 450ms -> nearest bucket bound 500ms" in v.checks[0].reason


def test_max_latency_guard_fails_on_evidence_even_when_stable_is_as_slow() -> None:
    check = {**P99, "maxLatency": "300ms"}
    # Both revisions have 5% above 0.3s: no relative regression, but p99 > 300ms.
    slow = (2000, 3500, 2800, 1200, 300, 150, 50)
    v = run(analysis(check), {"p99": hist(LAT, slow, slow, 1, 10)})
    assert v.outcome == Outcome.FAIL
    assert "p99 above maxLatency 300ms" in v.checks[0].reason
    untestable = {**P99, "maxLatency": "5s"}
    v = run(analysis(untestable), {"p99": hist(LAT, slow, slow, 1, 10)})
    assert "above every bucket bound: not tested" in v.checks[0].reason


def test_max_rate_guard_fails_on_an_absolute_breach() -> None:
    check = {**ERRORS, "maxRate": 0.01}
    v = run(analysis(check), {"error-rate": ratio((300, 10_000, 2900, 100_000))})
    assert v.outcome == Outcome.FAIL
    assert "error rate above maxRate 1%" in v.checks[0].reason


def test_drift_against_training_reference() -> None:
    check = {**DRIFT, "threshold": 0.1, "reference": {"source": "training", "histogram": {
        "bounds": list(PRED), "counts": list(STABLE_PRED)}}}
    shifted = (500, 1500, 2500, 3000, 2500)
    v = run(analysis(check), {"drift": hist(PRED, shifted, (0,) * 5, 2)})
    assert v.outcome == Outcome.FAIL and "PSI " in v.checks[0].reason
    assert "vs training" in v.checks[0].reason


def test_holm_names_every_failing_check() -> None:
    slow = (2000, 3500, 2800, 1300, 300, 70, 30)
    v = run(analysis(ERRORS, P99), {
        "error-rate": ratio((100, 5000, 475, 95000)),
        "p99": hist(LAT, slow, STABLE_LAT, 1, 10),
    })
    assert [c.outcome for c in v.checks] == [Outcome.FAIL, Outcome.FAIL]
    assert "error-rate:" in v.reason and "p99:" in v.reason
    # The first rejection is at alpha / 2, the second at alpha.
    assert sorted(c.numbers["alpha_level"] for c in v.checks) == [0.025, 0.05]


def test_holm_step_down() -> None:
    assert holm([0.01, 0.04, 0.03], 3, 0.05) == [0.05 / 3, None, None]
    assert holm([0.01, 0.02, 0.04], 3, 0.05) == [0.05 / 3, 0.025, 0.05]
    assert holm([0.2], 3, 0.05) == [None]


def test_without_certificate_a_step_passes_on_absence_of_harm_and_holds_on_suspicion() -> None:
    quiet = {"error-rate": ratio((1, 300, 14, 5700))}
    assert run(analysis(ERRORS), quiet).outcome == Outcome.CONTINUE
    v = run(analysis(ERRORS), quiet, certify=False)
    assert v.outcome == Outcome.PASS and "no evidence of harm" in v.reason
    suspicious = {"error-rate": ratio((6, 600, 22, 11400))}   # 1% vs 0.19%: e = 11.6
    v = run(analysis(ERRORS), suspicious, certify=False)
    assert v.outcome == Outcome.CONTINUE and "holding" in v.reason


def test_every_number_in_a_reason_is_in_numbers() -> None:
    slow = (2000, 3500, 2800, 1300, 300, 70, 30)
    v = run(analysis(ERRORS, P99, DRIFT), {
        "error-rate": ratio((100, 5000, 475, 95000)),
        "p99": hist(LAT, slow, STABLE_LAT, 1, 10),
        "drift": hist(PRED, STABLE_PRED, STABLE_PRED, 1, 10),
    })
    for c in v.checks:
        values = list(c.numbers.values())
        for token in re.findall(r"(?<![\w.])(\d[\d,]*\.?\d*(?:e[+-]?\d+)?)(%|ms|s)?", c.reason):
            number, unit = token
            if number.startswith(("99", "0.99")) and c.check == "p99":
                continue   # the quantile's name ("p99") is numbers["quantile"]
            x = float(number.replace(",", ""))
            x = x / 100 if unit == "%" else x / 1000 if unit == "ms" else x
            assert any(math.isclose(x, y, rel_tol=6e-3, abs_tol=1e-12) for y in values), (
                f"{number}{unit} of {c.check!r} is not in numbers: {c.reason}")


def test_numbers_are_finite() -> None:
    v = run(analysis(ERRORS, P99, DRIFT), {
        "error-rate": ratio((0, 5000, 0, 95000)),
        "p99": hist(LAT, (5, 0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0, 9)),
        "drift": hist(PRED, (1, 0, 0, 0, 0), (0, 0, 0, 0, 1)),
    })
    for c in v.checks:
        assert all(math.isfinite(x) for x in c.numbers.values()), c.numbers
