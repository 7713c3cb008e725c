"""The tests an event-rate check runs on its blocks: the error-rate check (``ratio``) and
the latency check's slow requests (``latency``) both end here.

Pure. Each test is an anytime-valid e-process over the rollout's blocks (``ledger``), each
block tempered by the dispersion known before it began (``dispersion``), so a look may
come at any moment, inside an interval too:

* relative: the conditional-binomial mixture SPRT (``sequential.rate_ratio``) of the
  canary's events against stable's times (1 + tolerance), over every block past its
  step's warm-up, every step;
* gross (error rates only, when the policy sets ``warmup.grossRatio``): the same test at
  margin ``grossRatio``, over every block *including* warm-up, so a gross regression rolls
  back within seconds of a new revision's first requests, cold start or not;
* guard (``maxRate``, ``maxLatency``, ``maxShareAbove``): the canary's own rate against the
  absolute bound (``sequential.rate_above`` on tempered sums), over every block for an
  error rate (a gross failure is a gross failure) and past warm-up for latency (a cold
  start is slow by definition).

Passing a step needs a certificate, judged on the CURRENT step's blocks past warm-up only,
so a rising rate is not averaged away by earlier steps: the relative confidence sequence
below the margin, or anytime evidence that the canary is below its absolute guard. A
certificate never overrides evidence of harm: ``combine`` grants it only while every
harm test of the check is below its hold threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from controller.analysis import sequential, text
from controller.analysis.evidence import Finding, SubTest, pass_prior_scale
from controller.analysis.ledger import Block, Look
from controller.analysis.sequential import StepEvents
from controller.analysis.types import Quality


@dataclass(frozen=True)
class GuardSpec:
    """An absolute bound on the canary's guard events per request."""

    label: str                 # "max-rate guard"
    bound: float               # the rate (share) that must not be exceeded
    claim: str                 # what a failure says
    within: str                # what a certificate says
    during_warmup: bool        # judged on warm-up blocks too


def _rel_steps(blocks: Sequence[Block], margin: float) -> list[StepEvents]:
    return [StepEvents(b.tally.canary_events, b.tally.canary_exposure, b.tally.baseline_events,
                       b.tally.baseline_exposure, b.share_phi(margin)) for b in blocks]


def _tempered(blocks: Sequence[Block], bound: float) -> tuple[float, float]:
    """The canary's guard events and requests, each block counted 1/phi."""
    events = exposure = 0.0
    for b in blocks:
        phi = b.guard_phi(bound)
        events += min(b.tally.canary_guard_events, b.tally.canary_exposure) / phi
        exposure += b.tally.canary_exposure / phi
    return events, exposure


def _e(log_e: float) -> float:
    return math.exp(min(log_e, 690.0)) if log_e > -700 else 0.0


def _sum(blocks: Sequence[Block], attr: str) -> float:
    return float(sum(getattr(b.tally, attr) for b in blocks))


