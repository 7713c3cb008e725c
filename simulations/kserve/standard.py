"""KServe's decisions for an InferenceService in Standard mode (``spec.canary[]``), pure.

Pure: no I/O, no clock (``now`` comes in), no randomness. The I/O shell around it is
:mod:`simulations.kserve.controller`, which keeps the Deployments in memory (as it keeps the
Knative Services of :mod:`simulations.kserve.rules`) and writes the HTTPRoutes and the
status on the real API server. The routes themselves are built and judged in
:mod:`simulations.kserve.httproute`. Callers: that controller and the tests.

One call of :func:`reconcile` is one pass of KServe's InferenceService reconciler over a
Standard-mode object, followed by the simulated Kubernetes deployment controller, which in a
real cluster reacts to the Deployments on its own and is modelled as instantaneous:

1. ``reconcileCanaryDeployments``: one Deployment and Service ``{isvc}-{canary}-predictor``
   per ``spec.canary[]`` entry, built from the stable predictor merged with the canary's
   (``buildCanaryPredictor``), with ``canaryReplicaCount`` replicas;
   ``status.canaryStatuses`` (a canary is ready when its Deployment has an available
   replica, as read *before* this pass's update), ``CanaryPredictorReady``, and the deletion
   of every predictor Deployment the spec no longer names (a promoted canary's old stable,
   a removed canary).
2. ``reconcileRawDeployment``: the stable Deployment ``{isvc}[-{predictor.name}]-predictor``
   with ``minReplicas`` lowered by the replicas of the *ready* canaries
   (``adjustStableMinReplicasForCanaries``); ``PropagateRawStatus`` from its conditions;
   ``PropagateModelStatus`` over its pods.
3. The Gateway API ingress (``httproute_reconciler.go``, in ``httproute``): once
   ``PredictorReady`` is True, the routes ``{isvc}-predictor`` and ``{isvc}`` with the stable
   Service as backend and, with canaries, ``applyCanaryWeights``: each READY canary gets its
   ``trafficPercent`` as ``backendRefs`` weight and the stable 100 minus their sum; a canary
   that is not ready is left out whatever its percent. ``IngressReady`` follows the routes'
   ``status.parents``.
4. The deployment controller scales ReplicaSets and writes the Deployments' conditions
   (``Available``, ``Progressing``) from the readiness of their pods.

Promotion without restart: ``spec.predictor.name`` set to the canary's name and the canary
entry removed make the canary's Deployment the stable one (same name, same pod template:
no new ReplicaSet), and the old stable Deployment an orphan that is deleted. Rollback: the
entry removed (its Deployment deleted), or ``trafficPercent: 0`` (a dark launch: no weight,
and without ``minReplicas`` zero replicas, so such a canary is never Ready).

Admission: KServe refuses an invalid ``spec.canary`` in its validating webhook
(``inferenceservice.kserve-webhook-server.validator``, failurePolicy Fail): the write itself
fails with HTTP 403 and ``admission webhook "..." denied the request: <reason>``. The
simulated world has no such webhook, so :func:`admission_error` runs the same checks on the
stored object and the controller keeps serving the last accepted spec, reporting the
refusal in the (simulation-only) condition ``SpecAccepted`` = False, reason
``AdmissionDenied``, with the webhook's message (:func:`admit`).

Followed: kserve/kserve aaac4e294dae2c7b1aa1886447793f3aa1c30912 (after v0.20.0; the commit
of the CRD the world installs):

- ``pkg/apis/serving/v1beta1/inference_service_validation.go``: ``validateCanarySpecs``,
  ``validateDeploymentMode``, ``validatePredictorNameChange``, ``getPredictorStorageURI``;
  ``component.go`` ``validateExactlyOneImplementation``/``ExactlyOneErrorFor``;
  ``predictor.go`` ``GetImplementations``; ``inference_service_defaults.go``
  ``DefaultInferenceService`` (the mode annotation's defaulting and legacy names).
- ``pkg/constants/constants.go``: ``ParseDeploymentMode``, ``PredictorServiceName``,
  ``GetRawServiceLabel``, ``FallbackPrefix``, the header names;
  ``pkg/controller/v1beta1/inferenceservice/utils/utils.go`` ``GetDeploymentMode``.
- ``pkg/controller/v1beta1/inferenceservice/components/predictor.go``: ``Reconcile``
  (Standard branch: canaries first, then the stable), ``reconcileCanaryDeployments``,
  ``canaryReplicaCount``, ``buildCanaryPredictor`` (``mergo.Merge`` ``WithOverride``),
  ``adjustStableMinReplicasForCanaries``, ``buildObjectMeta``.
- ``pkg/controller/v1beta1/inferenceservice/reconcilers/deployment/deployment_reconciler.go``
  ``Reconcile`` (the status used is the Deployment as read before the update) and
  ``reconcilers/raw/raw_kube_reconciler.go`` ``createRawURL``.
- ``pkg/apis/serving/v1beta1/inference_service_status.go``: ``PropagateRawStatus``,
  ``getDeploymentCondition``, ``PropagateModelStatus``, ``CanaryStatus``,
  ``CanaryPredictorReady``, ``SetCondition``/``ClearCondition``.
- ``pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/httproute_reconciler.go``:
  ``reconcileHTTPRouteStatus`` and ``Reconcile`` (the rest is in ``httproute``);
  ``kube_ingress_reconciler.go`` ``createAddress``.
- ``pkg/controller/v1beta1/inferenceservice/controller.go``: ``Reconcile`` (order, the
  ``Stopped`` condition, ``deploymentMode``), ``updateStatus``.

and for the Deployment conditions, kubernetes/kubernetes ``pkg/controller/deployment``
(``syncRolloutStatus``, ``util/deployment_util.go``: reasons and messages).

Not simulated: transformers and explainers, multi-node (``workerSpec``), the
``serving.kserve.io/stop`` annotation, HPA/KEDA (replicas are ``minReplicas``, default 1),
ServingRuntime selection (any model format is served), the gRPC rule of a dual-protocol
Service (the Services here expose HTTP only), ``additionalIngressDomains`` and
``pathTemplate``, and the Kubernetes ``Ingress`` used when ``enableGatewayApi`` is false
(which does not split canary traffic at all): the simulated KServe runs with Gateway API.
One simulated pod set (ReplicaSet) stands for all the replicas it runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

from simulations.kserve import httproute
from simulations.kserve.httproute import is_go_zero
from simulations.kserve.rules import (
    _LEGACY_MODES,
    PENDING,
    PREDICTOR_READY,
    READY,
    READY_REVISION,
    STOPPED,
    Condition,
    InferenceService,
    JsonObject,
    Readiness,
    Settings,
    _IsvcStatus,
    _ModelState,
    _timestamp,
    _update_model_revision_states,
    predictor_service_name,
    propagated_annotations,
    semantically_equal,
)

__all__ = [
    "MODEL_LOAD_FAILED",
    "PENDING",
    "READY_REVISION",
    "Deployment",
    "ReplicaSet",
    "StandardResult",
    "admission_error",
    "admit",
    "deployment_mode",
    "reconcile",
]

# --- names (pkg/constants/constants.go, inference_service_status.go) -------------------------

DEPLOYMENT_MODE_ANNOTATION: Final = "serving.kserve.io/deploymentMode"
STANDARD: Final = "Standard"
KNATIVE: Final = "Knative"
MODEL_MESH: Final = "ModelMesh"
ISVC_VALIDATOR: Final = "inferenceservice.kserve-webhook-server.validator"
CANARY_PREDICTOR_READY: Final = "CanaryPredictorReady"
INGRESS_READY: Final = "IngressReady"
#: Simulation only: where the refusal that KServe's webhook would have answered is shown.
SPEC_ACCEPTED: Final = "SpecAccepted"
ADMISSION_DENIED: Final = "AdmissionDenied"

ISVC_LABEL: Final = "serving.kserve.io/inferenceservice"
COMPONENT_LABEL: Final = "component"
RAW_APP_LABEL: Final = "app"

#: The PredictorSpec implementations, in ``GetImplementations`` order.
_IMPLEMENTATIONS: Final = (
    "xgboost", "pytorch", "triton", "sklearn", "tensorflow", "onnx", "pmml", "lightgbm",
    "paddle", "huggingface", "model",
)  # fmt: skip
_FRAMEWORKS: Final = _IMPLEMENTATIONS[:-1]
#: ``ExactlyOneErrorFor(PredictorSpec)``: every field of the struct but the last, in order.
_EXACTLY_ONE: Final = (
    "exactly one of [Name, SKLearn, XGBoost, Tensorflow, PyTorch, Triton, ONNX, HuggingFace, "
    "PMML, LightGBM, Paddle, Model, StorageUris, StorageContainerName, WorkerSpec, PodSpec] "
    "must be specified in PredictorSpec"
)
_KSERVE_CONTAINER: Final = "kserve-container"
_CUSTOM_STORAGE_URI_ENV: Final = "STORAGE_URI"
#: Predictor fields that shape the Deployment, Service or route but not the pod template:
#: a change to them alone (a replica count, a promotion's rename) creates no ReplicaSet.
_NOT_IN_POD_TEMPLATE: Final = frozenset(
    {
        "name", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
        "autoScaling", "canaryTrafficPercent", "deploymentStrategy", "timeout",
        "containerConcurrency",
    }
)  # fmt: skip
#: The RollingUpdate default KServe sets (``deployment_reconciler.go``): 25 % unavailable.
_MAX_UNAVAILABLE_PERCENT: Final = 25
_POD_HASH_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"  # k8s rand.SafeEncodeString
#: A broken model's pods once the progress deadline passed: the model server exits.
MODEL_LOAD_FAILED: Final = Readiness(
    "False", "CrashLoopBackOff", "the model server exited before it was ready"
)


# --- which mode ---------------------------------------------------------------------------------


def _normalised(mode: str) -> str:
    return _LEGACY_MODES.get(mode, mode)


def defaulted_mode_annotation(annotations: Mapping[str, str], settings: Settings) -> str | None:
    """The mode annotation after KServe's defaulting webhook (``DefaultInferenceService``).

    Legacy values are rewritten (``RawDeployment`` -> ``Standard``, ``Serverless`` ->
    ``Knative``); an absent annotation is added only when the configured default is
    ``Standard`` or ``ModelMesh``.
    """
    value = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    if value is not None:
        return _normalised(value)
    if settings.default_deployment_mode in (STANDARD, MODEL_MESH):
        return settings.default_deployment_mode
    return None


def deployment_mode(
    annotations: Mapping[str, str], status_mode: str, settings: Settings
) -> str:
    """``GetDeploymentMode``: the mode recorded in the status, else the annotation, else the
    configured default (an unknown annotation value also falls back to the default)."""
    if status_mode:
        return _normalised(status_mode)
    value = defaulted_mode_annotation(annotations, settings)
    if value in (STANDARD, KNATIVE, MODEL_MESH):
        return value
    return settings.default_deployment_mode


# --- admission (the validating webhook) -----------------------------------------------------


def _implementations(predictor: Mapping[str, Any]) -> list[str]:
    """``PredictorSpec.GetImplementations``: set framework fields, then custom containers."""
    found = [name for name in _IMPLEMENTATIONS if predictor.get(name) is not None]
    containers = predictor.get("containers") or []
    if containers:
        found += ["custom" for c in containers if c.get("name") == _KSERVE_CONTAINER]
        if not found:
            found.append("custom")
    return found


def _storage_uri_of_implementation(predictor: Mapping[str, Any]) -> str | None:
    """``GetImplementation().GetStorageUri()`` of the first implementation."""
    implementations = _implementations(predictor)
    if not implementations:
        return None
    first = implementations[0]
    if first != "custom":
        uri = (predictor.get(first) or {}).get("storageUri")
        return None if uri is None else str(uri)
    for container in predictor.get("containers") or []:
        if container.get("name") == _KSERVE_CONTAINER:
            for env in container.get("env") or []:
                if env.get("name") == _CUSTOM_STORAGE_URI_ENV:
                    return str(env.get("value") or "")
            break
    return None


def _predictor_storage_uri(predictor: Mapping[str, Any]) -> str:
    """``getPredictorStorageURI``: ``model.storageUri``, else the implementation's."""
    uri = (predictor.get("model") or {}).get("storageUri")
    if uri is not None:
        return str(uri)
    return _storage_uri_of_implementation(predictor) or ""


