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

A scenario's canary may also change in time (``onset_seconds``, ``ramp_seconds``): the
regressions of the realistic suite that start mid-step or leak slowly. What production
adds on top (random effects, cold start, diurnal load, heavy tails) is
``conditions.Conditions``; the suites of cases are in ``suites``.

Pure: no I/O; randomness only from the generators it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cache, cached_property, lru_cache

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
LATENCY_MEDIAN_S = 0.080
LATENCY_SIGMA = 0.5
LATENCY_FACTOR = 1.2
SCORE_BETA = (2.0, 5.0)
TARGET_PSI = 0.25


def _bucket_probabilities(cdf_at_bounds: FloatArray) -> FloatArray:
    cdf = np.concatenate(([0.0], np.clip(cdf_at_bounds, 0.0, 1.0), [1.0]))
    probs = np.diff(cdf)
    return np.asarray(probs / probs.sum(), dtype=np.float64)


_BOUNDS = np.asarray(LATENCY_BOUNDS_S)


def pareto_scale(median_s: float, alpha: float) -> float:
    """The Pareto scale (minimum) whose median is ``median_s``: median = scale 2^(1/alpha)."""
    return median_s / math.pow(2.0, 1.0 / alpha)


def latency_cdf(bounds: FloatArray, median_s: float, sigma: float,
                pareto_alpha: float | None = None) -> FloatArray:
    """P(latency <= bound): lognormal (median, sigma), or Pareto (shape ``pareto_alpha``)
    with the same median. The lognormal is scipy's ``lognorm.cdf`` written out (the same
    operations, so the same bits), twenty times faster: jitter needs it every period."""
    if pareto_alpha is None:
        return np.asarray(special.ndtr(np.log(bounds / median_s) / sigma), dtype=np.float64)
    scale = pareto_scale(median_s, pareto_alpha)
    return np.where(bounds > scale, 1.0 - (scale / np.maximum(bounds, scale)) ** pareto_alpha,
                    0.0)


@lru_cache(maxsize=4096)
def latency_probabilities(median_s: float, sigma: float,
                          pareto_alpha: float | None = None) -> FloatArray:
    """Share of the latency in each queue-proxy bucket (+Inf last). Cached and read-only:
    revisions, jittered periods and the oracle share the arrays."""
    probs = _bucket_probabilities(latency_cdf(_BOUNDS, median_s, sigma, pareto_alpha))
    probs.flags.writeable = False
    return probs


@lru_cache(maxsize=256)
def prediction_probabilities(logit_shift: float) -> FloatArray:
    """Share of the scores sigmoid(logit(s) + shift), s ~ Beta(2, 5), in each bucket."""
    bounds = np.asarray(PREDICTION_BOUNDS)
    with np.errstate(divide="ignore"):
        inner = special.expit(special.logit(bounds) - logit_shift)
    probs = _bucket_probabilities(stats.beta.cdf(inner, *SCORE_BETA))
    probs.flags.writeable = False
    return probs


# Input features of the model (for policies with drift checks on more than one series):
# shares per bucket of [0, 1] scores, identical for every revision of the benchmark.
FEATURE_BETAS: dict[str, tuple[float, float]] = {
    "model_feature_age": (2.0, 2.0), "model_feature_amount": (5.0, 2.0)}


@cache
def feature_probabilities(metric: str) -> FloatArray:
    if metric not in FEATURE_BETAS:
        raise ValueError(f"the benchmark has no feature histogram {metric!r}; known: "
                         f"{', '.join(FEATURE_BETAS)}")
    probs = _bucket_probabilities(stats.beta.cdf(np.asarray(PREDICTION_BOUNDS),
                                                 *FEATURE_BETAS[metric]))
    probs.flags.writeable = False
    return probs


def population_psi(p: FloatArray, q: FloatArray) -> float:
    used = (p > 0) & (q > 0)
    return float(np.sum((p[used] - q[used]) * np.log(p[used] / q[used])))


