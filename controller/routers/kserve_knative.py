"""KServe InferenceServices in Knative (serverless) mode: the router Rollwise started with.

Pure: an InferenceService (a dict, as the API returns it) in, an ``Observation`` and the
spec part of the one merge patch out. The facts, from KServe's ``ksvc_reconciler.go`` and
``PropagateStatus`` (``inference_service_status.go``):

- ``spec.predictor.canaryTrafficPercent`` P with a rolled-out revision present:
  P% to the latest ready revision, 100-P to ``latestRolledoutRevision`` (tag prev);
- absent (or 100): everything to the latest ready revision, which then becomes
  the rolled-out one — so removing the field promotes (a merge patch with null:
  ``KServeClient.patch`` cannot remove it);
- 0: everything to ``latestRolledoutRevision`` (rollback);
- after a promotion, lowering P without a spec change rolls back to the revision before
  the stable one: the state machine never writes traffic after a promotion;
- a predictor change without P sends 100% to the new model once it is ready: the
  admission webhook holds it (``hold``), and the controller pulls it back if it was down;
- ``status.observedGeneration`` is copied from the Knative Service (kserve#6081):
  never used here; revisions are tracked by name;
- in Standard (RawDeployment) mode KServe ignores ``canaryTrafficPercent`` (kserve#5335):
  ``supports`` refuses such objects (``kserve_standard`` drives them through
  ``spec.canary[]``); one no router drives is reported instead of silently "managed".

The API group, version and plural are literals (equal to ``kserve.constants``, checked by a
test): importing the kserve SDK loads some 1,600 modules, and nothing here needs its models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.rollout.machine import Promote, RestoreSpec, RollBack, SetCanary, TrafficAction
from controller.rollout.state import Observation, TrafficTarget
from controller.routers.base import Ref, Related, Resource, spec_hash

GROUP = "serving.kserve.io"              # kserve.constants.KSERVE_GROUP
VERSION = "v1beta1"                      # kserve.constants.KSERVE_V1BETA1_VERSION
PLURAL = "inferenceservices"             # kserve.constants.KSERVE_PLURAL_INFERENCESERVICE
KIND = "InferenceService"                # kserve.constants.KSERVE_KIND_INFERENCESERVICE
WEIGHT_FIELD = "canaryTrafficPercent"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# What KServe calls this mode: Serverless up to v0.15, Knative from v0.16 (PR #4608).
KNATIVE_MODES = frozenset({"Serverless", "Knative"})


class DeployRefused(ValueError):
    """The InferenceService cannot take this model as it is (says why)."""


def storage_uri(predictor: Mapping[str, Any]) -> str:
    """The model's URI, wherever the predictor keeps it (model format or framework key)."""
    for value in predictor.values():
        if isinstance(value, Mapping) and isinstance(value.get("storageUri"), str):
            return str(value["storageUri"])
    uri = predictor.get("storageUri")
    return uri if isinstance(uri, str) else ""


