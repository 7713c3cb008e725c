"""The mutating admission webhook that guards the start of a rollout.

In KServe a predictor change without ``canaryTrafficPercent`` sends 100% of traffic to
the new model as soon as it is ready, so an unanalysed model could take all traffic.
On any predictor change of a managed InferenceService this webhook sets
``canaryTrafficPercent`` to the policy's first step (0 while a pre-rollout gate must
pass first, or when the policy is unknown). Pure: AdmissionReview in, AdmissionReview
out; the HTTP server in ``server`` carries it. Registered with ``failurePolicy: Ignore``:
when it is down, the controller notices the unguarded change and pulls it back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from controller.policy.model import RolloutPolicy
from controller.rollout.state import POLICY_ANNOTATION
from controller.traffic.kserve import predictor_hash


def start_percent(policy: RolloutPolicy | None) -> int:
    """Where a new model's traffic starts: the first step, or 0 behind a gate."""
    if policy is None or policy.spec.gates.pre_rollout is not None:
        return 0
    return policy.spec.steps[0].weight


def review_response(review: Mapping[str, Any],
                    policies: Callable[[str], RolloutPolicy | None]) -> dict[str, Any]:
    """Answer an admission.k8s.io/v1 AdmissionReview for an InferenceService."""
    request = review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    envelope = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": response}
    if request.get("operation") != "UPDATE":
        return envelope  # a first deploy has no stable revision to protect
    new, old = request.get("object") or {}, request.get("oldObject") or {}
    name = ((new.get("metadata") or {}).get("annotations") or {}).get(POLICY_ANNOTATION)
    if not name:
        return envelope
    new_predictor = (new.get("spec") or {}).get("predictor") or {}
    old_predictor = (old.get("spec") or {}).get("predictor") or {}
    if predictor_hash(new_predictor) == predictor_hash(old_predictor):
        return envelope
    percent = start_percent(policies(name))
    if new_predictor.get("canaryTrafficPercent") == percent:
        return envelope
    patch = [{"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": percent}]
    response["patchType"] = "JSONPatch"
    response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    response["warnings"] = [f"rollwise: canaryTrafficPercent set to {percent} (policy {name}): "
                            "the new model earns its traffic step by step"]
    return envelope