@cache
def drift_shift(target_psi: float = TARGET_PSI) -> float:
    """The logit shift that gives the target PSI between shifted and stable predictions."""
    base = prediction_probabilities(0.0)
    return float(optimize.brentq(
        lambda d: population_psi(prediction_probabilities(d), base) - target_psi, 0.0, 5.0))


@dataclass(frozen=True, eq=False)
class Law:
    """What one request of a revision does, as probabilities: it fails with
    ``error_rate``, falls in each latency bucket with ``latency_probs`` and, when it
    succeeds, in each prediction bucket with ``prediction_probs``."""

    error_rate: float
    latency_probs: FloatArray
    prediction_probs: FloatArray

    def tail(self, index: int) -> float:
        """P(latency above the bound ``LATENCY_BOUNDS_S[index]``)."""
        return float(self.latency_probs[index + 1:].sum())


def mix(parts: Sequence[tuple[float, Law]]) -> Law:
    """The law of a request that follows ``law`` with probability ``share`` (shares sum to
    1): a request arriving at a uniform time in a tick whose law changes within it."""
    if len(parts) == 1:
        return parts[0][1]
    return Law(sum(w * law.error_rate for w, law in parts),
               np.asarray(sum(w * law.latency_probs for w, law in parts), dtype=np.float64),
               np.asarray(sum(w * law.prediction_probs for w, law in parts), dtype=np.float64))


@dataclass(frozen=True)
class Revision:
    """A model revision as the traffic sees it. Latency is lognormal (median, sigma), or
    Pareto with shape ``pareto_alpha`` and the same median when that is set."""

    error_rate: float = BASELINE_ERROR_RATE
    latency_median_s: float = LATENCY_MEDIAN_S
    latency_sigma: float = LATENCY_SIGMA
    logit_shift: float = 0.0
    pareto_alpha: float | None = None

    @cached_property
    def latency_probs(self) -> FloatArray:
        return latency_probabilities(self.latency_median_s, self.latency_sigma,
                                     self.pareto_alpha)

    @cached_property
    def prediction_probs(self) -> FloatArray:
        return prediction_probabilities(self.logit_shift)

    @cached_property
    def law(self) -> Law:
        return Law(self.error_rate, self.latency_probs, self.prediction_probs)

    def scaled(self, error_factor: float, latency_factor: float) -> Law:
        """The law with the error rate times ``error_factor`` (at most 1) and every latency
        times ``latency_factor``: a random effect, a jittered or a cold period."""
        if error_factor == 1.0 and latency_factor == 1.0:
            return self.law
        return Law(min(1.0, self.error_rate * error_factor),
                   latency_probabilities(self.latency_median_s * latency_factor,
                                         self.latency_sigma, self.pareto_alpha)
                   if latency_factor != 1.0 else self.latency_probs,
                   self.prediction_probs)

    def between(self, other: Revision, w: float) -> Revision:
        """The revision a share ``w`` of the way from this one to ``other`` (error rate,
        median latency and logit shift interpolated linearly): a ramp."""
        if w <= 0.0:
            return self
        if w >= 1.0:
            return other
        return replace(self, error_rate=self.error_rate + w * (other.error_rate - self.error_rate),
                       latency_median_s=self.latency_median_s
                       + w * (other.latency_median_s - self.latency_median_s),
                       logit_shift=self.logit_shift + w * (other.logit_shift - self.logit_shift))

    def tail_share(self, bound_s: float) -> float:
        """P(latency > bound) (exact, from the distribution)."""
        if self.pareto_alpha is None:
            return float(stats.lognorm.sf(bound_s, self.latency_sigma,
                                          scale=self.latency_median_s))
        return 1.0 - float(latency_cdf(np.asarray([bound_s]), self.latency_median_s,
                                       self.latency_sigma, self.pareto_alpha)[0])

    def quantile(self, q: float) -> float:
        """The latency's true q-quantile in seconds."""
        if self.pareto_alpha is None:
            return self.latency_median_s * math.exp(float(special.ndtri(q)) * self.latency_sigma)
        scale = pareto_scale(self.latency_median_s, self.pareto_alpha)
        return scale * math.pow(1.0 - q, -1.0 / self.pareto_alpha)


