"""The KServe Knative router on InferenceServices as dicts: what it reads, the exact spec it
writes for each traffic action, what it accepts to drive, and when it says a promotion or
a rollback is in effect."""

from __future__ import annotations

from typing import Any

import pytest

from controller.errors import Unsupported
from controller.rollout.machine import Promote, RestoreSpec, RollBack, SetCanary
from controller.rollout.state import Observation, TrafficTarget
from controller.routers import ROUTERS, choose, spec_hash
from controller.routers.base import TrafficRouter
from controller.routers.kserve_knative import KNATIVE, deploy_patch, storage_uri

MODEL = {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://m/v2"}


def isvc(percent: int | None = 10, *, mode: str | None = None, status_mode: str | None = None,
         **predictor: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": MODEL, **predictor}
    if percent is not None:
        spec["canaryTrafficPercent"] = percent
    annotations = {"rollwise.io/policy": "fast"}
    if mode is not None:
        annotations["serving.kserve.io/deploymentMode"] = mode
    status: dict[str, Any] = {
        "url": "http://churn.models.example.com",
        "conditions": [{"type": "PredictorReady", "status": "True"}],
        "components": {"predictor": {
            "latestCreatedRevision": "churn-predictor-00002",
            "latestReadyRevision": "churn-predictor-00002",
            "latestRolledoutRevision": "churn-predictor-00001",
            "previousRolledoutRevision": "churn-predictor-00000",
            "traffic": [
                {"revisionName": "churn-predictor-00002", "percent": 10,
                 "latestRevision": True},
                {"revisionName": "churn-predictor-00001", "percent": 90, "tag": "prev",
                 "latestRevision": False}]}}}
    if status_mode is not None:
        status["deploymentMode"] = status_mode
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"namespace": "models", "name": "churn", "uid": "u1",
                         "resourceVersion": "7", "annotations": annotations},
            "spec": {"predictor": spec}, "status": status}


def test_the_resource_literals_are_kserves_own() -> None:
    """The router names the resource without importing the kserve SDK (1,600 modules);
    the literals must stay what the SDK says."""
    from kserve import constants

    resource = KNATIVE.resource
    assert (resource.group, resource.version, resource.plural, resource.kind) == (
        constants.KSERVE_GROUP, constants.KSERVE_V1BETA1_VERSION,
        constants.KSERVE_PLURAL_INFERENCESERVICE, constants.KSERVE_KIND_INFERENCESERVICE)
    assert resource.api_version == constants.KSERVE_V1BETA1


def test_it_is_a_traffic_router() -> None:
    router: TrafficRouter = KNATIVE
    assert router in ROUTERS and router.weight_field == "canaryTrafficPercent"


def test_observe_reads_what_kserve_reports() -> None:
    assert KNATIVE.observe(isvc(10)) == Observation(
        spec_hash=spec_hash({"model": MODEL}), storage_uri="s3://m/v2", canary_percent=10,
        latest_created="churn-predictor-00002", latest_ready="churn-predictor-00002",
        latest_rolled_out="churn-predictor-00001",
        previous_rolled_out="churn-predictor-00000", revision_failure=None,
        traffic=(TrafficTarget("churn-predictor-00002", 10, latest=True),
                 TrafficTarget("churn-predictor-00001", 90, tag="prev")),
        url="http://churn.models.example.com")


def test_a_revision_that_cannot_become_ready_says_why() -> None:
    obj = isvc(10)
    obj["status"]["conditions"] = [{"type": "LatestDeploymentReady", "status": "False",
                                    "reason": "RevisionFailed", "message": "image pull"}]
    assert KNATIVE.observe(obj).revision_failure == "RevisionFailed: image pull"


def test_the_spec_is_the_predictor_without_the_weight_so_the_weight_is_no_new_model() -> None:
    assert KNATIVE.spec(isvc(10, minReplicas=2)) == {"model": MODEL, "minReplicas": 2}
    assert KNATIVE.observe(isvc(10)).spec_hash == KNATIVE.observe(isvc(50)).spec_hash
    assert KNATIVE.observe(isvc(10)).spec_hash != KNATIVE.observe(
        isvc(10, minReplicas=2)).spec_hash


def test_the_spec_hash_of_a_known_predictor_never_changes() -> None:
    """Rollout states in the field carry this hash: a different one would start every
    rollout again after an upgrade (the value the code before the seam computed)."""
    predictor = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://m/v1"},
                 "minReplicas": 2, "canaryTrafficPercent": 10}
    obj = {"spec": {"predictor": predictor}}
    assert KNATIVE.observe(obj).spec_hash == "d96febfc81e595887e51e72d7be84cb4"


