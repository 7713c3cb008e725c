"""PSI and Jensen-Shannon against scipy; the noise model of the drift estimate against
simulation; the drift check's decisions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from controller.analysis import drift
from controller.analysis.evidence import Finding
from controller.analysis.types import HistogramCounts, Measurement, Quality, StepWindow
from controller.policy.model import DistributionCheck

P = np.asarray([0.05, 0.15, 0.3, 0.3, 0.15, 0.05])
Q = np.asarray([0.1, 0.2, 0.3, 0.2, 0.12, 0.08])
BOUNDS = (0.1, 0.2, 0.3, 0.4, 0.5)


def test_psi_is_the_symmetrised_kullback_leibler_divergence() -> None:
    assert drift.psi(P, Q) == pytest.approx(stats.entropy(P, Q) + stats.entropy(Q, P))
    assert drift.psi(P, P) == 0


def test_js_distance_matches_scipy() -> None:
    assert drift.js_distance(P, Q) == pytest.approx(jensenshannon(P, Q, base=2))
    assert drift.js_divergence(P, Q) == pytest.approx(jensenshannon(P, Q) ** 2)


@pytest.mark.parametrize("method", ["psi", "jensenShannon"])
def test_bias_correction_removes_the_no_drift_bias(method: drift.Method) -> None:
    rng = np.random.default_rng(11)
    n_c, n_b = 2000, 20000
    plug, corrected = [], []
    for _ in range(400):
        c = rng.multinomial(n_c, P).astype(float)
        b = rng.multinomial(n_b, P).astype(float)
        e = drift.estimate(method, c, b, reference_fixed=False)
        plug.append(e.plug_in)
        corrected.append(e.corrected)
    n_eff = 1 / (1 / n_c + 1 / n_b)
    scale = drift._CURVATURE[method] / 2
    # The plug-in sits near (K - 1) / n_eff (times the curvature); the corrected near 0.
    assert np.mean(plug) == pytest.approx(scale * (len(P) - 1) / n_eff, rel=0.2)
    assert abs(np.mean(corrected)) < 0.15 * np.mean(plug)


@pytest.mark.parametrize("method", ["psi", "jensenShannon"])
def test_standard_deviation_matches_simulation_under_drift(method: drift.Method) -> None:
    rng = np.random.default_rng(5)
    n_c, n_b = 3000, 30000
    values, sds = [], []
    for _ in range(500):
        c = rng.multinomial(n_c, P).astype(float)
        b = rng.multinomial(n_b, Q).astype(float)
        e = drift.estimate(method, c, b, reference_fixed=False)
        values.append(e.corrected)
        sds.append(e.sd)
    assert np.mean(sds) == pytest.approx(np.std(values), rel=0.15)
    truth = drift.psi(P, Q) if method == "psi" else drift.js_divergence(P, Q)
    assert np.mean(values) == pytest.approx(truth, rel=0.05)


def _measurement(canary: Sequence[float], stable: Sequence[float]) -> Measurement[HistogramCounts]:
    return Measurement(Quality.OK, (StepWindow(HistogramCounts(BOUNDS, tuple(stable)),
                                               HistogramCounts(BOUNDS, tuple(canary))),))


def _check(**kw: object) -> DistributionCheck:
    return DistributionCheck.model_validate({"name": "drift", "kind": "distribution", **kw})


def _evaluate(check: DistributionCheck, m: Measurement[HistogramCounts]) -> Finding:
    return drift.evaluate(check, m, alpha_share=0.05, alpha_pass=0.05)


def test_large_drift_with_enough_data_is_evidence_and_small_samples_are_not() -> None:
    check = _check(method="psi", threshold=0.05)
    assert drift.psi(P, Q) > 2 * 0.05
    big = _evaluate(check, _measurement(list(P * 20000), list(Q * 200000)))
    assert big.p_value < 0.001 and big.numbers["psi_cs_lower"] > 0.05
    # 60 predictions of a different shape: no evidence yet, whatever the plug-in says.
    few = _evaluate(check, _measurement([1, 5, 20, 30, 3, 1], list(Q * 1000)))
    assert few.numbers["psi"] > 0.2 and few.p_value > 0.5
    # Fewer than 5 per bucket: no decision at all.
    tiny = _evaluate(check, _measurement([0, 1, 5, 12, 1, 1], list(Q * 1000)))
    assert tiny.p_value == 1.0 and not tiny.certified


def test_no_drift_with_enough_data_is_certified_below_the_threshold() -> None:
    check = _check(method="jensenShannon", threshold=0.1)
    f = _evaluate(check, _measurement(list(P * 5000), list(P * 50000)))
    assert f.certified and f.numbers["js_distance_cs_upper"] < 0.1


def test_training_reference_with_other_bounds_is_merged_onto_common_buckets() -> None:
    # Training histogram with coarser bounds (0.2, 0.4): the canary's are merged onto them.
    check = _check(reference={"source": "training", "histogram": {
        "bounds": [0.2, 0.4], "counts": [2000, 6000, 2000]}})
    canary = [500, 1500, 3000, 3000, 1500, 500]        # (0.2: 2000, 0.4: 6000, +Inf: 2000)
    f = _evaluate(check, _measurement(canary, [0] * 6))
    assert f.quality == Quality.OK
    assert f.numbers["buckets"] == 3 and f.numbers["psi"] < 1e-3


def test_drift_exactly_at_the_threshold_rarely_fails_over_many_looks() -> None:
    """The asymptotic confidence sequence in a small Monte Carlo: canaries whose PSI is
    exactly the threshold (the worst case of the null), 30 looks each."""
    base = np.asarray([0.1, 0.2, 0.3, 0.2, 0.15, 0.05])
    # Tilt the canary until its population PSI is the threshold.
    from scipy import optimize

    def tilted(t: float) -> np.ndarray:
        w = base * np.exp(t * np.arange(len(base)))
        return np.asarray(w / w.sum())

    t = optimize.brentq(lambda t: drift.psi(tilted(t), base) - 0.2, 0.0, 2.0)
    canary_p = tilted(t)
    check = _check(method="psi", threshold=0.2)
    rng = np.random.default_rng(2)
    alpha, runs, failed = 0.05, 150, 0
    for _ in range(runs):
        c = np.zeros(len(base))
        b = np.zeros(len(base))
        for _ in range(30):
            c += rng.multinomial(200, canary_p)
            b += rng.multinomial(3800, base)
            f = drift.evaluate(check, _measurement(list(c), list(b)), alpha_share=alpha,
                               alpha_pass=alpha)
            if f.p_value <= alpha:
                failed += 1
                break
    assert failed / runs <= alpha