STABLE = Revision()


@dataclass(frozen=True)
class Scenario:
    """The stable revision and the canary. A canary that changes in time is the stable
    revision until ``onset_seconds`` after it became ready, then moves linearly to
    ``canary`` over ``ramp_seconds`` (0: at once) and stays there."""

    name: str
    canary: Revision
    bad: bool
    description: str
    metric: str = ""          # which check the regression shows in (for the oracle)
    stable: Revision = field(default=STABLE)
    onset_seconds: float = 0.0
    ramp_seconds: float = 0.0

    def canary_at(self, seconds: float) -> Revision:
        """The canary ``seconds`` after it became ready."""
        if seconds < self.onset_seconds:
            return self.stable
        if self.ramp_seconds > 0:
            return self.stable.between(self.canary,
                                       (seconds - self.onset_seconds) / self.ramp_seconds)
        return self.canary

    @property
    def changes(self) -> tuple[float, ...]:
        """The times at which ``canary_at`` has a kink (it is linear in between)."""
        if self.onset_seconds == 0 and self.ramp_seconds == 0:
            return ()
        return (self.onset_seconds, self.onset_seconds + self.ramp_seconds)


def regressions(stable: Revision = STABLE) -> tuple[Scenario, ...]:
    """The three regressions of the benchmark against ``stable``: errors x2, every latency
    x1.2, predictions drifted to PSI 0.25."""
    return (
        Scenario("errors", replace(stable, error_rate=2 * stable.error_rate), True,
                 f"error rate {100 * stable.error_rate:g}% -> {200 * stable.error_rate:g}%",
                 "errors", stable),
        Scenario("latency", replace(
            stable, latency_median_s=stable.latency_median_s * LATENCY_FACTOR), True,
            "latency x1.2 (p99 +20%)", "latency", stable),
        Scenario("drift", replace(stable, logit_shift=drift_shift()), True,
                 f"prediction drift, PSI {TARGET_PSI}", "drift", stable),
    )


@cache
def scenarios() -> dict[str, Scenario]:
    """The benchmark's scenarios by name."""
    return {s.name: s for s in (
        Scenario("aa", STABLE, False, "A/A: the canary is the stable model"), *regressions())}


@dataclass
class Traffic:
    """One revision's requests in one tick (or summed over a step); ``features``: the
    input-feature histograms a policy asked for, by metric name."""

    requests: int
    errors: int
    latency: IntArray        # per bucket, +Inf last
    predictions: IntArray    # per bucket, +Inf last
    features: dict[str, IntArray] = field(default_factory=dict)

    @staticmethod
    def empty() -> Traffic:
        return Traffic(0, 0, np.zeros(len(LATENCY_BOUNDS_S) + 1, dtype=np.int64),
                       np.zeros(len(PREDICTION_BOUNDS) + 1, dtype=np.int64))

    def add(self, other: Traffic) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency = self.latency + other.latency
        self.predictions = self.predictions + other.predictions
        for name, counts in other.features.items():
            self.features[name] = self.features[name] + counts if name in self.features \
                else counts.copy()

    @staticmethod
    def total(parts: Sequence[Traffic]) -> Traffic:
        """The sum of ``parts`` (one part is returned as it is)."""
        if len(parts) == 1:
            return parts[0]
        out = Traffic.empty()
        for t in parts:
            out.add(t)
        return out


def _revision_traffic(rng: np.random.Generator, n: int, law: Law) -> Traffic:
    errors = int(rng.binomial(n, law.error_rate))
    latency = rng.multinomial(n, law.latency_probs).astype(np.int64)
    predictions = rng.multinomial(n - errors, law.prediction_probs).astype(np.int64)
    return Traffic(n, errors, latency, predictions)


