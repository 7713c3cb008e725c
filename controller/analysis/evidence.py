"""What a check found, before the checks are combined; and the relative test that the
error-rate and latency-tail checks share.

Pure. A check turns its measurement into a ``Finding``: one or more sub-tests, each an
anytime-valid e-value against "the canary is fine" (the relative comparison with stable,
and each absolute SLO guard), plus whether the data certify that the canary is within
the margin. ``combine`` turns findings into verdicts: the check's anytime p-value is
Bonferroni over its sub-tests, ``min(1, k * min_s 1/E_s)``, and Holm's step-down runs
over the checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from controller.analysis import sequential, text
from controller.analysis.types import Quality

# Offsets of the pass-side prior: the canary must be shown below 1 + tolerance, an
# effect of log(1 + tolerance); a prior of that scale makes the mixture cheapest there.
_MIN_PASS_SCALE = 0.05
_MAX_PASS_SCALE = 1.0


@dataclass(frozen=True)
class SubTest:
    """One anytime-valid test inside a check: its log e-value and what a rejection says."""

    label: str
    log_e: float
    claim: str


@dataclass(frozen=True)
class Finding:
    """One check's evidence at this look (``combine`` decides the outcome)."""

    check: str
    quality: Quality
    summary: str
    numbers: dict[str, float] = field(default_factory=dict)
    tests: tuple[SubTest, ...] = ()
    certified: bool = False        # the data show the canary within the margin
    certify_note: str = ""         # the bound that certified it, or why not yet
    requests: float = 0.0          # canary requests in the current step
    # Whether the current step has data past its warm-up: before that nothing is judged,
    # so "no evidence of harm" says nothing and the check cannot pass.
    judged: bool = True

    @property
    def p_value(self) -> float:
        """Anytime p-value of the check: Bonferroni over its sub-tests."""
        if not self.tests:
            return 1.0
        best = max(t.log_e for t in self.tests)
        return min(1.0, len(self.tests) * math.exp(-best)) if best > -700 else 1.0

    @property
    def decisive(self) -> SubTest | None:
        return max(self.tests, key=lambda t: t.log_e) if self.tests else None


def missing(check: str, quality: Quality, why: str) -> Finding:
    """A check without usable data: never healthy, never failing."""
    return Finding(check=check, quality=quality, summary=why)


def pass_prior_scale(tolerance: float) -> float:
    return min(max(math.log1p(tolerance), _MIN_PASS_SCALE), _MAX_PASS_SCALE)


@dataclass(frozen=True)
class Relative:
    """The relative comparison of an event rate (errors, slow requests) with stable."""

    test: SubTest
    numbers: dict[str, float]
    interval: str          # "ratio 2.1 (CS 1.4-3.3)"
    certified: bool
    certify_note: str


def relative(
    steps: Sequence[sequential.StepEvents],
    tolerance: float,
    *,
    alpha_lower: float,
    alpha_pass: float,
    what: str,
) -> Relative:
    """The canary's event rate against stable's times (1 + tolerance), per-step exposure.

    ``alpha_lower`` is the level of the lower confidence-sequence bound (the check's
    share of alpha for this sub-test), ``alpha_pass`` the level of the upper bound that
    certifies the canary within the margin.
    """
    margin = 1.0 + tolerance
    ev = sequential.rate_ratio(steps, margin, alpha_worse=alpha_lower, alpha_better=alpha_pass,
                               better_prior_scale=pass_prior_scale(tolerance))
    claim = f"{what} above stable's x{text.num(margin)}"
    if not ev.informative:
        numbers = {"margin": margin, "e_worse": 1.0, "e_within": 1.0}
        return Relative(SubTest("relative", 0.0, claim), numbers,
                        "no events yet to compare", False, "no events yet to bound the ratio")
    need = 1.0 / alpha_pass
    e_within = _e(ev.log_e_better)
    certified = ev.log_e_better >= math.log(need)
    numbers = {
        "ratio": ev.estimate,
        "ratio_cs_lower": ev.lower,
        "ratio_cs_upper": ev.upper,
        "ratio_cs_lower_alpha": alpha_lower,
        "ratio_cs_upper_alpha": alpha_pass,
        "margin": margin,
        "e_worse": _e(ev.log_e_worse),
        "e_within": e_within,
        "e_within_needed": need,
    }
    interval = (f"ratio {text.num(ev.estimate)} "
                f"(CS {text.num(ev.lower)}-{text.num(ev.upper)})")
    if certified:
        note = f"CS upper {text.num(ev.upper)} < x{text.num(margin)}"
    else:
        note = f"CS upper {text.num(ev.upper)} not yet below x{text.num(margin)}"
    return Relative(SubTest("relative", ev.log_e_worse, claim), numbers, interval, certified, note)


