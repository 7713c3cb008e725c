"""The judges under comparison. The harness calls each after every tick of simulated
traffic (60 s by default; ``--tick`` makes it finer); a judge looks at its own cadence -
Flagger and Kayenta every minute (their analysis interval), Rollwise and the oracles
every tick (Rollwise's evidence comes in blocks of the policy's ``analysis.interval``, its
looks come whenever the controller looks) - and says FAIL (roll back),
PASS (may advance) or CONTINUE (hold; also what a judge says between its looks).

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
  Flagger's latency objective scales with the service (``scenarios.slo_latency``: 500 ms
  for the benchmark's stable revision, the same multiple of p99 for heavy tails).
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
  It knows the truth of every tick (``conditions.TickTruth``): a regression's time
  profile (a mid-step onset, a leak's ramp), the cold start, and each shock period's
  random effects and jitter of the canary, which it applies to both hypotheses. Knowing
  the realised effects, its likelihood is the true one, so it stays valid (false
  rollbacks <= alpha) under every condition; it is a lower bound on exposure that a judge,
  which cannot see the effects, may not reach where they are independent per revision.
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
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Protocol

import numpy as np
from scipy import stats

from controller.analysis import (
    HistogramCounts,
    Outcome,
    RatioCounts,
    StepWindow,
    judge,
    looks,
)
from controller.analysis.histograms import quantile
from controller.policy.model import RolloutPolicy
from simulations.benchmark.conditions import TickTruth
from simulations.benchmark.scenarios import (
    LATENCY_BOUNDS_S,
    PREDICTION_BOUNDS,
    PREDICTION_METRIC,
    FloatArray,
    Law,
    Revision,
    Scenario,
    Traffic,
    p99_bound,
    regressions,
    slo_latency,
    slo_policy,
    worst_acceptable,
)


@dataclass
class StepLog:
    """What happened at one step: its weight, per-tick traffic (and each tick's truth,
    which only the oracles may read), and running totals."""

    weight: int
    tick_seconds: float = 60.0
    canary: Traffic = field(default_factory=Traffic.empty)
    stable: Traffic = field(default_factory=Traffic.empty)
    ticks: list[tuple[Traffic, Traffic]] = field(default_factory=list)
    truth: list[TickTruth] = field(default_factory=list)

    def record(self, canary: Traffic, stable: Traffic, truth: TickTruth | None = None) -> None:
        start = self.seconds
        self.ticks.append((canary, stable))
        self.truth.append(truth or TickTruth.steady(start, start + self.tick_seconds))
        self.canary.add(canary)
        self.stable.add(stable)

    @property
    def seconds(self) -> float:
        """How long the step has lasted."""
        return len(self.ticks) * self.tick_seconds

    def _per(self, seconds: float) -> int:
        n = seconds / self.tick_seconds
        if n < 1 or abs(n - round(n)) > 1e-9:
            raise ValueError(f"a judge looking every {seconds:g} s needs ticks that divide it "
                             f"(the tick is {self.tick_seconds:g} s)")
        return round(n)

    def due(self, every_seconds: float) -> bool:
        """Whether a judge that looks every ``every_seconds`` (from the step's start)
        looks now."""
        return len(self.ticks) % self._per(every_seconds) == 0

    def windows(self, seconds: float) -> list[tuple[Traffic, Traffic]]:
        """The step's traffic in consecutive complete windows of ``seconds`` (one-minute
        points, as a metric store with that resolution shows them)."""
        k = self._per(seconds)
        if k == 1:
            return self.ticks
        return [(Traffic.total([c for c, _ in self.ticks[i:i + k]]),
                 Traffic.total([s for _, s in self.ticks[i:i + k]]))
                for i in range(0, len(self.ticks) - k + 1, k)]


class Judge(Protocol):
    name: str

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        """The decision after the latest interval; ``final``: the step before promotion."""


def wants_history(judge: Judge) -> bool:
    return callable(getattr(judge, "begin", None))


def begin(judge: Judge, history: Sequence[Traffic], tick_seconds: float) -> None:
    """Hand the stable revision's ticks before the rollout to a judge that uses them (as
    Rollwise's range query does); the others ignore it."""
    start = getattr(judge, "begin", None)
    if start is not None:
        start(history, tick_seconds)


# --- Flagger -------------------------------------------------------------------------


@dataclass
class FlaggerJudge:
    name: str = "flagger"
    min_success_percent: float = 99.0
    max_p99_seconds: float = 0.5
    threshold: int = 5
    failed: int = 0
    interval_seconds: float = 60.0

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        if not steps[-1].due(self.interval_seconds):
            return Outcome.CONTINUE
        canary, _ = steps[-1].windows(self.interval_seconds)[-1]
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
    interval_seconds: float = 60.0

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
        if not steps[-1].due(self.interval_seconds):
            return Outcome.CONTINUE
        points = np.asarray([[_minute_metrics(c), _minute_metrics(s)]
                             for c, s in steps[-1].windows(self.interval_seconds)])  # n x 2 x 3
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


