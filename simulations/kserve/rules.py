"""KServe's decisions for an InferenceService in Serverless (Knative) mode, as a pure function.

Pure: no I/O, no clock (the time to stamp conditions with comes in as ``now``), no randomness.
The I/O shell around it is :mod:`simulations.kserve.controller`.

One call of :func:`reconcile` is one pass of KServe's InferenceService reconciler over one
object, bracketed by the simulated Knative controllers (which in a real cluster react to the
Knative Service on their own, so they are modelled as instantaneous):

1. Knative catches up with revision readiness (:func:`knative_reconcile`).
2. KServe builds the desired Knative Service from the InferenceService and from the
   *previous* ``status.components.predictor`` (``createKnativeService``), then creates or
   updates it (``KsvcReconciler.Reconcile``), which returns the Knative Service status as it
   was *before* the update (the object read by ``Get``; Knative has not reacted yet).
3. KServe propagates that status (``PropagateStatus``, ``PropagateModelStatus``,
   ``PropagateCrossComponentStatus``, the ingress reconciler) into the InferenceService status.
4. Knative reconciles the new Knative Service spec: a new Revision when the revision template
   changed, then the Configuration, Route and Service status (:func:`knative_reconcile`).

If the Knative Service status changed in step 4, KServe would be triggered again (it ``Owns``
Knative Services), so the result says ``requeue``; a status write triggers it too (the
``For(InferenceService)`` watch has no predicate). Repeating until nothing changes reproduces
KServe's real sequence of intermediate statuses, including its rollback heuristic, which
only takes effect one reconcile after the traffic split it reacts to.

Followed: kserve/kserve master at aaac4e294dae2c7b1aa1886447793f3aa1c30912 (v0.20.0-rc0-104,
the commit of the InferenceService CRD the test world installs), compared line by line with
tag v0.15.2 (d623ea29e4a7312e509829f9104209cd6f820268, the SDK line ``pyproject.toml`` pins).
The traffic rules and ``PropagateStatus`` are identical in both. Where they differ, master is
followed: ``status.deploymentMode`` is ``Knative`` (``Serverless`` up to v0.15; see
``Settings.deployment_mode``), conditions start as ``InitializeConditions`` (v0.17 on), and
``modelStatus.copies.totalCopies`` counts ready pods on every pass (v0.15: only when Loaded).

- ``pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go``:
  ``createKnativeService`` (traffic targets), ``semanticEquals``/``reconcileKsvc`` and
  ``Reconcile`` (which status is returned). Identical traffic logic on master.
- ``pkg/apis/serving/v1beta1/inference_service_status.go``: ``PropagateStatus`` (revision
  fields, rollback heuristic, url, address, traffic, conditions, ``ObservedGeneration`` copied
  from the Knative Service, see kserve/kserve#6081), ``SetCondition``,
  ``PropagateCrossComponentStatus``, ``PropagateModelStatus``, ``UpdateModelRevisionStates``,
  the condition set ``NewLivingConditionSet(PredictorReady, IngressReady)``.
- ``pkg/controller/v1beta1/inferenceservice/components/predictor.go``: ``Reconcile`` (pods
  of ``latestCreatedRevision`` for the model status) and the revision template's labels and
  annotations (``buildPredictorResources``, ``buildObjectMeta``).
- ``pkg/controller/v1beta1/inferenceservice/controller.go``: ``Reconcile`` (order of the steps,
  ``InitializeConditions``, the ``Stopped`` condition, ``deploymentMode``), ``updateStatus``
  (write only when changed; no predicate on the ``For`` watch, so a write re-triggers).
- ``pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/ingress_reconciler.go``:
  ``Reconcile``, ``createIngress``, ``getHostBasedServiceUrl`` (``status.url``,
  ``status.address``, ``IngressReady``; Istio virtual host enabled, the default).
- ``pkg/constants/constants.go`` and ``pkg/apis/serving/v1beta1/configmap.go``:
  ``ServiceAnnotationDisallowedList``, ``RevisionTemplateLabelDisallowedList`` (extended by the
  ``inferenceservice-config`` ConfigMap), ``PredictorServiceName``.

and for the Knative side, knative/serving (KServe v0.15.2 builds against v0.44.0) and
knative/pkg at master 98e5ef90 / 521cb33b (the logic below is unchanged since long before):

- ``pkg/apis/serving/v1/{service,configuration,route}_lifecycle.go``: condition sets, reasons,
  messages; ``pkg/reconciler/service/service.go`` (``PropagateConfigurationStatus`` then
  ``PropagateRouteStatus``); ``pkg/reconciler/configuration/configuration.go``
  (``SetLatestCreatedRevisionName``, ``MarkLatestCreatedFailed``,
  ``findAndSetLatestReadyRevision``); ``pkg/reconciler/route/traffic/{traffic,errors}.go``
  (``latestRevision: true`` resolves to the Configuration's *latest ready* revision; status
  entries carry ``revisionName`` also for ``latestRevision`` targets, ``percent`` even when 0,
  and ``url`` for tagged targets; on an unroutable target the status traffic is left as it was).
- knative.dev/pkg ``apis/condition_set.go`` (``SetCondition``, ``MarkTrue``, ``MarkUnknown``,
  ``MarkFalse``, ``InitializeConditions``, happiness recomputation) and
  ``reconciler/reconcile_common.go`` (``PreProcessReconcile``, transition-time grooming).

What is simulated: the predictor component only (no transformer or explainer), Serverless
mode only, no ``serving.kserve.io/stop`` annotation, no gradual rollout
(``rollout-duration``), Knative's own transient states (``OutOfDate``, ``IngressNotConfigured``)
are skipped because the simulated Knative converges at once; only revision readiness takes time.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final, Literal

JsonObject = dict[str, Any]
ConditionStatus = Literal["True", "False", "Unknown"]

# --- names, as in kserve pkg/constants/constants.go ----------------------------------------

PREDICTOR: Final = "predictor"
ENABLE_TAG_ROUTING_ANNOTATION: Final = "serving.kserve.io/enable-tag-routing"
#: ``managedKsvcAnnotations``: moved from the revision template to the Knative Service metadata.
MANAGED_KSVC_ANNOTATIONS: Final = frozenset(
    {"serving.knative.dev/rollout-duration", "serving.knative.openshift.io/enablePassthrough"}
)
#: ``ServiceAnnotationDisallowedList``: InferenceService annotations KServe does not propagate.
#: (Master also lists ``ModelFormatAnnotationKey``, which KServe itself sets, not users.)
SERVICE_ANNOTATION_DISALLOWED: Final = frozenset(
    {
        "autoscaling.knative.dev/min-scale",
        "autoscaling.knative.dev/max-scale",
        "internal.serving.kserve.io/storage-initializer-sourceuri",
        "kubectl.kubernetes.io/last-applied-configuration",
    }
)
#: ``RevisionTemplateLabelDisallowedList``.
REVISION_TEMPLATE_LABEL_DISALLOWED: Final = frozenset({"networking.knative.dev/visibility"})
CANARY_TRAFFIC_PERCENT: Final = "canaryTrafficPercent"
PREV_TAG: Final = "prev"
LATEST_TAG: Final = "latest"

# --- condition types ------------------------------------------------------------------------

READY: Final = "Ready"
PREDICTOR_READY: Final = "PredictorReady"
INGRESS_READY: Final = "IngressReady"
PREDICTOR_ROUTE_READY: Final = "PredictorRouteReady"
PREDICTOR_CONFIGURATION_READY: Final = "PredictorConfigurationReady"
ROUTES_READY: Final = "RoutesReady"
LATEST_DEPLOYMENT_READY: Final = "LatestDeploymentReady"
STOPPED: Final = "Stopped"
CONFIGURATIONS_READY: Final = "ConfigurationsReady"

SEVERITY_ERROR: Final = ""
SEVERITY_INFO: Final = "Info"

_ISVC_DEPENDENTS: Final = (PREDICTOR_READY, INGRESS_READY)
_KSVC_DEPENDENTS: Final = (CONFIGURATIONS_READY, ROUTES_READY)


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Cluster configuration: Knative ``config-domain``, KServe's ``inferenceservice-config``.

    ``annotation_disallowed`` and ``label_disallowed`` are the ConfigMap's
    ``serviceAnnotationDisallowedList`` / ``serviceLabelDisallowedList``, which KServe appends
    to its built-in lists. ``deployment_mode`` is what ``status.deploymentMode`` says for a
    Knative-mode object (``Knative`` from v0.16, ``Serverless`` before).

    ``default_deployment_mode`` is the ConfigMap's ``deploy.defaultDeploymentMode``: the mode
    of an InferenceService without the ``serving.kserve.io/deploymentMode`` annotation.
    KServe's built-in constant (``constants.DefaultDeployment``) is ``Standard``, but the
    shipped ``config/configmap/inferenceservice.yaml`` and the Helm values set ``Serverless``
    (read as ``Knative`` by ``NewDeployConfig``), which is the default here; both are common.
    ``domain`` is also the ingress domain of Standard mode (``ingress.ingressDomain``), whose
    routes point at ``ingress_gateway`` (``ingress.kserveIngressGateway``).

    ``canary_code`` is a KServe version rather than a setting: which code handles
    ``spec.canary``. ``aaac4e29`` (the default; the commit the world's CRD comes from) has
    the route weights (PR #5912) and the readiness gating (PR #5984), both merged after the
    v0.20.0 tag. ``v0.20.0`` (PR #5672 only): the canary Deployments and ``canaryStatuses``
    exist, the stable loses the canaries' replicas whether they are ready or not, and the
    route names only the stable Service, so a canary gets no traffic at any percent.
    """

    domain: str = "example.com"
    url_scheme: str = "http"
    cluster_domain: str = "cluster.local"
    deployment_mode: str = "Knative"
    annotation_disallowed: frozenset[str] = frozenset()
    label_disallowed: frozenset[str] = frozenset()
    default_deployment_mode: str = "Knative"
    ingress_gateway: str = "kserve/kserve-ingress-gateway"
    canary_code: str = "aaac4e29"

    def __post_init__(self) -> None:
        """``NewDeployConfig``: the legacy names are read as the new ones; others refused."""
        mode = _LEGACY_MODES.get(self.default_deployment_mode, self.default_deployment_mode)
        if mode not in ("Knative", "Standard", "ModelMesh"):
            raise ValueError(
                f"invalid default_deployment_mode {self.default_deployment_mode!r}: supported "
                "modes are Knative, Standard and ModelMesh (Serverless, RawDeployment as legacy "
                "names)"
            )
        object.__setattr__(self, "default_deployment_mode", mode)
        if self.canary_code not in ("aaac4e29", "v0.20.0"):
            raise ValueError(f"canary_code must be 'aaac4e29' or 'v0.20.0', got "
                             f"{self.canary_code!r}")
        if self.ingress_gateway.count("/") != 1:
            raise ValueError(f"ingress_gateway must be <namespace>/<name>, got "
                             f"{self.ingress_gateway!r}")