def _validate_canary_specs(isvc: InferenceService, settings: Settings) -> str | None:
    """``validateCanarySpecs``, in its order; the first failure is the answer."""
    if not isvc.canary:
        return None
    if defaulted_mode_annotation(isvc.annotations, settings) != STANDARD:
        return f"canary is only supported in {STANDARD} deployment mode"
    stable = isvc.predictor
    if len(_implementations(stable)) != 1:
        return _EXACTLY_ONE  # validateExactlyOneImplementation(predictor) runs first
    if _storage_uri_of_implementation(stable) is None and stable.get("model") is None:
        return (
            "canary requires a stable predictor with a model (multi-model serving is not "
            "supported with canary)"
        )
    names: set[str] = set()
    total = 0
    for index, canary in enumerate(isvc.canary):
        predictor: Mapping[str, Any] = canary.get("predictor") or {}
        name = str(predictor.get("name") or "")
        if not name:
            return f"canary[{index}] predictor.name is required"
        if name in names:
            return f'canary predictor.name "{name}" is duplicated'
        names.add(name)
        if name == str(stable.get("name") or ""):
            return f'canary predictor.name "{name}" conflicts with stable predictor name'
        percent = int(canary.get("trafficPercent") or 0)
        if not 0 <= percent <= 100:
            return f'canary "{name}" trafficPercent must be between 0 and 100, got {percent}'
        total += percent
        if len(_implementations(predictor)) != 1:
            return f'canary "{name}" predictor: {_EXACTLY_ONE}'
        if predictor.get("workerSpec") is not None:
            return (
                f'canary "{name}" must not set workerSpec (multi-node is not yet supported '
                "for canary)"
            )
        if int(predictor.get("maxReplicas") or 0) > 0:
            return f'canary "{name}" must not set maxReplicas (canary uses fixed replicas)'
        for field_name in ("scaleTarget", "scaleMetric", "autoScaling"):
            if predictor.get(field_name) is not None:
                return (
                    f'canary "{name}" must not set {field_name} (canary uses fixed replicas)'
                )
        if predictor.get("minReplicas") is not None:
            stable_min = _min_replicas(stable)
            if int(predictor["minReplicas"]) > stable_min:
                return (
                    f'canary "{name}" minReplicas ({int(predictor["minReplicas"])}) must not '
                    f"exceed stable predictor minReplicas ({stable_min})"
                )
    if total > 100:
        return f"sum of canary trafficPercent values ({total}) must be <= 100"
    return None