def _predictor(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    predictor: Mapping[str, Any] = (obj.get("spec") or {}).get("predictor") or {}
    return predictor


def _condition_failure(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") in ("LatestDeploymentReady", "PredictorReady") and (
                condition.get("status") == "False"):
            reason = condition.get("reason") or "NotReady"
            message = condition.get("message") or ""
            return f"{reason}: {message}".rstrip(": ")
    return None


class KServeKnative:
    """The ``TrafficRouter`` of InferenceServices in Knative mode."""

    name = "kserve-knative"
    resource = Resource(GROUP, VERSION, PLURAL, KIND)
    weight_field = WEIGHT_FIELD

    def supports(self, obj: Mapping[str, Any]) -> str | None:
        """Knative mode as the object asks for it (its annotation) or as KServe reports it
        (``status.deploymentMode``); an object that names neither is taken to be in it
        (KServe's shipped configuration) until its status says otherwise."""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        status = obj.get("status") or {}
        for where, mode in ((f"annotation {MODE_ANNOTATION}", annotations.get(MODE_ANNOTATION)),
                            ("status.deploymentMode", status.get("deploymentMode"))):
            if mode and mode not in KNATIVE_MODES:
                return (f"it is served in {mode} mode ({where}), where KServe ignores "
                        f"spec.predictor.{WEIGHT_FIELD} (kserve#5335): this router cannot "
                        "move its traffic")
        return None

    def spec(self, obj: Mapping[str, Any]) -> Mapping[str, Any]:
        """The predictor without ``canaryTrafficPercent``."""
        return {k: v for k, v in _predictor(obj).items() if k != WEIGHT_FIELD}

    def related(self, obj: Mapping[str, Any]) -> tuple[Ref, ...]:
        """Nothing: Knative's split is in the InferenceService's own status."""
        return ()

    def observe(self, obj: Mapping[str, Any], related: Related | None = None) -> Observation:
        predictor = _predictor(obj)
        status = obj.get("status") or {}
        component = (status.get("components") or {}).get("predictor") or {}
        percent = predictor.get(WEIGHT_FIELD)
        traffic = tuple(
            TrafficTarget(revision=str(t.get("revisionName", "")),
                          percent=int(t.get("percent") or 0),
                          latest=bool(t.get("latestRevision", False)), tag=t.get("tag"))
            for t in component.get("traffic") or ()
        )
        return Observation(
            spec_hash=spec_hash(self.spec(obj)),
            storage_uri=storage_uri(predictor),
            canary_percent=None if percent is None else int(percent),
            latest_created=component.get("latestCreatedRevision"),
            latest_ready=component.get("latestReadyRevision"),
            latest_rolled_out=component.get("latestRolledoutRevision"),
            previous_rolled_out=component.get("previousRolledoutRevision"),
            revision_failure=_condition_failure(status),
            traffic=traffic,
            url=status.get("url"),
        )

    def write(self, obj: Mapping[str, Any], action: TrafficAction, *,
              last_good: Mapping[str, Any] | None = None) -> dict[str, Any]:
        predictor: dict[str, Any] = {}
        if isinstance(action, RestoreSpec):
            if last_good is None:
                raise ValueError("RestoreSpec needs the last good predictor spec")
            # The fields of the last good spec, and null for those the current spec has and
            # it had not. The percent stays 0 so the restored revision is rolled out under
            # analysis, never all at once.
            predictor = {k: None for k in _predictor(obj) if k not in last_good}
            predictor.update(last_good)
            predictor[WEIGHT_FIELD] = 0
        elif isinstance(action, SetCanary):
            predictor[WEIGHT_FIELD] = action.percent
        elif isinstance(action, Promote):
            predictor[WEIGHT_FIELD] = None      # removing the field promotes
        elif isinstance(action, RollBack):
            predictor[WEIGHT_FIELD] = 0
        return {"predictor": predictor}

    def in_effect(self, action: Promote | RollBack, obs: Observation,
                  canary: str | None) -> bool:
        """From ``status.components.predictor``: promoted when the canary is the rolled-out
        revision and serves 100%; rolled back when it serves nothing and the spec asks for
        0% (or for nothing: a rolled-out revision then serves)."""
        if isinstance(action, Promote):
            return obs.latest_rolled_out == canary and obs.percent_to(canary) == 100
        return obs.percent_to(canary) == 0 and obs.canary_percent in (0, None)

    def hold(self, obj: Mapping[str, Any], percent: int, *,
             previous: Mapping[str, Any] | None = None) -> list[dict[str, Any]] | None:
        if _predictor(obj).get(WEIGHT_FIELD) == percent:
            return None
        return [{"op": "add", "path": f"/spec/predictor/{WEIGHT_FIELD}", "value": percent}]


KNATIVE = KServeKnative()


def deploy_patch(obj: Mapping[str, Any], uri: str, *,
                 annotations: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The one merge patch that deploys the model at ``uri`` held at 0% with ``annotations``,
    fenced by the resourceVersion read; None when the object already says all that.

    Used by ``rollwise deploy`` and the Kubeflow Pipelines hand-off: the storageUri is
    replaced where the predictor keeps it (a model-format or framework key), and the
    traffic held at 0% in the same update, so the model never gets traffic before
    Rollwise has analysed it."""
    meta = obj.get("metadata") or {}
    key = f"{meta.get('namespace')}/{meta.get('name')}"
    predictor = _predictor(obj)
    holder = next((k for k, v in predictor.items()
                   if isinstance(v, Mapping) and "storageUri" in v), None)
    if holder is None:
        raise DeployRefused(f"{key}: the predictor has no storageUri to replace")
    current = meta.get("annotations") or {}
    changed_annotations = {k: v for k, v in (annotations or {}).items() if current.get(k) != v}
    patch: dict[str, Any] = {"metadata": {"resourceVersion": meta.get("resourceVersion")}}
    if changed_annotations:
        patch["metadata"]["annotations"] = changed_annotations
    if storage_uri(predictor) != uri:
        patch["spec"] = {"predictor": {holder: {"storageUri": uri}, WEIGHT_FIELD: 0}}
    elif not changed_annotations:
        return None
    return patch