def guard(label: str, events: float, exposure: float, bound: float, claim: str) -> SubTest:
    """An absolute SLO guard: anytime evidence that the canary's rate exceeds ``bound``."""
    return SubTest(label, sequential.rate_above(events, exposure, bound), claim)


@dataclass(frozen=True)
class Guard:
    """An absolute SLO guard: events among exposure must stay below ``bound``. It can fail
    a check (evidence of more) and certify it (evidence of less)."""

    label: str
    events: float
    exposure: float
    bound: float
    claim: str                 # what a failure says
    within: str                # what a certificate says

    def test(self) -> SubTest:
        return guard(self.label, self.events, self.exposure, self.bound, self.claim)

    def certificate(self, alpha_pass: float) -> tuple[bool, str, float]:
        """(certified, note, e-value) for "the canary is within this SLO" at alpha_pass.

        Rare events (0.5% errors, a p99 tail) make the relative certificate slow: showing
        an error rate within 20% of stable's takes hundreds of canary errors. The SLO
        guard is what the policy author declared acceptable, and showing the canary below
        it takes far fewer requests, so either certificate lets the check pass."""
        log_e = sequential.rate_below(self.events, self.exposure, self.bound)
        certified = log_e >= math.log(1.0 / alpha_pass)
        e = _e(log_e) if log_e > -700 else 0.0
        note = (f"{self.within}: e={text.num(e)} >= {text.num(1 / alpha_pass)}" if certified
                else f"{self.within} not yet shown (e={text.num(e)})")
        return certified, note, e


def certify(rel: Relative, guard_: Guard | None, alpha_pass: float,
            numbers: dict[str, float]) -> tuple[bool, str]:
    """The check's certificate: the relative margin, or else its absolute SLO guard."""
    if rel.certified or guard_ is None:
        return rel.certified, rel.certify_note
    ok, note, e = guard_.certificate(alpha_pass)
    numbers["e_guard_within"] = e
    return (True, note) if ok else (False, f"{rel.certify_note}; {note}")


def rate_summary(what: str, canary: tuple[float, float], stable: tuple[float, float],
                 interval: str) -> tuple[float | None, str]:
    """Stable's rate (None without stable requests) and the one-line comparison both
    event-rate checks print: "<what> 1.2% vs 0.5% stable, <interval>; 6/500 canary, ..."
    ``canary`` and ``stable`` are (events, requests) pooled over the steps."""
    (events_c, n_c), (events_b, n_b) = canary, stable
    stable_rate = events_b / n_b if n_b > 0 else None
    versus = ("no stable requests" if stable_rate is None
              else f"{text.pct(stable_rate)} stable")
    return stable_rate, (f"{what} {text.pct(events_c / n_c)} vs {versus}, {interval}; "
                         f"{text.count(events_c)}/{text.count(n_c)} canary, "
                         f"{text.count(events_b)}/{text.count(n_b)} stable")


def rate_finding(check: str, summary: str, numbers: dict[str, float], rel: Relative,
                 guard_: Guard | None, guard_key: str, *, alpha_pass: float,
                 requests: float) -> Finding:
    """The finding of an event-rate check: the relative test, its SLO guard if any (its
    e-value in ``numbers[guard_key]``), and the certificate from either."""
    tests = (rel.test,) if guard_ is None else (rel.test, guard_.test())
    if guard_ is not None:
        numbers[guard_key] = _e(tests[-1].log_e)
    certified, note = certify(rel, guard_, alpha_pass, numbers)
    return Finding(check=check, quality=Quality.OK, summary=summary, numbers=numbers,
                   tests=tests, certified=certified, certify_note=note, requests=requests)


def _e(log_e: float) -> float:
    """An e-value as a finite float for ``numbers`` (capped at 1e300)."""
    return math.exp(min(log_e, 690.0))