def _validate_predictor(predictor: Mapping[str, Any]) -> str | None:
    """``validatePredictor``: the stable predictor's model (or framework) spec has no
    ``name``, though the container it embeds has one; a canary's may (and with the 0.20 CRD
    must: ``spec.canary[].predictor.model.name`` is required by its schema)."""
    for implementation in _IMPLEMENTATIONS:
        if (predictor.get(implementation) or {}).get("name"):
            return "the 'name' field is not allowed in standard predictor"
    return None


def admission_error(
    new: InferenceService,
    old: InferenceService | None,
    old_status_mode: str,
    settings: Settings,
) -> str | None:
    """What KServe's validating webhook answers for ``new`` (None: admitted).

    ``old`` is the object as last admitted (None on create) and ``old_status_mode`` its
    ``status.deploymentMode``. Checked as ``ValidateUpdate`` does: the mode may not change
    once recorded, ``predictor.name`` may change only with the model (the promotion), then
    ``validatePredictor`` and ``validateCanarySpecs`` (the rest of ``validateInferenceService``
    is not simulated). The answer is the message the writer would get (HTTP 403).
    """
    reason: str | None = None
    if old is not None:
        annotation = defaulted_mode_annotation(new.annotations, settings)
        recorded = _normalised(old_status_mode) if old_status_mode else ""
        if recorded and annotation is not None and annotation != recorded:
            reason = (
                f"update rejected: deploymentMode cannot be changed from '{recorded}' to "
                f"'{annotation}'"
            )
        elif str(old.predictor.get("name") or "") != str(new.predictor.get("name") or "") and (
            _predictor_storage_uri(old.predictor) == _predictor_storage_uri(new.predictor)
        ):
            reason = "predictor.name change requires a model change (e.g. storageUri)"
    if reason is None:
        reason = _validate_predictor(new.predictor)
    if reason is None:
        reason = _validate_canary_specs(new, settings)
    if reason is None:
        return None
    return f'admission webhook "{ISVC_VALIDATOR}" denied the request: {reason}'


