"""Tests for simulations.kserve.standard: KServe's Standard-mode rules, case by case.

Each table row names the KServe test or code it comes from (kserve/kserve aaac4e29):
``validation_test`` is pkg/apis/serving/v1beta1/inference_service_validation_test.go,
``predictor_test`` pkg/controller/v1beta1/inferenceservice/components/predictor_test.go,
``canary_controller_test`` pkg/controller/v1beta1/inferenceservice/canary_controller_test.go,
``httproute_test`` .../reconcilers/ingress/httproute_reconciler_test.go and ``utils_test``
.../inferenceservice/utils/utils_test.go. The story tests at the end drive
:func:`standard.reconcile` with a small in-memory API server for the routes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from simulations.kserve import httproute, standard
from simulations.kserve.rules import READY_REVISION, InferenceService, Readiness, Settings
from simulations.kserve.standard import MODEL_LOAD_FAILED, PENDING

T0 = datetime(2026, 9, 1, 12, 0, 0, tzinfo=UTC)
NS = "models"
STANDARD_MODE = {"serving.kserve.io/deploymentMode": "Standard"}
VALIDATOR = (
    'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: '
)


def model(uri: str, fmt: str = "sklearn") -> dict[str, Any]:
    return {"modelFormat": {"name": fmt}, "storageUri": uri}


def canary(name: str, percent: int, uri: str | None = None, **predictor: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "model": model(uri or f"gs://test/model-{name}")}
    spec.update(predictor)
    return {"predictor": spec, "trafficPercent": percent}


def make_isvc(
    canaries: tuple[dict[str, Any], ...] = (),
    *,
    name: str = "foo",
    annotations: Mapping[str, str] | None = None,
    min_replicas: int | None = 4,
    predictor: dict[str, Any] | None = None,
    predictor_name: str = "",
    uri: str = "gs://test/model-v1",
) -> InferenceService:
    spec: dict[str, Any] = predictor if predictor is not None else {"model": model(uri)}
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    if predictor_name:
        spec["name"] = predictor_name
    return InferenceService(
        name=name, namespace=NS, generation=1, predictor=spec,
        annotations=dict(STANDARD_MODE if annotations is None else annotations),
        canary=tuple(canaries), uid="uid-1",
    )  # fmt: skip


# --- which mode: utils_test TestGetDeploymentMode, defaults_test ---------------------------------


@pytest.mark.parametrize(
    ("status_mode", "annotation", "default", "expected"),
    [
        pytest.param("", "Standard", "Knative", "Standard", id="utils_test-Standard"),
        pytest.param("", "Knative", "Standard", "Knative", id="utils_test-ServerlessDeployment"),
        pytest.param("", "ModelMesh", "Knative", "ModelMesh", id="utils_test-ModelMeshDeployment"),
        pytest.param("", None, "Knative", "Knative", id="utils_test-DefaultDeploymentMode"),
        pytest.param("RawDeployment", None, "Knative", "Standard",
                     id="utils_test-LegacyRawDeploymentInStatus"),
        pytest.param("Serverless", None, "Standard", "Knative",
                     id="utils_test-LegacyServerlessInStatus"),
        pytest.param("", "RawDeployment", "Knative", "Standard",
                     id="defaults_test-RawDeployment-normalised"),
        pytest.param("", "Serverless", "Standard", "Knative",
                     id="defaults_test-Serverless-normalised"),
        pytest.param("", None, "Standard", "Standard", id="built-in-default-Standard"),
        pytest.param("", "Bogus", "Standard", "Standard", id="unknown-annotation-uses-default"),
        pytest.param("Standard", "Knative", "Knative", "Standard",
                     id="status-first-whatever-the-annotation"),
    ],
)
def test_deployment_mode_follows_get_deployment_mode(
    status_mode: str, annotation: str | None, default: str, expected: str
) -> None:
    annotations = {} if annotation is None else {standard.DEPLOYMENT_MODE_ANNOTATION: annotation}
    settings = Settings(default_deployment_mode=default)
    assert standard.deployment_mode(annotations, status_mode, settings) == expected


@pytest.mark.parametrize(("given", "read_as"), [("Serverless", "Knative"),
                                                ("RawDeployment", "Standard")])
def test_new_deploy_config_reads_legacy_default_names(given: str, read_as: str) -> None:
    """configmap.go NewDeployConfig (configmap_test TestNewDeployConfig_LegacyDeploymentMode)."""
    assert Settings(default_deployment_mode=given).default_deployment_mode == read_as


def test_new_deploy_config_refuses_an_unknown_default() -> None:
    """configmap_test TestNewDeployConfig_InvalidDeploymentMode."""
    with pytest.raises(ValueError, match="supported modes are Knative, Standard and ModelMesh"):
        Settings(default_deployment_mode="Kubernetes")


# --- admission: validation_test TestValidateCanarySpecs ------------------------------------------


def _knative_isvc() -> InferenceService:
    return make_isvc((canary("v2", 10),), annotations={}, min_replicas=None)


def _custom_container_isvc() -> InferenceService:
    predictor = {"containers": [{"name": "kserve-container", "image": "custom-server:latest"}]}
    return make_isvc((canary("v2", 10),), predictor=predictor, min_replicas=None)


@pytest.mark.parametrize(
    ("isvc", "error"),
    [
        pytest.param(make_isvc(), None, id="No canaries passes validation"),
        pytest.param(make_isvc((canary("v2", 10),)), None, id="Single valid canary"),
        pytest.param(make_isvc((canary("v2", 25), canary("v3", 25))), None,
                     id="Multiple valid canaries"),
        pytest.param(make_isvc((canary("v2", 50), canary("v3", 50))), None,
                     id="Traffic sum = 100 accepted"),
        pytest.param(make_isvc((canary("v2", 0),)), None,
                     id="Traffic percent = 0 accepted (dark launch)"),
        pytest.param(_knative_isvc(), "canary is only supported in Standard deployment mode",
                     id="Canary rejected in Knative mode"),
        pytest.param(make_isvc(({"predictor": {"model": model("gs://test/v2")},
                                 "trafficPercent": 10},)),
                     "canary[0] predictor.name is required", id="Missing predictor.name rejected"),
        pytest.param(make_isvc((canary("v2", 10), canary("v2", 20))),
                     'canary predictor.name "v2" is duplicated',
                     id="Duplicate predictor.name rejected"),
        pytest.param(make_isvc((canary("stable", 10),), predictor_name="stable"),
                     'canary predictor.name "stable" conflicts with stable predictor name',
                     id="Canary name conflicts with stable name rejected"),
        pytest.param(make_isvc((canary("v2", 60), canary("v3", 50))),
                     "sum of canary trafficPercent values (110) must be <= 100",
                     id="Traffic sum > 100 rejected"),
        pytest.param(make_isvc((canary("v2", 10, maxReplicas=5),)),
                     'canary "v2" must not set maxReplicas (canary uses fixed replicas)',
                     id="Canary with maxReplicas rejected"),
        pytest.param(make_isvc((canary("v2", 10, minReplicas=4),)), None,
                     id="Canary minReplicas equal to stable accepted"),
        pytest.param(make_isvc((canary("v2", 10, minReplicas=5),)),
                     'canary "v2" minReplicas (5) must not exceed stable predictor minReplicas (4)',
                     id="Canary minReplicas exceeds stable rejected"),
        pytest.param(make_isvc((canary("v2", 10, minReplicas=1),), min_replicas=None), None,
                     id="Canary minReplicas equal to default stable accepted"),
        pytest.param(make_isvc((canary("v2", 10, minReplicas=2),), min_replicas=None),
                     'canary "v2" minReplicas (2) must not exceed stable predictor minReplicas (1)',
                     id="Canary minReplicas exceeds default stable rejected"),
        pytest.param(make_isvc((canary("v2", 10),), min_replicas=None), None,
                     id="Canary minReplicas accepted when nil (derived from traffic)"),
        pytest.param(make_isvc((canary("v2", 10, workerSpec={}),)),
                     'canary "v2" must not set workerSpec (multi-node is not yet supported for '
                     "canary)", id="Canary with workerSpec rejected"),
        pytest.param(_custom_container_isvc(),
                     "canary requires a stable predictor with a model (multi-model serving is not "
                     "supported with canary)",
                     id="Canary rejected when stable uses custom container (no model)"),
        # Not in the Go table, but in validateCanarySpecs:
        pytest.param(make_isvc((canary("v2", 10, scaleMetric="cpu"),)),
                     'canary "v2" must not set scaleMetric (canary uses fixed replicas)',
                     id="code-scaleMetric-rejected"),
        pytest.param(make_isvc(({"predictor": {"name": "v2"}, "trafficPercent": 10},)),
                     'canary "v2" predictor: exactly one of [Name, SKLearn, XGBoost, Tensorflow, '
                     "PyTorch, Triton, ONNX, HuggingFace, PMML, LightGBM, Paddle, Model, "
                     "StorageUris, StorageContainerName, WorkerSpec, PodSpec] must be specified in "
                     "PredictorSpec", id="code-canary-without-implementation"),
        pytest.param(make_isvc((canary("v2", 10),), annotations={
            standard.DEPLOYMENT_MODE_ANNOTATION: "RawDeployment"}), None,
                     id="defaults-RawDeployment-is-Standard-by-the-time-it-is-validated"),
    ],
)
def test_validate_canary_specs(isvc: InferenceService, error: str | None) -> None:
    found = standard.admission_error(isvc, None, "", Settings())
    assert found == (None if error is None else VALIDATOR + error)


def test_the_stable_model_may_not_have_a_name_but_a_canary_s_may() -> None:
    """validatePredictor (code): so a promotion copies the canary's model without its name,
    which the 0.20 CRD requires on ``spec.canary[].predictor.model``."""
    named = {"model": {**model("gs://test/model-v2"), "name": "kserve-container"}}
    assert standard.admission_error(make_isvc(predictor=named), None, "", Settings()) == (
        VALIDATOR + "the 'name' field is not allowed in standard predictor")
    entry = {"predictor": {"name": "v2", **named}, "trafficPercent": 10}
    assert standard.admission_error(make_isvc((entry,)), None, "", Settings()) is None


def test_canary_without_annotation_is_admitted_when_the_default_is_standard() -> None:
    """DefaultInferenceService adds the annotation when defaultDeploymentMode is Standard."""
    isvc = make_isvc((canary("v2", 10),), annotations={})
    assert standard.admission_error(isvc, None, "", Settings()) is not None
    assert standard.admission_error(
        isvc, None, "", Settings(default_deployment_mode="Standard")) is None


# --- admission on update: validation_test TestValidatePredictorNameChange, validateDeploymentMode


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        pytest.param(("", "gs://test/model-v1"), ("v2", "gs://test/model-v2"), None,
                     id="Name change with model change accepted (promotion)"),
        pytest.param(("", "gs://test/model-v1"), ("v2", "gs://test/model-v1"),
                     "predictor.name change requires a model change (e.g. storageUri)",
                     id="Name change without model change rejected"),
        pytest.param(("v2", "gs://test/model-v1"), ("v2", "gs://test/model-v2"), None,
                     id="Model change without name change accepted (normal update)"),
        pytest.param(("v2", "gs://test/model-v1"), ("v2", "gs://test/model-v1"), None,
                     id="No changes accepted"),
    ],
)
def test_validate_predictor_name_change(
    old: tuple[str, str], new: tuple[str, str], error: str | None
) -> None:
    before = make_isvc(predictor_name=old[0], uri=old[1])
    after = make_isvc(predictor_name=new[0], uri=new[1])
    found = standard.admission_error(after, before, "Standard", Settings())
    assert found == (None if error is None else VALIDATOR + error)


def test_the_deployment_mode_cannot_change_once_recorded() -> None:
    """validateDeploymentMode: the annotation against the mode in the old status."""
    before = make_isvc(annotations={})
    after = make_isvc(annotations=STANDARD_MODE)
    assert standard.admission_error(after, before, "Knative", Settings()) == VALIDATOR + (
        "update rejected: deploymentMode cannot be changed from 'Knative' to 'Standard'")
    assert standard.admission_error(after, before, "", Settings()) is None  # not recorded yet


# --- replicas: predictor.go canaryReplicaCount, predictor_test, canary_controller_test -----------


@pytest.mark.parametrize(
    ("stable_min", "entry", "replicas"),
    [
        pytest.param(4, canary("v2", 25), 1, id="canary_controller_test-create-25pct-of-4"),
        pytest.param(4, canary("v2", 50), 2, id="canary_controller_test-bump-to-50pct-of-4"),
        pytest.param(None, canary("v2", 10), 1, id="code-ceil-10pct-of-default-1"),
        pytest.param(10, canary("v2", 20, minReplicas=3), 3, id="code-explicit-minReplicas"),
        pytest.param(None, canary("v2", 0), 0, id="code-dark-launch-has-no-replicas"),
        pytest.param(3, canary("v2", 50), 2, id="code-ceil-of-1.5"),
    ],
)
def test_canary_replica_count(stable_min: int | None, entry: dict[str, Any], replicas: int) -> None:
    stable = {} if stable_min is None else {"minReplicas": stable_min}
    assert standard.canary_replica_count(stable, entry) == replicas


def _statuses(*ready: tuple[str, bool, int]) -> list[dict[str, Any]]:
    return [{"name": n, "ready": r, "trafficPercent": p} for n, r, p in ready]


@pytest.mark.parametrize(
    ("stable_min", "canaries", "statuses", "expected"),
    [
        pytest.param(10, (), [], 10, id="no canaries - unchanged"),
        pytest.param(10, (canary("v2", 20),), [], 10, id="canary not in status - stable unchanged"),
        pytest.param(10, (canary("v2", 20),), _statuses(("v2", False, 20)), 10,
                     id="canary ready=false - stable unchanged"),
        pytest.param(10, (canary("v2", 20),), _statuses(("v2", True, 20)), 8,
                     id="canary ready=true - stable reduced by computed count"),
        pytest.param(10, (canary("v2", 20), canary("v3", 30)),
                     _statuses(("v2", True, 20), ("v3", False, 30)), 8,
                     id="mixed readiness - only ready canary counted"),
        pytest.param(10, (canary("v2", 20), canary("v3", 30)),
                     _statuses(("v2", True, 20), ("v3", True, 30)), 5,
                     id="all canaries ready - stable reduced by full sum"),
        pytest.param(2, (canary("v2", 50),), _statuses(("v2", True, 50)), 1,
                     id="reduction floored at 1"),
        pytest.param(10, (canary("v2", 20, minReplicas=3),), _statuses(("v2", True, 20)), 7,
                     id="explicit canary minReplicas honored when ready"),
        pytest.param(10, (canary("v2", 20, minReplicas=3),), _statuses(("v2", False, 20)), 10,
                     id="explicit canary minReplicas ignored when not ready"),
        pytest.param(None, (canary("v2", 50),), _statuses(("v2", True, 50)), 1,
                     id="code-no-stable-minReplicas-no-adjustment"),
    ],
)
def test_adjust_stable_min_replicas_for_canaries(
    stable_min: int | None,
    canaries: tuple[dict[str, Any], ...],
    statuses: list[dict[str, Any]],
    expected: int,
) -> None:
    """predictor_test TestAdjustStableMinReplicasForCanaries."""
    isvc = make_isvc(canaries, min_replicas=stable_min)
    assert standard.adjusted_stable_replicas(isvc, statuses) == expected


def test_build_canary_predictor_merges_and_fixes_replicas() -> None:
    """buildCanaryPredictor: mergo.Merge WithOverride, autoscaling cleared, minReplicas fixed
    (canary_controller_test: the canary Deployment runs model-v2, the stable model-v1)."""
    stable: dict[str, Any] = {
        "model": {"modelFormat": {"name": "tensorflow"}, "storageUri": "s3://test/model-v1",
                  "runtimeVersion": "0.14.0"},
        "minReplicas": 4, "maxReplicas": 8, "scaleMetric": "cpu",
        "labels": {"team": "a"}, "containers": [{"name": "x"}],
    }
    entry = {"predictor": {"name": "v2", "model": {"storageUri": "s3://test/model-v2"},
                           "labels": {"canary": "yes"}, "containers": []}, "trafficPercent": 25}
    merged = standard.build_canary_predictor(stable, entry, 1)
    assert merged == {
        "name": "v2",
        "model": {"modelFormat": {"name": "tensorflow"}, "storageUri": "s3://test/model-v2",
                  "runtimeVersion": "0.14.0"},
        "minReplicas": 1,
        "labels": {"team": "a", "canary": "yes"},
        "containers": [{"name": "x"}],  # an empty list does not override
    }
    assert stable["model"]["storageUri"] == "s3://test/model-v1"  # not mutated


# --- the route: httproute_test TestApplyCanaryWeights, TestSemanticHttpRouteEquals ---------------


def _ref(name: str, port: int = 80, **extra: Any) -> dict[str, Any]:
    return {"kind": "Service", "name": name, "namespace": "default", "port": port, **extra}


@pytest.mark.parametrize(
    ("canaries", "statuses", "expected"),
    [
        pytest.param((canary("v2", 20),), _statuses(("v2", True, 20)),
                     [("my-model-predictor", 80), ("my-model-v2-predictor", 20)],
                     id="single canary ready"),
        pytest.param((canary("v2", 20), canary("v3", 30)),
                     _statuses(("v2", True, 20), ("v3", True, 30)),
                     [("my-model-predictor", 50), ("my-model-v2-predictor", 20),
                      ("my-model-v3-predictor", 30)], id="multiple canaries all ready"),
        pytest.param((canary("v2", 20),), _statuses(("v2", False, 20)),
                     [("my-model-predictor", 100)], id="canary not ready - excluded from backends"),
        pytest.param((canary("v2", 20), canary("v3", 30)),
                     _statuses(("v2", True, 20), ("v3", False, 30)),
                     [("my-model-predictor", 80), ("my-model-v2-predictor", 20)],
                     id="mixed readiness - only ready canary gets traffic"),
        pytest.param((canary("v2", 20),), [], [("my-model-predictor", 100)],
                     id="no canary statuses - all canaries excluded"),
        pytest.param((canary("v2", 0),), _statuses(("v2", True, 0)),
                     [("my-model-predictor", 100), ("my-model-v2-predictor", 0)],
                     id="code-ready-dark-launch-weight-0"),
    ],
)
def test_apply_canary_weights(
    canaries: tuple[dict[str, Any], ...],
    statuses: list[dict[str, Any]],
    expected: list[tuple[str, int]],
) -> None:
    isvc = make_isvc(canaries, name="my-model")
    refs = httproute.apply_canary_weights([_ref("my-model-predictor")], isvc, statuses)
    assert [(r["name"], r["weight"]) for r in refs] == expected
    assert all(r["port"] == 80 and r["kind"] == "Service" for r in refs)


def test_apply_canary_weights_per_rule_and_skips_rules_without_backends() -> None:
    """httproute_test: dual-protocol rules all ready (both rules split, their own port);
    skips rules with no backends."""
    isvc = make_isvc((canary("v2", 25),), name="my-model")
    statuses = _statuses(("v2", True, 25))
    for port in (9090, 80):
        refs = httproute.apply_canary_weights([_ref("my-model-predictor", port)], isvc, statuses)
        assert [(r["name"], r["port"], r["weight"]) for r in refs] == [
            ("my-model-predictor", port, 75), ("my-model-v2-predictor", port, 25)]
    assert httproute.apply_canary_weights([], isvc, statuses) == []


@pytest.mark.parametrize(
    ("desired", "existing", "update"),
    [
        pytest.param([_ref("svc", weight=50)] * 2, [_ref("svc", weight=50)] * 2, False,
                     id="httproute_test-same-count-equal"),
        pytest.param([_ref("svc")], [_ref("svc", weight=50)] * 2, True,
                     id="httproute_test-one-unweighted-vs-two-weighted"),
        pytest.param([_ref("svc", weight=50)] * 2, [_ref("svc")], True,
                     id="httproute_test-two-vs-one"),
        pytest.param([_ref("svc")], [_ref("svc", weight=1, group="")], False,
                     id="code-server-defaults-are-ignored-by-deep-derivative"),
        pytest.param([_ref("svc", weight=90)], [_ref("svc", weight=80)], True,
                     id="code-a-weight-change-is-an-update"),
    ],
)
def test_semantic_http_route_equals_counts_backends(
    desired: list[dict[str, Any]], existing: list[dict[str, Any]], update: bool
) -> None:
    def route(refs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"metadata": {}, "spec": {"rules": [{"backendRefs": refs}]}}

    assert httproute.route_needs_update(route(desired), route(existing)) is update


def test_route_ready_is_any_parent_condition_false_and_ignores_generation() -> None:
    """isHTTPRouteReady."""
    assert httproute.route_ready({"status": {}}) == (False, "ParentStatusNotAvailable",
                                                    "HttpRouteNotReady")
    stale = {"status": {"parents": [{"conditions": [
        {"type": "Accepted", "status": "True", "observedGeneration": 1}]}]},
        "metadata": {"generation": 2}}
    assert httproute.route_ready(stale) == (True, "", "")
    assert not httproute.accepted_at_generation(stale)
    refused = {"status": {"parents": [{"conditions": [
        {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound",
         "message": "m"}]}]}}
    assert httproute.route_ready(refused) == (False, "BackendNotFound", "m")


def test_desired_routes_are_what_kserve_writes() -> None:
    """createRawPredictorHTTPRoute / createRawTopLevelHTTPRoute with applyCanaryWeights."""
    isvc = make_isvc((canary("v2", 10),), name="iris", min_replicas=None)
    settings = Settings(annotation_disallowed=frozenset({"rollwise.io/rollout"}))
    isvc = replace(isvc, annotations={**isvc.annotations, "rollwise.io/rollout": "{}"},
                   labels={"team": "a"})
    predictor_route, top = httproute.desired_routes(isvc, _statuses(("v2", True, 10)), settings)
    assert predictor_route == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "iris-predictor",
            "namespace": NS,
            "labels": {"team": "a"},
            "annotations": STANDARD_MODE,  # rollwise.io/rollout is disallowed
            "ownerReferences": [{"apiVersion": "serving.kserve.io/v1beta1",
                                 "kind": "InferenceService", "name": "iris", "uid": "uid-1",
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "hostnames": ["iris-predictor-models.example.com"],
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                            "namespace": "kserve", "name": "kserve-ingress-gateway"}],
            "rules": [{
                "matches": [{"path": {"type": "RegularExpression", "value": "^/.*$"}}],
                "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [
                    {"name": "KServe-Isvc-Name", "value": "iris"},
                    {"name": "KServe-Isvc-Namespace", "value": NS}]}}],
                "backendRefs": [
                    {"kind": "Service", "name": "iris-predictor", "namespace": NS, "port": 80,
                     "weight": 90},
                    {"kind": "Service", "name": "iris-v2-predictor", "namespace": NS,
                     "port": 80, "weight": 10}],
                "timeouts": {"request": "60s"},
            }],
        },
    }
    assert top["metadata"]["name"] == "iris"
    assert top["spec"]["hostnames"] == ["iris-models.example.com"]
    assert top["spec"]["rules"] == predictor_route["spec"]["rules"]


# --- the deployment controller -----------------------------------------------------------------


def _deployment(replicas: int, *sets: tuple[str, int, Readiness]) -> standard.Deployment:
    rs = tuple(standard.ReplicaSet(n, n, {}, r, readiness) for n, r, readiness in sets)
    return standard.Deployment("d", 2, replicas, rs)


@pytest.mark.parametrize(
    ("deployment", "available", "conditions", "remaining"),
    [
        pytest.param(_deployment(1, ("a", 0, PENDING)), 0,
                     [("Available", "False", "MinimumReplicasUnavailable"),
                      ("Progressing", "True", "ReplicaSetUpdated")], ["a"], id="new-pods-pending"),
        pytest.param(_deployment(1, ("a", 1, READY_REVISION)), 1,
                     [("Available", "True", "MinimumReplicasAvailable"),
                      ("Progressing", "True", "NewReplicaSetAvailable")], ["a"], id="ready"),
        pytest.param(_deployment(1, ("a", 1, READY_REVISION), ("b", 0, PENDING)), 1,
                     [("Available", "True", "MinimumReplicasAvailable"),
                      ("Progressing", "True", "ReplicaSetUpdated")], ["a", "b"],
                     id="rolling-update-old-pods-keep-serving"),
        pytest.param(_deployment(1, ("a", 1, READY_REVISION), ("b", 1, READY_REVISION)), 1,
                     [("Available", "True", "MinimumReplicasAvailable"),
                      ("Progressing", "True", "NewReplicaSetAvailable")], ["b"],
                     id="rolling-update-done-old-replicaset-gone"),
        pytest.param(_deployment(1, ("a", 1, MODEL_LOAD_FAILED)), 0,
                     [("Available", "False", "MinimumReplicasUnavailable"),
                      ("Progressing", "False", "ProgressDeadlineExceeded")], ["a"],
                     id="progress-deadline-exceeded"),
        pytest.param(_deployment(0, ("a", 1, READY_REVISION)), 0,
                     [("Available", "True", "MinimumReplicasAvailable"),
                      ("Progressing", "True", "NewReplicaSetAvailable")], ["a"],
                     id="scaled-to-zero-is-available-with-no-replica"),
        pytest.param(_deployment(4, ("a", 4, READY_REVISION), ("b", 0, PENDING)), 4,
                     [("Available", "True", "MinimumReplicasAvailable"),
                      ("Progressing", "True", "ReplicaSetUpdated")], ["a", "b"],
                     id="four-replicas-rolling"),
    ],
)
def test_deployment_controller(
    deployment: standard.Deployment,
    available: int,
    conditions: list[tuple[str, str, str]],
    remaining: list[str],
) -> None:
    reacted = standard.deployment_controller(deployment)
    assert reacted.status.available_replicas == available
    assert [(c.type, c.status, c.reason) for c in reacted.status.conditions] == conditions
    assert [rs.name for rs in reacted.replica_sets] == remaining
    assert reacted.status.observed_generation == 2
    assert reacted.current.replicas == deployment.replicas


# --- the whole story, over an in-memory route store -------------------------------------------


@dataclass
class Cluster:
    """KServe's view of one InferenceService over time: its status, Deployments, routes."""

    settings: Settings = field(default_factory=lambda: Settings(domain="example.com"))
    status: dict[str, Any] = field(default_factory=dict)
    deployments: dict[str, standard.Deployment] = field(default_factory=dict)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    ready: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    accepted: InferenceService | None = None
    route_writes: int = 0
    now: datetime = T0

    def _readiness(self, rs: standard.ReplicaSet) -> Readiness:
        if rs.name in self.ready:
            return READY_REVISION
        return MODEL_LOAD_FAILED if rs.name in self.failed else PENDING

    def _store(self, write: standard.RouteWrite) -> None:
        """The API server: defaults (weight 1, group ""), generation, status kept."""
        self.route_writes += 1
        body = copy.deepcopy(write.body)
        for rule in body["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                ref.setdefault("weight", 1)
                ref.setdefault("group", "")
        old = self.routes.get(write.name)
        generation = 1 if old is None else old["metadata"]["generation"] + int(
            old["spec"] != body["spec"])
        body["metadata"]["generation"] = generation
        body["metadata"]["resourceVersion"] = str(self.route_writes)
        body["status"] = {} if old is None else old["status"]
        self.routes[write.name] = body

    def _gateway(self, services: frozenset[str]) -> bool:
        changed = False
        for route in self.routes.values():
            status = httproute.gateway_status(route, services, "test/gateway", self.now)
            changed |= status != route["status"]
            route["status"] = status
        return changed

    def apply(self, isvc: InferenceService, max_steps: int = 30) -> None:
        """Reconcile until KServe would go quiet, as the controller's loop does."""
        refusal = standard.admission_error(
            isvc, self.accepted, self.status.get("deploymentMode", ""), self.settings)
        if refusal is None:
            self.accepted = isvc
        assert self.accepted is not None
        for _ in range(max_steps):
            self.now += timedelta(seconds=1)
            deployments = {
                name: replace(d, replica_sets=tuple(
                    replace(rs, readiness=self._readiness(rs)) for rs in d.replica_sets))
                for name, d in self.deployments.items()
            }
            result = standard.reconcile(self.accepted, self.status, deployments, dict(
                self.routes), self.now, self.settings)
            for write in result.route_writes:
                self._store(write)
            gateway = self._gateway(result.services)
            status = standard.admit(result.status, self.status, refusal, self.now)
            changed = status != self.status
            self.status, self.deployments = status, result.deployments
            if not (changed or result.requeue or result.route_writes or gateway):
                return
        raise AssertionError("KServe did not settle")

    def bring_up(self, *deployments: str) -> None:
        """The pods of these Deployments' current ReplicaSets become ready."""
        self.ready.update(self.deployments[d].current.name for d in deployments)

    def condition(self, type_: str) -> tuple[str, str]:
        found = [c for c in self.status.get("conditions", []) if c["type"] == type_]
        assert found, f"no {type_} in {self.status.get('conditions')}"
        return found[0]["status"], found[0].get("reason", "")

    def weights(self, route: str = "iris") -> list[tuple[str, int]]:
        refs = self.routes[route]["spec"]["rules"][0]["backendRefs"]
        return [(r["name"], r["weight"]) for r in refs]

    def replicas(self) -> dict[str, int]:
        return {name: d.replicas for name, d in self.deployments.items()}


def isvc_v(canaries: tuple[dict[str, Any], ...] = (), **kwargs: Any) -> InferenceService:
    kwargs.setdefault("name", "iris")
    kwargs.setdefault("uri", "s3://m/v1")
    return make_isvc(canaries, **kwargs)


def deployed() -> Cluster:
    cluster = Cluster()
    cluster.apply(isvc_v())
    assert cluster.condition("PredictorReady") == ("False", "MinimumReplicasUnavailable")
    assert cluster.condition("IngressReady") == ("False", "Predictor Deployment NotReady")
    assert cluster.routes == {}
    cluster.bring_up("iris-predictor")
    cluster.apply(isvc_v())
    return cluster


def test_a_new_standard_isvc_becomes_ready_with_one_route_backend() -> None:
    cluster = deployed()
    assert cluster.condition("Ready") == ("True", "")
    assert cluster.condition("PredictorReady") == ("True", "NewReplicaSetAvailable")
    assert cluster.condition("IngressReady") == ("True", "")
    assert cluster.weights() == [("iris-predictor", 1)]  # no canary: one unweighted backend
    status = cluster.status
    assert status["deploymentMode"] == "Standard"
    assert status["url"] == "http://iris-models.example.com"
    assert status["address"] == {"url": "http://iris-predictor.models.svc.cluster.local"}
    assert status["components"] == {"predictor": {"url": "http://iris-predictor-models.example.com"}}
    assert status["modelStatus"]["transitionStatus"] == "UpToDate"
    assert status["modelStatus"]["copies"] == {"failedCopies": 0, "totalCopies": 4}
    assert "canaryStatuses" not in status
    assert status["observedGeneration"] == 1  # the Deployment's, not the InferenceService's


def test_canary_stepped_10_then_50_then_promoted_without_restart() -> None:
    cluster = deployed()
    writes = cluster.route_writes
    cluster.apply(isvc_v((canary("v2", 10, "s3://m/v2"),)))
    # Not ready yet: no weight for the canary whatever its percent, stable at full size.
    assert cluster.status["canaryStatuses"] == [
        {"name": "v2", "ready": False, "trafficPercent": 10,
         "modelStatus": {"transitionStatus": ""}}]
    assert cluster.condition("CanaryPredictorReady") == ("False", "CanariesNotReady")
    assert cluster.condition("Ready") == ("True", "")  # CanaryPredictorReady is not a dependent
    assert cluster.weights() == [("iris-predictor", 100)]
    assert cluster.replicas() == {"iris-predictor": 4, "iris-v2-predictor": 1}
    canary_rs = cluster.deployments["iris-v2-predictor"].current
    assert canary_rs.predictor["model"]["storageUri"] == "s3://m/v2"

    cluster.bring_up("iris-v2-predictor")
    cluster.apply(isvc_v((canary("v2", 10, "s3://m/v2"),)))
    assert cluster.status["canaryStatuses"][0]["ready"] is True
    assert cluster.condition("CanaryPredictorReady") == ("True", "AllCanariesReady")
    assert cluster.weights() == [("iris-predictor", 90), ("iris-v2-predictor", 10)]
    assert cluster.weights("iris-predictor") == cluster.weights()
    assert cluster.replicas() == {"iris-predictor": 3, "iris-v2-predictor": 1}

    cluster.apply(isvc_v((canary("v2", 50, "s3://m/v2"),)))
    assert cluster.weights() == [("iris-predictor", 50), ("iris-v2-predictor", 50)]
    assert cluster.replicas() == {"iris-predictor": 2, "iris-v2-predictor": 2}
    assert cluster.status["canaryStatuses"][0]["trafficPercent"] == 50
    assert cluster.deployments["iris-v2-predictor"].current == replace(canary_rs, replicas=2,
                                                                        readiness=READY_REVISION)

    # Promotion: predictor.name = the canary's, its model, the entry removed, one write.
    cluster.apply(isvc_v(predictor_name="v2", uri="s3://m/v2"))
    assert set(cluster.deployments) == {"iris-v2-predictor"}  # the old stable is deleted
    promoted = cluster.deployments["iris-v2-predictor"]
    assert [rs.name for rs in promoted.replica_sets] == [canary_rs.name]  # no new pods
    assert promoted.replicas == 4
    assert cluster.weights() == [("iris-v2-predictor", 1)]
    assert "canaryStatuses" not in cluster.status
    assert not [c for c in cluster.status["conditions"] if c["type"] == "CanaryPredictorReady"]
    assert cluster.condition("Ready") == ("True", "")
    assert cluster.status["address"] == {"url": "http://iris-v2-predictor.models.svc.cluster.local"}
    assert cluster.status["url"] == "http://iris-models.example.com"  # unchanged for clients
    assert cluster.route_writes > writes


@pytest.mark.parametrize(("container", "restarts"), [("kserve-container", False), ("v2", True)])
def test_the_canary_model_name_decides_whether_a_promotion_restarts(
    container: str, restarts: bool
) -> None:
    """MergeRuntimeContainers: ``model.name`` names the container over the runtime's
    ``kserve-container``; the stable's model has no name after the promotion."""
    cluster = deployed()
    entry = canary("v2", 10, "s3://m/v2")
    entry["predictor"]["model"]["name"] = container
    cluster.apply(isvc_v((entry,)))
    cluster.bring_up("iris-v2-predictor")
    cluster.apply(isvc_v((entry,)))
    before = cluster.deployments["iris-v2-predictor"].current.name
    cluster.apply(isvc_v(predictor_name="v2", uri="s3://m/v2"))
    after = cluster.deployments["iris-v2-predictor"].current.name
    assert (after != before) is restarts


def test_kserve_v0_20_0_runs_canaries_but_its_route_does_not_split() -> None:
    """v0.20.0 has PR #5672 only: applyCanaryWeights (#5912) and the readiness gating of
    the stable's replicas (#5984) came after the tag."""
    cluster = deployed()
    cluster.settings = Settings(canary_code="v0.20.0")
    cluster.apply(isvc_v((canary("v2", 30, "s3://m/v2"),)))
    assert cluster.status["canaryStatuses"][0]["ready"] is False
    assert cluster.replicas() == {"iris-predictor": 2, "iris-v2-predictor": 2}  # already
    cluster.bring_up("iris-v2-predictor")
    cluster.apply(isvc_v((canary("v2", 30, "s3://m/v2"),)))
    assert cluster.status["canaryStatuses"][0]["ready"] is True
    assert cluster.replicas() == {"iris-predictor": 2, "iris-v2-predictor": 2}
    assert cluster.weights() == [("iris-predictor", 1)]


def test_rollback_removes_the_canary_and_restores_stable_replicas() -> None:
    """canary_controller_test "When removing a canary"."""
    cluster = deployed()
    cluster.apply(isvc_v((canary("v2", 25, "s3://m/v2"),)))
    cluster.bring_up("iris-v2-predictor")
    cluster.apply(isvc_v((canary("v2", 25, "s3://m/v2"),)))
    assert cluster.weights() == [("iris-predictor", 75), ("iris-v2-predictor", 25)]
    cluster.apply(isvc_v())
    assert cluster.replicas() == {"iris-predictor": 4}
    assert cluster.weights() == [("iris-predictor", 1)]
    assert "canaryStatuses" not in cluster.status


def test_a_dark_launch_has_no_replicas_so_it_is_never_ready() -> None:
    """trafficPercent 0 without minReplicas: ceil(4 x 0 / 100) = 0 replicas."""
    cluster = deployed()
    cluster.apply(isvc_v((canary("v2", 0, "s3://m/v2"),)))
    assert cluster.replicas() == {"iris-predictor": 4, "iris-v2-predictor": 0}
    assert cluster.deployments["iris-v2-predictor"].pod_sets() == ()
    assert cluster.status["canaryStatuses"][0]["ready"] is False
    assert cluster.weights() == [("iris-predictor", 100)]
    cluster.apply(isvc_v((canary("v2", 0, "s3://m/v2", minReplicas=1),)))
    cluster.bring_up("iris-v2-predictor")
    cluster.apply(isvc_v((canary("v2", 0, "s3://m/v2", minReplicas=1),)))
    assert cluster.status["canaryStatuses"][0]["ready"] is True
    assert cluster.weights() == [("iris-predictor", 100), ("iris-v2-predictor", 0)]


def test_a_broken_canary_never_gets_traffic() -> None:
    cluster = deployed()
    cluster.apply(isvc_v((canary("v2", 50, "s3://m/broken"),)))
    cluster.failed.add(cluster.deployments["iris-v2-predictor"].current.name)
    cluster.apply(isvc_v((canary("v2", 50, "s3://m/broken"),)))
    assert cluster.status["canaryStatuses"][0]["ready"] is False
    assert cluster.weights() == [("iris-predictor", 100)]
    assert cluster.condition("Ready") == ("True", "")  # the stable still serves


def test_a_refused_spec_is_not_acted_on_and_is_shown() -> None:
    cluster = deployed()
    cluster.apply(isvc_v((canary("v2", 60, "s3://m/v2"), canary("v3", 50, "s3://m/v3"))))
    assert cluster.condition("SpecAccepted") == ("False", "AdmissionDenied")
    message = next(c["message"] for c in cluster.status["conditions"]
                   if c["type"] == "SpecAccepted")
    assert message == VALIDATOR + "sum of canary trafficPercent values (110) must be <= 100"
    assert set(cluster.deployments) == {"iris-predictor"}  # nothing was created for it
    assert cluster.condition("Ready") == ("True", "")
    cluster.apply(isvc_v((canary("v2", 10, "s3://m/v2"),)))
    assert not [c for c in cluster.status["conditions"] if c["type"] == "SpecAccepted"]
    assert set(cluster.deployments) == {"iris-predictor", "iris-v2-predictor"}


def test_a_stable_model_change_rolls_its_deployment() -> None:
    cluster = deployed()
    old = cluster.deployments["iris-predictor"].current.name
    cluster.apply(isvc_v(uri="s3://m/v9"))
    rolling = cluster.deployments["iris-predictor"]
    assert rolling.pod_sets()[0].name == old  # the old pods serve meanwhile
    assert cluster.condition("PredictorReady") == ("True", "MinimumReplicasAvailable")
    cluster.bring_up("iris-predictor")
    cluster.apply(isvc_v(uri="s3://m/v9"))
    assert [rs.name for rs in cluster.deployments["iris-predictor"].replica_sets] != [old]


def test_a_settled_object_writes_nothing_more() -> None:
    cluster = deployed()
    cluster.apply(isvc_v((canary("v2", 10, "s3://m/v2"),)))
    cluster.bring_up("iris-v2-predictor")
    cluster.apply(isvc_v((canary("v2", 10, "s3://m/v2"),)))
    status, writes = copy.deepcopy(cluster.status), cluster.route_writes
    cluster.apply(isvc_v((canary("v2", 10, "s3://m/v2"),)))
    assert (cluster.status, cluster.route_writes) == (status, writes)


def test_rollwise_annotations_do_not_restart_pods_when_disallowed() -> None:
    cluster = deployed()
    first = cluster.deployments["iris-predictor"].current.name
    noisy = replace(isvc_v(), annotations={**STANDARD_MODE, "rollwise.io/rollout": "{...}"})
    cluster.settings = Settings(annotation_disallowed=frozenset({"rollwise.io/rollout"}))
    cluster.apply(noisy)
    assert [rs.name for rs in cluster.deployments["iris-predictor"].replica_sets] == [first]
    cluster.settings = Settings()
    cluster.apply(noisy)  # not disallowed: the pod template changes, a new ReplicaSet
    assert cluster.deployments["iris-predictor"].current.name != first


def test_gateway_status_and_the_split_in_force() -> None:
    cluster = deployed()
    cluster.apply(isvc_v((canary("v2", 10, "s3://m/v2"),)))
    cluster.bring_up("iris-v2-predictor")
    cluster.apply(isvc_v((canary("v2", 10, "s3://m/v2"),)))
    route = cluster.routes["iris"]
    assert httproute.accepted_at_generation(route)
    parent = route["status"]["parents"][0]
    assert parent["parentRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                   "namespace": "kserve", "name": "kserve-ingress-gateway"}
    assert [(c["type"], c["status"], c["observedGeneration"]) for c in parent["conditions"]] == [
        ("Accepted", "True", route["metadata"]["generation"]),
        ("ResolvedRefs", "True", route["metadata"]["generation"])]
    assert httproute.split_from_route(route) == [
        (NS, "iris-predictor", 90), (NS, "iris-v2-predictor", 10)]
    missing = httproute.gateway_status(route, {"iris-predictor"}, "g", T0)
    assert missing["parents"][0]["conditions"][1]["reason"] == "BackendNotFound"