def counts_for(t: Traffic, check: Any) -> RatioCounts | HistogramCounts:
    """One revision's counts of ``t`` as the metric provider would give them for ``check``."""
    if check.kind == "ratio":
        return RatioCounts(float(t.errors), float(t.requests))
    if check.kind == "latency":
        return HistogramCounts(LATENCY_BOUNDS_S, tuple(float(x) for x in t.latency.tolist()))
    if check.metric == PREDICTION_METRIC:
        return HistogramCounts(PREDICTION_BOUNDS, tuple(float(x) for x in t.predictions.tolist()))
    if check.metric not in t.features:
        raise ValueError(f"the benchmark drew no {check.metric!r} histogram; the case draws "
                         "the features of its policy")
    return HistogramCounts(PREDICTION_BOUNDS,
                           tuple(float(x) for x in t.features[check.metric].tolist()))


T_ZERO = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class RollwiseJudge:
    """Rollwise as the controller runs it: at every tick, ``controller.analysis.looks`` turns
    the current step's cumulative counts and what the state kept (each check's ledger)
    into evidence, and ``judge`` decides. ``certify``: "final" (the step before
    promotion), "always" or "never". ``begin`` gives it stable's history before the
    rollout (the controller's range query)."""

    policy: RolloutPolicy
    certify: str = "final"
    name: str = "rollwise"
    _keep: dict[str, Any] = field(default_factory=dict)
    _closing: dict[str, Any] = field(default_factory=dict)
    _steps_seen: int = 0

    def begin(self, history: Sequence[Traffic], tick_seconds: float) -> None:
        """Stable's ticks before the rollout, grouped into the policy's intervals."""
        analysis = self.policy.spec.analysis
        per = max(1, round(analysis.interval.total_seconds() / tick_seconds))
        groups = [history[i:i + per] for i in range(0, len(history) - per + 1, per)]
        for check in analysis.checks:
            if check.kind == "distribution":
                continue          # drift needs no history: stable's own shape is the reference
            intervals = []
            for group in groups:
                total = Traffic.empty()
                for t in group:
                    total.add(t)
                intervals.append(counts_for(total, check))
            self._keep[check.name] = looks.with_reference(check, looks.empty(check), intervals)

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        analysis = self.policy.spec.analysis
        if len(steps) != self._steps_seen:
            # A new step began after the last look: keep what that look would have kept
            # had the step ended there (the controller's closing evidence).
            if self._steps_seen:
                self._keep = dict(self._closing)
            self._steps_seen = len(steps)
        index = len(steps) - 1
        elapsed = sum(s.seconds for s in steps)
        step_started_at = T_ZERO + timedelta(seconds=elapsed - steps[-1].seconds)
        timing = looks.analysis_timing(analysis, index, step_started_at,
                                       T_ZERO + timedelta(seconds=elapsed))
        measurements: dict[str, Any] = {}
        for check in analysis.checks:
            ledger = self._keep.get(check.name) or looks.empty(check)
            window: StepWindow[Any] = StepWindow(counts_for(steps[-1].stable, check),
                                                 counts_for(steps[-1].canary, check))
            seen = looks.look(check, ledger, window, timing)
            measurements[check.name] = seen.measurement
            self._keep[check.name], self._closing[check.name] = seen.keep, seen.closing
        certify = self.certify == "always" or (self.certify == "final" and final)
        verdict = judge(analysis, measurements, min_requests=self.policy.spec.min_requests(index),
                        certify=certify)
        return verdict.outcome


# The controller's ``analysis.certify`` (``Analysis.certify_step``) as RollwiseJudge's
# ``certify``: "final" is the step that leads to 100%, which is what beforePromotion means.
CERTIFY_MODES = {"beforePromotion": "final", "everyStep": "always", "never": "never"}


def policy_judge(policy: RolloutPolicy, name: str = "rollwise") -> RollwiseJudge:
    """Rollwise judging ``policy`` as the controller does, certifying the steps the
    policy's own ``analysis.certify`` names (``rollwise simulate --policy``)."""
    return RollwiseJudge(policy, certify=CERTIFY_MODES[policy.spec.analysis.certify], name=name)


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


def _binomial_llr(hits: int, n: int, p0: float, p1: float) -> float:
    return hits * math.log(p1 / p0) + (n - hits) * math.log((1 - p1) / (1 - p0))


def _log_ratio(q0: FloatArray, q1: FloatArray) -> FloatArray:
    used = (q0 > 0) & (q1 > 0)
    return np.where(used, np.log(np.where(used, q1, 1.0) / np.where(used, q0, 1.0)), 0.0)