def admit(
    status: Mapping[str, Any], current: Mapping[str, Any], refusal: str | None, now: datetime
) -> JsonObject:
    """Show (or clear) the webhook's refusal on a status KServe computed for the last
    admitted spec; the result equals ``current`` when nothing changed semantically."""
    working = _IsvcStatus(status, _timestamp(now))
    if refusal is None and working.conditions.get(SPEC_ACCEPTED) is None:
        return dict(status)
    if refusal is None:
        working.conditions.clear(SPEC_ACCEPTED)
    else:
        working.conditions.mark_false(SPEC_ACCEPTED, ADMISSION_DENIED, refusal)
    out = working.to_json()
    return copy.deepcopy(dict(current)) if semantically_equal(out, current) else out


def initial_status(status: Mapping[str, Any], mode: str, now: datetime) -> JsonObject:
    """What KServe writes before (or instead of) reconciling children: the conditions
    initialised (``InitializeConditions``) and ``deploymentMode`` (``updateStatus``); what a
    ModelMesh-mode object without transformer gets, and here also an object whose very first
    spec was refused."""
    working = _IsvcStatus(status, _timestamp(now))
    if working.conditions.get(READY) is None:
        working.conditions.initialize()
    working.deployment_mode = mode
    out = working.to_json()
    return copy.deepcopy(dict(status)) if semantically_equal(out, status) else out


# --- replicas and the canary predictor (predictor.go) --------------------------------------


def _min_replicas(predictor: Mapping[str, Any]) -> int:
    """``minReplicas``, KServe's default 1 when unset."""
    value = predictor.get("minReplicas")
    return 1 if value is None else int(value)


def canary_replica_count(stable: Mapping[str, Any], canary: Mapping[str, Any]) -> int:
    """``canaryReplicaCount``: the canary's ``minReplicas``, else
    ceil(stable minReplicas x trafficPercent / 100) (0 for a dark launch)."""
    predictor: Mapping[str, Any] = canary.get("predictor") or {}
    if predictor.get("minReplicas") is not None:
        return int(predictor["minReplicas"])
    percent = int(canary.get("trafficPercent") or 0)
    return math.ceil(_min_replicas(stable) * percent / 100)