def draw_tick(rng: np.random.Generator, mean_requests: float, weight: int, canary: Law,
              stable: Law) -> tuple[Traffic, Traffic]:
    """(canary, stable) traffic of one tick with Poisson(``mean_requests``) requests, each
    sent to the canary with probability ``weight`` percent (the draws, in this order, are
    the benchmark's since its first version: the i.i.d. results reproduce)."""
    total = int(rng.poisson(mean_requests))
    canary_n = int(rng.binomial(total, weight / 100.0))
    return (_revision_traffic(rng, canary_n, canary),
            _revision_traffic(rng, total - canary_n, stable))


def draw_features(rng: np.random.Generator, metrics: Sequence[str],
                  *traffic: Traffic) -> None:
    """Add the feature histograms ``metrics`` to each revision's traffic (every request
    has features; they are the same for every revision)."""
    for t in traffic:
        t.features = {m: rng.multinomial(t.requests, feature_probabilities(m)).astype(np.int64)
                      for m in metrics}


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


# The service's latency objective for Flagger and the SLO guards: 500 ms for the
# benchmark's stable revision (p99 256 ms); a service with another latency distribution
# (heavy tails) sets it at the same multiple of its own p99.
SLO_P99_S = 0.5
SLO_MAX_RATE = 0.01


def slo_latency(stable: Revision = STABLE) -> float:
    """The p99 objective in seconds for a service whose stable revision is ``stable``."""
    if stable == STABLE:
        return SLO_P99_S
    return SLO_P99_S * stable.quantile(0.99) / STABLE.quantile(0.99)


def slo_policy(policy: RolloutPolicy | None = None, stable: Revision = STABLE) -> RolloutPolicy:
    """``policy`` (the benchmark policy by default) plus the SLOs the Flagger-style judge
    enforces (success rate >= 99%, p99 below ``slo_latency``: 500 ms) as Rollwise's
    absolute guards on every error-rate and p99 check that has none, which can also
    certify a canary: Rollwise and Flagger then hold the canary to the same objectives."""
    policy = policy or benchmark_policy()
    latency_guard = timedelta(milliseconds=1000 * slo_latency(stable))

    def guarded(check: RatioCheck | LatencyCheck | DistributionCheck
                ) -> RatioCheck | LatencyCheck | DistributionCheck:
        if isinstance(check, RatioCheck) and check.max_rate is None:
            return check.model_copy(update={"max_rate": SLO_MAX_RATE})
        if (isinstance(check, LatencyCheck) and check.quantile == 0.99
                and check.max_latency is None):
            return check.model_copy(update={"max_latency": latency_guard})
        return check

    checks = [guarded(c) for c in policy.spec.analysis.checks]
    analysis = policy.spec.analysis.model_copy(update={"checks": checks})
    return policy.model_copy(update={"spec": policy.spec.model_copy(update={"analysis":
                                                                           analysis})})


PREDICTION_METRIC = "kserve_model_prediction"


def twelve_check_policy() -> RolloutPolicy:
    """``benchmark_policy`` with 12 checks: three on the error rate (tolerances 0.1, 0.2
    and 0.5 with a 2% guard), five on the latency histogram (p50, p95, p99, the shares
    above 300 ms and above 1 s with a 2% guard), four drift checks on three series (the
    predictions by PSI and Jensen-Shannon, two input features). Alpha is split over all
    twelve (Holm), so false rollbacks stay below alpha if the accounting holds."""
    policy = benchmark_policy()
    checks = [
        {"name": "error-rate", "kind": "ratio", "tolerance": 0.2},
        {"name": "error-rate-tight", "kind": "ratio", "tolerance": 0.1},
        {"name": "error-rate-guarded", "kind": "ratio", "tolerance": 0.5, "maxRate": 0.02},
        {"name": "p99-latency", "kind": "latency", "quantile": 0.99, "tolerance": 0.2},
        {"name": "p95-latency", "kind": "latency", "quantile": 0.95, "tolerance": 0.2},
        {"name": "p50-latency", "kind": "latency", "quantile": 0.5, "tolerance": 0.1},
        {"name": "slow-300ms", "kind": "latency", "threshold": "300ms", "tolerance": 0.2},
        {"name": "slow-1s", "kind": "latency", "threshold": "1s", "tolerance": 0.5,
         "maxShareAbove": 0.02},
        {"name": "prediction-psi", "kind": "distribution", "method": "psi"},
        {"name": "prediction-js", "kind": "distribution", "method": "jensenShannon"},
        {"name": "feature-age-psi", "kind": "distribution", "method": "psi",
         "metric": "model_feature_age"},
        {"name": "feature-amount-js", "kind": "distribution", "method": "jensenShannon",
         "metric": "model_feature_amount"},
    ]
    raw = policy.model_dump(by_alias=True, mode="json", exclude_none=True)
    raw["metadata"]["name"] = "twelve-checks"
    raw["spec"]["analysis"]["checks"] = checks
    return RolloutPolicy.model_validate(raw)


