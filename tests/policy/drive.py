"""Drive the pure core with one policy, as the controller would, at any ``now``.

Used by the policy bound tests (tests/policy) and the policy fuzzer (tests/chaos): a
policy that loads must never make the state machine (``decide``), the judge
(``judge``), the PromQL builder or the state's JSON fail, whatever its values, even at
a far-future ``now``. Pure: no I/O. ``exercise`` walks every path on which a policy
value enters the arithmetic: the pre-rollout gate on extreme evaluations, every step to
promotion (duration pauses waited out, approvals given), every approval timed out
(rollback or reminders), the ready timeout, missing data past ``onMissingData.after``,
and a step past ``onInconclusive.deadline``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.analysis.combine import judge
from controller.analysis.types import (
    HistogramCounts,
    Measurement,
    RatioCounts,
    StepWindow,
)
from controller.lineage import Evaluation
from controller.lineage.gate import evaluate_gate
from controller.policy.model import DistributionCheck, RatioCheck, RolloutPolicy
from controller.providers.presets import Part, part_expression, templates_for
from controller.rollout.machine import GateResult, Judgement, Result, decide
from controller.rollout.state import (
    Command,
    Observation,
    Phase,
    RolloutState,
    TrafficTarget,
)
from controller.routers.kserve_knative import KNATIVE
from tests.analysis.build import evidence

FAR_FUTURE = datetime(9000, 1, 1, tzinfo=UTC)
PASS = Judgement("pass", "no regression")
CONTINUE = Judgement("continue", "not enough data")
MISSING = Judgement("continue", "no series", missing=True)
LATENCY_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DRIFT_BOUNDS = (0.2, 0.4, 0.6, 0.8)


def _observe(state: RolloutState | None) -> Observation:
    """What KServe shows for ``state``: model h1 serving; then h2 deployed, its revision
    m-2 created, ready, at the weight Rollwise set, promoted or rolled back when asked."""
    if state is None or state.spec_hash == "h1":
        return Observation("h1" if state is None else "h2", "s3://m/h2", None, "m-1", "m-1",
                           "m-1", traffic=(TrafficTarget("m-1", 100, latest=True),))
    percent = state.expected_percent
    ready = "m-1" if state.phase == Phase.PENDING else "m-2"
    if state.phase in (Phase.PROMOTING, Phase.SUCCEEDED):
        return Observation("h2", "s3://m/h2", None, "m-2", "m-2", "m-2",
                           traffic=(TrafficTarget("m-2", 100, latest=True),))
    if state.phase == Phase.ROLLING_BACK or not percent:
        return Observation("h2", "s3://m/h2", percent, "m-2", ready, "m-1",
                           traffic=(TrafficTarget("m-1", 100),))
    return Observation("h2", "s3://m/h2", percent, "m-2", ready, "m-1",
                       traffic=(TrafficTarget("m-2", percent, latest=True),
                                TrafficTarget("m-1", 100 - percent, tag="prev")))


class _Rollout:
    """One rollout of model h2 under ``policy``, tick by tick."""

    def __init__(self, policy: RolloutPolicy, now: datetime) -> None:
        self.policy, self.spec, self.now = policy, policy.spec, now
        adopted = self._tick(None)
        assert adopted.state is not None and adopted.state.phase == Phase.SUCCEEDED
        self.state = adopted.state
        self.step(gate=GateResult(True, "evaluation passed"))       # new model: Pending
        assert self.state.phase in (Phase.PENDING, Phase.WAITING_READY), self.state.phase

    def _tick(self, state: RolloutState | None, **kwargs: Any) -> Result:
        result = decide(state, self.policy.name, self.spec, _observe(state), self.now,
                        router=KNATIVE, **kwargs)
        if result.state is not None and result.state.pause is not None:
            # what the reconciler writes: a pause carries the policy's times
            assert RolloutState.from_json(result.state.to_json()) == result.state
        return result

    def step(self, after: timedelta = timedelta(), **kwargs: Any) -> Result:
        self.now += after
        result = self._tick(self.state, **kwargs)
        assert result.state is not None
        self.state = result.state
        return result

    def to_analysing(self) -> None:
        for _ in range(3):
            if self.state.phase.analysing:
                return
            self.step(gate=GateResult(True, "evaluation passed"))
        raise AssertionError(f"never reached a step: {self.state.phase}")


def _measurements(policy: RolloutPolicy, steps: int, requests: float) -> dict[str, Any]:
    """Healthy counts for every check, ``steps`` steps of ``requests`` canary requests, as
    the judges see them through the controller's ledgers (``tests.analysis.build``)."""
    out: dict[str, Any] = {}
    for check in policy.spec.analysis.checks:
        window: StepWindow[Any]
        if isinstance(check, RatioCheck):
            window = StepWindow(RatioCounts(requests / 200, requests * 4),
                                RatioCounts(requests / 200, requests))
        else:
            bounds = LATENCY_BOUNDS
            if isinstance(check, DistributionCheck):
                ref = check.reference.histogram
                bounds = tuple(ref.bounds) if ref is not None else DRIFT_BOUNDS
            share = [1.0] * (len(bounds) + 1)
            window = StepWindow(HistogramCounts(bounds, tuple(4 * requests / len(share)
                                                              for _ in share)),
                                HistogramCounts(bounds, tuple(requests / len(share)
                                                              for _ in share)))
        out[check.name] = [window] * steps
    return evidence(policy.spec.analysis, out)