def adjusted_stable_replicas(
    isvc: InferenceService,
    canary_statuses: Sequence[Mapping[str, Any]],
    *,
    ready_only: bool = True,
) -> int:
    """``adjustStableMinReplicasForCanaries``: stable minReplicas minus the replicas of the
    canaries that ``canaryStatuses`` reports ready, at least 1; unchanged without canaries
    or without an explicit stable ``minReplicas``. ``ready_only=False`` is v0.20.0's
    ``reconcileRawDeployment``, which took every canary's replicas, ready or not."""
    stable = _min_replicas(isvc.predictor)
    if not isvc.canary or isvc.predictor.get("minReplicas") is None:
        return stable
    ready = {str(s.get("name")): bool(s.get("ready")) for s in canary_statuses}
    taken = sum(
        canary_replica_count(isvc.predictor, c)
        for c in isvc.canary
        if not ready_only or ready.get(str((c.get("predictor") or {}).get("name") or ""), False)
    )
    return max(stable - taken, 1) if taken > 0 else stable


def merge_override(base: Mapping[str, Any], override: Mapping[str, Any]) -> JsonObject:
    """``mergo.Merge(&base, override, mergo.WithOverride)`` on JSON: objects merge key by key,
    a non-empty value of ``override`` wins, lists are replaced whole, empty values do not
    override (Go's zero values; a pointer to a zero value is not told apart here)."""
    out: JsonObject = copy.deepcopy(dict(base))
    for key, value in override.items():
        before = out.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            out[key] = merge_override(before, value)
        elif key not in out or not is_go_zero(value):
            out[key] = copy.deepcopy(value)
    return out


def build_canary_predictor(
    stable: Mapping[str, Any], canary: Mapping[str, Any], replicas: int
) -> JsonObject:
    """``buildCanaryPredictor``: the stable predictor merged with the canary's, autoscaling
    fields cleared and ``minReplicas`` fixed to ``replicas``."""
    merged = merge_override(stable, canary.get("predictor") or {})
    for key in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
        merged.pop(key, None)
    merged["minReplicas"] = replicas
    return merged


# --- Deployments, ReplicaSets and the deployment controller ---------------------------------


@dataclass(frozen=True)
class DeploymentCondition:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class DeploymentStatus:
    """What the deployment controller last wrote (empty for a Deployment just created)."""

    observed_generation: int = 0
    available_replicas: int = 0
    conditions: tuple[DeploymentCondition, ...] = ()

    def condition(self, type_: str) -> DeploymentCondition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True)
class ReplicaSet:
    """The pods of one pod template of a Deployment: ``{deployment}-{pod-template-hash}``.

    ``readiness`` is an input (set by the I/O shell from its timers): ``PENDING`` while the
    pods come up, ``READY_REVISION`` once they serve, ``MODEL_LOAD_FAILED`` once the Deployment's
    progress deadline has passed without that. ``replicas`` 0 means no pods.
    """

    name: str
    template: str
    predictor: Mapping[str, Any]
    replicas: int
    readiness: Readiness = PENDING

    @property
    def serving(self) -> bool:
        return self.replicas > 0 and self.readiness.is_ready


@dataclass(frozen=True)
class Deployment:
    """A predictor Deployment (and its Service, of the same name), held in memory."""

    name: str
    generation: int
    replicas: int
    replica_sets: tuple[ReplicaSet, ...]  # the current template's last
    status: DeploymentStatus = DeploymentStatus()

    @property
    def current(self) -> ReplicaSet:
        return self.replica_sets[-1]

    def pod_sets(self) -> tuple[ReplicaSet, ...]:
        """ReplicaSets that run pods, oldest first."""
        return tuple(rs for rs in self.replica_sets if rs.replicas > 0)


