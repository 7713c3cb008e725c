"""The error-rate check (``kind: ratio``): is the canary's error rate worse than stable's?

Pure. Two anytime-valid sub-tests (``sequential`` has the formulas and the papers):

* relative: the conditional-binomial mixture SPRT of the two error counts, step by
  step with each step's exposure, against ``r <= 1 + tolerance`` where r is the ratio
  of error rates (Lindon, Sanden and Shirikian, KDD 2022; Johari, Pekelis and Walsh;
  Howard et al. 2021). Its confidence sequence for r certifies the canary when the
  upper bound is below 1 + tolerance.
* ``maxRate`` guard: the Beta-binomial mixture against ``p_canary <= maxRate`` on the
  canary's requests of all steps (its rate does not depend on the traffic split).
"""

from __future__ import annotations

import math

from controller.analysis import evidence, text
from controller.analysis.evidence import Finding
from controller.analysis.sequential import StepEvents
from controller.analysis.types import Measurement, Quality, RatioCounts
from controller.policy.model import RatioCheck


class _Invalid(ValueError):
    pass


def _validate(c: RatioCounts, who: str) -> None:
    if not (math.isfinite(c.errors) and math.isfinite(c.total)) or c.errors < 0 or c.total < 0:
        raise _Invalid(f"{who} counts must be finite and non-negative "
                       f"(errors {c.errors}, requests {c.total})")
    if c.errors > c.total * (1 + 1e-9) + 1e-9:
        raise _Invalid(f"{who} has more errors ({c.errors:g}) than requests ({c.total:g})")


def evaluate(check: RatioCheck, m: Measurement[RatioCounts], *, alpha_share: float,
             alpha_pass: float) -> Finding:
    """Evidence of the error-rate check; ``alpha_share`` is the check's share of alpha."""
    try:
        for i, w in enumerate(m.windows):
            if not (isinstance(w.canary, RatioCounts) and isinstance(w.baseline, RatioCounts)):
                raise _Invalid(f"step {i + 1}: expected error and request counts")
            _validate(w.canary, f"step {i + 1} canary")
            _validate(w.baseline, f"step {i + 1} stable")
    except _Invalid as err:
        return evidence.missing(check.name, Quality.ERROR, f"unusable counts: {err}")
    canary_requests = sum(w.canary.total for w in m.windows)
    if canary_requests <= 0:
        return evidence.missing(check.name, Quality.NO_DATA, "no canary requests yet")
    canary_errors = sum(min(w.canary.errors, w.canary.total) for w in m.windows)
    stable_requests = sum(w.baseline.total for w in m.windows)
    stable_errors = sum(min(w.baseline.errors, w.baseline.total) for w in m.windows)

    k = 1 + (check.max_rate is not None)
    steps = [StepEvents(min(w.canary.errors, w.canary.total), w.canary.total,
                        min(w.baseline.errors, w.baseline.total), w.baseline.total)
             for w in m.windows]
    rel = evidence.relative(steps, check.tolerance, alpha_lower=alpha_share / k,
                            alpha_pass=alpha_pass, what="error rate")
    numbers = {
        "canary_rate": canary_errors / canary_requests,
        "canary_errors": canary_errors,
        "canary_requests": canary_requests,
        "baseline_errors": stable_errors,
        "baseline_requests": stable_requests,
        **rel.numbers,
    }
    stable_rate, summary = evidence.rate_summary(
        "error rate", (canary_errors, canary_requests), (stable_errors, stable_requests),
        rel.interval)
    if stable_rate is not None:
        numbers["baseline_rate"] = stable_rate
    guard = None
    if check.max_rate is not None:
        numbers["max_rate"] = check.max_rate
        guard = evidence.Guard("max-rate guard", canary_errors, canary_requests, check.max_rate,
                               f"error rate above maxRate {text.pct(check.max_rate)}",
                               f"error rate below maxRate {text.pct(check.max_rate)}")
    return evidence.rate_finding(check.name, summary, numbers, rel, guard, "e_max_rate",
                                 alpha_pass=alpha_pass, requests=m.windows[-1].canary.total)