@pytest.mark.parametrize(("action", "written"), [
    (SetCanary(25), {"predictor": {"canaryTrafficPercent": 25}}),
    (Promote(), {"predictor": {"canaryTrafficPercent": None}}),   # null removes: promotes
    (RollBack(), {"predictor": {"canaryTrafficPercent": 0}}),
])
def test_each_traffic_action_is_one_field_of_the_predictor(action: Any,
                                                           written: dict[str, Any]) -> None:
    assert KNATIVE.write(isvc(10), action) == written


def test_restore_puts_the_good_spec_back_at_zero_and_removes_what_it_had_not() -> None:
    good = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://m/v1"}}
    assert KNATIVE.write(isvc(0, minReplicas=2), RestoreSpec(), last_good=good) == {
        "predictor": {**good, "minReplicas": None, "canaryTrafficPercent": 0}}
    with pytest.raises(ValueError, match="last good"):
        KNATIVE.write(isvc(0), RestoreSpec())


def _serving(rolled_out: str, percents: dict[str, int], spec_percent: int | None
             ) -> Observation:
    return Observation(spec_hash="h", storage_uri="", canary_percent=spec_percent,
                       latest_rolled_out=rolled_out,
                       traffic=tuple(TrafficTarget(r, p) for r, p in percents.items()))


@pytest.mark.parametrize(("obs", "promoted", "rolled_back"), [
    # the promotion is written but KServe has not rolled the canary out yet
    (_serving("m-1", {"m-2": 10, "m-1": 90}, None), False, False),
    # KServe reports the canary rolled out with all the traffic
    (_serving("m-2", {"m-2": 100}, None), True, False),
    # rolled out but the route still splits (never trust a partial status)
    (_serving("m-2", {"m-2": 90, "m-1": 10}, None), False, False),
    # 0% written, KServe moved everything back
    (_serving("m-1", {"m-1": 100, "m-2": 0}, 0), False, True),
    # 0% written, the route has not moved yet
    (_serving("m-1", {"m-1": 90, "m-2": 10}, 0), False, False),
    # the canary serves nothing but the spec still asks for a share
    (_serving("m-1", {"m-1": 100}, 10), False, False),
])
def test_in_effect_is_read_from_status_never_from_the_write(
        obs: Observation, promoted: bool, rolled_back: bool) -> None:
    assert KNATIVE.in_effect(Promote(), obs, "m-2") is promoted
    assert KNATIVE.in_effect(RollBack(), obs, "m-2") is rolled_back


@pytest.mark.parametrize(("mode", "status_mode", "supported"), [
    (None, None, True),                 # KServe's shipped configuration: Knative
    ("Knative", None, True),
    ("Serverless", "Serverless", True),  # the name up to v0.15
    (None, "Knative", True),
    ("Standard", None, False),          # canaryTrafficPercent is ignored (kserve#5335)
    ("RawDeployment", None, False),     # Standard's old name
    (None, "Standard", False),          # the cluster default, as KServe reports it
    (None, "ModelMesh", False),
])
def test_it_drives_knative_mode_only(mode: str | None, status_mode: str | None,
                                     supported: bool) -> None:
    why = KNATIVE.supports(isvc(mode=mode, status_mode=status_mode))
    assert (why is None) is supported
    if not supported:
        assert "canaryTrafficPercent" in why and (mode or status_mode) in why


def test_an_object_no_router_drives_is_unsupported_with_every_reason() -> None:
    assert choose(ROUTERS, isvc()) is KNATIVE
    with pytest.raises(Unsupported, match=r"InferenceService models/churn .*kserve-knative: "
                                          r"it is served in ModelMesh mode.*kserve-standard: "
                                          r"it is served in ModelMesh mode"):
        choose(ROUTERS, isvc(mode="ModelMesh"))


def test_hold_sets_the_first_step_unless_the_object_already_asks_for_it() -> None:
    assert KNATIVE.hold(isvc(None), 10) == [
        {"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": 10}]
    assert KNATIVE.hold(isvc(50), 10) == [
        {"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": 10}]
    assert KNATIVE.hold(isvc(10), 10) is None


def test_deploy_replaces_the_uri_where_the_predictor_keeps_it_and_holds_it_at_zero() -> None:
    artifact = {"rollwise.io/model-artifact-id": "42"}
    patch = deploy_patch(isvc(None), "s3://m/v3", annotations=artifact)
    assert patch == {"metadata": {"resourceVersion": "7", "annotations": artifact},
                     "spec": {"predictor": {"model": {"storageUri": "s3://m/v3"},
                                            "canaryTrafficPercent": 0}}}
    assert deploy_patch(isvc(None), "s3://m/v2") is None
    assert storage_uri({"sklearn": {"storageUri": "s3://old"}}) == "s3://old"
