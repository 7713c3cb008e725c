"""The judges under comparison. Each looks at the rollout after every 1-minute interval
and says FAIL (roll back), PASS (may advance) or CONTINUE (hold).

* ``FlaggerJudge`` - Flagger's built-in checks (pkg/controller/scheduler_metrics.go):
  every interval, the canary's request success rate over the last minute must be
  >= 99% and its p99 latency (``histogram_quantile`` over the last minute) <= 500ms; a
  failed check (or no data) increments ``failedChecks``, which is never reset during a
  rollout, and the canary rolls back when it reaches the threshold, 5. An interval with
  a failed check does not advance. (Flagger rolls back at the *next* interval after the
  fifth failure; we roll back at once, which flatters Flagger by one minute.)
* ``KayentaJudge`` - Kayenta's NetflixACAJudge with its MannWhitneyClassifier
  (kayenta-judge ``classifiers/metric/MannWhitneyClassifier.scala``): for each metric,
  the per-minute values of canary and stable during the current step; the
  Hodges-Lehmann shift with its Mann-Whitney confidence interval at confLevel 0.98
  (the judge's setting); the metric is High if the interval's lower end is above
  ``tolerance`` (0.25) times the absolute shift and the canary/stable mean ratio is at
  least 1 (the default effect-size threshold), Low symmetrically, else Pass. The score is
  the percentage of metrics with data classified Pass (one group, equal weights). As a
  Spinnaker canary stage with 1-minute intervals does, an interim score below the
  marginal threshold 75 fails the canary; a score of at least 95 (pass) lets it
  advance. Metrics: error rate (increase is bad), p99 latency (increase), mean
  prediction (either direction). The interval's ranks use the normal approximation (as
  R's ``wilcox.test`` does with ties); fewer points than that needs give Pass.
* ``RollwiseJudge`` - ``controller.analysis.judge`` with the benchmark policy. Variants:
  ``rollwise`` asks for the non-inferiority certificate (``certify=True``) at the step
  before promotion only, earlier steps pass on the absence of evidence of harm;
  ``rollwise-strict`` asks for it at every step (the judge's default);
  ``rollwise-lenient`` never does (it promotes on the same evidence as Flagger and
  Kayenta, with an anytime-valid failure test).
* ``OracleJudge`` - Wald's SPRT of simple against simple hypotheses at the *true*
  rates, on the statistic the corresponding Rollwise check uses (the canary's errors;
  its requests above the stable p99 bucket bound; its prediction histogram), knowing
  stable's rates exactly (no baseline noise): alpha = the policy's alpha, beta = 0.05.
  For a bad canary it tests the scenario's regression; for the A/A canary the three
  regressions of the benchmark at alpha/3 each. Wald and Wolfowitz (1948): no test with
  the same error rates needs fewer samples on average, so its exposure is the floor.
  ``policy-oracle`` is the same SPRT with the policy's *least-favourable acceptable*
  canary as the null (``scenarios.worst_acceptable``: error rate stable's x (1 +
  tolerance); tail share stable's x (1 + tolerance); PSI at the threshold) instead of the
  stable revision: the floor for any judge that must not roll back canaries the policy
  accepts. Where it is far above the oracle, the gap is the policy's margin, not the
  statistics.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

import numpy as np
from scipy import stats

from controller.analysis import (
    HistogramCounts,
    Measurement,
    Outcome,
    Quality,
    RatioCounts,
    StepWindow,
    judge,
)
from controller.analysis.histograms import quantile
from controller.policy.model import RolloutPolicy
from simulations.benchmark.scenarios import (
    LATENCY_BOUNDS_S,
    PREDICTION_BOUNDS,
    STABLE,
    FloatArray,
    Revision,
    Scenario,
    Traffic,
    scenarios,
    slo_policy,
    stable_p99_bound,
    worst_acceptable,
)


@dataclass
class StepLog:
    """What happened at one step: its weight, per-minute traffic, and running totals."""

    weight: int
    canary: Traffic = field(default_factory=Traffic.empty)
    stable: Traffic = field(default_factory=Traffic.empty)
    minutes: list[tuple[Traffic, Traffic]] = field(default_factory=list)

    def record(self, canary: Traffic, stable: Traffic) -> None:
        self.minutes.append((canary, stable))
        self.canary.add(canary)
        self.stable.add(stable)


class Judge(Protocol):
    name: str

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        """The decision after the latest interval; ``final``: the step before promotion."""


# --- Flagger -------------------------------------------------------------------------


@dataclass
class FlaggerJudge:
    name: str = "flagger"
    min_success_percent: float = 99.0
    max_p99_seconds: float = 0.5
    threshold: int = 5
    failed: int = 0

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        canary, _ = steps[-1].minutes[-1]
        ok = canary.requests > 0
        if ok:
            success = 100.0 * (1.0 - canary.errors / canary.requests)
            p99 = quantile(LATENCY_BOUNDS_S, canary.latency.tolist(), 0.99)
            ok = success >= self.min_success_percent and p99 <= self.max_p99_seconds
        if ok:
            return Outcome.PASS
        self.failed += 1
        return Outcome.FAIL if self.failed >= self.threshold else Outcome.CONTINUE


# --- Kayenta -------------------------------------------------------------------------


@cache
def _z(conf: float) -> float:
    return float(stats.norm.ppf(1 - (1 - conf) / 2))


def hodges_lehmann(x: FloatArray, y: FloatArray, conf: float) -> tuple[float, float, float]:
    """Hodges-Lehmann shift of x over y and its Mann-Whitney confidence interval
    (lower, upper, estimate); an unbounded interval when the samples are too small."""
    d = np.sort((x[:, None] - y[None, :]).ravel())
    n, m = len(x), len(y)
    estimate = float(np.median(d))
    z = _z(conf)
    k = math.floor(n * m / 2 - z * math.sqrt(n * m * (n + m + 1) / 12))
    if k < 1:
        return -math.inf, math.inf, estimate
    return float(d[k - 1]), float(d[n * m - k]), estimate


_MIDPOINTS = np.asarray([0.0, *[(a + b) / 2 for a, b in itertools.pairwise(PREDICTION_BOUNDS)],
                         PREDICTION_BOUNDS[-1]])


def _minute_metrics(t: Traffic) -> tuple[float, float, float]:
    """(error rate, p99 latency, mean prediction) of one minute; NaN without data."""
    if t.requests <= 0:
        return math.nan, math.nan, math.nan
    n_pred = int(t.predictions.sum())
    mean_pred = float(_MIDPOINTS @ t.predictions) / n_pred if n_pred else math.nan
    return (t.errors / t.requests, quantile(LATENCY_BOUNDS_S, t.latency.tolist(), 0.99),
            mean_pred)


@dataclass
class KayentaJudge:
    name: str = "kayenta"
    tolerance: float = 0.25
    conf_level: float = 0.98
    marginal: float = 75.0
    passing: float = 95.0
    directions: tuple[str, ...] = ("increase", "increase", "either")

    def classify(self, canary: FloatArray, stable: FloatArray, direction: str) -> str:
        canary, stable = canary[~np.isnan(canary)], stable[~np.isnan(stable)]
        if len(canary) == 0 or len(stable) == 0:
            return "nodata"
        if np.array_equal(np.sort(canary), np.sort(stable)) or len(
                np.unique(np.concatenate([canary, stable]))) == 1:
            return "pass"
        lower, upper, estimate = hodges_lehmann(canary, stable, self.conf_level)
        critical = self.tolerance * abs(estimate)
        mean_c, mean_s = float(canary.mean()), float(stable.mean())
        ratio = 1.0 if mean_s == 0 else mean_c / mean_s
        if direction in ("increase", "either") and lower > critical and ratio >= 1.0:
            return "high"
        if direction in ("decrease", "either") and upper < -critical and ratio <= 1.0:
            return "low"
        return "pass"

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        points = np.asarray([[_minute_metrics(c), _minute_metrics(s)]
                             for c, s in steps[-1].minutes])   # minutes x 2 x 3
        labels = [self.classify(points[:, 0, j], points[:, 1, j], d)
                  for j, d in enumerate(self.directions)]
        judged = [label for label in labels if label != "nodata"]
        if not judged:
            return Outcome.CONTINUE
        score = 100.0 * sum(label == "pass" for label in judged) / len(judged)
        if score < self.marginal:
            return Outcome.FAIL
        return Outcome.PASS if score >= self.passing else Outcome.CONTINUE


# --- Rollwise ------------------------------------------------------------------------


def measurements(steps: Sequence[StepLog], policy: RolloutPolicy) -> dict[str, Measurement[Any]]:
    """The benchmark's counts as the metric provider would hand them to the judge."""
    ratio = tuple(StepWindow(RatioCounts(s.stable.errors, s.stable.requests),
                             RatioCounts(s.canary.errors, s.canary.requests)) for s in steps)
    latency = tuple(StepWindow(HistogramCounts(LATENCY_BOUNDS_S, tuple(s.stable.latency.tolist())),
                               HistogramCounts(LATENCY_BOUNDS_S, tuple(s.canary.latency.tolist())))
                    for s in steps)
    preds = tuple(StepWindow(
        HistogramCounts(PREDICTION_BOUNDS, tuple(s.stable.predictions.tolist())),
        HistogramCounts(PREDICTION_BOUNDS, tuple(s.canary.predictions.tolist()))) for s in steps)
    by_kind: dict[str, Measurement[Any]] = {
        "ratio": Measurement(Quality.OK, ratio),
        "latency": Measurement(Quality.OK, latency),
        "distribution": Measurement(Quality.OK, preds),
    }
    return {c.name: by_kind[c.kind] for c in policy.spec.analysis.checks}