def feature_metrics(policy: RolloutPolicy) -> tuple[str, ...]:
    """The input-feature histograms ``policy``'s drift checks read (not the predictions)."""
    return tuple(dict.fromkeys(
        c.metric for c in policy.spec.analysis.checks
        if isinstance(c, DistributionCheck) and c.metric != PREDICTION_METRIC))


def worst_acceptable(metric: str, policy: RolloutPolicy, stable: Revision = STABLE) -> Revision:
    """The worst canary that ``policy`` accepts on ``metric`` when the stable revision is
    ``stable``, in the bad scenario's family (error rate up; every latency scaled up;
    predictions shifted on the logit scale).

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
        rate = (1.0 + check.tolerance) * stable.error_rate
        if check.max_rate is not None:
            rate = min(rate, check.max_rate)
        return replace(stable, error_rate=rate)
    if isinstance(check, LatencyCheck):
        bound = p99_bound(stable)
        limits = [((1.0 + check.tolerance) * stable.tail_share(bound), bound)]
        if check.max_latency is not None and check.quantile is not None:
            guard = min((b for b in LATENCY_BOUNDS_S
                         if b >= check.max_latency.total_seconds()), default=LATENCY_BOUNDS_S[-1])
            limits.append((1.0 - check.quantile, guard))
        factor = min(_latency_factor(share, b, stable) for share, b in limits)
        return replace(stable, latency_median_s=stable.latency_median_s * factor)
    assert isinstance(check, DistributionCheck)
    if check.method != "psi":
        raise ValueError("the benchmark's drift scenario is defined by PSI")
    return replace(stable, logit_shift=drift_shift(check.effective_threshold))


_KIND = {"errors": "ratio", "latency": "latency", "drift": "distribution"}


def acceptable_limits(policy: RolloutPolicy) -> str:
    """What ``worst_acceptable`` allows, in words: "error rate x1.2, ..."."""
    base = STABLE.tail_share(stable_p99_bound())
    errors = worst_acceptable("errors", policy).error_rate / STABLE.error_rate
    tail = worst_acceptable("latency", policy).tail_share(stable_p99_bound()) / base
    psi = population_psi(worst_acceptable("drift", policy).prediction_probs,
                         STABLE.prediction_probs)
    return f"error rate x{errors:.3g}, tail share x{tail:.3g}, PSI {psi:.3g}"


def _latency_factor(share: float, bound_s: float, stable: Revision) -> float:
    """The factor on every latency at which the share above ``bound_s`` is ``share``."""
    return float(optimize.brentq(
        lambda f: replace(stable, latency_median_s=stable.latency_median_s * f).tail_share(
            bound_s) - share, 0.5, 10.0))


@cache
def p99_bound(revision: Revision) -> float:
    """The bucket bound that closes the bucket of the revision's true p99."""
    cdf = np.cumsum(revision.latency_probs)
    index = int(np.searchsorted(cdf, 0.99))
    return LATENCY_BOUNDS_S[min(index, len(LATENCY_BOUNDS_S) - 1)]


def stable_p99_bound() -> float:
    """``p99_bound`` of the benchmark's stable revision."""
    return p99_bound(STABLE)


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
