"""The pre-rollout gate: pure threshold checks, then read from a real MLMD written as
Kubeflow Pipelines writes it, through the reconciler's GateEvaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.kube.managed import Managed, read_managed
from controller.lineage import Evaluation, LineageUnavailable
from controller.lineage.gate import evaluate_gate, format_number
from controller.lineage.mlmd import MLMDLineageStore
from controller.lineage.worker import GateFromLineage
from controller.policy.loader import load_file
from controller.policy.model import MetricThreshold, PreRolloutGate, RolloutPolicy
from controller.rollout.machine import GateResult
from controller.routers import ROUTERS
from tests.lineage.kfp_writer import KfpRun, KfpWriter, s3_form

ROOT = Path(__file__).resolve().parents[2]

def waits(result: GateResult | None, why: str = "") -> bool:
    """The gate is not known yet: the model waits, never a pass, and says why."""
    return (result is not None and result.waiting and not result.passed
            and why in result.reason)



def gate(*thresholds: MetricThreshold, require: bool = True) -> PreRolloutGate:
    return PreRolloutGate(require_evaluation=require, metrics=list(thresholds))


def evaluation(**metrics: float) -> Evaluation:
    return Evaluation(model_uri="s3://m/v2", metrics=metrics, run="abc123")


# --- pure --------------------------------------------------------------------------------


def test_a_metric_below_its_minimum_fails_naming_metric_value_bound_and_run() -> None:
    result = evaluate_gate(gate(MetricThreshold(name="auc", min=0.9)), evaluation(auc=0.85))
    assert not result.passed
    assert result.reason == "auc 0.85 < min 0.9 (run abc123)"


def test_a_metric_above_its_maximum_fails() -> None:
    result = evaluate_gate(gate(MetricThreshold(name="log_loss", max=0.3)),
                           evaluation(log_loss=0.42))
    assert (result.passed, result.reason) == (False, "log_loss 0.42 > max 0.3 (run abc123)")


def test_every_failure_is_named_in_one_line() -> None:
    result = evaluate_gate(gate(MetricThreshold(name="auc", min=0.9),
                                MetricThreshold(name="accuracy", min=0.92)),
                           evaluation(auc=0.85, accuracy=0.5))
    assert result.reason == "auc 0.85 < min 0.9; accuracy 0.5 < min 0.92 (run abc123)"
    assert "\n" not in result.reason


def test_all_thresholds_met_passes_with_the_numbers() -> None:
    result = evaluate_gate(gate(MetricThreshold(name="auc", min=0.9, max=1.0)),
                           evaluation(auc=0.93))
    assert result.passed
    assert result.reason == "auc 0.93 >= min 0.9 and <= max 1 (run abc123)"


def test_a_threshold_the_pipeline_did_not_record_fails_naming_it() -> None:
    result = evaluate_gate(gate(MetricThreshold(name="f1", min=0.8)), evaluation(auc=0.93))
    assert not result.passed
    assert result.reason == "metric 'f1' not recorded (recorded: auc) (run abc123)"


def test_nan_never_passes() -> None:
    result = evaluate_gate(gate(MetricThreshold(name="auc", min=0.9)),
                           evaluation(auc=float("nan")))
    assert (result.passed, result.reason) == (False, "auc is NaN (run abc123)")


def test_no_evaluation_fails_when_required_and_names_the_model() -> None:
    result = evaluate_gate(gate(MetricThreshold(name="auc", min=0.9)), None,
                           model_uri="s3://models/iris/v2")
    assert (result.passed, result.reason) == (
        False, "no recorded evaluation for s3://models/iris/v2")


def test_no_evaluation_passes_when_not_required() -> None:
    result = evaluate_gate(gate(require=False), None, model_uri="s3://m/v2")
    assert result.passed
    assert "requireEvaluation: false" in result.reason


def test_numbers_are_shown_exactly() -> None:
    assert [format_number(v) for v in (0.9, 0.85, 3.0, 0.123456789, 1e-7)] == [
        "0.9", "0.85", "3", "0.123456789", "1e-07"]


# --- from MLMD, through the reconciler's GateEvaluator -----------------------------------


@pytest.fixture
def conservative() -> RolloutPolicy:
    """policies/conservative.yaml: accuracy >= 0.92 and auc >= 0.9, evaluation required."""
    return load_file(ROOT / "policies" / "conservative.yaml")[0].policy


def managed(uri: str) -> Managed:
    obj: dict[str, Any] = {
        "metadata": {"namespace": "team-a", "name": "iris", "uid": "u1", "resourceVersion": "7",
                     "annotations": {"rollwise.io/policy": "conservative"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri},
                               "canaryTrafficPercent": 0}},
    }
    result = read_managed(obj, ROUTERS)
    assert result is not None
    return result


def test_gate_passes_on_the_pipeline_evaluation(store: MLMDLineageStore, kfp: KfpWriter,
                                                conservative: RolloutPolicy) -> None:
    run = kfp.run(run_id="run-good", metrics={"accuracy": 0.95, "auc": 0.97})
    # The predictor names the object s3://...; KFP recorded it as minio://...
    result = GateFromLineage(store).evaluate(managed(s3_form(run.model_uri)), conservative)
    assert result is not None and result.passed, result
    assert result.reason == "accuracy 0.95 >= min 0.92; auc 0.97 >= min 0.9 (run run-good)"


def test_gate_fails_on_the_pipeline_evaluation(store: MLMDLineageStore, kfp: KfpWriter,
                                               conservative: RolloutPolicy) -> None:
    run = kfp.run(run_id="run-bad", metrics={"accuracy": 0.9, "auc": 0.97})
    result = GateFromLineage(store).evaluate(managed(s3_form(run.model_uri)), conservative)
    assert result is not None and not result.passed
    assert result.reason == "accuracy 0.9 < min 0.92 (run run-bad)"


def test_gate_fails_for_a_model_no_pipeline_evaluated(store: MLMDLineageStore, kfp: KfpWriter,
                                                      conservative: RolloutPolicy) -> None:
    unevaluated = kfp.run(run_id="run-no-metrics", metrics=None, classification=False)
    for uri in (s3_form(unevaluated.model_uri), "s3://elsewhere/model"):
        result = GateFromLineage(store).evaluate(managed(uri), conservative)
        assert result is not None
        assert (result.passed, result.reason) == (False, f"no recorded evaluation for {uri}")


class CountingStore:
    """Counts reads; raises LineageUnavailable while ``down``."""

    def __init__(self, inner: MLMDLineageStore) -> None:
        self.inner, self.reads, self.down = inner, 0, False

    def evaluation(self, model_uri: str) -> Evaluation | None:
        self.reads += 1
        if self.down:
            raise LineageUnavailable("MLMD is down")
        return self.inner.evaluation(model_uri)


def test_gate_is_unknown_while_mlmd_is_down_and_never_a_pass(
        store: MLMDLineageStore, trained: tuple[KfpRun, KfpRun],
        conservative: RolloutPolicy) -> None:
    counting = CountingStore(store)
    counting.down = True
    gates = GateFromLineage(counting)
    assert waits(gates.evaluate(managed(s3_form(trained[1].model_uri)), conservative),
                 "lineage (ML Metadata) unavailable")
    counting.down = False
    result = gates.evaluate(managed(s3_form(trained[1].model_uri)), conservative)
    assert result is not None and result.passed


def test_a_broken_read_holds_the_model_instead_of_failing_the_pass(
        conservative: RolloutPolicy) -> None:
    class Broken:
        def evaluation(self, model_uri: str) -> Evaluation | None:
            raise KeyError("custom_properties")

    result = GateFromLineage(Broken()).evaluate(managed("s3://m/v2"), conservative)
    assert waits(result, "reading s3://m/v2's evaluation failed: KeyError")


def test_a_pass_is_cached_briefly(store: MLMDLineageStore, trained: tuple[KfpRun, KfpRun],
                                  conservative: RolloutPolicy) -> None:
    now = [0.0]
    counting = CountingStore(store)
    gates = GateFromLineage(counting, ttl_seconds=30, clock=lambda: now[0])
    item = managed(s3_form(trained[1].model_uri))
    for tick in range(6):          # 5 s ticks for 25 s: one read
        now[0] = tick * 5.0
        assert gates.evaluate(item, conservative) is not None
    assert counting.reads == 1
    now[0] = 31.0
    gates.evaluate(item, conservative)
    assert counting.reads == 2


def test_a_policy_without_gate_passes_without_reading(store: MLMDLineageStore) -> None:
    fast = load_file(ROOT / "policies" / "fast.yaml")[0].policy
    assert fast.spec.gates.pre_rollout is None
    counting = CountingStore(store)
    result = GateFromLineage(counting).evaluate(managed("s3://m/v2"), fast)
    assert result is not None and result.passed and counting.reads == 0
