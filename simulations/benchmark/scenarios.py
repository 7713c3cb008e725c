"""The simulated world of the benchmark: revisions, scenarios, traffic, the policy.

Every request is simulated in distribution: per one-minute interval the request count is
Poisson(rps * 60), each request goes to the canary with probability weight/100
(binomial split), fails with its revision's error rate (binomial), falls in a latency
bucket (multinomial over the Knative queue-proxy buckets of a lognormal latency) and,
when it succeeds, in a prediction bucket (multinomial over the model's score
histogram). Binomial and multinomial draws of the per-request model are exactly the
per-request simulation, aggregated to what Prometheus would show.

Scenarios (the stable revision is always ``STABLE``):

* ``aa``: the canary is the stable model again (A/A): every rollback is a false one.
* ``errors``: error rate 0.5% -> 1%.
* ``latency``: every latency x1.2, so p99 +20% (about 256ms -> 307ms).
* ``drift``: predictions shifted on the logit scale until PSI is 0.25.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cache, cached_property

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special, stats

from controller.policy.model import DistributionCheck, LatencyCheck, RatioCheck, RolloutPolicy

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

# Knative queue-proxy latency buckets (revision_app_request_latencies, ms), in seconds.
LATENCY_BOUNDS_S: tuple[float, ...] = tuple(b / 1000.0 for b in (
    5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 900,
    1000, 2000, 5000, 10000, 20000, 50000, 100000))
# A model team's prediction histogram (scores in [0, 1]), as the simulated endpoints export.
PREDICTION_BOUNDS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))

BASELINE_ERROR_RATE = 0.005
BAD_ERROR_RATE = 0.01
LATENCY_MEDIAN_S = 0.080
LATENCY_SIGMA = 0.5
LATENCY_FACTOR = 1.2
SCORE_BETA = (2.0, 5.0)
TARGET_PSI = 0.25


def _bucket_probabilities(cdf_at_bounds: FloatArray) -> FloatArray:
    cdf = np.concatenate(([0.0], np.clip(cdf_at_bounds, 0.0, 1.0), [1.0]))
    probs = np.diff(cdf)
    return np.asarray(probs / probs.sum(), dtype=np.float64)


def latency_probabilities(median_s: float, sigma: float) -> FloatArray:
    """Share of a lognormal latency in each queue-proxy bucket (+Inf last)."""
    bounds = np.asarray(LATENCY_BOUNDS_S)
    return _bucket_probabilities(stats.lognorm.cdf(bounds, sigma, scale=median_s))


def prediction_probabilities(logit_shift: float) -> FloatArray:
    """Share of the scores sigmoid(logit(s) + shift), s ~ Beta(2, 5), in each bucket."""
    bounds = np.asarray(PREDICTION_BOUNDS)
    with np.errstate(divide="ignore"):
        inner = special.expit(special.logit(bounds) - logit_shift)
    return _bucket_probabilities(stats.beta.cdf(inner, *SCORE_BETA))


def population_psi(p: FloatArray, q: FloatArray) -> float:
    used = (p > 0) & (q > 0)
    return float(np.sum((p[used] - q[used]) * np.log(p[used] / q[used])))


@cache
def drift_shift(target_psi: float = TARGET_PSI) -> float:
    """The logit shift that gives the target PSI between shifted and stable predictions."""
    base = prediction_probabilities(0.0)
    return float(optimize.brentq(
        lambda d: population_psi(prediction_probabilities(d), base) - target_psi, 0.0, 5.0))


@dataclass(frozen=True)
class Revision:
    """A model revision as the traffic sees it."""

    error_rate: float = BASELINE_ERROR_RATE
    latency_median_s: float = LATENCY_MEDIAN_S
    latency_sigma: float = LATENCY_SIGMA
    logit_shift: float = 0.0

    @cached_property
    def latency_probs(self) -> FloatArray:
        return latency_probabilities(self.latency_median_s, self.latency_sigma)

    @cached_property
    def prediction_probs(self) -> FloatArray:
        return prediction_probabilities(self.logit_shift)

    def tail_share(self, bound_s: float) -> float:
        """P(latency > bound) (exact, from the lognormal)."""
        return float(stats.lognorm.sf(bound_s, self.latency_sigma, scale=self.latency_median_s))


STABLE = Revision()


@dataclass(frozen=True)
class Scenario:
    name: str
    canary: Revision
    bad: bool
    description: str
    metric: str = ""          # which check the regression shows in (for the oracle)
    stable: Revision = field(default=STABLE)


@cache
def scenarios() -> dict[str, Scenario]:
    """The benchmark's scenarios by name."""
    return {
        "aa": Scenario("aa", STABLE, False, "A/A: the canary is the stable model"),
        "errors": Scenario("errors", replace(STABLE, error_rate=BAD_ERROR_RATE), True,
                           "error rate 0.5% -> 1%", "errors"),
        "latency": Scenario("latency", replace(
            STABLE, latency_median_s=LATENCY_MEDIAN_S * LATENCY_FACTOR), True,
            "latency x1.2 (p99 +20%)", "latency"),
        "drift": Scenario("drift", replace(STABLE, logit_shift=drift_shift()), True,
                          f"prediction drift, PSI {TARGET_PSI}", "drift"),
    }


