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

What it does to the evidence: under Gaussian random effects the exact likelihood ratio
of a block, integrated over its effect, is the request-level likelihood ratio raised to
the power 1 / phi, phi = 1 + kappa I (quasi-likelihood tempering; Wedderburn 1974,
McCullagh and Nelder, Generalized Linear Models, ch. 9), and that holds for every prefix
of the block too (phi grows with the block's information so far), so tempered mixtures
stay (super)martingales at every look, including looks inside an interval. A phi that
overestimates the truth keeps the supermartingale property (the tempered LR of a
Gaussian with the true variance below the assumed one has expectation below 1), and
phi = 1 is the request-level test, which is exact when there is no overdispersion. So
the estimates here are deliberately upper ends (a posterior quantile), and they are
predictable: a block is tempered with what was known before it began.

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

FloatArray = NDArray[np.float64]

# Candidate values of a dispersion parameter (c^2 or kappa): 0, then geometric up to 25
# (CV 5: a rate that moves fivefold from interval to interval).
GRID = np.concatenate(([0.0], np.geomspace(1e-5, 25.0, 96)))
GRID.setflags(write=False)
_STEPS = np.gradient(GRID)
# Which upper end of the posterior is used: the 90% quantile.
QUANTILE = 0.9
# Prior mean of a revision's c^2 when its own intervals cannot tell (low traffic): CV
# about 0.7. It matters only where counts are too small for the data to decide, which is
# where overdispersion changes little anyway (phi = 1 + c^2 mu with mu small).
STABLE_PRIOR_MEAN = 0.5
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


def _chi_square_loglik(r2: FloatArray, information: FloatArray) -> FloatArray:
    """log-likelihood of each grid value given r^2_j ~ (1 + g I_j) chi^2_1."""
    if r2.size == 0:
        return np.zeros_like(GRID)
    variance = 1.0 + np.outer(GRID, information)
    return np.asarray((-0.5 * np.log(variance) - 0.5 * r2[None, :] / variance).sum(axis=1),
                      dtype=np.float64)


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
    # r^2 around the pooled rate, scaled by k / (k - 1) for the rate estimated from them.
    r2 = (x - mu) ** 2 / mu * (x.size / (x.size - 1))
    value, mean = _quantile(prior + _chi_square_loglik(r2, mu))
    return Dispersion(value, mean, int(x.size))


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
    centre = 2.0 * stable.mean if stable is not None else 2.0 * STABLE_PRIOR_MEAN
    centre = max(centre, 1e-4)
    shape = SHARE_PRIOR_SHAPE
    with np.errstate(divide="ignore"):
        prior = (shape - 1.0) * np.log(np.maximum(GRID, 1e-12)) - shape * GRID / centre
    if not used.any() or not math.isfinite(ratio) or ratio <= 0:
        value, mean = _quantile(prior)
        return Dispersion(value, mean, 0)
    s = ratio * nc[used] / nb[used]
    theta = s / (1.0 + s)
    information = total[used] * theta * (1.0 - theta)
    keep = information > 0
    r2 = (xc[used][keep] - total[used][keep] * theta[keep]) ** 2 / information[keep]
    k = int(keep.sum())
    if k > 1:
        r2 = r2 * (k / (k - 1))
    value, mean = _quantile(prior + _chi_square_loglik(r2, information[keep]))
    return Dispersion(value, mean, k)