#: ``constants.ParseDeploymentMode``: the legacy names of the two modes.
_LEGACY_MODES: Final = {"RawDeployment": "Standard", "Serverless": "Knative"}


DEFAULT_SETTINGS: Final = Settings()


@dataclass(frozen=True)
class InferenceService:
    """The parts of an InferenceService that KServe's Serverless predictor path reads.

    ``generation`` is carried for completeness only: KServe never writes it anywhere in the
    status (``status.observedGeneration`` is the Knative Service's, kserve/kserve#6081).
    ``canary`` is ``spec.canary`` (KServe 0.20+, Standard mode only) and ``uid`` the object's
    uid (the owner of the HTTPRoutes KServe writes in Standard mode).
    """

    name: str
    namespace: str
    generation: int
    predictor: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    canary: tuple[Mapping[str, Any], ...] = ()
    uid: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> InferenceService:
        """Read the fields from an InferenceService as returned by the API server."""
        metadata: Mapping[str, Any] = obj.get("metadata") or {}
        spec: Mapping[str, Any] = obj.get("spec") or {}
        return cls(
            name=str(metadata["name"]),
            namespace=str(metadata["namespace"]),
            generation=int(metadata.get("generation") or 0),
            predictor=copy.deepcopy(dict(spec.get(PREDICTOR) or {})),
            labels=dict(metadata.get("labels") or {}),
            annotations=dict(metadata.get("annotations") or {}),
            canary=tuple(copy.deepcopy(dict(c)) for c in spec.get("canary") or ()),
            uid=str(metadata.get("uid") or ""),
        )

    @property
    def ksvc_name(self) -> str:
        """``constants.PredictorServiceName``: the child Knative Service's name."""
        return predictor_service_name(self.name, str(self.predictor.get("name") or ""))