@dataclass
class OracleStatistic:
    """The log-likelihood ratio of one tick of the canary's data on one statistic (the
    canary's errors; its requests above the stable p99 bucket bound; its prediction
    histogram), H1 (``bad``, at each moment of the tick) over H0 (``null``: the stable
    revision, or the worst one a policy accepts), both under the tick's conditions."""

    metric: str
    bad: Scenario
    null: Revision
    tail_index: int
    _memo: tuple[Law, Law, Any] | None = None

    def llr(self, t: Traffic, truth: TickTruth) -> float:
        null = self.null
        law0 = truth.law(lambda _: null)
        law1 = truth.law(self.bad.canary_at)
        # Evidence comes only from the moments the bad canary is worse than the null: a
        # leak still below the policy's limit, or a regression before its onset, says
        # nothing against an acceptable canary (without the floor at p0, low error
        # counts early in a leak would count as evidence against the limit).
        if self.metric == "errors":
            p0 = law0.error_rate
            return _binomial_llr(t.errors, t.requests, p0, max(law1.error_rate, p0))
        if self.metric == "latency":
            tail = int(t.latency[self.tail_index + 1:].sum())
            p0 = law0.tail(self.tail_index)
            return _binomial_llr(tail, t.requests, p0, max(law1.tail(self.tail_index), p0))
        memo = self._memo
        if memo is None or memo[0] is not law0 or memo[1] is not law1:
            memo = self._memo = (law0, law1, _log_ratio(law0.prediction_probs,
                                                        law1.prediction_probs))
        return float(memo[2] @ t.predictions)


def oracle_statistics(metric: str, bad: Scenario, null: Revision) -> OracleStatistic:
    """The oracle's statistic for detecting ``bad`` against ``null`` on ``metric``."""
    return OracleStatistic(metric, bad, null, LATENCY_BOUNDS_S.index(p99_bound(bad.stable)))


@dataclass
class OracleJudge:
    """Wald's SPRT at the true rates. Against the stable revision (``policy`` None: the
    issue's oracle, "is the canary any different?"), or against the worst canary
    ``policy`` accepts (``worst_acceptable``: the policy's own question, asked by someone
    who knows the answer). ``scenario`` is the case's, with its conditions applied; for a
    good canary the oracle tests the benchmark's three regressions of its stable revision."""

    scenario: Scenario
    alpha: float
    beta: float = 0.05
    name: str = "oracle"
    policy: RolloutPolicy | None = None
    tests: list[tuple[_Sprt, OracleStatistic]] = field(default_factory=list)

    def __post_init__(self) -> None:
        stable = self.scenario.stable
        bad = [self.scenario] if self.scenario.bad else list(regressions(stable))
        a = self.alpha / len(bad)
        for s in bad:
            null = stable if self.policy is None else worst_acceptable(s.metric, self.policy,
                                                                       stable)
            sprt = _Sprt(math.log((1 - self.beta) / a), math.log(self.beta / (1 - a)))
            self.tests.append((sprt, oracle_statistics(s.metric, s, null)))

    def decide(self, steps: Sequence[StepLog], *, final: bool) -> Outcome:
        canary, _ = steps[-1].ticks[-1]
        truth = steps[-1].truth[-1]
        results = [sprt.update(stat.llr(canary, truth)) for sprt, stat in self.tests]
        if any(r is True for r in results):
            return Outcome.FAIL
        return Outcome.PASS if all(r is False for r in results) else Outcome.CONTINUE


JUDGES = ("flagger", "kayenta", "rollwise", "rollwise-slo", "rollwise-strict", "rollwise-lenient",
          "policy-oracle", "oracle")


def make_judge(name: str, scenario: Scenario, policy: RolloutPolicy) -> Judge:
    """A fresh judge (judges with memory start clean for each rollout). ``scenario`` is
    the case's with its conditions applied (the service's SLOs follow its stable
    revision), ``policy`` the one Rollwise judges it with."""
    if name == "flagger":
        return FlaggerJudge(max_p99_seconds=slo_latency(scenario.stable))
    if name == "kayenta":
        return KayentaJudge()
    if name == "rollwise":
        return RollwiseJudge(policy)
    if name == "rollwise-slo":
        return RollwiseJudge(slo_policy(policy, scenario.stable), name=name)
    if name == "rollwise-strict":
        return RollwiseJudge(policy, certify="always", name=name)
    if name == "rollwise-lenient":
        return RollwiseJudge(policy, certify="never", name=name)
    if name == "oracle":
        return OracleJudge(scenario, policy.spec.analysis.alpha)
    if name == "policy-oracle":
        return OracleJudge(scenario, policy.spec.analysis.alpha, name=name, policy=policy)
    raise ValueError(f"unknown judge {name!r}; known: {', '.join(JUDGES)}")
