"""The mutating admission webhooks: the canary guard, which holds the start of a rollout,
and the commands webhook, which stamps every operator command with its authenticated
writer (``stamp_commands``, below).

A change of a model's spec without a canary weight can send all traffic to the new model
as soon as it is ready (KServe in Knative mode does), so an unanalysed model could take
all traffic. On any spec change of a managed object this webhook has the object's
traffic router hold the new model at the policy's first step (0 while a pre-rollout gate
must pass first, or when the policy is unknown); an object no router drives is left as
it is (the controller reports it). Pure: AdmissionReview in, AdmissionReview out; the
HTTP server in ``controller.server`` carries it. Registered with ``failurePolicy:
Ignore``: when it is down, the controller notices the unguarded change and pulls it back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from controller.errors import Unsupported
from controller.kube.annotations import (
    COMMANDS_ANNOTATION,
    MAX_PENDING_COMMANDS,
    POLICY_ANNOTATION,
    SEAL_COMMAND,
    annotations_of,
    commands_value,
)
from controller.policy.model import RolloutPolicy
from controller.rollout.seal import Sealer
from controller.rollout.state import Command
from controller.routers.base import TrafficRouter, choose, spec_hash


def start_percent(policy: RolloutPolicy | None) -> int:
    """Where a new model's traffic starts: the first step, or 0 behind a gate."""
    if policy is None or policy.spec.gates.pre_rollout is not None:
        return 0
    return policy.spec.steps[0].weight


def review_response(review: Mapping[str, Any],
                    policies: Callable[[str], RolloutPolicy | None],
                    routers: Sequence[TrafficRouter]) -> dict[str, Any]:
    """Answer an admission.k8s.io/v1 AdmissionReview for an object of the routers'
    resource."""
    request = review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    envelope = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": response}
    if request.get("operation") != "UPDATE":
        return envelope  # a first deploy has no stable revision to protect
    new, old = request.get("object") or {}, request.get("oldObject") or {}
    name = annotations_of(new).get(POLICY_ANNOTATION)
    if not name:
        return envelope
    try:
        router = choose(routers, new)
    except Unsupported:
        return envelope  # nothing Rollwise could hold it with; the controller says so
    if spec_hash(router.spec(new)) == spec_hash(router.spec(old)):
        return envelope
    percent = start_percent(policies(name))
    patch = router.hold(new, percent, previous=old)
    if patch is None:
        return envelope
    response["patchType"] = "JSONPatch"
    response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    response["warnings"] = [f"rollwise: {router.weight_field} set to {percent} (policy "
                            f"{name}): the new model earns its traffic step by step"]
    return envelope


# --- the commands webhook: who wrote a command is what the API server says -----------------


def stamp_commands(review: Mapping[str, Any], sealer: Sealer) -> dict[str, Any]:
    """Answer an AdmissionReview for a change of ``rollwise.io/commands`` (registered with
    ``failurePolicy: Fail`` and a matchCondition that calls it only when that annotation
    changed).

    Every entry that is not already sealed for this object is new: its ``by``, ``via`` and
    ``groups`` are replaced by the writer the API server authenticated (``userInfo``) and
    it is sealed, so the controller can tell it from an entry written around the webhook.
    Entries sealed for this object (already stamped, or written by the controller for a
    Slack click) are kept verbatim. A malformed entry, too many pending commands, or
    commands on a CREATE (the object has no uid to seal for yet) are denied with a message
    that says why, so the writer sees the problem at once instead of a silent refusal."""
    request = review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    envelope = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": response}
    new = request.get("object") or {}
    text = annotations_of(new).get(COMMANDS_ANNOTATION)
    if text is None:
        return envelope

    def deny(message: str) -> dict[str, Any]:
        response.update(allowed=False, status={"code": 400, "reason": "BadRequest",
                                               "message": f"rollwise: {message}"})
        return envelope

    if request.get("operation") != "UPDATE":
        kind = (request.get("kind") or {}).get("kind") or "object"
        return deny(f"{COMMANDS_ANNOTATION} can only be added to an existing {kind} "
                    "(use rollwise approve|promote|abort|... on it)")
    uid = str((new.get("metadata") or {}).get("uid") or "")
    user = request.get("userInfo") or {}
    username = str(user.get("username") or "")
    if not uid or not username:
        return deny("cannot establish the object or the writer of this command")
    try:
        entries = json.loads(text)
    except ValueError as err:
        return deny(f"{COMMANDS_ANNOTATION} is not JSON: {err}")
    if not isinstance(entries, list):
        return deny(f"{COMMANDS_ANNOTATION} must be a JSON list")
    if len(entries) > MAX_PENDING_COMMANDS:
        return deny(f"{len(entries)} commands pending, at most {MAX_PENDING_COMMANDS}: wait "
                    "for the controller to handle them")
    stamped: list[Mapping[str, Any]] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and sealer.verify(SEAL_COMMAND, uid, entry):
            stamped.append(entry)
            continue
        try:
            if not isinstance(entry, dict):
                raise ValueError("a command is a JSON object")
            command = Command.from_mapping(entry)
        except (ValueError, KeyError, TypeError) as err:
            return deny(f"{COMMANDS_ANNOTATION}[{i}]: {type(err).__name__}: {err}")
        writer = replace(command, by=username, via="kubernetes",
                         groups=tuple(str(g) for g in user.get("groups") or ()))
        stamped.append(sealer.seal(SEAL_COMMAND, uid, writer.to_mapping()))
    value = commands_value(stamped)
    if value == text:
        return envelope
    patch = [{"op": "replace", "path": "/metadata/annotations/"
              + COMMANDS_ANNOTATION.replace("~", "~0").replace("/", "~1"), "value": value}]
    response["patchType"] = "JSONPatch"
    response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return envelope
