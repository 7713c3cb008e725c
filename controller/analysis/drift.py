"""The drift check (``kind: distribution``): PSI or Jensen-Shannon distance of the
canary's histogram (predictions or a feature) against stable's or a training reference.

Pure. Divergences:

* PSI (population stability index) = sum_i (c_i - b_i) ln(c_i / b_i), the symmetrised
  Kullback-Leibler divergence (Jeffreys' J), in nats as the industry thresholds assume.
* Jensen-Shannon distance, base 2 = sqrt(JS divergence / ln 2) with
  JS = (KL(c || m) + KL(b || m)) / 2, m = (c + b) / 2; the same as
  ``scipy.spatial.distance.jensenshannon(c, b, base=2)``.

Proportions are estimated with half a pseudo-count per bucket (Krichevsky-Trofimov) so a
bucket empty on one side does not make the divergence infinite; buckets empty on both
sides are dropped.

Significance. A plug-in divergence is biased upwards and noisy at small samples (under
no drift, n_eff * PSI is about chi-square with K - 1 degrees of freedom, the G-test's
asymptotics, with n_eff = 1 / (1/n_c + 1/n_b)). The check therefore

1. corrects the second-order bias, 1/2 * sum_i H_ii Var(p_i) over both samples (H the
   diagonal Hessian of the divergence), which is (K - 1) / n_eff for PSI under no drift;
2. takes the variance as the delta-method variance of the linear term plus the
   variance of the chi-square term under no drift, 2 (f''(1)/2)^2 (K - 1) / n_eff^2,
   so the noise is never underestimated where the gradient vanishes (c = b);
3. turns the standardised distance to the threshold into Robbins' one-sided
   normal-mixture e-value on the effective sample size (``sequential.normal_mixture_log_e``),
   the asymptotic confidence sequence of Waudby-Smith et al. (Ann. Statist. 2024): it is
   anytime-valid as the sample grows, without spending alpha look by look. "Drift above
   the threshold" and "drift below it" each get their own one-sided mixture.

FAIL needs the lower confidence bound above ``check.effective_threshold``; PASS-evidence
needs the upper bound below it. No decision is taken before there are 5 observations
per used bucket on each side on average (Cochran's rule for the chi-square
approximation), so a handful of predictions never rolls a model back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from controller.analysis import evidence, histograms, sequential, text
from controller.analysis.evidence import Finding, SubTest
from controller.analysis.histograms import BadHistogram
from controller.analysis.types import HistogramCounts, Measurement, Quality
from controller.policy.model import DistributionCheck

Method = Literal["psi", "jensenShannon"]
FloatArray = NDArray[np.float64]
LN2 = math.log(2.0)
MIN_PER_BUCKET = 5.0
# f''(1) of the f-divergence: the chi-square scale of the divergence under no drift.
_CURVATURE = {"psi": 2.0, "jensenShannon": 0.25}


def psi(p: FloatArray, q: FloatArray) -> float:
    """Population stability index of two probability vectors (positive entries)."""
    return float(np.sum((p - q) * np.log(p / q)))


def js_divergence(p: FloatArray, q: FloatArray) -> float:
    """Jensen-Shannon divergence in nats (positive entries)."""
    m = 0.5 * (p + q)
    return float(0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m)))


def js_distance(p: FloatArray, q: FloatArray) -> float:
    """Jensen-Shannon distance, base 2 (in [0, 1])."""
    return math.sqrt(max(js_divergence(p, q), 0.0) / LN2)


def _divergence(method: Method, p: FloatArray, q: FloatArray) -> float:
    return psi(p, q) if method == "psi" else js_divergence(p, q)


def _derivatives(method: Method, p: FloatArray, q: FloatArray
                 ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Gradient and diagonal Hessian with respect to p and to q."""
    if method == "psi":
        ratio = np.log(p / q)
        return (ratio + 1 - q / p, -ratio + 1 - p / q, 1 / p + q / p**2, 1 / q + p / q**2)
    m = 0.5 * (p + q)
    return (0.5 * np.log(p / m), 0.5 * np.log(q / m),
            0.5 * q / (p * (p + q)), 0.5 * p / (q * (p + q)))


@dataclass(frozen=True)
class Estimate:
    """A divergence (in its own scale: PSI in nats, JS as divergence in nats), its
    bias-corrected value, standard deviation and effective sample size."""

    plug_in: float
    corrected: float
    sd: float
    n_eff: float
    buckets: int


def estimate(method: Method, canary: FloatArray, reference: FloatArray, *,
             reference_fixed: bool) -> Estimate:
    """Divergence of the canary's counts from the reference's (counts or, when
    ``reference_fixed``, a known distribution given as counts)."""
    used = (canary + reference) > 0
    c, r = canary[used], reference[used]
    n_c, n_r = float(c.sum()), float(r.sum())
    p = (c + 0.5) / (n_c + 0.5 * len(c))
    q = (r + 0.5) / (n_r + 0.5 * len(r))
    value = _divergence(method, p, q)
    g_p, g_q, h_p, h_q = _derivatives(method, p, q)
    var = (float(p @ g_p**2) - float(p @ g_p) ** 2) / n_c
    bias = 0.5 * float(h_p @ (p * (1 - p))) / n_c
    n_eff = n_c
    if not reference_fixed:
        var += (float(q @ g_q**2) - float(q @ g_q) ** 2) / n_r
        bias += 0.5 * float(h_q @ (q * (1 - q))) / n_r
        n_eff = 1.0 / (1.0 / n_c + 1.0 / n_r)
    k = len(c)
    var += 2.0 * (_CURVATURE[method] / 2.0) ** 2 * max(k - 1, 1) / n_eff**2
    return Estimate(value, value - bias, math.sqrt(max(var, 0.0)), n_eff, k)


