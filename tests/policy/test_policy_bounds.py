"""Every policy value is bounded: no policy that loads can break the controller's arithmetic.

Issue 14, defect 2. Each input here crashed or was accepted by the loader before the fix:
``99999999999h`` raised OverflowError out of it; ``999999999d`` loaded and then made
``now + timeout`` overflow in the state machine; a 400-digit ``minRequests`` loaded and
made ``float(min_requests)`` overflow in the judge; a NaN gate threshold loaded and let
every model through the gate; a reference path with a NUL raised ValueError; a FIFO as a
reference file hung the loader. Each must now be one located problem that names the
bound, and every value at a bound must drive the pure core at a far-future ``now``.
"""

from __future__ import annotations

import pytest

from controller.policy.loader import load_text
from tests.policy.drive import FAR_FUTURE, exercise
from tests.policy.policytext import CONSERVATIVE, DRIFT, line_of, mutate, problems_of

# (id, old text, new text, field path)
DURATIONS = [
    ("step-min-duration", "minDuration: 10m", "minDuration: {}", "spec.steps[0].minDuration"),
    ("default-min-duration", "minDuration: 15m", "minDuration: {}",
     "spec.stepDefaults.minDuration"),
    ("approval-timeout", "timeout: 8h", "timeout: {}", "spec.steps[2].pause.approval.timeout"),
    ("ready-timeout", "readyTimeout: 15m", "readyTimeout: {}", "spec.readyTimeout"),
    ("interval", "interval: 1m", "interval: {}", "spec.analysis.interval"),
    ("deadline", "deadline: 1h", "deadline: {}", "spec.onInconclusive.deadline"),
    ("missing-after", "after: 5m", "after: {}", "spec.onMissingData.after"),
]


@pytest.mark.parametrize(("old", "new", "path"), [d[1:] for d in DURATIONS],
                         ids=[d[0] for d in DURATIONS])
@pytest.mark.parametrize("value", ["99999999999h", "999999999d", "30d1ms", "1" + "0" * 5000 + "s"],
                         ids=["overflow", "loaded-then-crashed", "just-above", "5000-digits"])
def test_a_duration_above_its_bound_is_one_located_problem_naming_the_bound(
        old: str, new: str, path: str, value: str) -> None:
    text = mutate(old, new.format(value))
    (problem,) = problems_of(text)
    line = line_of(text, new.format(value))
    assert problem.startswith(f"p.yaml:{line}:"), problem
    assert f": {path}: " in problem
    assert "at most 30d" in problem
    assert value[:30] in problem


def test_the_bound_itself_is_accepted_and_drives_the_core() -> None:
    text = CONSERVATIVE
    for _, old, new, _ in DURATIONS:
        text = mutate(old, new.format("30d"), text)
    (loaded,) = load_text(text, "p.yaml")
    assert loaded.policy.spec.ready_timeout.days == 30
    exercise(loaded.policy, FAR_FUTURE)


@pytest.mark.parametrize(("old", "new", "path", "fragment"), [
    ("minRequests: 1000", "minRequests: " + "9" * 400, "spec.steps[0].minRequests",
     "more than 100 digits"),
    ("minRequests: 1000", "minRequests: 10000000000", "spec.steps[0].minRequests",
     "less than or equal to 1000000000"),
    ("minRequests: 2000", "minRequests: 1000000001", "spec.stepDefaults.minRequests",
     "less than or equal to 1000000000"),
    ("maxLatency: 300ms", "maxLatency: 2h", "spec.analysis.checks[1].maxLatency", "at most 1h"),
    ("min: 0.92", "min: .nan", "spec.gates.preRollout.metrics[0].min", "finite number"),
    ("min: 0.92", "min: -.inf", "spec.gates.preRollout.metrics[0].min", "finite number"),
    ("min: 0.9\n", "min: 0.9\n          max: 1e999\n", "spec.gates.preRollout.metrics[1].max",
     "finite number"),
    ("description: Slow", "description: " + "x" * 5000 + " Slow", "metadata.description",
     "at most 1024 characters"),
    # found by the fuzzer: a NaN e-value in the maxRate guard, every check unjudgeable
    ("maxRate: 0.005", "maxRate: 1e-300", "spec.analysis.checks[0].maxRate",
     "greater than or equal to 0.000000001"),
    ("alpha: 0.01", "alpha: 5e-324", "spec.analysis.alpha", "greater than or equal to 0.000001"),
])
def test_values_the_controller_could_not_use_are_refused(old: str, new: str, path: str,
                                                         fragment: str) -> None:
    (problem,) = problems_of(mutate(old, new))
    assert f": {path}: " in problem and fragment in problem, problem


@pytest.mark.parametrize(("old", "new"), [
    ("minRequests: 1000", "minRequests: 1000000000"),
    ("maxRate: 0.005", "maxRate: 1e-9"),
    ("maxRate: 0.005", "maxRate: 0.999999999"),
    ("alpha: 0.01", "alpha: 1e-6"),
    ("tolerance: 0.1", "tolerance: 0"),
    ("quantile: 0.99", "quantile: 1e-300"),
])
def test_a_value_at_its_bound_drives_the_judge_without_nan(old: str, new: str) -> None:
    (loaded,) = load_text(mutate(old, new), "p.yaml")
    exercise(loaded.policy, FAR_FUTURE)


def test_a_nan_gate_threshold_can_no_longer_wave_every_model_through() -> None:
    from controller.lineage import Evaluation
    from controller.lineage.gate import evaluate_gate

    (good,) = load_text(CONSERVATIVE, "p.yaml")
    gate = good.policy.spec.gates.pre_rollout
    assert gate is not None
    bad_model = Evaluation("s3://m", {"accuracy": 0.1, "auc": 0.1})
    assert not evaluate_gate(gate, bad_model).passed
    problems_of(mutate("min: 0.92", "min: .nan"))   # the NaN that would have passed it


def test_the_number_of_checks_is_bounded() -> None:
    extra = "".join(f"      - {{name: e{i}, kind: ratio}}\n" for i in range(20))
    text = mutate("    checks:\n", "    checks:\n" + extra, source=DRIFT)
    (problem,) = problems_of(text)
    assert ": spec.analysis.checks: " in problem and "at most 20 items" in problem, problem


def test_histogram_buckets_are_bounded() -> None:
    bounds = ", ".join(str(i) for i in range(1001))
    counts = ", ".join("1" for _ in range(1002))
    text = mutate("          source: stable\n", "          source: training\n"
                  f"          histogram: {{bounds: [{bounds}], counts: [{counts}]}}\n",
                  source=DRIFT)
    problems = problems_of(text)
    assert any(".reference.histogram.bounds: " in p and "at most 1000 items" in p
               for p in problems), problems


@pytest.mark.parametrize(("value", "fragment"), [
    ('"/etc/passwd"', "relative path inside the policy directory"),
    ('"../secrets.yaml"', "relative path inside the policy directory"),
    ('"ref\\0.yaml"', "must not contain"),          # raised ValueError out of the loader
])
def test_reference_files_stay_inside_the_policy_directory(value: str, fragment: str) -> None:
    text = mutate("file: reference-histograms/churn-predictions.yaml", f"file: {value}",
                  source=DRIFT)
    (problem,) = problems_of(text)
    assert ".reference.file: " in problem and fragment in problem, problem