def predictor_service_name(isvc_name: str, predictor_name: str = "") -> str:
    """``constants.PredictorServiceName``: the predictor's Knative Service, or in Standard
    mode its Deployment and Service, ``{isvc}[-{predictor name}]-predictor``."""
    if predictor_name:
        return f"{isvc_name}-{predictor_name}-{PREDICTOR}"
    return f"{isvc_name}-{PREDICTOR}"


@dataclass(frozen=True)
class Readiness:
    """A Revision's ``Ready`` condition, as far as the Configuration and Route read it."""

    status: ConditionStatus
    reason: str = ""
    message: str = ""

    @property
    def is_ready(self) -> bool:
        return self.status == "True"

    @property
    def is_failed(self) -> bool:
        return self.status == "False"


#: A revision whose pods are coming up (``ReasonDeploying``, revision_lifecycle.go).
PENDING: Final = Readiness("Unknown", "Deploying")
READY_REVISION: Final = Readiness("True")
#: What Knative reports for a revision that never reaches its initial scale
#: (``PropagateAutoscalerStatus``: ``ProgressDeadlineExceeded``).
NEVER_READY: Final = Readiness(
    "False", "ProgressDeadlineExceeded", "Initial scale was never achieved"
)


@dataclass(frozen=True)
class Revision:
    """A Knative Revision of the predictor: ``<isvc>-predictor-0000N``, N = Configuration gen."""

    name: str
    number: int
    template: str
    predictor: Mapping[str, Any]
    readiness: Readiness = PENDING


@dataclass(frozen=True)
class TrafficTarget:
    """A Knative ``TrafficTarget``, in a Knative Service spec or in its status."""

    percent: int
    latest_revision: bool
    revision_name: str = ""
    tag: str = ""
    url: str = ""

    def to_json(self) -> JsonObject:
        """Serialise as Knative does (``omitempty`` everywhere; pointers kept when set)."""
        out: JsonObject = {}
        if self.tag:
            out["tag"] = self.tag
        if self.revision_name:
            out["revisionName"] = self.revision_name
        out["latestRevision"] = self.latest_revision
        out["percent"] = self.percent
        if self.url:
            out["url"] = self.url
        return out


def _as_status(value: object) -> ConditionStatus:
    if value == "True":
        return "True"
    if value == "False":
        return "False"
    return "Unknown"


@dataclass(frozen=True)
class Condition:
    """A knative.dev/pkg ``apis.Condition``."""

    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    severity: str = SEVERITY_ERROR
    last_transition_time: str = ""

    def same_except_time(self, other: Condition) -> bool:
        return replace(self, last_transition_time="") == replace(other, last_transition_time="")

    def to_json(self) -> JsonObject:
        out: JsonObject = {"type": self.type, "status": self.status}
        if self.severity:
            out["severity"] = self.severity
        if self.last_transition_time:
            out["lastTransitionTime"] = self.last_transition_time
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Condition:
        return cls(
            type=str(data["type"]),
            status=_as_status(data.get("status")),
            reason=str(data.get("reason") or ""),
            message=str(data.get("message") or ""),
            severity=str(data.get("severity") or ""),
            last_transition_time=str(data.get("lastTransitionTime") or ""),
        )


@dataclass(frozen=True)
class KnativeServiceStatus:
    """The Knative Service status fields KServe reads (``knservingv1.ServiceStatus``)."""

    observed_generation: int = 0
    latest_created_revision: str = ""
    latest_ready_revision: str = ""
    url: str = ""
    address_url: str = ""
    traffic: tuple[TrafficTarget, ...] = ()
    conditions: tuple[Condition, ...] = ()

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def to_json(self) -> JsonObject:
        out: JsonObject = {}
        if self.observed_generation:
            out["observedGeneration"] = self.observed_generation
        if self.conditions:
            out["conditions"] = [c.to_json() for c in self.conditions]
        if self.latest_ready_revision:
            out["latestReadyRevisionName"] = self.latest_ready_revision
        if self.latest_created_revision:
            out["latestCreatedRevisionName"] = self.latest_created_revision
        if self.url:
            out["url"] = self.url
        if self.address_url:
            out["address"] = {"url": self.address_url}
        if self.traffic:
            out["traffic"] = [t.to_json() for t in self.traffic]
        return out


@dataclass(frozen=True)
class KnativeService:
    """The simulated child Knative Service ``<isvc>-predictor`` (kept in memory).

    ``generation`` is its own ``metadata.generation``: it counts changes of *its* spec (the
    revision template and the traffic block), which is what KServe copies into the
    InferenceService's ``status.observedGeneration``. ``configuration_generation`` counts
    revision-template changes only and numbers the revisions. Its metadata (labels, the
    ``rollout-duration`` annotation) does not bump the generation and is not modelled.
    """

    name: str
    namespace: str
    generation: int
    configuration_generation: int
    template: str
    traffic: tuple[TrafficTarget, ...]
    status: KnativeServiceStatus = KnativeServiceStatus()


# --- outputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcileResult:
    """What one KServe reconcile decided.

    ``status`` is the InferenceService ``.status`` KServe would write (KServe skips the write
    when it equals the current one). ``knative_service`` is the child after Knative reacted;
    ``traffic`` is its ``spec.traffic``. ``revisions_to_create`` are new (pending) revisions.
    ``requeue`` is set when the Knative Service status changed after KServe read it, which
    triggers another reconcile in a real cluster. ``error`` is set when KServe's reconcile
    failed (the Knative Service is then left alone and ``PredictorReady`` is False).
    """

    status: JsonObject
    knative_service: KnativeService | None
    revisions_to_create: tuple[Revision, ...]
    traffic: tuple[TrafficTarget, ...]
    requeue: bool
    error: str | None = None


# --- knative.dev/pkg apis/condition_set.go ----------------------------------------------------