def evaluate(check: DistributionCheck, m: Measurement[HistogramCounts], *, alpha_share: float,
             alpha_pass: float) -> Finding:
    """Evidence of the drift check; ``alpha_share`` is the check's share of alpha."""
    if not m.windows:
        # In the first step's warm-up: nothing past it to compare yet, which is neither
        # missing data nor evidence either way.
        return Finding(check=check.name, quality=Quality.OK,
                       summary="in warm-up: predictions compared once it is over",
                       certify_note="predictions compared once it is over", judged=False)
    training = check.reference.source == "training"
    flat: list[HistogramCounts] = [w.canary for w in m.windows]
    if training:
        ref = check.reference.histogram
        if ref is None:
            return evidence.missing(check.name, Quality.ERROR,
                                    "the training reference histogram was not loaded")
        flat.append(HistogramCounts(tuple(ref.bounds), tuple(ref.counts)))
    else:
        flat += [w.baseline for w in m.windows]
    try:
        bounds, merged = histograms.on_common_bounds(flat)
    except BadHistogram as err:
        return evidence.missing(check.name, Quality.ERROR, f"unusable histogram: {err}")
    steps = len(m.windows)
    width = len(bounds) + 1
    canary = np.asarray(histograms.column_sums(merged[:steps], width), dtype=np.float64)
    reference = np.asarray(histograms.column_sums(merged[steps:], width), dtype=np.float64)
    n_c, n_r = float(canary.sum()), float(reference.sum())
    if n_c <= 0:
        return evidence.missing(check.name, Quality.NO_DATA, "no canary observations yet")
    if n_r <= 0:
        return evidence.missing(check.name, Quality.NO_DATA, "no stable observations yet")

    method: Method = check.method
    name, key = ("PSI", "psi") if method == "psi" else ("JS distance", "js_distance")
    threshold = check.effective_threshold
    # Work on the divergence scale; JS distance thresholds and bounds map by d = sqrt(J/ln2).
    limit = threshold if method == "psi" else threshold**2 * LN2

    def shown(divergence: float) -> float:
        """A divergence (or bound) as the check reports it; both are >= 0."""
        d = max(divergence, 0.0)
        return d if method == "psi" else math.sqrt(d / LN2)

    est = estimate(method, canary, reference, reference_fixed=training)
    enough = n_c >= MIN_PER_BUCKET * est.buckets and (
        training or n_r >= MIN_PER_BUCKET * est.buckets)
    radius_lo = sequential.normal_mixture_radius(est.n_eff, alpha_share)
    radius_hi = sequential.normal_mixture_radius(est.n_eff, alpha_pass)
    lower = est.corrected - radius_lo * est.sd
    upper = est.corrected + radius_hi * est.sd
    z = (est.corrected - limit) / est.sd if est.sd > 0 else 0.0
    log_e_worse = sequential.normal_mixture_log_e(z, est.n_eff) if enough else 0.0
    log_e_within = sequential.normal_mixture_log_e(-z, est.n_eff) if enough else 0.0
    certified = enough and upper < limit
    against = "training" if training else "stable"
    numbers = {
        key: shown(est.plug_in),
        f"{key}_corrected": shown(est.corrected),
        f"{key}_cs_lower": shown(lower),
        f"{key}_cs_upper": shown(upper),
        "cs_lower_alpha": alpha_share,
        "cs_upper_alpha": alpha_pass,
        "threshold": threshold,
        "e_worse": math.exp(min(log_e_worse, 690.0)),
        "e_within": math.exp(min(log_e_within, 690.0)),
        "canary_observations": n_c,
        "reference_observations": n_r,
        "buckets": float(est.buckets),
    }
    summary = (f"{name} {text.num(numbers[key])} vs {against} (bias-corrected "
               f"{text.num(numbers[key + '_corrected'])}, CS {text.num(numbers[key + '_cs_lower'])}"
               f"-{text.num(numbers[key + '_cs_upper'])}), threshold {text.num(threshold)}; "
               f"{text.count(n_c)} canary, {text.count(n_r)} {against} observations")
    if not enough:
        note = (f"fewer than {MIN_PER_BUCKET:g} observations per bucket "
                f"({text.num(numbers['buckets'])} buckets)")
    elif certified:
        note = f"CS upper {text.num(numbers[key + '_cs_upper'])} < {text.num(threshold)}"
    else:
        note = (f"CS upper {text.num(numbers[key + '_cs_upper'])} not yet below "
                f"{text.num(threshold)}")
    test = SubTest("drift", log_e_worse, f"{name} above {text.num(threshold)}")
    return Finding(check=check.name, quality=Quality.OK, summary=summary, numbers=numbers,
                   tests=(test,), certified=certified, certify_note=note,
                   requests=sum(merged[steps - 1]))
