"""An object that opted in but that no traffic router can drive (a KServe InferenceService in
ModelMesh mode, which neither the Knative nor the Standard router drives) is told, never
silently "managed": a Warning Event on it, the failing-objects gauge, ``Unsupported`` in
``rollwise status``; the canary guard leaves it alone; the other rollouts go on. And the
guard itself, through the router, on an object it drives."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.cli.rollouts import status_rows
from controller.kube.fakes import FakeObjects
from controller.kube.webhook import review_response
from controller.policy.model import RolloutPolicy
from controller.policystore import PolicyStore
from controller.rollout.machine import Judgement
from controller.routers import ROUTERS
from tests.fakes import TEST_SEALER
from tests.unit.test_reconciler import T0, isvc, make, progressing_state, store

__all__ = ["store"]
NOW = T0 + timedelta(minutes=3)
MODE = "serving.kserve.io/deploymentMode"


def modelmesh(name: str = "standard") -> dict[str, Any]:
    """An object in a mode no router drives."""
    obj = isvc("s3://m/v2", 10, created="churn-predictor-00002")
    obj["metadata"].update(name=name, uid=f"u-{name}")
    obj["metadata"]["annotations"][MODE] = "ModelMesh"
    return obj


def test_a_standard_mode_object_is_reported_once_and_never_written(store: PolicyStore) -> None:
    healthy = isvc("s3://m/v2", 10, created="churn-predictor-00002", state=progressing_state())
    isvcs = FakeObjects(modelmesh(), healthy, commands_webhook=TEST_SEALER)
    reconciler, events, analyzer = make(store, isvcs, Judgement("pass", "fine"), NOW)
    reconciler.run_once()
    reconciler.run_once()
    assert [name for _, name, _ in isvcs.patches] == ["churn"]   # only the healthy one moved
    [event] = [e for e in events.recorded if e["name"] == "standard"]
    assert event["reason"] == "Unsupported" and event["warning"]
    assert "served in ModelMesh mode" in event["message"]
    assert "canaryTrafficPercent" in event["message"]       # the Knative router's reason
    assert "drives Standard (RawDeployment) mode" in event["message"]   # the Standard one's
    assert [r.service for r in analyzer.requests] == ["churn"]
    assert reconciler.telemetry.objects_failing._value.get() == 1  # type: ignore[attr-defined]


def test_status_shows_it_as_unsupported_with_the_reason() -> None:
    [row] = status_rows([modelmesh()], datetime(2026, 3, 1, tzinfo=UTC))
    assert (row["name"], row["phase"], row["policy"]) == ("standard", "Unsupported", "fast")
    assert "served in ModelMesh mode" in row["lastDecision"]


def _review(old: dict[str, Any], new: dict[str, Any], operation: str = "UPDATE"
            ) -> dict[str, Any]:
    return {"request": {"uid": "r1", "operation": operation, "object": new, "oldObject": old}}


def _guard(policy: RolloutPolicy | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda review: review_response(review, lambda name: policy, ROUTERS)["response"]


def _deployed(obj: dict[str, Any], uri: str, percent: int | None) -> dict[str, Any]:
    new = json.loads(json.dumps(obj))
    new["spec"]["predictor"]["model"]["storageUri"] = uri
    if percent is None:
        new["spec"]["predictor"].pop("canaryTrafficPercent", None)
    else:
        new["spec"]["predictor"]["canaryTrafficPercent"] = percent
    return new


def test_the_guard_holds_a_new_model_at_the_first_step(store: PolicyStore) -> None:
    store.reload()
    guard = _guard(store.get("fast"))
    old = isvc("s3://m/v1", None)
    answer = guard(_review(old, _deployed(old, "s3://m/v2", None)))
    assert answer["allowed"] and answer["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(answer["patch"])) == [
        {"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": 10}]
    assert "canaryTrafficPercent set to 10 (policy fast)" in answer["warnings"][0]


def test_the_guard_lets_through_what_needs_no_hold(store: PolicyStore) -> None:
    store.reload()
    guard = _guard(store.get("fast"))
    old = isvc("s3://m/v1", None)
    for review in (_review(old, _deployed(old, "s3://m/v1", 30)),     # same model
                   _review(old, _deployed(old, "s3://m/v2", 10)),     # already held
                   _review({}, _deployed(old, "s3://m/v2", None), "CREATE")):
        answer = guard(review)
        assert answer["allowed"] and "patch" not in answer


def test_an_unknown_policy_holds_at_zero() -> None:
    old = isvc("s3://m/v1", None)
    answer = _guard(None)(_review(old, _deployed(old, "s3://m/v2", None)))
    assert json.loads(base64.b64decode(answer["patch"]))[0]["value"] == 0


def test_the_guard_leaves_an_unsupported_object_alone(store: PolicyStore) -> None:
    store.reload()
    old = modelmesh()
    answer = _guard(store.get("fast"))(_review(old, _deployed(old, "s3://m/v3", None)))
    assert answer["allowed"] and "patch" not in answer