class _ConditionSet:
    """A living condition set managing a list of conditions, as knative.dev/pkg does.

    Go sorts unhappy dependents by ``lastTransitionTime`` with nanosecond resolution in
    memory; conditions set during this reconcile are ordered by when they were set.
    """

    def __init__(
        self,
        happy: str,
        dependents: tuple[str, ...],
        conditions: Iterable[Condition],
        now: str,
    ) -> None:
        self._happy = happy
        self._dependents = dependents
        self._now = now
        self._items: dict[str, Condition] = {c.type: c for c in conditions}
        self._order: dict[str, int] = {}
        self._seq = 0

    def get(self, type_: str) -> Condition | None:
        return self._items.get(type_)

    def is_true(self, type_: str) -> bool:
        cond = self.get(type_)
        return cond is not None and cond.status == "True"

    def is_false(self, type_: str) -> bool:
        cond = self.get(type_)
        return cond is not None and cond.status == "False"

    def is_unknown(self, type_: str) -> bool:
        """KServe's ``IsConditionUnknown``: a missing condition counts as Unknown."""
        cond = self.get(type_)
        return cond is None or cond.status == "Unknown"

    def conditions(self) -> tuple[Condition, ...]:
        return tuple(sorted(self._items.values(), key=lambda c: c.type))

    def _is_terminal(self, type_: str) -> bool:
        return type_ == self._happy or type_ in self._dependents

    def _severity(self, type_: str) -> str:
        return SEVERITY_ERROR if self._is_terminal(type_) else SEVERITY_INFO

    def _set(self, cond: Condition) -> None:
        old = self._items.get(cond.type)
        if old is not None and old.same_except_time(cond):
            return
        self._seq += 1
        self._order[cond.type] = self._seq
        self._items[cond.type] = replace(cond, last_transition_time=self._now)

    def _make(self, type_: str, status: ConditionStatus, reason: str, message: str) -> Condition:
        return Condition(type_, status, reason, message, self._severity(type_))

    def mark_true(self, type_: str, reason: str = "", message: str = "") -> None:
        self._set(self._make(type_, "True", reason, message))
        unhappy = self._find_unhappy_dependent()
        if unhappy is not None:
            self._set(self._make(self._happy, unhappy.status, unhappy.reason, unhappy.message))
        elif type_ != self._happy:
            self._set(self._make(self._happy, "True", "", ""))

    def mark_unknown(self, type_: str, reason: str, message: str) -> None:
        self._set(self._make(type_, "Unknown", reason, message))
        is_dependent = False
        for dependent in self._dependents:
            if self.is_false(dependent):
                if not self.is_false(self._happy):
                    self.mark_false(self._happy, reason, message)
                return
            if dependent == type_:
                is_dependent = True
        if is_dependent:
            self._set(self._make(self._happy, "Unknown", reason, message))

    def mark_false(self, type_: str, reason: str, message: str) -> None:
        types = [type_, self._happy] if type_ in self._dependents else [type_]
        for each in types:
            self._set(self._make(each, "False", reason, message))

    def clear(self, type_: str) -> None:
        """``ClearCondition``: drop a non-terminal condition (terminal ones cannot be)."""
        if not self._is_terminal(type_):
            self._items.pop(type_, None)

    def initialize(self) -> None:
        happy = self.get(self._happy)
        if happy is None:
            happy = self._make(self._happy, "Unknown", "", "")
            self._set(happy)
        status: ConditionStatus = "True" if happy.status == "True" else "Unknown"
        for dependent in self._dependents:
            if self.get(dependent) is None:
                self._set(self._make(dependent, status, "", ""))

    def propagate(self, type_: str, source: Condition | None) -> None:
        """KServe's ``InferenceServiceStatus.SetCondition`` (``MarkTrueWithReason`` on True;
        v0.15.2 used ``MarkTrue``, the same here since Knative's True conditions have no
        reason)."""
        if source is None:
            return
        if source.status == "Unknown":
            self.mark_unknown(type_, source.reason, source.message)
        elif source.status == "True":
            self.mark_true(type_, source.reason, source.message)
        else:
            self.mark_false(type_, source.reason, source.message)

    def _find_unhappy_dependent(self) -> Condition | None:
        terminal = [
            c
            for c in self._items.values()
            if c.severity == SEVERITY_ERROR and c.type != self._happy
        ]
        terminal.sort(
            key=lambda c: (c.last_transition_time, self._order.get(c.type, 0)), reverse=True
        )
        for status in ("False", "Unknown"):
            for cond in terminal:
                if cond.status == status:
                    return cond
        if len(self._dependents) > len(terminal):
            return Condition("", "Unknown")
        return None


def _without_times(conditions: Iterable[Condition]) -> tuple[Condition, ...]:
    return tuple(replace(c, last_transition_time="") for c in conditions)