Judged = set[tuple[str, int, bool]]
"""Judge calls already made: (the analysis as JSON, minRequests, certify)."""


def judge_every_step(policy: RolloutPolicy, judged: Judged | None = None) -> None:
    """The judge as every step would call it: with the step's minRequests and
    certification, after minRequests is met (and once before). The judge is a pure
    function of these and the analysis, so each distinct call is made once (``judged``
    can carry that over policies that share their analysis)."""
    spec = policy.spec
    judged = set() if judged is None else judged
    analysis = spec.analysis.model_dump_json()
    for index in range(len(spec.steps) - 1):
        need = spec.min_requests(index)
        certify = spec.analysis.certify_step(index, spec.steps)
        if (analysis, need, certify) in judged:
            continue
        levels = (float(max(need, 1) * 3),) if judged else (need / 2, float(max(need, 1) * 3))
        judged.add((analysis, need, certify))
        for requests in levels:
            verdict = judge(spec.analysis, _measurements(policy, index + 1, requests),
                            min_requests=need, certify=certify)
            assert verdict.outcome in ("pass", "fail", "continue"), verdict
    missing: Mapping[str, Measurement[Any]] = {}
    assert judge(spec.analysis, missing, min_requests=spec.min_requests(0)).missing


def queries(policy: RolloutPolicy) -> list[str]:
    """The PromQL the analyzer would send for this policy's checks."""
    analysis = policy.spec.analysis
    part = Part("0", "ns", "svc", ("m-2", "m-1"), window_seconds=300,
                interval_seconds=int(analysis.interval.total_seconds()))
    return [part_expression(template, part) for check in analysis.checks
            for template in templates_for(check, check.provider or analysis.provider).values()]


def exercise(policy: RolloutPolicy, now: datetime = FAR_FUTURE,
             judged: Judged | None = None) -> None:
    """Every path of a rollout on which this policy's values enter the arithmetic. An
    operation that makes a NaN (numpy's "invalid value" warning) fails too: a NaN
    e-value compares false with every threshold, silently."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "invalid value", RuntimeWarning)
        _exercise(policy, now, judged)


def _exercise(policy: RolloutPolicy, now: datetime, judged: Judged | None) -> None:
    spec = policy.spec
    judge_every_step(policy, judged)
    assert all(queries(policy))
    gate = spec.gates.pre_rollout
    if gate is not None:
        for value in (-1e308, 0.0, 0.9, 1e308, float("nan")):
            evaluation = Evaluation("s3://m/h2", {m.name: value for m in gate.metrics}, "r1")
            assert evaluate_gate(gate, evaluation).passed in (True, False)

    happy = _Rollout(policy, now)                        # every step to promotion
    happy.to_analysing()
    for _ in range(3 * len(spec.steps) + 2):
        state = happy.state
        pause = spec.steps[state.step].pause
        if state.phase == Phase.PROGRESSING:
            happy.step(spec.min_duration(state.step), judgement=PASS)
        elif state.phase == Phase.PAUSED and state.pause is not None and (
                state.pause.until is not None and pause is not None and pause.duration):
            happy.step(state.pause.until - happy.now)              # a soak: wait it out
        elif state.phase == Phase.PAUSED:
            # A Slack approval (the handler checked the approvers): authorisation is not
            # what this drive exercises.
            happy.step(commands=[Command(f"a{state.step}", "approve", "alice", happy.now,
                                         via="slack", step=state.step)])
        elif state.phase == Phase.PROMOTING:
            happy.step()
        else:
            break
    assert happy.state.phase == Phase.SUCCEEDED, happy.state

    for index, step in enumerate(spec.steps[:-1]):       # every approval timed out
        if step.pause is None or step.pause.approval is None:
            continue
        waiting = _Rollout(policy, now)
        waiting.to_analysing()
        waiting.state = waiting.state.evolve(step=index, step_started_at=waiting.now,
                                             expected_percent=step.weight)
        waiting.step(spec.min_duration(index), judgement=PASS)
        assert waiting.state.pause is not None and waiting.state.pause.until is not None
        waiting.step(waiting.state.pause.until - waiting.now)
        waiting.step(step.pause.approval.remind_every)

    late = _Rollout(policy, now)                         # the revision never becomes ready
    late.state = late.state.evolve(phase=Phase.WAITING_READY, revision="m-3")
    late.step(spec.ready_timeout + timedelta(milliseconds=1))

    blind = _Rollout(policy, now)                        # metrics missing past the grace
    blind.to_analysing()
    blind.step(judgement=MISSING)
    blind.step(spec.on_missing_data.after, judgement=MISSING)
    assert blind.state.phase in (Phase.PAUSED, Phase.ROLLING_BACK), blind.state

    slow = _Rollout(policy, now)                         # no verdict by the deadline
    slow.to_analysing()
    slow.step(spec.on_inconclusive.deadline, judgement=CONTINUE)
    assert slow.state.phase in (Phase.PAUSED, Phase.ROLLING_BACK), slow.state