@dataclass
class RollwiseJudge:
    """``certify``: "final" (the step before promotion), "always" or "never"."""

    policy: RolloutPolicy
    certify: str = "final"
    name: str = "rollwise"

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        index = len(steps) - 1
        certify = self.certify == "always" or (self.certify == "final" and final)
        verdict = judge(self.policy.spec.analysis, measurements(steps, self.policy),
                        min_requests=self.policy.spec.min_requests(index), certify=certify)
        return verdict.outcome


# --- the oracle ----------------------------------------------------------------------


@dataclass
class _Sprt:
    """Wald's SPRT: one log-likelihood ratio per interval, two boundaries."""

    upper: float
    lower: float
    llr: float = 0.0
    accepted: bool = False

    def update(self, increment: float) -> bool | None:
        """True: reject H0 (the canary is bad); False: accept it; None: go on."""
        if self.accepted:
            return False
        self.llr += increment
        if self.llr >= self.upper:
            return True
        if self.llr <= self.lower:
            self.accepted = True
            return False
        return None


def _tail_index() -> int:
    return LATENCY_BOUNDS_S.index(stable_p99_bound())


def _errors_llr(p0: float, p1: float) -> Any:
    def llr(t: Traffic) -> float:
        return t.errors * math.log(p1 / p0) + (t.requests - t.errors) * math.log(
            (1 - p1) / (1 - p0))
    return llr


