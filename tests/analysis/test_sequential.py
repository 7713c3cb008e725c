"""The sequential core against scipy and exact identities.

A test martingale has expectation exactly 1 under its null at every fixed time; the
mixture is a sum of likelihood ratios; the Beta-binomial mixture is an integral we can
do numerically; Robbins' normal mixture is a Gaussian integral. Each is checked here.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from controller.analysis import sequential
from controller.analysis.sequential import StepEvents, rate_above, rate_ratio

R0 = 1.2
PASS_SCALE = math.log(R0)


def _theta(r: float, canary_exposure: float, baseline_exposure: float) -> float:
    s = canary_exposure / baseline_exposure
    return r * s / (r * s + 1)


def _evidence(steps: list[StepEvents], margin: float = R0) -> sequential.RatioEvidence:
    return rate_ratio(steps, margin, alpha_worse=0.05, alpha_better=0.05,
                      better_prior_scale=PASS_SCALE)


@pytest.mark.parametrize("r_true, expected", [(R0, "equal"), (1.0, "below"), (0.7, "below")])
def test_harm_e_value_is_a_martingale_at_the_margin_and_a_supermartingale_below(
        r_true: float, expected: str) -> None:
    # Two steps with different splits (5% and 25%), every outcome enumerated exactly.
    exposures = [(50.0, 950.0), (250.0, 750.0)]
    totals = [9, 7]
    mean = 0.0
    for xs in itertools.product(*(range(n + 1) for n in totals)):
        prob = 1.0
        steps = []
        for x, n, (nc, nb) in zip(xs, totals, exposures, strict=True):
            prob *= stats.binom.pmf(x, n, _theta(r_true, nc, nb))
            steps.append(StepEvents(x, nc, n - x, nb))
        mean += prob * math.exp(_evidence(steps).log_e_worse)
    if expected == "equal":
        assert mean == pytest.approx(1.0, abs=1e-9)
    else:
        assert mean < 0.999


def test_pass_side_e_value_is_a_martingale_at_the_margin() -> None:
    nc, nb, n = 100.0, 900.0, 14
    mean = sum(stats.binom.pmf(x, n, _theta(R0, nc, nb))
               * math.exp(_evidence([StepEvents(x, nc, n - x, nb)]).log_e_better)
               for x in range(n + 1))
    assert mean == pytest.approx(1.0, abs=1e-9)


def test_mixture_is_the_prior_weighted_sum_of_binomial_likelihood_ratios() -> None:
    x, n, nc, nb = 11, 60, 80.0, 920.0
    weights = sequential._half_normal_weights(sequential.HARM_PRIOR_SCALE)
    offsets = sequential.GRID_STEP * np.arange(1, len(weights) + 1)
    null = stats.binom.pmf(x, n, _theta(R0, nc, nb))
    brute = sum(w * stats.binom.pmf(x, n, _theta(R0 * math.exp(eta), nc, nb)) / null
                for w, eta in zip(weights, offsets, strict=True))
    assert math.exp(_evidence([StepEvents(x, nc, n - x, nb)]).log_e_worse) == pytest.approx(
        brute, rel=1e-9)


def test_discrete_prior_approximates_the_continuous_half_normal_mixture() -> None:
    """The grid prior is a quadrature of the half-normal: compare with scipy.integrate."""
    x, n, nc, nb = 9, 40, 60.0, 940.0
    scale = sequential.HARM_PRIOR_SCALE
    null = stats.binom.pmf(x, n, _theta(R0, nc, nb))

    def integrand(eta: float) -> float:
        prior = 2 * stats.norm.pdf(eta, scale=scale)
        return float(prior * stats.binom.pmf(x, n, _theta(R0 * math.exp(eta), nc, nb)) / null)

    continuous, _ = integrate.quad(integrand, 0, 8 * scale)
    discrete = math.exp(_evidence([StepEvents(x, nc, n - x, nb)]).log_e_worse)
    assert discrete == pytest.approx(continuous, rel=0.03)


def test_ville_bound_holds_in_a_small_monte_carlo() -> None:
    """A canary as good as stable (r = 1 < 1.2), 40 looks: crossings stay below alpha."""
    rng = np.random.default_rng(7)
    alpha, crossed, runs = 0.05, 0, 300
    for _ in range(runs):
        xc = xb = 0
        nc = nb = 0.0
        for _ in range(40):
            nc += 300
            nb += 2700
            xc += rng.binomial(300, 0.01)
            xb += rng.binomial(2700, 0.01)
            if _evidence([StepEvents(xc, nc, xb, nb)]).log_e_worse >= math.log(1 / alpha):
                crossed += 1
                break
    assert crossed / runs < alpha


def test_confidence_sequence_brackets_the_estimate_and_matches_the_tests() -> None:
    steps = [StepEvents(40, 2000, 190, 38000), StepEvents(60, 4000, 200, 36000)]
    ev = rate_ratio(steps, R0, alpha_worse=0.01, alpha_better=0.05,
                    better_prior_scale=PASS_SCALE)
    assert ev.lower < ev.estimate < ev.upper
    # The lower bound is above the margin exactly when the harm test rejects at 0.01.
    assert (ev.lower > R0) == (ev.log_e_worse >= math.log(100))
    assert (ev.upper < R0) == (ev.log_e_better >= math.log(20))
    # Pooled MLE of a single step is the ratio of rates.
    one = _evidence([StepEvents(30, 3000, 100, 20000)])
    assert one.estimate == pytest.approx((30 / 3000) / (100 / 20000), rel=1e-6)


def test_a_clear_regression_is_detected_and_a_clean_canary_certified() -> None:
    bad = _evidence([StepEvents(100, 5000, 475, 95000)])    # 2% vs 0.5%
    good = _evidence([StepEvents(500, 100000, 4750, 950000)])   # equal rates
    assert bad.log_e_worse > math.log(1000) and bad.lower > R0
    assert good.log_e_better > math.log(20) and good.upper < R0


def test_no_events_means_no_evidence() -> None:
    ev = _evidence([StepEvents(0, 1000, 0, 19000)])
    assert not ev.informative and ev.log_e_worse == 0 and ev.log_e_better == 0


def test_rate_above_is_the_truncated_beta_binomial_mixture() -> None:
    """The closed form against scipy.integrate over the truncated Beta prior."""
    m, n = 0.01, 400
    a, b = 1.0, (1 - m) / m
    for x in (0, 3, 9, 25):
        def lik(p: float, x: int = x) -> float:
            return float(stats.binom.pmf(x, n, p) * stats.beta.pdf(p, a, b))
        numerator, _ = integrate.quad(lik, m, 1, points=[0.02, 0.05, 0.1], limit=200)
        expected = numerator / stats.beta.sf(m, a, b) / stats.binom.pmf(x, n, m)
        assert math.exp(rate_above(x, n, m)) == pytest.approx(expected, rel=1e-4)


def test_rate_above_has_expectation_one_at_the_bound() -> None:
    m, n = 0.02, 250
    xs = np.arange(0, n + 1)
    values = np.asarray([math.exp(min(rate_above(float(x), n, m), 700)) for x in xs])
    assert float(stats.binom.pmf(xs, n, m) @ values) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("z", [-1.5, 0.0, 2.7])
def test_normal_mixture_matches_the_gaussian_integral(z: float) -> None:
    """M = integral of exp(l S - l^2 n / 2) over l ~ half-normal(1/sqrt(rho)), S = z sqrt(n)
    (the Gaussian likelihood ratio of a standardised sum, mixed over positive drifts)."""
    n, rho = 800.0, sequential.NORMAL_MIXTURE_RHO
    s = z * math.sqrt(n)

    def integrand(lam: float) -> float:
        prior = 2 * stats.norm.pdf(lam, scale=1 / math.sqrt(rho))
        return math.exp(lam * s - lam * lam * n / 2) * float(prior)

    value, _ = integrate.quad(integrand, 0, 1, points=[max(s / n, 1e-3)])
    assert sequential.normal_mixture_log_e(z, n, rho) == pytest.approx(math.log(value),
                                                                       abs=1e-7)


def test_normal_mixture_radius_is_where_the_mixture_reaches_one_over_alpha() -> None:
    for n in (10.0, 500.0, 1e5):
        radius = sequential.normal_mixture_radius(n, 0.01)
        assert sequential.normal_mixture_log_e(radius, n) == pytest.approx(math.log(100))


# --- evidence that a rate is BELOW an SLO bound (the certificate side of the guards) ---


def test_rate_below_matches_numerical_integration() -> None:
    import math

    from scipy import integrate, stats

    from controller.analysis.sequential import rate_below

    x, n, m = 3, 500, 0.02
    prior = stats.beta(1.0, (1 - m) / m)
    mass = prior.cdf(m)
    marginal = integrate.quad(lambda p: p**x * (1 - p) ** (n - x) * prior.pdf(p) / mass,
                              0, m, limit=200)[0]
    expected = math.log(marginal) - (x * math.log(m) + (n - x) * math.log1p(-m))
    assert abs(rate_below(x, n, m) - expected) < 1e-6


def test_rate_below_is_an_e_value_at_the_bound() -> None:
    """Exact enumeration: E[e] = 1 when the true rate equals the bound (and the mixture is
    a supermartingale above it), so a certificate at level alpha is wrong w.p. <= alpha."""
    import math

    from scipy import stats

    from controller.analysis.sequential import rate_below

    for n, m in ((40, 0.05), (200, 0.01)):
        at_bound = sum(stats.binom.pmf(x, n, m) * math.exp(rate_below(x, n, m))
                       for x in range(n + 1))
        above = sum(stats.binom.pmf(x, n, 2 * m) * math.exp(rate_below(x, n, m))
                    for x in range(n + 1))
        assert abs(at_bound - 1.0) < 1e-9
        assert above < 1.0


def test_a_canary_below_its_max_rate_is_certified_although_the_ratio_is_not() -> None:
    from controller.analysis import judge
    from controller.analysis.types import Outcome, RatioCounts, StepWindow
    from controller.policy.loader import load_text
    from tests.analysis.build import evidence

    policy = load_text("""
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: p}
spec:
  steps: [{weight: 50}, {weight: 100}]
  analysis:
    checks: [{name: errors, kind: ratio, tolerance: 0.2, maxRate: 0.03}]
""", "p.yaml")[0].policy
    window = StepWindow(RatioCounts(30, 3000), RatioCounts(30, 3000))  # 1% both: ratio unknown
    verdict = judge(policy.spec.analysis, evidence(policy.spec.analysis, {"errors": [window]}),
                    min_requests=100, certify=True)
    assert verdict.outcome == Outcome.PASS, verdict.reason
    assert "below maxRate" in verdict.reason