def pod_template(
    isvc: InferenceService, deployment: str, predictor: Mapping[str, Any], settings: Settings
) -> str:
    """A digest of the pod template KServe builds for ``predictor`` (``buildObjectMeta`` and
    the pod spec): the predictor without the fields in ``_NOT_IN_POD_TEMPLATE``, the
    InferenceService's propagated labels and annotations, and the ``app`` label naming the
    Deployment. Rollwise's annotations change it unless they are disallowed (Settings).

    ``model.name`` is the name of the container it embeds, merged over the runtime's
    ``kserve-container`` (``MergeRuntimeContainers``): ``kserve-container`` is the same pod
    as no name, any other name renames the container, which is a new template.
    """
    fields = {k: v for k, v in predictor.items() if k not in _NOT_IN_POD_TEMPLATE}
    spec = fields.get("model")
    if isinstance(spec, Mapping) and spec.get("name") == _KSERVE_CONTAINER:
        fields["model"] = {k: v for k, v in spec.items() if k != "name"}
    canonical = {
        "predictor": fields,
        "labels": {k: v for k, v in isvc.labels.items() if k not in settings.label_disallowed},
        "annotations": propagated_annotations(isvc, settings),
        RAW_APP_LABEL: f"isvc.{deployment}",
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def pod_template_hash(template: str) -> str:
    """A ``pod-template-hash`` for a template digest: ten characters of Kubernetes'
    ``SafeEncodeString`` alphabet, the same for the same template."""
    number = int(template[:16], 16)
    chars = []
    for _ in range(10):
        number, digit = divmod(number, len(_POD_HASH_ALPHABET))
        chars.append(_POD_HASH_ALPHABET[digit])
    return "".join(chars)


def _condition(type_: str, ok: bool, reason: str, message: str) -> DeploymentCondition:
    return DeploymentCondition(type_, "True" if ok else "False", reason, message)


def deployment_controller(deployment: Deployment) -> Deployment:
    """The Kubernetes deployment controller's reaction, done at once.

    The current ReplicaSet is scaled to ``replicas``; older ones keep serving until it is
    ready, then go. Available = available replicas >= replicas - 25 % (rounded down);
    Progressing is True (``NewReplicaSetAvailable`` when done, ``ReplicaSetUpdated`` while
    pods come up) or False with ``ProgressDeadlineExceeded``.
    """
    current = replace(deployment.current, replicas=deployment.replicas)
    done = deployment.replicas == 0 or current.readiness.is_ready
    if done:
        replica_sets: tuple[ReplicaSet, ...] = (current,)
        available = deployment.replicas
    else:
        old = tuple(rs for rs in deployment.replica_sets[:-1] if rs.replicas > 0)
        replica_sets = (*old, current)
        available = sum(rs.replicas for rs in old if rs.readiness.is_ready)
    unavailable = deployment.replicas * _MAX_UNAVAILABLE_PERCENT // 100
    minimum = available >= deployment.replicas - unavailable
    available_condition = _condition(
        "Available",
        minimum,
        "MinimumReplicasAvailable" if minimum else "MinimumReplicasUnavailable",
        "Deployment has minimum availability."
        if minimum
        else "Deployment does not have minimum availability.",
    )
    if done:
        progressing = _condition(
            "Progressing", True, "NewReplicaSetAvailable",
            f'ReplicaSet "{current.name}" has successfully progressed.',
        )  # fmt: skip
    elif current.readiness.is_failed:
        progressing = _condition(
            "Progressing", False, "ProgressDeadlineExceeded",
            f'ReplicaSet "{current.name}" has timed out progressing.',
        )  # fmt: skip
    else:
        progressing = _condition(
            "Progressing", True, "ReplicaSetUpdated",
            f'ReplicaSet "{current.name}" is progressing.',
        )  # fmt: skip
    status = DeploymentStatus(
        observed_generation=deployment.generation,
        available_replicas=available if deployment.replicas else 0,
        conditions=(available_condition, progressing),
    )
    return replace(deployment, replica_sets=replica_sets, status=status)


@dataclass(frozen=True)
class _Desired:
    name: str
    predictor: JsonObject
    replicas: int
    template: str


def _desired(
    isvc: InferenceService, name: str, predictor: JsonObject, replicas: int, settings: Settings
) -> _Desired:
    return _Desired(name, predictor, replicas, pod_template(isvc, name, predictor, settings))


def _apply(existing: Deployment | None, desired: _Desired) -> Deployment:
    """``DeploymentReconciler.Reconcile``: create, or update the spec (a new template is a
    new ReplicaSet; the generation counts spec changes)."""
    if existing is None:
        rs = ReplicaSet(
            f"{desired.name}-{pod_template_hash(desired.template)}",
            desired.template,
            desired.predictor,
            0,
        )
        return Deployment(desired.name, 1, desired.replicas, (rs,))
    changed = False
    replica_sets = existing.replica_sets
    if existing.current.template != desired.template:
        rs_name = f"{desired.name}-{pod_template_hash(desired.template)}"
        kept = tuple(rs for rs in replica_sets if rs.name != rs_name)
        replica_sets = (*kept, ReplicaSet(rs_name, desired.template, desired.predictor, 0))
        changed = True
    if existing.replicas != desired.replicas:
        changed = True
    if not changed:
        return existing
    return replace(
        existing,
        generation=existing.generation + 1,
        replicas=desired.replicas,
        replica_sets=replica_sets,
    )


# --- the InferenceService status (inference_service_status.go) ------------------------------


def _propagate_raw_status(
    status: _IsvcStatus, seen: DeploymentStatus, url: str
) -> None:
    """``PropagateRawStatus`` for the predictor with one Deployment (as read before update)."""
    component = status.predictor()
    ready = Condition(PREDICTOR_READY, "False")
    available = seen.condition("Available")
    progressing = seen.condition("Progressing")
    if available is not None and available.status == "True":
        ready = Condition(PREDICTOR_READY, "True", available.reason, available.message)
    if progressing is not None:
        if progressing.status == "False":
            if progressing.message:
                ready = Condition(
                    PREDICTOR_READY, "False", progressing.reason, progressing.message
                )
        elif progressing.status == "True":
            if progressing.reason == "NewReplicaSetAvailable":
                ready = Condition(
                    PREDICTOR_READY, "True", progressing.reason, progressing.message
                )
            elif available is None or available.status != "True":
                ready = Condition(
                    PREDICTOR_READY, "Unknown", progressing.reason, progressing.message
                )
    if available is not None and available.status == "False":
        ready = Condition(PREDICTOR_READY, "False", available.reason, available.message)
    if ready.status == "True":
        component["url"] = url
    status.conditions.propagate(PREDICTOR_READY, ready)
    status.observed_generation = seen.observed_generation


def _propagate_model_status(status: _IsvcStatus, pods: Sequence[ReplicaSet]) -> None:
    """``PropagateModelStatus`` (raw deployment) over the stable Deployment's pods.

    The simulated pods: pending ones have their storage-initializer running (Loading);
    ready ones serve; after the progress deadline the model server is in CrashLoopBackOff.
    """
    ready_copies = sum(rs.replicas for rs in pods if rs.readiness.is_ready)
    copies = status.model_status.setdefault("copies", {"failedCopies": 0})
    copies.pop("totalCopies", None)
    if ready_copies:
        copies["totalCopies"] = ready_copies
    if not pods:
        _update_model_revision_states(status, _ModelState.PENDING)
        return
    first = pods[0]
    if not first.readiness.is_ready and not first.readiness.is_failed:
        _update_model_revision_states(status, _ModelState.LOADING)
        return
    if status.conditions.is_true(READY):
        _update_model_revision_states(status, _ModelState.LOADED)
        return
    if first.readiness.is_failed:
        _update_model_revision_states(status, _ModelState.FAILED_TO_LOAD)
        status.model_status["lastFailureInfo"] = {
            "reason": "ModelLoadFailed",
            "message": first.readiness.message,
            "exitCode": 1,
        }
    else:
        _update_model_revision_states(status, _ModelState.PENDING)


def _canary_statuses(
    isvc: InferenceService, seen: Mapping[str, DeploymentStatus]
) -> list[JsonObject]:
    """``CanaryStatus`` per entry: ready when the Deployment (as read) has an available
    replica; ``modelStatus`` is never filled in, and Go writes its empty struct."""
    out: list[JsonObject] = []
    for canary in isvc.canary:
        name = str((canary.get("predictor") or {}).get("name") or "")
        deployment = seen.get(predictor_service_name(isvc.name, name))
        out.append(
            {
                "name": name,
                "ready": deployment is not None and deployment.available_replicas > 0,
                "trafficPercent": int(canary.get("trafficPercent") or 0),
                "modelStatus": {"transitionStatus": ""},
            }
        )
    return out


# --- one reconcile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteWrite:
    """A route KServe creates (``resource_version`` empty) or updates (a PUT)."""

    name: str
    body: JsonObject
    resource_version: str = ""


@dataclass(frozen=True)
class StandardResult:
    """What one KServe reconcile of a Standard-mode object decided.

    ``deployments`` are the children after the deployment controller reacted (a deleted one
    is absent); ``route_writes`` the HTTPRoutes to create or update; ``requeue`` is set when a
    Deployment's status changed after KServe read it (KServe ``Owns`` Deployments), and
    ``requeue_after`` when ``reconcileHTTPRouteStatus`` asked to look again in a second.
    """

    status: JsonObject
    deployments: dict[str, Deployment]
    route_writes: tuple[RouteWrite, ...]
    requeue: bool
    requeue_after: float | None = None
    stable_service: str = ""
    services: frozenset[str] = field(default_factory=frozenset)


def _seen_status(deployment: Deployment | None) -> DeploymentStatus:
    return deployment.status if deployment is not None else DeploymentStatus()


def _reconcile_ingress(
    status: _IsvcStatus,
    isvc: InferenceService,
    routes: Mapping[str, Mapping[str, Any] | None],
    stable_service: str,
    settings: Settings,
) -> tuple[tuple[RouteWrite, ...], float | None]:
    """``RawHTTPRouteReconciler.Reconcile``: routes once the predictor is ready, then
    ``IngressReady`` from the routes' status, then ``status.url`` and ``status.address``."""
    writes: list[RouteWrite] = []
    after: dict[str, Mapping[str, Any] | None] = dict(routes)
    if not status.conditions.is_true(PREDICTOR_READY):
        status.conditions.mark_false(INGRESS_READY, "Predictor ingress not created", "")
    else:
        for desired in httproute.desired_routes(isvc, status.canary_statuses, settings):
            name = desired["metadata"]["name"]
            existing = routes.get(name)
            if existing is None:
                writes.append(RouteWrite(name, desired))
                after[name] = desired
            elif httproute.route_needs_update(desired, existing):
                version = str((existing.get("metadata") or {}).get("resourceVersion") or "")
                writes.append(RouteWrite(name, desired, version))
                after[name] = {**desired, "status": existing.get("status") or {}}
    checks = ((predictor_service_name(isvc.name), "Predictor"), (isvc.name, "InferenceService"))
    for name, component in checks:
        route = after.get(name)
        if route is None:
            status.conditions.mark_false(
                INGRESS_READY, f"{component} Deployment NotReady",
                f"{component} HTTPRoute not created",
            )  # fmt: skip
            return tuple(writes), 1.0
        ready, reason, message = httproute.route_ready(route)
        if not ready:
            status.conditions.mark_false(INGRESS_READY, reason, f"{component} {message}")
            return tuple(writes), 1.0
    status.conditions.mark_true(INGRESS_READY)
    status.url = f"http://{httproute.host(isvc.name, isvc.namespace, settings)}"
    status.address = {
        "url": f"http://{stable_service}.{isvc.namespace}.svc.{settings.cluster_domain}"
    }
    return tuple(writes), None


def reconcile(
    isvc: InferenceService,
    status: Mapping[str, Any],
    deployments: Mapping[str, Deployment],
    routes: Mapping[str, Mapping[str, Any] | None],
    now: datetime,
    settings: Settings,
) -> StandardResult:
    """One KServe reconcile of the admitted Standard-mode ``isvc`` (module docstring).

    ``deployments`` are its in-memory predictor Deployments with the readiness of their
    ReplicaSets set; ``routes`` the HTTPRoutes ``{isvc}-predictor`` and ``{isvc}`` as read
    from the API server (None: absent). Nothing is mutated.
    """
    working = _IsvcStatus(status, _timestamp(now))
    if working.conditions.get(READY) is None:
        working.conditions.initialize()
    children = dict(deployments)
    seen = {name: d.status for name, d in children.items()}
    stable_name = predictor_service_name(isvc.name, str(isvc.predictor.get("name") or ""))
    stable_pods = children[stable_name].pod_sets() if stable_name in children else ()

    # reconcileCanaryDeployments
    expected = {stable_name}
    for canary in isvc.canary:
        name = predictor_service_name(isvc.name, str(canary["predictor"]["name"]))
        expected.add(name)
        replicas = canary_replica_count(isvc.predictor, canary)
        predictor = build_canary_predictor(isvc.predictor, canary, replicas)
        children[name] = _apply(children.get(name), _desired(isvc, name, predictor, replicas,
                                                             settings))
    working.canary_statuses = _canary_statuses(isvc, seen)
    if isvc.canary:
        all_ready = all(s["ready"] for s in working.canary_statuses)
        if all_ready:
            working.conditions.mark_true(CANARY_PREDICTOR_READY, "AllCanariesReady", "")
        else:
            working.conditions.mark_false(CANARY_PREDICTOR_READY, "CanariesNotReady", "")
    else:
        working.conditions.clear(CANARY_PREDICTOR_READY)
    for name in [n for n in children if n not in expected]:
        del children[name]  # orphaned predictor Deployment and Service

    # reconcileRawDeployment
    replicas = adjusted_stable_replicas(
        isvc, working.canary_statuses, ready_only=settings.canary_code != "v0.20.0"
    )
    stable = _desired(isvc, stable_name, dict(isvc.predictor), replicas, settings)
    children[stable_name] = _apply(children.get(stable_name), stable)
    component_url = f"http://{httproute.host(stable_name, isvc.namespace, settings)}"
    _propagate_raw_status(working, _seen_status(deployments.get(stable_name)), component_url)
    _propagate_model_status(working, stable_pods)
    if working.conditions.get(STOPPED) is None:
        working.conditions.mark_false(STOPPED, "", "")

    writes, requeue_after = _reconcile_ingress(working, isvc, routes, stable_name, settings)
    working.deployment_mode = STANDARD

    reacted = {name: deployment_controller(d) for name, d in children.items()}
    new_status = working.to_json()
    if semantically_equal(new_status, status):
        new_status = copy.deepcopy(dict(status))
    return StandardResult(
        status=new_status,
        deployments=reacted,
        route_writes=writes,
        requeue=any(reacted[n].status != children[n].status for n in reacted),
        requeue_after=requeue_after,
        stable_service=stable_name,
        services=frozenset(reacted),
    )
