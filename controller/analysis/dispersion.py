"""Overdispersion: how much more the counts of one analysis interval vary than they would
if every request were an independent draw, and what that does to the evidence.

Pure: numpy only.

Why. Production traffic is not a stream of independent requests: the error rate of a
revision moves from minute to minute (a slow dependency, a bad pod, a noisy neighbour),
shared by both revisions or not, and so does its latency. At high traffic a test that
treats every request as independent reads any such wobble that is not shared by the two
revisions as overwhelming evidence. The benchmark measured it: with independent
per-minute error-rate variation of CV 1.0 the request-level test rolled back 67-73% of
identical canaries at 1000 rps (simulations/results/benchmark.md).

The model: Gaussian random effects per block. In block k (one analysis interval) revision
v's rate is p_v U_vk with E[U] = 1 and Var(U) = c_v^2 over blocks. One revision's event
count x ~ Poisson(mu U) then has Var(x) = mu (1 + c^2 mu): Pearson's r^2 = (x - mu)^2 / mu
has mean 1 + c^2 mu. For the relative test, conditional on a block's N events, the
canary's share x_c has variance N theta (1 - theta) (1 + kappa I) with I = N theta
(1 - theta) and kappa = c_canary^2 + c_stable^2 counting only the variation the two
revisions do NOT share (shared shocks cancel in the share).

What it does to the evidence: under Gaussian random effects (the normal approximation of
a block's share) the likelihood ratio of a block, integrated over its effect, is close to
the request-level likelihood ratio raised to the power 1 / phi, phi = 1 + kappa I
(quasi-likelihood tempering; Wedderburn 1974, McCullagh and Nelder, Generalized Linear
Models, ch. 9), for every prefix of the block too (phi grows with the block's information
so far), so tempered mixtures stay (approximately) supermartingales at every look,
including looks inside an interval. A phi that overestimates the truth keeps the
property (the tempered LR of a Gaussian with the true variance below the assumed one has
expectation below 1), and phi = 1 is the request-level test, exact without
overdispersion. So the estimates here are deliberately upper ends (a posterior
quantile), and predictable: a block is tempered with what was known before it began.

What is NOT proved: with heavy-tailed effects (gamma effects of CV 1, where a block's
share has a heavier tail than the Gaussian) the tempered ratio with the true kappa has
expectation slightly above 1 (a Monte Carlo of the one-block LR measured it); the upper
quantile and the floor ``share_kappa(stable)`` are the margin that covers it, and the
benchmark's realistic suite (simulations/results/benchmark.md) is the evidence that false
rollbacks stay below alpha there, not a proof.

Where kappa comes from, in order of how early it is known:

1. The stable revision's own recent history (its intervals before the rollout began,
   from Prometheus): its c^2 counts shared and independent variation, an upper end of
   the independent part, known precisely at once because stable carries most of the
   traffic. Under the A/A assumption that the canary's own variation is like stable's,
   ``2 c_stable^2`` is the prior for kappa.
2. The canary-vs-stable share residuals of the rollout's own intervals, which measure
   exactly the unshared variation and update that prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

FloatArray = NDArray[np.float64]

# Candidate values of a dispersion parameter (c^2 or kappa): 0, then geometric up to 25
# (CV 5: a rate that moves fivefold from interval to interval).
GRID = np.concatenate(([0.0], np.geomspace(1e-5, 25.0, 120)))
GRID.setflags(write=False)
_STEPS = np.gradient(GRID)
# Which upper end of the posterior is used: the 90% quantile.
QUANTILE = 0.9
# Prior mean of a revision's c^2 when its own intervals cannot tell (low traffic): CV 1.
# It matters only where counts are too small for the data to decide, which is where
# overdispersion changes little anyway (phi = 1 + c^2 mu with mu small); flatter priors
# cover the truth more often at high CV (0.5: 74% of 30-interval histories at CV 1 had
# their 90% upper end above the truth, 1.0: 82%, 2.0: 87%) and cost more at low traffic.
STABLE_PRIOR_MEAN = 1.0
# Shape of the Gamma prior for kappa centred on what stable's history implies.
SHARE_PRIOR_SHAPE = 2.0


@dataclass(frozen=True)
class Dispersion:
    """An upper end of a dispersion parameter and what it rests on."""

    value: float               # the posterior quantile used to temper (kappa or c^2)
    mean: float                # the posterior mean
    blocks: int                # how many intervals informed it

    def phi(self, information: float) -> float:
        """The tempering factor of a block (or a block so far) with this information."""
        return 1.0 + self.value * max(information, 0.0)


def _quantile(log_posterior: FloatArray, q: float = QUANTILE) -> tuple[float, float]:
    weights = np.exp(log_posterior - log_posterior.max()) * _STEPS
    weights /= weights.sum()
    cumulative = np.cumsum(weights)
    index = min(int(np.searchsorted(cumulative, q)), len(GRID) - 1)
    return float(GRID[index]), float(weights @ GRID)


def _negative_binomial_loglik(x: FloatArray, mu: FloatArray) -> FloatArray:
    """log-likelihood of each grid value c^2 for counts x_j ~ NB(mean mu_j, c^2): Poisson
    counts whose rate has a gamma random effect of variance c^2 (NB2, exact for gamma
    effects and close for lognormal ones; Cameron and Trivedi, Regression Analysis of
    Count Data, ch. 3). Terms constant in c^2 are left out."""
    if x.size == 0:
        return np.zeros_like(GRID)
    g = GRID[1:, None]                      # c^2 > 0
    size = 1.0 / g
    ll = (special.gammaln(x[None, :] + size) - special.gammaln(size)
          - size * np.log1p(g * mu[None, :]) + x[None, :] * np.log(g * mu[None, :] /
                                                                  (1.0 + g * mu[None, :])))
    poisson = (x * np.log(np.maximum(mu, 1e-300)) - mu)[None, :]   # the c^2 = 0 limit
    out = np.empty_like(GRID)
    out[0] = float(poisson.sum())
    out[1:] = ll.sum(axis=1)
    # gammaln(x + 1/g) - gammaln(1/g) - x log(1/g) tends to 0 as g -> 0: align the limit.
    return out


def _beta_binomial_loglik(x: FloatArray, n: FloatArray, theta: FloatArray) -> FloatArray:
    """log-likelihood of each grid value kappa for shares x_j ~ BetaBinomial(n_j, theta_j,
    rho_j) with rho_j chosen so that Var = n theta (1 - theta) (1 + kappa I_j), I_j = n_j
    theta_j (1 - theta_j): the conditional law of the canary's share of a block's events
    when the two revisions' rates move independently. Terms constant in kappa left out."""
    if x.size == 0:
        return np.zeros_like(GRID)
    information = n * theta * (1.0 - theta)
    k = GRID[1:, None]
    extra = k * information[None, :]                      # (n - 1) rho = kappa I
    rho = np.clip(extra / np.maximum(n[None, :] - 1.0, 1e-9), 1e-12, 1.0 - 1e-9)
    total = (1.0 - rho) / rho                             # a + b
    a, b = theta[None, :] * total, (1.0 - theta[None, :]) * total
    ll = (special.betaln(x[None, :] + a, n[None, :] - x[None, :] + b) - special.betaln(a, b))
    binomial = x * np.log(theta) + (n - x) * np.log1p(-theta)
    out = np.empty_like(GRID)
    out[0] = float(binomial.sum())
    out[1:] = ll.sum(axis=1)
    return out


