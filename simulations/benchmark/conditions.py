"""Traffic that behaves like production: what the benchmark's i.i.d. requests leave out.

``Conditions`` composes with any scenario (``Case`` in ``suites`` pairs them):

* ``Dispersion`` - per shock period (60 s by default) each revision's error rate is
  multiplied by a random effect with mean 1 and a given CV: gamma (the default; Poisson
  counts with a gamma-distributed rate are the negative binomial, the textbook model of
  overdispersed counts) or lognormal. ``shared`` is the correlation of the two
  revisions' effects: 0 independent (pod heterogeneity), 1 one effect for both (common
  shocks), in between a shared effect times an independent one, each with mean 1.
* ``Jitter`` - per shock period every latency of a revision is multiplied by
  exp(N(0, sd)), independent per revision or correlated in the same way.
* ``ColdStart`` - the canary's latency (and optionally its error rate) is multiplied by
  a factor for its first T seconds after it becomes ready and after each step change
  (new pods start cold), then equal.
* ``Diurnal`` - the request rate follows rps (1 + A sin(2 pi t / P + phase)), the phase
  uniform per rollout.
* ``HeavyTail`` - both revisions' latency lognormal with a larger sigma, or Pareto, with
  the same median (the canary keeps its relative change).

``RolloutTraffic`` turns a scenario and its conditions into ticks. A tick's requests
arrive at uniform times within it, so when the law changes inside a tick (a cold start
that ends, a shock period boundary, a regression's onset) each request follows the
time-average of the laws (``scenarios.mix``): exactly the per-request model, aggregated.
The random effects of a shock period come from a stream keyed by the rollout and the
period, the diurnal phase from one keyed by the rollout, the tick's requests from one
keyed by the rollout and the tick (``scenarios.interval_rng``): none depends on a
judge's decisions, so every judge sees the same traffic as long as it decides the same
way (common random numbers). Without conditions a tick is drawn exactly as the
benchmark always drew its one-minute intervals.

Used by ``run`` (the harness) and ``judges`` (the oracles read ``TickTruth``, what the
simulator knows and a judge does not). Pure: no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from scipy import special

from simulations.benchmark.scenarios import (
    Law,
    Revision,
    Scenario,
    Traffic,
    draw_features,
    draw_tick,
    interval_rng,
    mix,
)

# Stream tags: the entropy [seed, scenario, rps, rollout, TAG, n] of a shock period, a
# tick's features or the rollout's phase never equals a tick's [seed, scenario, rps,
# rollout, tick] (a different length) nor each other's (a different tag).
SHOCK_TAG = 1_000_003
FEATURE_TAG = 1_000_033
PHASE_TAG = 1_000_037
PAST_SHOCK_TAG = 1_000_039      # shock periods before the rollout (negative periods)
HISTORY_TAG = 1_000_061         # the stable revision's ticks before the rollout


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


@dataclass(frozen=True)
class Dispersion:
    """Overdispersion of the error rate: a multiplicative random effect per shock period
    and revision with mean 1 and coefficient of variation ``cv``; ``shared`` is the
    correlation of the two revisions' effects (0 independent, 1 common shocks)."""

    cv: float = 0.0
    shared: float = 0.0
    family: Literal["gamma", "lognormal"] = "gamma"

    def __post_init__(self) -> None:
        _check(self.cv >= 0, f"Dispersion.cv must be >= 0, got {self.cv}")
        _check(0 <= self.shared <= 1, f"Dispersion.shared must be in [0, 1], got {self.shared}")
        _check(self.family in ("gamma", "lognormal"),
               f"Dispersion.family must be gamma or lognormal, got {self.family!r}")

    def cvs(self) -> tuple[float, float]:
        """(CV of the shared effect, CV of each revision's own effect). With S and I
        independent, mean 1: Var(S I) = (1 + cs^2)(1 + ci^2) - 1 = cv^2 and
        Cov(S I_c, S I_s) = cs^2, so cs^2 = shared cv^2 gives the correlation ``shared``."""
        cs2 = self.shared * self.cv ** 2
        ci2 = (1.0 - self.shared) * self.cv ** 2 / (1.0 + cs2)
        return math.sqrt(cs2), math.sqrt(ci2)

    def effects(self, z: tuple[float, float, float]) -> tuple[float, float]:
        """(canary, stable) effects from three standard normals (shared, canary, stable):
        each effect is the quantile transform of its normal, so effects are comonotone
        across CVs and families (common random numbers across conditions too)."""
        cs, ci = self.cvs()
        shared = self.transform(z[0], cs)
        return shared * self.transform(z[1], ci), shared * self.transform(z[2], ci)

    def transform(self, z: float, cv: float) -> float:
        """The mean-1 effect with this CV whose quantile is Phi(z)."""
        if cv == 0:
            return 1.0
        if self.family == "lognormal":
            s2 = math.log1p(cv * cv)
            return math.exp(math.sqrt(s2) * z - s2 / 2)
        shape = 1.0 / (cv * cv)
        u = min(max(float(special.ndtr(z)), 1e-300), 1.0 - 1e-16)
        return float(special.gammaincinv(shape, u)) / shape


