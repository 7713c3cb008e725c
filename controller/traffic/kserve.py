"""KServe serverless traffic as the controller reads and writes it.

Pure: turns an InferenceService (a dict, as the API returns it) into an
``Observation`` and a managed object, and builds the one merge patch that carries
both the traffic change and the new rollout state. The facts, from KServe's
``ksvc_reconciler.go`` and ``PropagateStatus`` (``inference_service_status.go``):

- ``spec.predictor.canaryTrafficPercent`` P with a rolled-out revision present:
  P% to the latest ready revision, 100-P to ``latestRolledoutRevision`` (tag prev);
- absent (or 100): everything to the latest ready revision, which then becomes
  the rolled-out one — so removing the field promotes (a merge patch with null:
  ``KServeClient.patch`` cannot remove it);
- 0: everything to ``latestRolledoutRevision`` (rollback);
- ``status.observedGeneration`` is copied from the Knative Service (kserve#6081):
  never used here; revisions are tracked by name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kserve import constants

from controller.rollout.machine import Promote, RestoreSpec, RollBack, SetCanary, TrafficAction
from controller.rollout.state import (
    COMMANDS_ANNOTATION,
    LAST_GOOD_ANNOTATION,
    POLICY_ANNOTATION,
    STATE_ANNOTATION,
    Command,
    Observation,
    RolloutState,
    TrafficTarget,
)

GROUP = constants.KSERVE_GROUP
VERSION = constants.KSERVE_V1BETA1_VERSION
PLURAL = constants.KSERVE_PLURAL_INFERENCESERVICE


class DeployRefused(ValueError):
    """The InferenceService cannot take this model as it is (says why)."""


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
    predictor = (obj.get("spec") or {}).get("predictor") or {}
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
        patch["spec"] = {"predictor": {holder: {"storageUri": uri},
                                       "canaryTrafficPercent": 0}}
    elif not changed_annotations:
        return None
    return patch


def predictor_hash(predictor: Mapping[str, Any]) -> str:
    """What identifies a model version: the predictor spec without the traffic field."""
    material = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()[:32]


def storage_uri(predictor: Mapping[str, Any]) -> str:
    """The model's URI, wherever the predictor keeps it (model format or framework key)."""
    for value in predictor.values():
        if isinstance(value, Mapping) and isinstance(value.get("storageUri"), str):
            return str(value["storageUri"])
    uri = predictor.get("storageUri")
    return uri if isinstance(uri, str) else ""


def _condition_failure(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") in ("LatestDeploymentReady", "PredictorReady") and (
                condition.get("status") == "False"):
            reason = condition.get("reason") or "NotReady"
            message = condition.get("message") or ""
            return f"{reason}: {message}".rstrip(": ")
    return None


def observe(isvc: Mapping[str, Any]) -> Observation:
    """What KServe says about this InferenceService now."""
    spec = isvc.get("spec") or {}
    predictor = spec.get("predictor") or {}
    status = isvc.get("status") or {}
    component = (status.get("components") or {}).get("predictor") or {}
    percent = predictor.get("canaryTrafficPercent")
    traffic = tuple(
        TrafficTarget(revision=str(t.get("revisionName", "")), percent=int(t.get("percent") or 0),
                      latest=bool(t.get("latestRevision", False)), tag=t.get("tag"))
        for t in component.get("traffic") or ()
    )
    return Observation(
        spec_hash=predictor_hash(predictor),
        storage_uri=storage_uri(predictor),
        canary_percent=None if percent is None else int(percent),
        latest_created=component.get("latestCreatedRevision"),
        latest_ready=component.get("latestReadyRevision"),
        latest_rolled_out=component.get("latestRolledoutRevision"),
        previous_rolled_out=component.get("previousRolledoutRevision"),
        revision_failure=_condition_failure(status),
        traffic=traffic,
    )