def revision_dispersion(events: Sequence[float], exposures: Sequence[float],
                        prior_mean: float = STABLE_PRIOR_MEAN) -> Dispersion:
    """c^2 of one revision from its own intervals (events among exposures each): how much
    its rate moves from interval to interval, shared variation included."""
    x = np.asarray(events, dtype=np.float64)
    n = np.asarray(exposures, dtype=np.float64)
    used = n > 0
    x, n = x[used], n[used]
    prior = -GRID / prior_mean
    if x.size < 2 or x.sum() <= 0:
        value, mean = _quantile(prior)
        return Dispersion(value, mean, int(x.size))
    rate = x.sum() / n.sum()
    mu = n * rate
    value, mean = _quantile(prior + _negative_binomial_loglik(x, mu))
    return Dispersion(value, mean, int(x.size))


def share_kappa(c2: float) -> float:
    """The kappa of the share statistic when both revisions' rates move independently with
    variance c2 each: 2 c2 to first order (the delta method), and more for large c2, where a
    block's total events move with the stable revision's effect and the share's law grows
    heavier tails. 2 c2 (1 + c2) matches what simulation measures for gamma effects: kappa
    0.197, 0.61, 3.2 at CV 0.3, 0.5, 1.0, against 0.196, 0.625, 4."""
    return 2.0 * c2 * (1.0 + c2)


def share_dispersion(canary_events: Sequence[float], canary_exposure: Sequence[float],
                     baseline_events: Sequence[float], baseline_exposure: Sequence[float],
                     ratio: float, stable: Dispersion | None) -> Dispersion:
    """kappa, the unshared variation of the canary's share of a block's events, from the
    blocks given (those before the block to be tempered) at the rate ratio ``ratio`` (the
    current estimate), with the prior that stable's own dispersion implies."""
    xc = np.asarray(canary_events, dtype=np.float64)
    nc = np.asarray(canary_exposure, dtype=np.float64)
    xb = np.asarray(baseline_events, dtype=np.float64)
    nb = np.asarray(baseline_exposure, dtype=np.float64)
    total = xc + xb
    used = (nc > 0) & (nb > 0) & (total > 0)
    c2 = stable.mean if stable is not None else STABLE_PRIOR_MEAN
    centre = max(share_kappa(c2), 1e-4)
    shape = SHARE_PRIOR_SHAPE
    with np.errstate(divide="ignore"):
        prior = (shape - 1.0) * np.log(np.maximum(GRID, 1e-12)) - shape * GRID / centre
    if not used.any() or not math.isfinite(ratio) or ratio <= 0:
        value, mean = _quantile(prior)
        return Dispersion(value, mean, 0)
    s = ratio * nc[used] / nb[used]
    theta = np.clip(s / (1.0 + s), 1e-9, 1.0 - 1e-9)
    n = total[used]
    value, mean = _quantile(prior + _beta_binomial_loglik(xc[used], n, theta))
    return Dispersion(value, mean, int(used.sum()))
