"""One verdict from all checks: ``judge`` is what the controller calls at every look.

Pure. Rules:

* False rollbacks: each check yields an anytime-valid p-value for "the canary is worse"
  (Bonferroni over its sub-tests); Holm's step-down over the m checks fails the checks
  it rejects at level alpha. Because every p-value is anytime-valid,
  P(exists a look at which Holm rejects a true null) <= sum over true nulls of
  P(exists a look with p_j <= alpha / m0) <= alpha, so the policy's ``alpha`` bounds the
  chance of rolling back a canary that is no worse, over the whole rollout and however
  often the controller looks. (The first step of Holm is Bonferroni, so the rollback
  decision itself is the Bonferroni decision; Holm only names more failing checks.)
* Missing data never counts as healthy: a measurement whose quality is not OK (or that
  has no canary data yet) gives CONTINUE with that quality and is listed in
  ``Verdict.missing``. The combined outcome is FAIL if any check fails on OK data
  (evidence of harm beats a missing metric), else CONTINUE while anything is missing,
  PASS only when every check passes.
* PASS of a check needs ``min_requests`` canary requests at the current step, no
  failure, and - when ``certify`` - the check's confidence sequence inside the margin at
  level alpha (the error rate's or tail share's ratio below 1 + tolerance, the drift
  below its threshold). The certificate is not split over the checks: promoting a
  canary that is worse on some check needs *that* check's certificate to be wrong,
  which has probability at most alpha. With ``certify=False`` a check passes on the
  absence of evidence of harm once ``min_requests`` is met - its e-value below the
  square root of its rollback threshold, so a canary on its way to a rollback is held
  at the smaller weight - for the steps before the last, where the anytime-valid
  failure test keeps watching at the next weight. Certifying a 20% margin on a 0.5%
  error rate takes a few hundred canary errors, which low-traffic services do not see
  in a step; the state machine decides per step (``certify=True`` before promotion).
* The judge never returns INCONCLUSIVE: that needs the step's deadline, i.e. a clock,
  and is the state machine's call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

from controller.analysis import drift, evidence, latency, ratio, text
from controller.analysis.evidence import Finding
from controller.analysis.types import (
    CheckVerdict,
    EventMeasurement,
    HistogramCounts,
    Measurement,
    Outcome,
    Quality,
    Verdict,
)
from controller.policy.model import Analysis, DistributionCheck, LatencyCheck, RatioCheck

Check = RatioCheck | LatencyCheck | DistributionCheck
# Without certification a step passes only while the evidence of harm is below
# threshold ** HOLD_FRACTION: a quarter of the way to a rollback on the log scale (e of
# 2-3 for the usual thresholds of 20-120). By Ville's inequality a canary within the
# margin is ever held with probability at most alpha_share ** HOLD_FRACTION, and a hold
# ends as soon as its evidence falls back; a bad canary stays at the smaller weight, where
# it serves fewer requests a minute and each of them says more about it (stable's rate
# is known better), while the evidence builds. The benchmark measured a half (1/2) and a
# quarter: a quarter kept 99.5% instead of 97% of the doubled error rate below 50% at
# 100 rps, with 6% less exposure, and promoted good canaries as fast.
HOLD_FRACTION = 0.25


def holm(p_values: Sequence[float], m: int, alpha: float) -> list[float | None]:
    """Holm's step-down over ``m`` hypotheses (some may have no p-value yet): for each
    p-value, the level at which it is rejected, or None."""
    levels: list[float | None] = [None] * len(p_values)
    for rank, i in enumerate(sorted(range(len(p_values)), key=lambda j: p_values[j])):
        level = alpha / (m - rank)
        if p_values[i] > level:
            break
        levels[i] = level
    return levels


Evidence = Measurement[Any] | EventMeasurement


def _evaluate(check: Check, m: Evidence, analysis: Analysis, alpha_share: float) -> Finding:
    alpha = analysis.alpha
    try:
        if isinstance(check, RatioCheck | LatencyCheck) and not isinstance(m, EventMeasurement):
            raise TypeError(f"a {check.kind} check judges blocks of events")
        if isinstance(check, RatioCheck):
            assert isinstance(m, EventMeasurement)
            return ratio.evaluate(check, m, alpha_share=alpha_share, alpha_pass=alpha,
                                  gross_ratio=analysis.warmup.gross_ratio)
        if isinstance(check, LatencyCheck):
            assert isinstance(m, EventMeasurement)
            return latency.evaluate(check, m, alpha_share=alpha_share, alpha_pass=alpha)
        if isinstance(m, EventMeasurement):
            raise TypeError("a distribution check judges histograms per step")
        return drift.evaluate(check, cast(Measurement[HistogramCounts], m),
                              alpha_share=alpha_share, alpha_pass=alpha)
    except (ArithmeticError, ValueError, TypeError, AttributeError) as err:
        # Counts of the wrong shape or type: unusable data, never a crash of the tick.
        return evidence.missing(check.name, Quality.ERROR,
                                f"cannot judge these counts: {type(err).__name__}: {err}")


def _finding(check: Check, measurements: Mapping[str, Evidence], analysis: Analysis,
             alpha_share: float) -> Finding:
    m = measurements.get(check.name)
    if m is None:
        return evidence.missing(check.name, Quality.NO_DATA, "no measurement")
    if m.quality != Quality.OK:
        quality = Quality(m.quality)
        return evidence.missing(check.name, quality, m.detail or f"metric is {quality.value}")
    return _evaluate(check, m, analysis, alpha_share)


def judge(analysis: Analysis, measurements: Mapping[str, Evidence], *,
          min_requests: int, certify: bool = True) -> Verdict:
    """The verdict at one look. ``measurements`` has one entry per check name (others are
    ignored); ``min_requests`` is the current step's least canary requests; ``certify``
    asks each check for evidence that the canary is within its margin before it passes
    (always for the step that leads to promotion)."""
    checks: Sequence[Check] = analysis.checks
    m = len(checks)
    alpha = analysis.alpha
    share = alpha / m
    findings = [_finding(c, measurements, analysis, share) for c in checks]
    judged = [i for i, f in enumerate(findings) if f.quality == Quality.OK]
    rejected = holm([findings[i].p_value for i in judged], m, alpha)
    levels: dict[int, float | None] = dict(zip(judged, rejected, strict=True))

    verdicts: list[CheckVerdict] = []
    tails: list[str] = []
    for i, f in enumerate(findings):
        cv, tail = _check_verdict(f, levels.get(i), share, min_requests, certify)
        verdicts.append(cv)
        tails.append(tail)

    failed = [v for v in verdicts if v.outcome == Outcome.FAIL]
    missing = tuple(v.check for v in verdicts if v.quality != Quality.OK)
    if failed:
        return Verdict(Outcome.FAIL, "; ".join(f"{v.check}: {v.reason}" for v in failed),
                       tuple(verdicts), missing)
    if missing:
        waiting = ", ".join(f"{v.check} ({v.quality.value}: {v.reason})"
                            for v in verdicts if v.quality != Quality.OK)
        return Verdict(Outcome.CONTINUE, f"waiting for data: {waiting}", tuple(verdicts),
                       missing)
    outcome = (Outcome.PASS if all(v.outcome == Outcome.PASS for v in verdicts)
               else Outcome.CONTINUE)
    reason = "; ".join(f"{v.check} {v.outcome.value}: {t}"
                       for v, t in zip(verdicts, tails, strict=True))
    return Verdict(outcome, reason, tuple(verdicts), missing)


def _check_verdict(f: Finding, holm_level: float | None, share: float, min_requests: int,
                   certify: bool) -> tuple[CheckVerdict, str]:
    """The check's outcome and reason; the second value is the decision part alone."""
    if f.quality != Quality.OK:
        return CheckVerdict(f.check, Outcome.CONTINUE, f.summary, {}, f.quality), f.summary
    numbers = dict(f.numbers)
    k = max(len(f.tests), 1)
    decisive = f.decisive
    e = math.exp(min(decisive.log_e, 690.0)) if decisive else 1.0
    numbers.update({"e_value": e, "p_value": f.p_value, "step_canary_requests": f.requests,
                    "min_requests": float(min_requests)})
    if holm_level is not None and decisive is not None:
        threshold = k / holm_level
        numbers.update({"alpha_level": holm_level, "e_threshold": threshold})
        tail = (f"FAIL: {decisive.claim}: e={text.num(e)} >= {text.num(threshold)} "
                f"(alpha {text.num(holm_level)})")
        return CheckVerdict(f.check, Outcome.FAIL, f"{f.summary}; {tail}", numbers), tail
    threshold = k / share
    numbers.update({"alpha_level": share, "e_threshold": threshold})
    harm = f"e={text.num(e)} < {text.num(threshold)}"
    if not f.judged:
        tail = f"{harm}; in warm-up: {f.certify_note}"
        return CheckVerdict(f.check, Outcome.CONTINUE, f"{f.summary}; {tail}", numbers), tail
    if f.requests < min_requests:
        tail = (f"{harm}; {text.count(f.requests)} of {text.count(min_requests)} canary requests "
                "at this step")
        return CheckVerdict(f.check, Outcome.CONTINUE, f"{f.summary}; {tail}", numbers), tail
    hold = threshold ** HOLD_FRACTION
    numbers["e_hold"] = hold
    if f.certified and e < hold:
        tail = f"{harm}; within margin: {f.certify_note}"
        return CheckVerdict(f.check, Outcome.PASS, f"{f.summary}; {tail}", numbers), tail
    if f.certified:
        # A certificate never overrides evidence of harm: a canary below its SLO guard but
        # well on its way to failing the relative test (a slow leak) holds here.
        tail = (f"holding: evidence of harm building up (e={text.num(e)} >= {text.num(hold)}, "
                f"rollback at {text.num(threshold)}) despite {f.certify_note}")
        return CheckVerdict(f.check, Outcome.CONTINUE, f"{f.summary}; {tail}", numbers), tail
    if not certify and e < hold:
        tail = f"no evidence of harm (e={text.num(e)} < {text.num(hold)}), {f.certify_note}"
        return CheckVerdict(f.check, Outcome.PASS, f"{f.summary}; {tail}", numbers), tail
    if not certify:
        tail = (f"holding: evidence of harm building up (e={text.num(e)} >= {text.num(hold)}, "
                f"rollback at {text.num(threshold)})")
        return CheckVerdict(f.check, Outcome.CONTINUE, f"{f.summary}; {tail}", numbers), tail
    tail = f"{harm}; {f.certify_note}"
    return CheckVerdict(f.check, Outcome.CONTINUE, f"{f.summary}; {tail}", numbers), tail