@dataclass(frozen=True)
class Managed:
    """One InferenceService that opted in, with everything read from it."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    policy: str
    observation: Observation
    state: RolloutState | None
    state_error: str | None                 # an unreadable state annotation, reported
    commands: tuple[Command, ...]
    bad_commands: tuple[str, ...]          # why each unreadable entry was dropped
    predictor: Mapping[str, Any]
    url: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def read_managed(isvc: Mapping[str, Any]) -> Managed | None:
    """The managed view of an InferenceService, or None when it did not opt in."""
    meta = isvc.get("metadata") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    policy = annotations.get(POLICY_ANNOTATION)
    if not policy:
        return None
    state, state_error = None, None
    if STATE_ANNOTATION in annotations:
        try:
            state = RolloutState.from_json(annotations[STATE_ANNOTATION])
        except ValueError as err:
            state_error = str(err)
    commands, bad = read_commands(annotations.get(COMMANDS_ANNOTATION))
    return Managed(
        namespace=meta.get("namespace", ""), name=meta.get("name", ""), uid=meta.get("uid", ""),
        resource_version=meta.get("resourceVersion", ""), policy=policy,
        observation=observe(isvc), state=state, state_error=state_error,
        commands=tuple(commands), bad_commands=tuple(bad),
        predictor=(isvc.get("spec") or {}).get("predictor") or {},
        url=(isvc.get("status") or {}).get("url"),
        annotations=dict(annotations),
    )


class NothingToRestore(ValueError):
    """No promoted predictor spec was recorded on this InferenceService."""


def restore_predictor(managed: Managed) -> dict[str, Any]:
    """The merge patch of ``spec.predictor`` that puts the last promoted spec back: its
    fields, and null for fields the current spec has and that one had not. The percent
    stays 0 so the restored revision is rolled out under analysis, never all at once."""
    raw = managed.annotations.get(LAST_GOOD_ANNOTATION)
    if not raw:
        raise NothingToRestore(f"{managed.key}: no promoted predictor spec recorded "
                               f"({LAST_GOOD_ANNOTATION})")
    last_good = json.loads(raw)
    patch: dict[str, Any] = {k: None for k in managed.predictor if k not in last_good}
    patch.update(last_good)
    patch["canaryTrafficPercent"] = 0
    return patch


# At most this many commands wait on one object. A person issues a handful; a list that
# grew past this (a script in a loop, or an attack) is cut to its newest entries, so the
# controller's own write, which rewrites the list, stays far below the API's 256 KiB limit
# on all annotations together.
MAX_PENDING_COMMANDS = 20


def read_commands(text: str | None) -> tuple[list[Command], list[str]]:
    """The pending commands (a JSON list under one fixed key) and why any were unreadable
    or dropped (beyond ``MAX_PENDING_COMMANDS``, the oldest go)."""
    if not text:
        return [], []
    try:
        raw = json.loads(text)
    except ValueError as err:
        return [], [f"{COMMANDS_ANNOTATION} is not JSON: {err}"]
    if not isinstance(raw, list):
        return [], [f"{COMMANDS_ANNOTATION} must be a JSON list"]
    commands, bad = [], []
    dropped = max(0, len(raw) - MAX_PENDING_COMMANDS)
    if dropped:
        bad.append(f"{COMMANDS_ANNOTATION}: {len(raw)} commands pending, more than "
                   f"{MAX_PENDING_COMMANDS}; the oldest {dropped} dropped")
    for i, entry in enumerate(raw[dropped:], start=dropped):
        try:
            commands.append(Command.from_json(json.dumps(entry)))
        except (ValueError, KeyError, TypeError) as err:
            bad.append(f"{COMMANDS_ANNOTATION}[{i}]: {type(err).__name__}: {err}")
    return commands, bad


def commands_value(commands: Sequence[Command]) -> str | None:
    """The annotation value for these commands; None removes the key."""
    if not commands:
        return None
    return json.dumps([json.loads(c.to_json()) for c in commands], separators=(",", ":"))


def rollout_patch(
    managed: Managed,
    state: RolloutState,
    traffic: TrafficAction | None,
    handled: Sequence[str] = (),
    *,
    last_good: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One JSON merge patch: traffic, state and consumed commands together, fenced by the
    resourceVersion read, so a stale controller's write fails with 409 instead of acting
    (and a command added since the read is never lost)."""
    annotations: dict[str, str | None] = {STATE_ANNOTATION: state.to_json()}
    if handled or managed.bad_commands:
        remaining = [c for c in managed.commands if c.id not in handled]
        annotations[COMMANDS_ANNOTATION] = commands_value(remaining)
    if last_good is not None:
        annotations[LAST_GOOD_ANNOTATION] = json.dumps(last_good, sort_keys=True)
    patch: dict[str, Any] = {
        "metadata": {"resourceVersion": managed.resource_version, "annotations": annotations},
    }
    predictor: dict[str, Any] = {}
    if isinstance(traffic, RestoreSpec):
        predictor = restore_predictor(managed)
    elif isinstance(traffic, SetCanary):
        predictor["canaryTrafficPercent"] = traffic.percent
    elif isinstance(traffic, Promote):
        predictor["canaryTrafficPercent"] = None
    elif isinstance(traffic, RollBack):
        predictor["canaryTrafficPercent"] = 0
    if predictor:
        patch["spec"] = {"predictor": predictor}
    return patch