@dataclass(frozen=True)
class Jitter:
    """Latency level jitter: per shock period every latency of a revision is multiplied
    by exp(N(0, ``sd``)); ``shared`` is the correlation of the two revisions' log factors."""

    sd: float = 0.0
    shared: float = 0.0

    def __post_init__(self) -> None:
        _check(self.sd >= 0, f"Jitter.sd must be >= 0, got {self.sd}")
        _check(0 <= self.shared <= 1, f"Jitter.shared must be in [0, 1], got {self.shared}")

    def factors(self, z: tuple[float, float, float]) -> tuple[float, float]:
        """(canary, stable) factors from three standard normals (shared, canary, stable)."""
        if self.sd == 0:
            return 1.0, 1.0
        a, b = math.sqrt(self.shared), math.sqrt(1.0 - self.shared)
        return (math.exp(self.sd * (a * z[0] + b * z[1])),
                math.exp(self.sd * (a * z[0] + b * z[2])))


@dataclass(frozen=True)
class ColdStart:
    """The canary is slower by ``latency_factor`` (and fails ``error_factor`` times as
    often) for its first ``seconds`` after it becomes ready and, when ``every_step``,
    after each step change."""

    seconds: float = 0.0
    latency_factor: float = 2.0
    error_factor: float = 1.0
    every_step: bool = True

    def __post_init__(self) -> None:
        _check(self.seconds >= 0, f"ColdStart.seconds must be >= 0, got {self.seconds}")
        _check(self.latency_factor > 0 and self.error_factor >= 0,
               "ColdStart factors must be positive")

    def window(self, step_start: float) -> tuple[float, float]:
        """The cold interval in effect during a step that began at ``step_start``."""
        start = step_start if self.every_step else 0.0
        return start, start + self.seconds


@dataclass(frozen=True)
class Diurnal:
    """Request rate rps (1 + ``amplitude`` sin(2 pi t / ``period_seconds`` + phase))."""

    amplitude: float = 0.0
    period_seconds: float = 86_400.0

    def __post_init__(self) -> None:
        _check(0 <= self.amplitude < 1, f"Diurnal.amplitude must be in [0, 1), got "
               f"{self.amplitude}")
        _check(self.period_seconds > 0, "Diurnal.period_seconds must be positive")

    def requests(self, rps: float, start: float, end: float, phase: float) -> float:
        """The expected number of requests in [start, end): the integral of the rate."""
        if self.amplitude == 0:
            return rps * (end - start)
        w = 2 * math.pi / self.period_seconds
        return rps * ((end - start) + self.amplitude / w * (
            math.cos(w * start + phase) - math.cos(w * end + phase)))


@dataclass(frozen=True)
class HeavyTail:
    """Both revisions' latency from a heavier-tailed family with the same median:
    lognormal with sigma ``shape``, or Pareto with shape ``shape``."""

    family: Literal["lognormal", "pareto"]
    shape: float

    def __post_init__(self) -> None:
        _check(self.family in ("lognormal", "pareto"),
               f"HeavyTail.family must be lognormal or pareto, got {self.family!r}")
        _check(self.shape > 0, f"HeavyTail.shape must be positive, got {self.shape}")

    def apply(self, revision: Revision) -> Revision:
        if self.family == "lognormal":
            return replace(revision, latency_sigma=self.shape, pareto_alpha=None)
        return replace(revision, pareto_alpha=self.shape)


@dataclass(frozen=True)
class Conditions:
    """What production adds to a scenario; the defaults add nothing (i.i.d. requests)."""

    errors: Dispersion = field(default_factory=Dispersion)
    latency: Jitter = field(default_factory=Jitter)
    cold_start: ColdStart = field(default_factory=ColdStart)
    diurnal: Diurnal = field(default_factory=Diurnal)
    tail: HeavyTail | None = None
    shock_seconds: float = 60.0

    def __post_init__(self) -> None:
        _check(self.shock_seconds > 0, "Conditions.shock_seconds must be positive")

    @property
    def shocks(self) -> bool:
        """Whether any per-period random effect is drawn."""
        return self.errors.cv > 0 or self.latency.sd > 0

    def apply(self, scenario: Scenario) -> Scenario:
        """The scenario with the conditions that change its revisions (heavy tails)."""
        if self.tail is None:
            return scenario
        return replace(scenario, stable=self.tail.apply(scenario.stable),
                       canary=self.tail.apply(scenario.canary))


@dataclass(frozen=True)
class Segment:
    """A part of a tick over which a revision's law is constant, or linear in time (a
    ramp, taken at the midpoint): its share of the tick, its midpoint in seconds since
    the canary became ready, and the factors on the revision's error rate and latency
    (random effect, jitter and cold start together)."""

    share: float
    seconds: float
    error_factor: float = 1.0
    latency_factor: float = 1.0


