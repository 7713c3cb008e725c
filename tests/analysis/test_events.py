"""The event-rate tests over blocks (controller/analysis/events.py): warm-up, the gross
test, guards in and out of warm-up, certificates on the current step that never override
evidence of harm."""

from __future__ import annotations

from typing import Any

from controller.analysis import judge
from controller.analysis.ledger import Block, Look, Tally
from controller.analysis.types import EventMeasurement, LatencyBounds, Outcome, Quality
from controller.policy.model import Analysis


def analysis(*checks: dict[str, Any], **extra: Any) -> Analysis:
    return Analysis.model_validate({"alpha": 0.05, "checks": list(checks), **extra})


def blocks(*rows: tuple[int, bool, float, float, float, float]) -> EventMeasurement:
    """(step, warm-up, canary requests, canary events, stable requests, stable events)."""
    return EventMeasurement(Quality.OK, Look(tuple(
        Block(step, warm, Tally(n_c, e_c, n_b, e_b, e_c), 0.0, 0.0, 60.0)
        for step, warm, n_c, e_c, n_b, e_b in rows), None, ()))


ERRORS = {"name": "errors", "kind": "ratio", "tolerance": 0.2}


def test_a_gross_regression_in_warm_up_rolls_back_at_once() -> None:
    """10x errors in the first 20 s of a new revision: the relative test does not look at
    warm-up, the gross test does."""
    m = {"errors": blocks((0, True, 1000, 50, 19000, 95))}
    v = judge(analysis(ERRORS), m, min_requests=100)
    assert v.outcome == Outcome.FAIL and "(gross)" in v.reason
    off = judge(analysis(ERRORS, warmup={"grossRatio": None}), m, min_requests=100)
    assert off.outcome == Outcome.CONTINUE and "in warm-up" in off.checks[0].reason


def test_a_modest_regression_in_warm_up_waits_for_warm_up_to_end() -> None:
    """2x errors during warm-up (a cold start that costs some errors) is not gross."""
    m = {"errors": blocks((0, True, 3000, 30, 57000, 285), (0, True, 3000, 30, 57000, 285))}
    assert judge(analysis(ERRORS), m, min_requests=100).outcome == Outcome.CONTINUE


def test_cold_latency_in_warm_up_is_not_a_regression_and_not_a_guard_breach() -> None:
    p99 = {"name": "p99", "kind": "latency", "quantile": 0.99, "tolerance": 0.2,
           "maxLatency": "300ms"}
    cold = EventMeasurement(Quality.OK, Look(tuple(
        Block(0, True, Tally(3000, 300, 57000, 570, 300), 0.0, 0.0, 60.0) for _ in range(2)),
        None, ()), bounds=LatencyBounds(0.3, 0.3))
    v = judge(analysis(p99), {"p99": cold}, min_requests=100)
    assert v.outcome == Outcome.CONTINUE and "in warm-up" in v.checks[0].reason


def test_the_max_rate_guard_judges_warm_up_too() -> None:
    m = {"errors": blocks((0, True, 3000, 150, 57000, 2700))}   # 5% both: the SLO is 1%
    v = judge(analysis({**ERRORS, "maxRate": 0.01}, warmup={"grossRatio": None}), m,
              min_requests=100)
    assert v.outcome == Outcome.FAIL and "maxRate" in v.reason


def test_a_certificate_never_overrides_evidence_of_harm() -> None:
    """A slow leak: the canary is below its SLO guard (0.8% < 1%) and so could be
    certified, but it is well on its way to failing the relative test (1.6x stable's)."""
    rows = [(0, False, 2000.0, 16.0, 38000.0, 190.0)] * 6
    m = {"errors": blocks(*rows)}
    check = {**ERRORS, "maxRate": 0.05}
    v = judge(analysis(check), m, min_requests=100, certify=True)
    (c,) = v.checks
    assert c.numbers["e_value"] >= c.numbers["e_hold"]
    assert v.outcome == Outcome.CONTINUE and "despite" in c.reason