def semantically_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """``equality.Semantic.DeepEqual`` on statuses: knative.dev/pkg registers ``VolatileTime``
    (every condition's ``lastTransitionTime``) as always equal."""

    def strip(status: Mapping[str, Any]) -> JsonObject:
        out = dict(status)
        if "conditions" in out:
            out["conditions"] = [
                {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in out["conditions"]
            ]
        return out

    return strip(a) == strip(b)


def _knative_status_equal(a: KnativeServiceStatus, b: KnativeServiceStatus) -> bool:
    return replace(a, conditions=_without_times(a.conditions)) == replace(
        b, conditions=_without_times(b.conditions)
    )


def _groom(
    new: tuple[Condition, ...], old: tuple[Condition, ...], now: str
) -> tuple[Condition, ...]:
    """``groomConditionsTransitionTime``: only conditions that changed get a new time."""
    previous = {c.type: c for c in old}
    out: list[Condition] = []
    for cond in new:
        before = previous.get(cond.type)
        if before is not None and before.same_except_time(cond):
            out.append(before)
        else:
            out.append(replace(cond, last_transition_time=now))
    return tuple(out)


# --- the revision template and the desired Knative Service ------------------------------------


def predictor_template(predictor: Mapping[str, Any]) -> JsonObject:
    """``spec.predictor`` without ``canaryTrafficPercent``, which only shapes the route."""
    return {k: copy.deepcopy(v) for k, v in predictor.items() if k != CANARY_TRAFFIC_PERCENT}


def propagated_annotations(isvc: InferenceService, settings: Settings) -> dict[str, str]:
    """The InferenceService annotations KServe copies onto the predictor (the controller's
    ``utils.Filter(isvc.Annotations, ...)`` with the built-in and configured lists)."""
    disallowed = SERVICE_ANNOTATION_DISALLOWED | settings.annotation_disallowed
    return {k: v for k, v in isvc.annotations.items() if k not in disallowed}


def template_hash(isvc: InferenceService, settings: Settings = DEFAULT_SETTINGS) -> str:
    """A canonical digest of the Knative revision template KServe would build.

    KServe puts into ``spec.template`` the predictor's pod spec and extension fields
    (everything in ``spec.predictor`` except ``canaryTrafficPercent``) *and* the
    InferenceService's own labels and annotations (``buildObjectMeta``: predictor > isvc >
    runtime), minus the disallowed lists and the annotations ``createKnativeService`` moves
    to the Knative Service's metadata. So a label or annotation change on the
    InferenceService also creates a new Revision in a real cluster, unless the key is in
    ``serviceAnnotationDisallowedList`` / ``serviceLabelDisallowedList``.
    """
    label_disallowed = REVISION_TEMPLATE_LABEL_DISALLOWED | settings.label_disallowed
    canonical = {
        "predictor": predictor_template(isvc.predictor),
        "labels": {k: v for k, v in isvc.labels.items() if k not in label_disallowed},
        "annotations": {
            k: v
            for k, v in propagated_annotations(isvc, settings).items()
            if k not in MANAGED_KSVC_ANNOTATIONS
        },
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _canary_percent(predictor: Mapping[str, Any]) -> int | None:
    value = predictor.get(CANARY_TRAFFIC_PERCENT)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"spec.predictor.canaryTrafficPercent must be an integer, got {value!r}")
    return value


def desired_traffic(
    canary_percent: int | None, latest_rolledout_revision: str, tag_routing: bool
) -> tuple[TrafficTarget, ...]:
    """``createKnativeService``'s traffic block.

    With ``canaryTrafficPercent`` set *and* a rolled-out revision: ``latestRevision`` gets P %
    and, when P < 100, the latest rolled-out revision gets the rest under the tag ``prev``.
    Otherwise ("blue-green"): ``latestRevision`` gets 100 %. The ``latest`` tag is added only
    with the ``serving.kserve.io/enable-tag-routing: "true"`` annotation.
    """
    latest_tag = LATEST_TAG if tag_routing else ""
    if canary_percent is not None and latest_rolledout_revision:
        targets = [TrafficTarget(canary_percent, True, tag=latest_tag)]
        if canary_percent < 100:
            targets.append(
                TrafficTarget(
                    100 - canary_percent,
                    False,
                    revision_name=latest_rolledout_revision,
                    tag=PREV_TAG,
                )
            )
        return tuple(targets)
    return (TrafficTarget(100, True, tag=latest_tag),)


def _validate_traffic(traffic: Sequence[TrafficTarget]) -> str | None:
    """The Knative webhook's check on ``spec.traffic`` (a rejected update fails KServe)."""
    for index, target in enumerate(traffic):
        if not 0 <= target.percent <= 100:
            return (
                'admission webhook "validation.webhook.serving.knative.dev" denied the request: '
                f"validation failed: expected 0 <= {target.percent} <= 100: "
                f"spec.traffic[{index}].percent"
            )
    return None


# --- Knative: Configuration, Route, Service --------------------------------------------------


@dataclass(frozen=True)
class _ConfigurationStatus:
    latest_created: str
    latest_ready: str
    ready: Condition


def _configuration_status(
    revisions: Sequence[Revision], previous_latest_ready: str
) -> _ConfigurationStatus:
    """configuration.go ``ReconcileKind`` on its own revisions."""
    ordered = sorted(revisions, key=lambda r: r.number)
    if not ordered:
        return _ConfigurationStatus("", previous_latest_ready, Condition(READY, "Unknown"))
    latest_created = ordered[-1]
    floor = next((r.number for r in ordered if r.name == previous_latest_ready), 0)
    ready = [r for r in ordered if r.readiness.is_ready and r.number >= floor]
    latest_ready = ready[-1].name if ready else previous_latest_ready
    if latest_ready == latest_created.name:
        cond = Condition(READY, "True")
    elif latest_created.readiness.is_failed:
        cond = Condition(
            READY,
            "False",
            "RevisionFailed",
            f'Revision "{latest_created.name}" failed with message: '
            f"{latest_created.readiness.message}.",
        )
    else:
        cond = Condition(READY, "Unknown")
    return _ConfigurationStatus(latest_created.name, latest_ready, cond)


@dataclass(frozen=True)
class _TargetError:
    failure: bool
    message: str


def _resolve_target(
    target: TrafficTarget,
    config_name: str,
    config: _ConfigurationStatus,
    by_name: Mapping[str, Revision],
) -> TrafficTarget | _TargetError:
    """traffic.go ``addConfigurationTarget`` / ``addRevisionTarget``."""
    if target.latest_revision:
        if not config.latest_ready:
            if config.ready.status == "False":
                return _TargetError(
                    True, f'Configuration "{config_name}" does not have any ready Revision.'
                )
            return _TargetError(
                False, f'Configuration "{config_name}" is waiting for a Revision to become ready.'
            )
        return replace(target, revision_name=config.latest_ready)
    revision = by_name.get(target.revision_name)
    if revision is None:
        return _TargetError(
            True, f'Revision "{target.revision_name}" referenced in traffic not found.'
        )
    if revision.readiness.is_ready:
        return target
    if revision.readiness.is_failed:
        return _TargetError(True, f'Revision "{revision.name}" failed to become ready.')
    return _TargetError(False, f'Revision "{revision.name}" is not yet ready.')


def knative_reconcile(
    ksvc: KnativeService,
    revisions: Sequence[Revision],
    now: datetime,
    settings: Settings = DEFAULT_SETTINGS,
) -> KnativeService:
    """The Knative controllers' reaction to the Knative Service, done at once.

    The Configuration's latest ready revision is the newest ready one (not older than the
    previous); the Route resolves ``latestRevision`` targets to it; on an unroutable target
    the Route keeps its previous status traffic and reports ``RevisionMissing``.
    """
    stamp = _timestamp(now)
    old = ksvc.status
    conds = _ConditionSet(READY, _KSVC_DEPENDENTS, old.conditions, stamp)
    conds.initialize()
    if old.observed_generation != ksvc.generation:
        conds.mark_unknown(
            READY, "NewObservedGenFailure", "unsuccessfully observed a new generation"
        )

    config = _configuration_status(revisions, old.latest_ready_revision)
    conds.propagate(CONFIGURATIONS_READY, config.ready)

    by_name = {r.name: r for r in revisions}
    resolved: list[TrafficTarget] = []
    error: _TargetError | None = None
    for target in ksvc.traffic:
        outcome = _resolve_target(target, ksvc.name, config, by_name)
        if isinstance(outcome, _TargetError):
            if error is None or outcome.failure:
                error = outcome
        else:
            url = _tagged_url(outcome.tag, ksvc, settings) if outcome.tag else ""
            resolved.append(replace(outcome, url=url))
    traffic = old.traffic
    address_url = old.address_url
    if error is None:
        traffic = tuple(resolved)
        address_url = f"http://{ksvc.name}.{ksvc.namespace}.svc.{settings.cluster_domain}"
        conds.propagate(ROUTES_READY, Condition(READY, "True"))
    else:
        status: ConditionStatus = "False" if error.failure else "Unknown"
        conds.propagate(ROUTES_READY, Condition(READY, status, "RevisionMissing", error.message))

    new_status = KnativeServiceStatus(
        observed_generation=ksvc.generation,
        latest_created_revision=config.latest_created,
        latest_ready_revision=config.latest_ready,
        url=f"{settings.url_scheme}://{ksvc.name}.{ksvc.namespace}.{settings.domain}",
        address_url=address_url,
        traffic=traffic,
        conditions=_groom(conds.conditions(), old.conditions, stamp),
    )
    if _knative_status_equal(new_status, old):
        return ksvc  # nothing to write: Knative's status update is skipped
    return replace(ksvc, status=new_status)


def _tagged_url(tag: str, ksvc: KnativeService, settings: Settings) -> str:
    """Knative's default tag template ``{{.Tag}}-{{.Name}}`` in the domain template."""
    return f"{settings.url_scheme}://{tag}-{ksvc.name}.{ksvc.namespace}.{settings.domain}"


# --- KServe: the InferenceService status ------------------------------------------------------


class _ModelState(Enum):
    PENDING = "Pending"
    LOADING = "Loading"
    LOADED = "Loaded"
    FAILED_TO_LOAD = "FailedToLoad"


_TRANSITION = {
    _ModelState.PENDING: "InProgress",
    _ModelState.LOADING: "InProgress",
    _ModelState.LOADED: "UpToDate",
    _ModelState.FAILED_TO_LOAD: "BlockedByFailedLoad",
}

_COMPONENT_STRING_FIELDS: Final = (
    "latestReadyRevision",
    "latestCreatedRevision",
    "previousRolledoutRevision",
    "latestRolledoutRevision",
    "url",
    "restUrl",
    "grpcUrl",
)
_PRESERVED_STATUS_FIELDS: Final = ("annotations", "servingRuntimeName", "clusterServingRuntimeName")


class _IsvcStatus:
    """A working copy of ``InferenceServiceStatus``; serialised back as Go would."""

    def __init__(self, status: Mapping[str, Any], now: str) -> None:
        data = copy.deepcopy(dict(status))
        self.conditions = _ConditionSet(
            READY,
            _ISVC_DEPENDENTS,
            (Condition.from_json(c) for c in data.get("conditions") or []),
            now,
        )
        self.observed_generation = int(data.get("observedGeneration") or 0)
        self.url = str(data.get("url") or "")
        self.address: JsonObject | None = data.get("address")
        self.components: dict[str, JsonObject] = dict(data.get("components") or {})
        self.model_status: JsonObject = dict(data.get("modelStatus") or {})
        self.canary_statuses: list[JsonObject] = list(data.get("canaryStatuses") or [])
        self.deployment_mode = str(data.get("deploymentMode") or "")
        self.preserved: JsonObject = {k: data[k] for k in _PRESERVED_STATUS_FIELDS if k in data}

    def predictor(self) -> JsonObject:
        return self.components.setdefault(PREDICTOR, {})

    def to_json(self) -> JsonObject:
        out: JsonObject = {}
        if self.observed_generation:
            out["observedGeneration"] = self.observed_generation
        conditions = self.conditions.conditions()
        if conditions:
            out["conditions"] = [c.to_json() for c in conditions]
        out.update(copy.deepcopy(self.preserved))
        if self.address:
            out["address"] = copy.deepcopy(self.address)
        if self.url:
            out["url"] = self.url
        if self.components:
            out["components"] = {k: _clean_component(v) for k, v in self.components.items()}
        out["modelStatus"] = _clean_model_status(self.model_status)
        if self.canary_statuses:
            out["canaryStatuses"] = copy.deepcopy(self.canary_statuses)
        if self.deployment_mode:
            out["deploymentMode"] = self.deployment_mode
        return out


def _clean_component(component: Mapping[str, Any]) -> JsonObject:
    """``ComponentStatusSpec``'s JSON: every field is ``omitempty``."""
    out: JsonObject = {}
    for key in _COMPONENT_STRING_FIELDS:
        if component.get(key):
            out[key] = component[key]
    if component.get("traffic"):
        out["traffic"] = copy.deepcopy(component["traffic"])
    if component.get("address"):
        out["address"] = copy.deepcopy(component["address"])
    return out


def _clean_model_status(model_status: Mapping[str, Any]) -> JsonObject:
    """``ModelStatus``'s JSON: ``transitionStatus`` always, the rest ``omitempty``."""
    out: JsonObject = {"transitionStatus": model_status.get("transitionStatus", "")}
    for key in ("states", "lastFailureInfo", "copies"):
        if model_status.get(key) is not None:
            out[key] = copy.deepcopy(model_status[key])
    return out


def propagate_status(
    status: Mapping[str, Any], kstatus: KnativeServiceStatus, now: datetime
) -> JsonObject:
    """``PropagateStatus`` alone, on an InferenceService status in its JSON form."""
    working = _IsvcStatus(status, _timestamp(now))
    _propagate_status(working, kstatus)
    return working.to_json()


def _propagate_status(status: _IsvcStatus, kstatus: KnativeServiceStatus) -> None:
    """``InferenceServiceStatus.PropagateStatus`` for the predictor.

    The rollback heuristic: for the status traffic entry that is the ``latestRevision`` target
    and points at the latest ready revision --
    if ``latestRolledoutRevision`` differs from it and the entry has 100 %, it becomes the
    rolled-out revision (the old one moves to ``previousRolledoutRevision``); if it *is* the
    rolled-out revision, is also the latest created, has less than 100 % and all entries naming
    it add up to 100 % (the split is over one revision), ``latestRolledoutRevision`` is reset to
    ``previousRolledoutRevision`` (when there is one).
    """
    spec = status.predictor()
    spec["latestCreatedRevision"] = kstatus.latest_created_revision
    revision_traffic: dict[str, int] = {}
    for target in kstatus.traffic:
        revision_traffic[target.revision_name] = (
            revision_traffic.get(target.revision_name, 0) + target.percent
        )
    latest_ready = kstatus.latest_ready_revision
    for target in kstatus.traffic:
        if target.revision_name != latest_ready or not target.latest_revision:
            continue
        rolled_out = str(spec.get("latestRolledoutRevision") or "")
        if rolled_out != latest_ready:
            if target.percent == 100:
                spec["previousRolledoutRevision"] = rolled_out
                spec["latestRolledoutRevision"] = latest_ready
        elif (
            latest_ready == kstatus.latest_created_revision
            and target.percent < 100
            and revision_traffic.get(target.revision_name) == 100
            and spec.get("previousRolledoutRevision")
        ):
            spec["latestRolledoutRevision"] = spec["previousRolledoutRevision"]
    spec["latestReadyRevision"] = latest_ready

    ready = kstatus.condition(READY)
    if ready is not None and ready.status == "True":
        if kstatus.address_url:
            spec["address"] = {"url": kstatus.address_url}
        if kstatus.url:
            spec["url"] = kstatus.url
    status.conditions.propagate(PREDICTOR_READY, ready)
    status.conditions.propagate(PREDICTOR_ROUTE_READY, kstatus.condition(ROUTES_READY))
    spec["traffic"] = [t.to_json() for t in kstatus.traffic]
    status.conditions.propagate(
        PREDICTOR_CONFIGURATION_READY, kstatus.condition(CONFIGURATIONS_READY)
    )
    status.observed_generation = kstatus.observed_generation


def _update_model_revision_states(status: _IsvcStatus, state: _ModelState) -> None:
    """``UpdateModelRevisionStates``."""
    model = status.model_status
    states = model.get("states")
    if states is None:
        model["states"] = {"activeModelState": "", "targetModelState": state.value}
    else:
        states["targetModelState"] = state.value
    model["transitionStatus"] = _TRANSITION[state]
    if state is _ModelState.LOADED:
        model["states"]["activeModelState"] = _ModelState.LOADED.value


def _propagate_model_status(
    status: _IsvcStatus, kstatus: KnativeServiceStatus, revisions: Sequence[Revision]
) -> None:
    """``PropagateModelStatus`` over simulated pods of ``latestCreatedRevision``.

    The simulated pods: a ready revision has one running, ready pod; a pending one has one pod
    whose storage-initializer is still running; a failed one has been scaled to zero.
    ``copies.totalCopies`` counts ready pods (``countReadyPods``).
    """
    spec = status.predictor()
    latest_created = str(spec.get("latestCreatedRevision") or "")
    revision = next((r for r in revisions if r.name == latest_created), None)
    has_pod = revision is not None and not revision.readiness.is_failed
    ready_pods = int(revision is not None and revision.readiness.is_ready)
    copies = status.model_status.setdefault("copies", {"failedCopies": 0})
    copies.pop("totalCopies", None)
    if ready_pods:
        copies["totalCopies"] = ready_pods
    if not has_pod:
        failed = any(c.status == "False" for c in kstatus.conditions)
        _update_model_revision_states(
            status, _ModelState.FAILED_TO_LOAD if failed else _ModelState.PENDING
        )
    elif not ready_pods:
        _update_model_revision_states(status, _ModelState.LOADING)
    elif status.conditions.is_true(READY) and latest_created == spec.get("latestReadyRevision"):
        _update_model_revision_states(status, _ModelState.LOADED)
    else:
        _update_model_revision_states(status, _ModelState.PENDING)


def _propagate_cross_component_status(
    status: _IsvcStatus, condition_type: str, component_condition: str
) -> None:
    """``PropagateCrossComponentStatus`` for a predictor-only InferenceService."""
    if status.conditions.is_true(component_condition):
        status.conditions.mark_true(condition_type)
        return
    reason = f"{component_condition} not ready"
    if status.conditions.is_unknown(component_condition):
        status.conditions.mark_unknown(condition_type, reason, "")
    else:
        status.conditions.mark_false(condition_type, reason, "")


def _reconcile_ingress(status: _IsvcStatus, isvc: InferenceService, settings: Settings) -> None:
    """The Knative-mode ingress reconciler with the Istio virtual host (KServe's default).

    ``createIngress`` mirrors ``PredictorReady`` into ``IngressReady`` while the predictor is
    not ready; once the predictor has had a URL (it is kept), ``status.url`` is that URL
    without ``-predictor`` and ``IngressReady`` is True.
    """
    if not status.conditions.is_true(PREDICTOR_READY):
        reason = "Predictor ingress not created"
        if status.conditions.is_unknown(PREDICTOR_READY):
            status.conditions.mark_unknown(INGRESS_READY, reason, "")
        else:
            status.conditions.mark_false(INGRESS_READY, reason, "")
    predictor_url = str(status.predictor().get("url") or "")
    if not predictor_url:
        return
    scheme_less = predictor_url.split("://", 1)[-1]
    url = f"{settings.url_scheme}://{scheme_less}"
    if "-default" in url:
        url = url.replace(f"-{PREDICTOR}-default", "", 1)
    else:
        url = url.replace(f"-{PREDICTOR}", "", 1)
    status.url = url
    status.address = {"url": f"http://{isvc.name}.{isvc.namespace}.svc.{settings.cluster_domain}"}
    status.conditions.mark_true(INGRESS_READY)


# --- one reconcile ----------------------------------------------------------------------------


def _timestamp(now: datetime) -> str:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _apply_desired(
    isvc: InferenceService,
    existing: KnativeService | None,
    template: str,
    traffic: tuple[TrafficTarget, ...],
) -> tuple[KnativeService, KnativeServiceStatus, Revision | None]:
    """``KsvcReconciler.Reconcile``: create or update; returns the status KServe sees.

    On create that is the desired object's empty status; on update, the status of the
    object as read before the update (Knative has not reacted yet).
    """
    if existing is None:
        created = KnativeService(
            name=isvc.ksvc_name,
            namespace=isvc.namespace,
            generation=1,
            configuration_generation=1,
            template=template,
            traffic=traffic,
        )
        return created, KnativeServiceStatus(), _new_revision(created, isvc.predictor)
    if (existing.template, existing.traffic) == (template, traffic):
        return existing, existing.status, None
    new_template = existing.template != template
    updated = replace(
        existing,
        generation=existing.generation + 1,
        configuration_generation=existing.configuration_generation + int(new_template),
        template=template,
        traffic=traffic,
    )
    revision = _new_revision(updated, isvc.predictor) if new_template else None
    return updated, existing.status, revision


def _new_revision(ksvc: KnativeService, predictor: Mapping[str, Any]) -> Revision:
    number = ksvc.configuration_generation
    return Revision(
        name=f"{ksvc.name}-{number:05d}",
        number=number,
        template=ksvc.template,
        predictor=predictor_template(predictor),
        readiness=PENDING,
    )


def _tag_routing(isvc: InferenceService, settings: Settings) -> bool:
    """``EnableRoutingTagAnnotationKey`` among the annotations given to the Knative Service."""
    annotations = {
        **propagated_annotations(isvc, settings),
        **(isvc.predictor.get("annotations") or {}),
    }
    return annotations.get(ENABLE_TAG_ROUTING_ANNOTATION) == "true"


def reconcile(
    isvc: InferenceService,
    status: Mapping[str, Any],
    knative_service: KnativeService | None,
    revisions: Sequence[Revision],
    now: datetime,
    settings: Settings = DEFAULT_SETTINGS,
) -> ReconcileResult:
    """One KServe reconcile of ``isvc`` (see the module docstring for the steps).

    ``status`` is the InferenceService's current ``.status``; ``knative_service`` the
    simulated child (None before the first reconcile); ``revisions`` its revisions with their
    current readiness. Nothing is mutated; everything new is in the result.
    """
    stamp = _timestamp(now)
    revisions = tuple(revisions)
    ksvc = knative_reconcile(knative_service, revisions, now, settings) if knative_service else None
    working = _IsvcStatus(status, stamp)
    if working.conditions.get(READY) is None:
        working.conditions.initialize()
    predictor_status: Mapping[str, Any] = working.components.get(PREDICTOR) or {}
    rolled_out = str(predictor_status.get("latestRolledoutRevision") or "")

    try:
        canary = _canary_percent(isvc.predictor)
    except ValueError as exc:
        return _failed(working, status, ksvc, str(exc), settings)
    traffic = desired_traffic(canary, rolled_out, _tag_routing(isvc, settings))
    rejected = _validate_traffic(traffic)
    if rejected is not None:
        return _failed(working, status, ksvc, rejected, settings)
    applied, seen, created = _apply_desired(isvc, ksvc, template_hash(isvc, settings), traffic)
    all_revisions = revisions + ((created,) if created else ())

    _propagate_status(working, seen)
    _propagate_model_status(working, seen, all_revisions)
    if working.conditions.get(STOPPED) is None:
        working.conditions.mark_false(STOPPED, "", "")
    _propagate_cross_component_status(working, ROUTES_READY, PREDICTOR_ROUTE_READY)
    _propagate_cross_component_status(
        working, LATEST_DEPLOYMENT_READY, PREDICTOR_CONFIGURATION_READY
    )
    _reconcile_ingress(working, isvc, settings)
    working.deployment_mode = settings.deployment_mode

    reacted = knative_reconcile(applied, all_revisions, now, settings)
    return ReconcileResult(
        status=_unless_semantically_equal(working.to_json(), status),
        knative_service=reacted,
        revisions_to_create=(created,) if created else (),
        traffic=applied.traffic,
        requeue=not _knative_status_equal(reacted.status, seen),
    )


def _unless_semantically_equal(new: JsonObject, current: Mapping[str, Any]) -> JsonObject:
    """``updateStatus`` skips the write when the statuses are semantically equal."""
    return copy.deepcopy(dict(current)) if semantically_equal(new, current) else new


def _failed(
    working: _IsvcStatus,
    current: Mapping[str, Any],
    ksvc: KnativeService | None,
    rejection: str,
    settings: Settings,
) -> ReconcileResult:
    """The Knative webhook rejected the update: the predictor reconcile fails.

    ``Predictor.Reconcile`` marks ``PredictorReady`` False with ``ReconcileFailed`` and the
    controller writes the status as it stands (``updateStatus`` on the error path).
    """
    message = f"fails to reconcile predictor: fails to reconcile knative service: {rejection}"
    working.predictor()
    working.conditions.mark_false(PREDICTOR_READY, "ReconcileFailed", message)
    working.deployment_mode = settings.deployment_mode
    return ReconcileResult(
        status=_unless_semantically_equal(working.to_json(), current),
        knative_service=ksvc,
        revisions_to_create=(),
        traffic=ksvc.traffic if ksvc else (),
        requeue=False,
        error=message,
    )


# --- running reconciles until KServe would stop ------------------------------------------------


@dataclass(frozen=True)
class Settled:
    """The state after :func:`settle`: what a real cluster shows once KServe has gone quiet."""

    status: JsonObject
    knative_service: KnativeService | None
    revisions: tuple[Revision, ...]
    steps: int
    error: str | None = None


def settle(
    isvc: InferenceService,
    status: Mapping[str, Any],
    knative_service: KnativeService | None,
    revisions: Sequence[Revision],
    now: datetime,
    *,
    readiness: Callable[[Revision], Readiness] | None = None,
    settings: Settings = DEFAULT_SETTINGS,
    max_steps: int = 50,
) -> Settled:
    """Reconcile again while KServe would be re-triggered (status written, or ``requeue``).

    ``readiness``, when given, sets each revision's readiness before every step (new revisions
    start ``PENDING`` otherwise). Raises ``RuntimeError`` if it does not settle.
    """
    current: JsonObject = copy.deepcopy(dict(status))
    ksvc = knative_service
    revs = tuple(revisions)
    for step in range(1, max_steps + 1):
        if readiness is not None:
            revs = tuple(replace(r, readiness=readiness(r)) for r in revs)
        result = reconcile(isvc, current, ksvc, revs, now, settings)
        new_revs = result.revisions_to_create
        if readiness is not None:
            new_revs = tuple(replace(r, readiness=readiness(r)) for r in new_revs)
        revs = revs + new_revs
        changed = result.status != current
        current, ksvc = result.status, result.knative_service
        if result.error is not None or not (changed or result.requeue):
            return Settled(current, ksvc, revs, step, result.error)
    raise RuntimeError(f"KServe simulation did not settle in {max_steps} reconciles")