@dataclass(frozen=True)
class TickTruth:
    """What the simulator knows about one tick and a judge does not (for the oracles)."""

    start: float
    end: float
    canary: tuple[Segment, ...]
    stable: tuple[Segment, ...]

    @staticmethod
    def steady(start: float, end: float) -> TickTruth:
        """A tick without conditions: one segment, no effects."""
        whole = (Segment(1.0, (start + end) / 2),)
        return TickTruth(start, end, whole, whole)

    def law(self, revision_at: Callable[[float], Revision], side: str = "canary") -> Law:
        """The law of a request in this tick of a revision that is ``revision_at(t)`` at
        time t, under this tick's conditions on ``side`` ("canary" or "stable")."""
        segments = self.canary if side == "canary" else self.stable
        return mix([(s.share, revision_at(s.seconds).scaled(s.error_factor, s.latency_factor))
                    for s in segments])


@dataclass
class RolloutTraffic:
    """The traffic of one rollout: ``tick(k, weight, step_start)`` draws tick k (from 1)."""

    scenario: Scenario                     # with the conditions applied
    conditions: Conditions
    seed: int
    key: tuple[int, int, int]              # (scenario key, rps, rollout index)
    rps: float
    tick_seconds: float = 60.0
    features: tuple[str, ...] = ()
    _effects: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    _phase: float | None = None

    def period_effects(self, period: int) -> tuple[float, float, float, float]:
        """(canary error effect, stable error effect, canary latency factor, stable
        latency factor) of shock period ``period``."""
        if period not in self._effects:
            stream = ((SHOCK_TAG, period) if period >= 0 else (PAST_SHOCK_TAG, -period))
            z = interval_rng(self.seed, *self.key, *stream).standard_normal(6)
            ec, es = self.conditions.errors.effects((z[0], z[1], z[2]))
            lc, ls = self.conditions.latency.factors((z[3], z[4], z[5]))
            self._effects[period] = (ec, es, lc, ls)
        return self._effects[period]

    def phase(self) -> float:
        if self._phase is None:
            u = interval_rng(self.seed, *self.key, PHASE_TAG, 0).random()
            self._phase = 2 * math.pi * float(u)
        return self._phase

    def truth(self, start: float, end: float, step_start: float) -> TickTruth:
        """The segments of [start, end) during a step that began at ``step_start``."""
        c = self.conditions
        cold_from, cold_to = c.cold_start.window(step_start)
        cuts = {start, end, cold_from, cold_to, *self.scenario.changes}
        if c.shocks:
            first = math.floor(start / c.shock_seconds) + 1
            cuts.update(p * c.shock_seconds for p in range(first, math.ceil(
                end / c.shock_seconds)))
        edges = sorted(t for t in cuts if start <= t <= end)
        canary: list[Segment] = []
        stable: list[Segment] = []
        for a, b in itertools.pairwise(edges):
            if b <= a:
                continue
            share, mid = (b - a) / (end - start), (a + b) / 2
            ec = es = lc = ls = 1.0
            if c.shocks:
                ec, es, lc, ls = self.period_effects(math.floor(mid / c.shock_seconds))
            if cold_from <= mid < cold_to:
                ec, lc = ec * c.cold_start.error_factor, lc * c.cold_start.latency_factor
            canary.append(Segment(share, mid, ec, lc))
            stable.append(Segment(share, mid, es, ls))
        return TickTruth(start, end, tuple(canary), tuple(stable))

    def history(self, seconds: float) -> list[Traffic]:
        """The stable revision alone, tick by tick, over the ``seconds`` before the rollout
        (time 0), with the same shocks, jitter and load: what Prometheus would hold of it
        when the rollout begins. Drawn from streams of their own, so the rollout's own
        ticks are the same with or without a history."""
        ticks = int(seconds // self.tick_seconds)
        stable_revision = self.scenario.stable

        def stable_law(_: float) -> Revision:
            return stable_revision

        out = []
        for j in range(ticks, 0, -1):
            start, end = -j * self.tick_seconds, -(j - 1) * self.tick_seconds
            truth = self.truth(start, end, step_start=-math.inf)
            mean = self.conditions.diurnal.requests(
                self.rps, start, end, self.phase() if self.conditions.diurnal.amplitude else 0.0)
            _, stable = draw_tick(interval_rng(self.seed, *self.key, HISTORY_TAG, j), mean, 0,
                                  truth.law(self.scenario.canary_at),
                                  truth.law(stable_law, "stable"))
            out.append(stable)
        return out

    def tick(self, k: int, weight: int, step_start: float) -> tuple[Traffic, Traffic, TickTruth]:
        """(canary, stable, truth) of tick ``k`` at ``weight`` percent to the canary."""
        start, end = (k - 1) * self.tick_seconds, k * self.tick_seconds
        truth = self.truth(start, end, step_start)
        stable_revision = self.scenario.stable
        mean = self.conditions.diurnal.requests(
            self.rps, start, end, self.phase() if self.conditions.diurnal.amplitude else 0.0)
        canary, stable = draw_tick(interval_rng(self.seed, *self.key, k), mean, weight,
                                   truth.law(self.scenario.canary_at),
                                   truth.law(lambda _: stable_revision, "stable"))
        if self.features:
            draw_features(interval_rng(self.seed, *self.key, FEATURE_TAG, k), self.features,
                          canary, stable)
        return canary, stable, truth