@dataclass
class Traffic:
    """One revision's requests in one interval (or summed over a step)."""

    requests: int
    errors: int
    latency: IntArray        # per bucket, +Inf last
    predictions: IntArray    # per bucket, +Inf last

    @staticmethod
    def empty() -> Traffic:
        return Traffic(0, 0, np.zeros(len(LATENCY_BOUNDS_S) + 1, dtype=np.int64),
                       np.zeros(len(PREDICTION_BOUNDS) + 1, dtype=np.int64))

    def add(self, other: Traffic) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency = self.latency + other.latency
        self.predictions = self.predictions + other.predictions


def _revision_traffic(rng: np.random.Generator, n: int, rev: Revision) -> Traffic:
    errors = int(rng.binomial(n, rev.error_rate))
    latency = rng.multinomial(n, rev.latency_probs).astype(np.int64)
    predictions = rng.multinomial(n - errors, rev.prediction_probs).astype(np.int64)
    return Traffic(n, errors, latency, predictions)


def draw_interval(rng: np.random.Generator, rps: float, weight: int, scenario: Scenario,
                  seconds: float = 60.0) -> tuple[Traffic, Traffic]:
    """(canary, stable) traffic of one interval at ``weight`` percent to the canary."""
    total = int(rng.poisson(rps * seconds))
    canary_n = int(rng.binomial(total, weight / 100.0))
    return (_revision_traffic(rng, canary_n, scenario.canary),
            _revision_traffic(rng, total - canary_n, scenario.stable))


