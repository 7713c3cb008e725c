"""The pre-rollout gate: does the model's recorded evaluation meet the policy's thresholds?

Pure: no I/O. The evaluation comes from a ``LineageStore`` (read by the caller); this
module only compares numbers and explains the result in one line that names the
metric, its value, the bound and the training run, e.g.
``auc 0.85 < min 0.9 (run 5f2c)``. A metric the policy names but the pipeline did not
record fails the gate: a threshold that cannot be checked must never look like a pass.
"""

from __future__ import annotations

import math

from controller.lineage import Evaluation
from controller.policy.model import MetricThreshold, PreRolloutGate
from controller.rollout.machine import GateResult


def format_number(value: float) -> str:
    """The shortest text that reads back as the same number (``0.9``, not ``0.900000``)."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    short = f"{value:g}"
    return short if float(short) == value or not math.isfinite(value) else repr(value)


def _check(threshold: MetricThreshold, value: float) -> tuple[bool, str]:
    """One threshold against one value: (passed, the comparison as text)."""
    name, shown = threshold.name, format_number(value)
    if math.isnan(value):
        return False, f"{name} is NaN"
    if threshold.min is not None and value < threshold.min:
        return False, f"{name} {shown} < min {format_number(threshold.min)}"
    if threshold.max is not None and value > threshold.max:
        return False, f"{name} {shown} > max {format_number(threshold.max)}"
    bounds = []
    if threshold.min is not None:
        bounds.append(f">= min {format_number(threshold.min)}")
    if threshold.max is not None:
        bounds.append(f"<= max {format_number(threshold.max)}")
    return True, f"{name} {shown} {' and '.join(bounds)}"


def evaluate_gate(gate: PreRolloutGate, evaluation: Evaluation | None, *,
                  model_uri: str = "") -> GateResult:
    """Judge a model's recorded evaluation against the gate. ``model_uri`` names the model
    in the reason when there is no evaluation to take it from."""
    if evaluation is None:
        uri = model_uri or "the model"
        if gate.require_evaluation:
            return GateResult(False, f"no recorded evaluation for {uri}")
        return GateResult(True, f"no recorded evaluation for {uri}; allowed "
                                "(requireEvaluation: false)")
    run = f" (run {evaluation.run})" if evaluation.run else ""
    failures: list[str] = []
    passes: list[str] = []
    for threshold in gate.metrics:
        value = evaluation.metrics.get(threshold.name)
        if value is None:
            recorded = ", ".join(sorted(evaluation.metrics)) or "none"
            failures.append(f"metric {threshold.name!r} not recorded (recorded: {recorded})")
            continue
        passed, text = _check(threshold, float(value))
        (passes if passed else failures).append(text)
    if failures:
        return GateResult(False, "; ".join(failures) + run)
    if not passes:
        return GateResult(True, f"evaluation recorded{run}; the policy sets no thresholds")
    return GateResult(True, "; ".join(passes) + run)
