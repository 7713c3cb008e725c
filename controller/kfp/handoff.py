"""Hand a model from a Kubeflow pipeline to Rollwise: the logic of the KFP component.

I/O through the ``controller.kube.Objects`` protocol only (the official kubernetes
client in a pod; the shipped in-memory fake in tests): no ``kfp``, no ``ml_metadata``.
One merge patch, fenced by resourceVersion, sets the predictor's storageUri, holds
``canaryTrafficPercent`` at 0 (like ``rollwise deploy``: the model gets no traffic before
Rollwise has gated and analysed it) and records the model's MLMD artifact id in
``rollwise.io/model-artifact-id``. Re-running the step (a KFP retry) changes nothing once
the model is handed over.

``python -m controller.kfp.handoff --executor-input '{{$}}' --namespace NS
--inference-service NAME`` is what the component's container runs: KFP replaces ``{{$}}``
with the executor input, whose input artifact carries the model's URI and, as its
``name``, the MLMD artifact id (backend/src/v2/metadata/converter.go). A ``minio://``
URI (KFP's default pipeline root) is deployed in its ``s3://`` form, which KServe reads.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import Conflict, KubeConfigError, KubeError
from controller.kube import Objects
from controller.kube.annotations import (
    POLICY_ANNOTATION,
    annotations_of,
    model_artifact_annotations,
)
from controller.kube.client import KubeObjects, api_client
from controller.routers.kserve_knative import KNATIVE, DeployRefused
from controller.routers.kserve_knative import deploy_patch as kserve_deploy_patch
from controller.settings import KubernetesSettings

MAX_ATTEMPTS = 5

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")


class HandoffError(Exception):
    """The model cannot be handed over; the message says why and names the value."""


@dataclass(frozen=True)
class ModelInput:
    """The model a pipeline step received: its URI and MLMD artifact id (when known)."""

    uri: str
    artifact_id: int | None = None


@dataclass(frozen=True)
class Handoff:
    """What the step did."""

    namespace: str
    name: str
    storage_uri: str
    artifact_id: int | None
    changed: bool
    message: str


def _artifact_id(name: str) -> int | None:
    """KFP's runtime artifact name is the MLMD id (``"42"``); Vertex-style resource names
    end in it (``.../artifacts/42``). Anything else carries no id."""
    tail = name.rstrip("/").rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def model_from_executor_input(executor_input: str | Mapping[str, Any],
                              input_name: str = "model") -> ModelInput:
    """The input artifact ``input_name`` of a KFP v2 executor input (JSON or parsed)."""
    try:
        data = json.loads(executor_input) if isinstance(executor_input, str) \
            else executor_input
    except json.JSONDecodeError as err:
        raise HandoffError(f"executor input is not JSON ({err}): "
                           f"{str(executor_input)[:120]!r}") from err
    artifacts = ((data.get("inputs") or {}).get("artifacts") or {}) \
        if isinstance(data, Mapping) else {}
    listed = (artifacts.get(input_name) or {}).get("artifacts") or []
    if not listed:
        raise HandoffError(f"executor input has no input artifact {input_name!r} "
                           f"(inputs: {sorted(artifacts) or 'none'})")
    artifact = listed[0]
    uri = artifact.get("uri") or ""
    if not uri:
        raise HandoffError(f"input artifact {input_name!r} has no uri: {artifact!r}")
    return ModelInput(uri=uri, artifact_id=_artifact_id(str(artifact.get("name") or "")))


def deploy_patch(obj: Mapping[str, Any], storage_uri: str, *,
                 annotations: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """``controller.routers.kserve_knative.deploy_patch``, with its refusal as a
    HandoffError."""
    try:
        return kserve_deploy_patch(obj, storage_uri, annotations=annotations)
    except DeployRefused as err:
        raise HandoffError(str(err)) from err


def serving_uri(uri: str) -> str:
    """The URI KServe can load: KFP records objects in its MinIO as ``minio://bucket/key``,
    which KServe's storage initializer reads as ``s3://bucket/key`` (with the S3 endpoint
    of that MinIO). Rollwise's lineage matches both forms to the same artifact."""
    return f"s3://{uri.removeprefix('minio://')}" if uri.startswith("minio://") else uri


def _check_inputs(namespace: str, name: str, model: ModelInput) -> None:
    for label, value in (("namespace", namespace), ("InferenceService name", name)):
        if not _LABEL.match(value):
            raise HandoffError(f"invalid {label} {value!r}: expected a DNS label "
                               "(lowercase letters, digits and '-', at most 63)")
    if not _URI.match(model.uri):
        raise HandoffError(f"invalid model URI {model.uri!r}: expected scheme://location "
                           "(s3://, gs://, pvc://, oci://, ...)")


def hand_over(isvcs: Objects, namespace: str, name: str, model: ModelInput, *,
              attempts: int = MAX_ATTEMPTS) -> Handoff:
    """Deploy ``model`` to the managed InferenceService, held at 0% for Rollwise; retried
    when the object changes between read and write."""
    _check_inputs(namespace, name, model)
    uri = serving_uri(model.uri)
    key = f"{namespace}/{name}"
    annotations = model_artifact_annotations(model.artifact_id)
    for _ in range(max(1, attempts)):
        obj = isvcs.get(namespace, name)
        if obj is None:
            raise HandoffError(f"{key}: no such InferenceService")
        if not annotations_of(obj).get(POLICY_ANNOTATION):
            raise HandoffError(f"{key} is not managed by Rollwise (no {POLICY_ANNOTATION} "
                               "annotation): nothing would move the model past 0%")
        patch = deploy_patch(obj, uri, annotations=annotations)
        if patch is None:
            return Handoff(namespace, name, uri, model.artifact_id, False,
                           f"{key} already serves {uri}; nothing to do")
        try:
            isvcs.patch(namespace, name, patch)
        except Conflict:
            continue
        if "spec" not in patch:
            return Handoff(namespace, name, uri, model.artifact_id, True,
                           f"{key} already serves {uri}; artifact id recorded")
        return Handoff(namespace, name, uri, model.artifact_id, True,
                       f"handed {uri} to Rollwise on {key}; canary held at 0% until its "
                       "revision is ready and the pre-rollout gate has passed")
    raise HandoffError(f"{key} changed {attempts} times while handing over; giving up")


def main(argv: Sequence[str] | None = None) -> int:
    """The component's container entry point. I/O: Kubernetes from the pod's service
    account (or a kubeconfig), result on stdout, errors on stderr with exit status 1."""
    parser = argparse.ArgumentParser(prog="python -m controller.kfp.handoff",
                                     description="Hand a pipeline's model to Rollwise.")
    parser.add_argument("--executor-input", required=True, help="KFP's {{$}} placeholder.")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--inference-service", required=True)
    parser.add_argument("--model-input", default="model",
                        help="The component's input artifact holding the model.")
    parser.add_argument("--kubeconfig", type=Path, default=None,
                        help="Default: in-cluster service account, else ~/.kube/config.")
    args = parser.parse_args(argv)
    try:
        model = model_from_executor_input(args.executor_input, args.model_input)
        api = api_client(KubernetesSettings(kubeconfig=args.kubeconfig))
        isvcs = KubeObjects(api, KNATIVE.resource, [args.namespace])
        result = hand_over(isvcs, args.namespace, args.inference_service, model)
    except (HandoffError, KubeConfigError) as err:
        print(f"rollwise handoff: {err}", file=sys.stderr)
        return 1
    except KubeError as err:
        print(f"rollwise handoff: Kubernetes API error: {err}", file=sys.stderr)
        return 1
    print(result.message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