def event_finding(check: str, look: Look, *, what: str, tolerance: float,
                  guard: GuardSpec | None, gross_ratio: float | None, alpha_share: float,
                  alpha_pass: float, head: str = "") -> Finding:
    """The finding of an event-rate check at this look."""
    everything = look.all_blocks
    if not everything or _sum(everything, "canary_exposure") <= 0:
        return Finding(check=check, quality=Quality.NO_DATA, summary="no canary requests yet")
    step = everything[-1].step
    judged = [b for b in everything if not b.warmup]
    current = [b for b in judged if b.step == step]
    in_step = [b for b in everything if b.step == step]
    margin = 1.0 + tolerance
    k = 1 + (guard is not None) + (gross_ratio is not None)
    alpha_test = alpha_share / k

    tests: list[SubTest] = []
    numbers: dict[str, float] = {"margin": margin, "blocks": float(len(everything)),
                                 "warmup_blocks": float(len(everything) - len(judged)),
                                 "kappa": everything[-1].kappa, "c2": everything[-1].c2}
    # How much the latest interval's per-interval variation tempers it (1: not at all).
    numbers["tempering"] = everything[-1].share_phi(margin)

    # Relative, over every judged block of every step.
    rel = sequential.rate_ratio(_rel_steps(judged, margin), margin, alpha_worse=alpha_test,
                                alpha_better=alpha_pass,
                                better_prior_scale=pass_prior_scale(tolerance))
    claim = f"{what} above stable's x{text.num(margin)}"
    if rel.informative:
        tests.append(SubTest("relative", rel.log_e_worse, claim))
        numbers.update({"ratio": rel.estimate, "ratio_cs_lower": rel.lower,
                        "ratio_cs_upper": rel.upper, "ratio_cs_lower_alpha": alpha_test,
                        "e_worse": _e(rel.log_e_worse)})
        interval = (f"ratio {text.num(rel.estimate)} "
                    f"(CS {text.num(rel.lower)}-{text.num(rel.upper)})")
    else:
        tests.append(SubTest("relative", 0.0, claim))
        interval = ("in warm-up: relative comparison from "
                    f"block {len(everything) - len(judged) + 1}" if not judged
                    else "no events yet to compare")

    # Gross, over every block including warm-up.
    if gross_ratio is not None:
        gross, _, informative = sequential.rate_ratio_e(
            _rel_steps(everything, gross_ratio), gross_ratio,
            better_prior_scale=pass_prior_scale(tolerance))
        tests.append(SubTest("gross", gross if informative else 0.0,
                             f"{what} above stable's x{text.num(gross_ratio)} (gross)"))
        numbers["e_gross"] = _e(tests[-1].log_e)

    # The absolute guard.
    guard_blocks: list[Block] = []
    if guard is not None:
        guard_blocks = list(everything if guard.during_warmup else judged)
        events, exposure = _tempered(guard_blocks, guard.bound)
        tests.append(SubTest(guard.label, sequential.rate_above(events, exposure, guard.bound),
                             guard.claim))
        numbers["e_guard"] = _e(tests[-1].log_e)

    # The certificate: the current step's judged blocks only.
    certified, note = _certificate(current, margin, tolerance, guard, alpha_pass, numbers)

    canary = (_sum(everything, "canary_events"), _sum(everything, "canary_exposure"))
    stable = (_sum(everything, "baseline_events"), _sum(everything, "baseline_exposure"))
    numbers.update({"canary_events": canary[0], "canary_requests": canary[1],
                    "baseline_events": stable[0], "baseline_requests": stable[1],
                    "canary_rate": canary[0] / canary[1]})
    if stable[1] > 0:
        numbers["baseline_rate"] = stable[0] / stable[1]
    versus = ("no stable requests" if stable[1] <= 0
              else f"{text.pct(stable[0] / stable[1])} stable")
    summary = (f"{head}{what} {text.pct(canary[0] / canary[1])} vs {versus}, {interval}; "
               f"{text.count(canary[0])}/{text.count(canary[1])} canary, "
               f"{text.count(stable[0])}/{text.count(stable[1])} stable")
    if numbers["tempering"] >= 1.1:
        summary += (f"; per-interval variation counts each interval 1/"
                    f"{text.num(numbers['tempering'])}")
    return Finding(check=check, quality=Quality.OK, summary=summary, numbers=numbers,
                   tests=tuple(tests), certified=certified, certify_note=note,
                   requests=_sum(in_step, "canary_exposure"), judged=bool(current))


def _certificate(current: Sequence[Block], margin: float, tolerance: float,
                 guard: GuardSpec | None, alpha_pass: float,
                 numbers: dict[str, float]) -> tuple[bool, str]:
    need = math.log(1.0 / alpha_pass)
    numbers["e_within_needed"] = 1.0 / alpha_pass
    if not current:
        return False, "no interval of this step past warm-up yet"
    _, better, informative = sequential.rate_ratio_e(
        _rel_steps(current, margin), margin, better_prior_scale=pass_prior_scale(tolerance))
    notes = []
    if informative:
        numbers["e_within"] = _e(better)
        if better >= need:
            return True, (f"this step within x{text.num(margin)} of stable: "
                          f"e={text.num(_e(better))} >= {text.num(1 / alpha_pass)}")
        notes.append(f"this step not yet shown within x{text.num(margin)} of stable "
                     f"(e={text.num(_e(better))})")
    else:
        notes.append("no events yet at this step to bound the ratio")
    if guard is not None:
        events, exposure = _tempered(current, guard.bound)
        log_e = sequential.rate_below(events, exposure, guard.bound)
        numbers["e_guard_within"] = _e(log_e)
        if log_e >= need:
            return True, f"{guard.within} at this step: e={text.num(_e(log_e))}"
        notes.append(f"{guard.within} not yet shown at this step (e={text.num(_e(log_e))})")
    return False, "; ".join(notes)
