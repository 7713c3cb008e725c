"""Overdispersion estimates (controller/analysis/dispersion.py) and the tempering they give."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.analysis import dispersion
from controller.analysis.sequential import StepEvents, rate_ratio_e


def _blocks(rng: np.random.Generator, mean: float, cv: float, k: int) -> np.ndarray:
    """k intervals of Poisson counts whose rate has a gamma random effect of CV ``cv``."""
    if cv == 0:
        return rng.poisson(mean, k).astype(float)
    shape = 1 / cv**2
    return rng.poisson(mean * rng.gamma(shape, 1 / shape, k)).astype(float)


@pytest.mark.parametrize(("mean", "cv"), [(300.0, 0.0), (300.0, 0.3), (300.0, 1.0),
                                          (30.0, 1.0)])
def test_a_revisions_dispersion_brackets_the_truth_from_its_history(mean: float,
                                                                    cv: float) -> None:
    """30 intervals of history: the posterior mean is near c^2, the quantile used above."""
    rng = np.random.default_rng(7)
    found = [dispersion.revision_dispersion(_blocks(rng, mean, cv, 30), [1e5] * 30)
             for _ in range(200)]
    means = np.array([f.mean for f in found])
    uppers = np.array([f.value for f in found])
    assert abs(np.median(means) - cv**2) <= 0.25 * cv**2 + 3 / mean
    assert np.mean(uppers >= cv**2) >= 0.75      # an upper end most of the time
    assert all(f.blocks == 30 for f in found)


def test_without_data_the_prior_decides_and_says_so() -> None:
    d = dispersion.revision_dispersion([], [])
    assert d.blocks == 0 and d.value > d.mean > 0
    assert d.phi(0.0) == 1.0 and d.phi(10.0) == pytest.approx(1 + 10 * d.value)


def test_shared_shocks_do_not_count_in_the_share() -> None:
    """The two revisions move together: their share does not, and kappa stays small."""
    rng = np.random.default_rng(3)
    shock = rng.gamma(1.0, 1.0, 40)          # CV 1, shared by both
    xc = rng.poisson(15 * shock).astype(float)
    xb = rng.poisson(285 * shock).astype(float)
    shared = dispersion.share_dispersion(xc, [3000] * 40, xb, [57000] * 40, 1.0, None)
    own = dispersion.revision_dispersion(xb, [57000] * 40)
    assert own.mean > 0.5                     # each revision's rate moves a lot ...
    assert shared.mean < 0.05                 # ... their share does not


def test_independent_shocks_make_the_share_overdispersed_as_predicted() -> None:
    """kappa = c_canary^2 + c_stable^2 for independent effects."""
    rng = np.random.default_rng(5)
    xc = _blocks(rng, 15, 0.5, 200)
    xb = _blocks(rng, 285, 0.5, 200)
    kappa = dispersion.share_dispersion(xc, [3000] * 200, xb, [57000] * 200, 1.0, None)
    assert kappa.mean == pytest.approx(0.5, rel=0.3)


def test_tempering_keeps_a_per_interval_wobble_from_reading_as_evidence() -> None:
    """One interval whose canary rate doubled by chance (CV 1 traffic): untempered it is
    overwhelming evidence; tempered with the dispersion the history shows, it is not."""
    block = StepEvents(45, 3000, 285, 57000)   # 3x stable's rate in this interval
    untempered, _, _ = rate_ratio_e([block], 1.2, better_prior_scale=0.18)
    rng = np.random.default_rng(11)
    history = dispersion.revision_dispersion(_blocks(rng, 285, 1.0, 30), [57000] * 30)
    kappa = dispersion.share_dispersion([], [], [], [], 1.0, history)
    information = 330 * (1 / 20) * (19 / 20)
    tempered, _, _ = rate_ratio_e([StepEvents(45, 3000, 285, 57000, 1 + kappa.value
                                              * information)], 1.2, better_prior_scale=0.18)
    assert untempered > math.log(1000)
    assert tempered < math.log(3)
