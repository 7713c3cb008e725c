"""Apply YAML manifests to the simulated control plane with server-side apply.

Reads multi-document YAML files, orders Namespaces first (so the objects inside
them can be created in the same pass), and applies each object through the
`kubernetes` dynamic client, which finds the resource for any apiVersion/kind,
including custom resources. Server-side apply, unlike client-side apply, has no
size limit from a last-applied annotation, which the 2 MB KServe CRD exceeds.

I/O: reads files and writes to the API server. Caller: simulations.kube.controlplane.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes.client
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

__all__ = ["FIELD_MANAGER", "ManifestError", "ManifestObject", "Manifests", "load_manifests"]

FIELD_MANAGER = "rollwise-simulation"
APPLY_TIMEOUT: tuple[float, float] = (5.0, 60.0)  # a 2 MB CRD takes a while to store
POLL_TIMEOUT: tuple[float, float] = (5.0, 10.0)

_KUSTOMIZE_GROUP = "kustomize.config.k8s.io/"
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(Exception):
    """A manifest cannot be read or applied; the message names the file and object."""


@dataclass(frozen=True)
class ManifestObject:
    """One Kubernetes object and the file it came from."""

    source: Path
    body: Mapping[str, Any]

    @property
    def reference(self) -> str:
        """`Kind namespace/name (file)`, the way errors name an object."""
        metadata = self.body.get("metadata") or {}
        namespace = metadata.get("namespace")
        name = metadata.get("name", "<unnamed>")
        qualified = f"{namespace}/{name}" if namespace else name
        return f"{self.body.get('kind')} {qualified} ({self.source})"


def _objects_in(path: Path) -> Iterable[ManifestObject]:
    try:
        with path.open() as handle:
            documents = list(yaml.load_all(handle, Loader=_Loader))
    except (OSError, yaml.YAMLError) as error:
        raise ManifestError(f"cannot read manifest {path}: {error}") from error
    for index, document in enumerate(documents):
        if document is None:
            continue
        if not isinstance(document, dict) or not {"apiVersion", "kind"} <= document.keys():
            raise ManifestError(f"{path}: document {index} is not a Kubernetes object")
        if str(document["apiVersion"]).startswith(_KUSTOMIZE_GROUP):
            continue  # a kustomization.yaml beside the manifests: build input, not an object
        if document["kind"].endswith("List") and isinstance(document.get("items"), list):
            yield from (ManifestObject(path, item) for item in document["items"])
        else:
            yield ManifestObject(path, document)


def load_manifests(paths: Sequence[Path]) -> list[ManifestObject]:
    """Every object in `paths`, Namespaces first, otherwise in file and document order."""
    objects = [item for path in paths for item in _objects_in(path)]
    return sorted(objects, key=lambda item: item.body["kind"] != "Namespace")


class Manifests:
    """Applies objects to one API server, discovering resources as needed."""

    def __init__(self, api: kubernetes.client.ApiClient, discovery_cache: Path) -> None:
        # The dynamic client caches discovery in a file; keep it in the workdir
        # rather than the shared temp dir, so teardown removes it.
        self._client = DynamicClient(api, cache_file=str(discovery_cache))

    def apply(self, item: ManifestObject) -> dict[str, Any]:
        """Server-side apply one object, taking ownership of every field it sets."""
        try:
            resource = self._client.resources.get(
                api_version=item.body["apiVersion"], kind=item.body["kind"]
            )
            applied = self._client.server_side_apply(
                resource, body=dict(item.body), field_manager=FIELD_MANAGER,
                force_conflicts=True, _request_timeout=APPLY_TIMEOUT,
            )
        except ResourceNotFoundError as error:
            raise ManifestError(
                f"cannot apply {item.reference}: the server has no resource for "
                f"{item.body['apiVersion']} {item.body['kind']}"
            ) from error
        except ApiException as error:
            raise ManifestError(
                f"cannot apply {item.reference}: HTTP {error.status} {error.reason}: {error.body}"
            ) from error
        result: dict[str, Any] = applied.to_dict()
        return result

    def apply_all(self, items: Iterable[ManifestObject]) -> None:
        for item in items:
            self.apply(item)

    def wait_for_crd_established(self, name: str, timeout: float) -> None:
        """Block until the CRD `name` serves its resource, at most `timeout` seconds."""
        crds = self._client.resources.get(
            api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
        )
        deadline = time.monotonic() + timeout
        conditions: list[Any] = []
        while time.monotonic() < deadline:
            crd = self._client.get(crds, name=name, _request_timeout=POLL_TIMEOUT).to_dict()
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in conditions):
                return
            time.sleep(0.1)
        raise ManifestError(
            f"CustomResourceDefinition {name} not Established within {timeout:.0f}s "
            f"(conditions: {conditions})"
        )