def _tail_llr(p0: float, p1: float) -> Any:
    index = _tail_index()

    def llr(t: Traffic) -> float:
        tail = int(t.latency[index + 1:].sum())
        return tail * math.log(p1 / p0) + (t.requests - tail) * math.log((1 - p1) / (1 - p0))
    return llr


def _histogram_llr(q0: FloatArray, q1: FloatArray) -> Any:
    used = (q0 > 0) & (q1 > 0)
    log_ratio = np.where(used, np.log(np.where(used, q1, 1.0) / np.where(used, q0, 1.0)), 0.0)

    def llr(t: Traffic) -> float:
        return float(log_ratio @ t.predictions)
    return llr


def oracle_statistics(metric: str, bad: Scenario, null: Revision = STABLE) -> Any:
    """The per-interval log-likelihood ratio of the canary's data, H1 (the bad revision)
    over H0 (``null``: the stable revision, or the worst one a policy accepts)."""
    if metric == "errors":
        return _errors_llr(null.error_rate, bad.canary.error_rate)
    if metric == "latency":
        index = _tail_index()
        return _tail_llr(float(null.latency_probs[index + 1:].sum()),
                         float(bad.canary.latency_probs[index + 1:].sum()))
    return _histogram_llr(null.prediction_probs, bad.canary.prediction_probs)


@dataclass
class OracleJudge:
    """Wald's SPRT at the true rates. Against the stable revision (``policy`` None: the
    issue's oracle, "is the canary any different?"), or against the worst canary
    ``policy`` accepts (``worst_acceptable``: the policy's own question, asked by someone
    who knows the answer)."""

    scenario: Scenario
    alpha: float
    beta: float = 0.05
    name: str = "oracle"
    policy: RolloutPolicy | None = None
    tests: list[tuple[_Sprt, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        bad = [self.scenario] if self.scenario.bad else [
            s for s in scenarios().values() if s.bad]
        a = self.alpha / len(bad)
        for s in bad:
            null = STABLE if self.policy is None else worst_acceptable(s.metric, self.policy)
            sprt = _Sprt(math.log((1 - self.beta) / a), math.log(self.beta / (1 - a)))
            self.tests.append((sprt, oracle_statistics(s.metric, s, null)))

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        canary, _ = steps[-1].minutes[-1]
        results = [sprt.update(stat(canary)) for sprt, stat in self.tests]
        if any(r is True for r in results):
            return Outcome.FAIL
        return Outcome.PASS if all(r is False for r in results) else Outcome.CONTINUE


JUDGES = ("flagger", "kayenta", "rollwise", "rollwise-slo", "rollwise-strict", "rollwise-lenient",
          "policy-oracle", "oracle")


def make_judge(name: str, scenario: Scenario, policy: RolloutPolicy) -> Judge:
    """A fresh judge (judges with memory start clean for each rollout)."""
    if name == "flagger":
        return FlaggerJudge()
    if name == "kayenta":
        return KayentaJudge()
    if name == "rollwise":
        return RollwiseJudge(policy)
    if name == "rollwise-slo":
        return RollwiseJudge(slo_policy(), name=name)
    if name == "rollwise-strict":
        return RollwiseJudge(policy, certify="always", name=name)
    if name == "rollwise-lenient":
        return RollwiseJudge(policy, certify="never", name=name)
    if name == "oracle":
        return OracleJudge(scenario, policy.spec.analysis.alpha)
    if name == "policy-oracle":
        return OracleJudge(scenario, policy.spec.analysis.alpha, name=name, policy=policy)
    raise ValueError(f"unknown judge {name!r}; known: {', '.join(JUDGES)}")