def interval_rng(seed: int, *key: int) -> np.random.Generator:
    """The random stream of one interval of one rollout: a function of the seed and the
    interval's coordinates only, so every judge sees identical traffic as long as it makes
    the same decisions (common random numbers)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *key])))


def benchmark_policy() -> RolloutPolicy:
    """A realistic policy (the defaults where they exist): steps 5/10/25/50/100, at least 5
    minutes and 200 canary requests per step, 1-minute analysis, alpha 0.05 over three
    checks, 30 minutes per step before a step is inconclusive."""
    return RolloutPolicy.model_validate({
        "apiVersion": "rollwise.io/v1alpha1",
        "kind": "RolloutPolicy",
        "metadata": {"name": "benchmark"},
        "spec": {
            "steps": [{"weight": 5}, {"weight": 10}, {"weight": 25}, {"weight": 50},
                      {"weight": 100}],
            "stepDefaults": {"minDuration": "5m", "minRequests": 200},
            "analysis": {
                "interval": "1m",
                "alpha": 0.05,
                "checks": [
                    {"name": "error-rate", "kind": "ratio", "tolerance": 0.2},
                    {"name": "p99-latency", "kind": "latency", "quantile": 0.99,
                     "tolerance": 0.2},
                    {"name": "prediction-drift", "kind": "distribution", "method": "psi",
                     "reference": {"source": "stable"}},
                ],
            },
            "onInconclusive": {"deadline": "30m", "action": "pause"},
        },
    })


def slo_policy() -> RolloutPolicy:
    """``benchmark_policy`` plus the SLOs the Flagger-style judge enforces (success rate
    >= 99%, p99 < 500 ms) as Rollwise's absolute guards, which can also certify a canary:
    Rollwise and Flagger then hold the canary to the same objectives."""
    policy = benchmark_policy()
    error_rate, latency, drift = policy.spec.analysis.checks
    checks = [error_rate.model_copy(update={"max_rate": 0.01}),
              latency.model_copy(update={"max_latency": timedelta(milliseconds=500)}), drift]
    analysis = policy.spec.analysis.model_copy(update={"checks": checks})
    return policy.model_copy(update={"spec": policy.spec.model_copy(update={"analysis":
                                                                           analysis})})


def worst_acceptable(metric: str, policy: RolloutPolicy) -> Revision:
    """The worst canary that ``policy`` accepts on ``metric``, in the bad scenario's family
    (error rate up; every latency scaled up; predictions shifted on the logit scale).

    It is the least-favourable point of the check's null hypothesis for detecting that
    regression: a valid judge of the policy may roll it back with probability at most
    alpha. An SPRT of this revision against the bad one that knows both exactly therefore
    needs no more requests than any valid judge of the policy (Wald and Wolfowitz 1948):
    the floor that the policy itself puts on bad-canary exposure.
    """
    check = next((c for c in policy.spec.analysis.checks if c.kind == _KIND[metric]), None)
    if check is None:
        raise ValueError(f"policy {policy.metadata.name!r} has no {_KIND[metric]} check")
    if isinstance(check, RatioCheck):
        rate = (1.0 + check.tolerance) * STABLE.error_rate
        if check.max_rate is not None:
            rate = min(rate, check.max_rate)
        return replace(STABLE, error_rate=rate)
    if isinstance(check, LatencyCheck):
        bound = stable_p99_bound()
        limits = [((1.0 + check.tolerance) * STABLE.tail_share(bound), bound)]
        if check.max_latency is not None and check.quantile is not None:
            guard = min((b for b in LATENCY_BOUNDS_S
                         if b >= check.max_latency.total_seconds()), default=LATENCY_BOUNDS_S[-1])
            limits.append((1.0 - check.quantile, guard))
        factor = min(_latency_factor(share, b) for share, b in limits)
        return replace(STABLE, latency_median_s=LATENCY_MEDIAN_S * factor)
    assert isinstance(check, DistributionCheck)
    if check.method != "psi":
        raise ValueError("the benchmark's drift scenario is defined by PSI")
    return replace(STABLE, logit_shift=drift_shift(check.effective_threshold))


_KIND = {"errors": "ratio", "latency": "latency", "drift": "distribution"}


def acceptable_limits(policy: RolloutPolicy) -> str:
    """What ``worst_acceptable`` allows, in words: "error rate x1.2, ..."."""
    base = STABLE.tail_share(stable_p99_bound())
    errors = worst_acceptable("errors", policy).error_rate / STABLE.error_rate
    tail = worst_acceptable("latency", policy).tail_share(stable_p99_bound()) / base
    psi = population_psi(worst_acceptable("drift", policy).prediction_probs,
                         STABLE.prediction_probs)
    return f"error rate x{errors:.3g}, tail share x{tail:.3g}, PSI {psi:.3g}"


def _latency_factor(share: float, bound_s: float) -> float:
    """The factor on every latency at which the share above ``bound_s`` is ``share``."""
    return float(optimize.brentq(
        lambda f: replace(STABLE, latency_median_s=LATENCY_MEDIAN_S * f).tail_share(bound_s)
        - share, 0.5, 10.0))


@cache
def stable_p99_bound() -> float:
    """The bucket bound that closes the bucket of the stable revision's true p99."""
    cdf = np.cumsum(STABLE.latency_probs)
    index = int(np.searchsorted(cdf, 0.99))
    return LATENCY_BOUNDS_S[min(index, len(LATENCY_BOUNDS_S) - 1)]


def describe() -> str:
    """The scenario parameters as one paragraph for the results file."""
    s = scenarios()
    bound = stable_p99_bound()
    drift = s["drift"].canary
    return (
        f"Stable: error rate {100 * BASELINE_ERROR_RATE:g}%, latency lognormal (median "
        f"{1000 * LATENCY_MEDIAN_S:g}ms, sigma {LATENCY_SIGMA:g}; p99 "
        f"{1000 * STABLE.latency_median_s * math.exp(2.3263 * LATENCY_SIGMA):.0f}ms, share above "
        f"the {1000 * bound:g}ms bucket bound {100 * STABLE.tail_share(bound):.2f}%), scores "
        f"Beta{SCORE_BETA}. Latency regression: share above {1000 * bound:g}ms "
        f"{100 * s['latency'].canary.tail_share(bound):.2f}%. Drift: logit shift "
        f"{drift.logit_shift:.3f}, PSI "
        f"{population_psi(drift.prediction_probs, STABLE.prediction_probs):.3f}."
    )
