"""Which revision a pod serves, read from the API server (never guessed from its name).

The KServe agent names the pod in each event's ``source``. The sink follows the pod's
controlling owners as the API server records them:

- Knative mode: Pod -> ReplicaSet -> Deployment ``<revision>-deployment`` -> **Revision**
  (``serving.knative.dev``): the revision is that owner's name, as the Knative router and
  ``status.components.predictor.traffic`` name it.
- Standard mode (and a plain Deployment): Pod -> ReplicaSet -> **Deployment**, owned by the
  InferenceService or by nobody: the revision is the Deployment's name
  (``{isvc}[-{canary name}]-predictor``), as the Standard-mode router names it.

A pod that is not found, or whose chain ends elsewhere (a bare pod, a StatefulSet) maps to
no revision. Answers are cached in a bounded LRU (``capacity`` pods and as many
ReplicaSets; a pod's owners do not change), "no revision" only for ``negative_seconds`` so
that a pod that the sink heard of before the API server did is found a moment later.

``OwnerReader`` is the seam: ``KubeOwners`` reads through the official client (get on
pods, replicasets and deployments: deploy/base/sink/rbac.yaml), ``FakeOwners`` holds the
objects in memory. API failures are ``KubeError`` naming the object, and are not cached.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from controller.errors import KubeError

KNATIVE_GROUP = "serving.knative.dev"


@dataclass(frozen=True)
class Owner:
    """The controlling owner reference of an object."""

    api_version: str
    kind: str
    name: str


class OwnerReader(Protocol):
    def controller_of(self, namespace: str, kind: str, name: str) -> Owner | bool | None:
        """The object's controlling owner; ``None`` when it has none; ``False`` when the
        object does not exist. ``kind`` is ``Pod``, ``ReplicaSet`` or ``Deployment``."""
        ...


def _controller(references: Any) -> Owner | None:
    """The controlling one of a client object's ``V1OwnerReference`` list."""
    for ref in references or ():
        if getattr(ref, "controller", False):
            return Owner(str(ref.api_version or ""), str(ref.kind or ""), str(ref.name or ""))
    return None


class RevisionMapper:
    """``revision(namespace, pod)`` -> the revision's name, or ``None``."""

    def __init__(self, owners: OwnerReader, *, capacity: int = 10_000,
                 negative_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or negative_seconds < 0:
            raise ValueError("capacity must be >= 1 and negative_seconds >= 0")
        self._owners = owners
        self.capacity, self.negative_seconds = capacity, negative_seconds
        self._clock = clock
        self._pods: OrderedDict[tuple[str, str], tuple[str | None, float]] = OrderedDict()
        self._sets: OrderedDict[tuple[str, str], str | None] = OrderedDict()
        self._lock = threading.Lock()
        self.lookups = 0          # API reads made (tests, the benchmark)

    def revision(self, namespace: str, pod: str) -> str | None:
        key = (namespace, pod)
        now = self._clock()
        with self._lock:
            cached = self._pods.get(key)
            if cached is not None and (cached[0] is not None
                                       or now - cached[1] < self.negative_seconds):
                self._pods.move_to_end(key)
                return cached[0]
        revision = self._resolve(namespace, pod)
        with self._lock:
            _put(self._pods, key, (revision, now), self.capacity)
        return revision

    def _resolve(self, namespace: str, pod: str) -> str | None:
        owner = self._read(namespace, "Pod", pod)
        if owner is None or owner.kind != "ReplicaSet":
            return None
        key = (namespace, owner.name)
        with self._lock:
            if key in self._sets:
                self._sets.move_to_end(key)
                return self._sets[key]
        revision = self._from_replica_set(namespace, owner.name)
        if revision is not None:
            with self._lock:
                _put(self._sets, key, revision, self.capacity)
        return revision

    def _from_replica_set(self, namespace: str, replica_set: str) -> str | None:
        owner = self._read(namespace, "ReplicaSet", replica_set)
        if owner is None or owner.kind != "Deployment":
            return None
        deployment = owner.name
        top = self._get(namespace, "Deployment", deployment)
        if top is False:
            return None
        if (isinstance(top, Owner) and top.kind == "Revision"
                and top.api_version.split("/")[0] == KNATIVE_GROUP):
            return top.name
        return deployment

    def _read(self, namespace: str, kind: str, name: str) -> Owner | None:
        owner = self._get(namespace, kind, name)
        return owner if isinstance(owner, Owner) else None

    def _get(self, namespace: str, kind: str, name: str) -> Owner | bool | None:
        self.lookups += 1
        return self._owners.controller_of(namespace, kind, name)


def _put(cache: OrderedDict[Any, Any], key: Any, value: Any, capacity: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > capacity:
        cache.popitem(last=False)


class KubeOwners:
    """``OwnerReader`` on the official client: three GETs at most per new pod."""

    def __init__(self, api_client: Any, timeout: float = 5.0) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._timeout = timeout

    def controller_of(self, namespace: str, kind: str, name: str) -> Owner | bool | None:
        from kubernetes.client.exceptions import ApiException

        from controller.kube.client import TRANSPORT_ERRORS, failure

        read = {"Pod": self._core.read_namespaced_pod,
                "ReplicaSet": self._apps.read_namespaced_replica_set,
                "Deployment": self._apps.read_namespaced_deployment}[kind]
        try:
            obj = read(name, namespace, _request_timeout=self._timeout)
        except ApiException as err:
            if err.status == 404:
                return False
            raise failure("get", f"{kind} {namespace}/{name}", err) from err
        except TRANSPORT_ERRORS as err:
            raise failure("get", f"{kind} {namespace}/{name}", err) from err
        metadata = getattr(obj, "metadata", None)
        return _controller(getattr(metadata, "owner_references", None))


class FakeOwners:
    """In-memory ``OwnerReader``: ``add(namespace, kind, name, owner)``; every read is
    recorded in ``reads``; ``fail`` makes the next reads raise ``KubeError``."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Owner | None] = {}
        self.reads: list[tuple[str, str, str]] = []
        self.fail: int | None = None

    def add(self, namespace: str, kind: str, name: str, owner: Owner | None) -> None:
        self.objects[(namespace, kind, name)] = owner

    def knative_pod(self, namespace: str, revision: str, pod: str, replica_set: str) -> None:
        """The objects Knative makes for one pod of ``revision``."""
        deployment = f"{revision}-deployment"
        self.add(namespace, "Pod", pod, Owner("apps/v1", "ReplicaSet", replica_set))
        self.add(namespace, "ReplicaSet", replica_set, Owner("apps/v1", "Deployment",
                                                             deployment))
        self.add(namespace, "Deployment", deployment,
                 Owner(f"{KNATIVE_GROUP}/v1", "Revision", revision))

    def standard_pod(self, namespace: str, isvc: str, deployment: str, pod: str,
                     replica_set: str) -> None:
        """The objects KServe's Standard mode (and the deployment controller) make."""
        self.add(namespace, "Pod", pod, Owner("apps/v1", "ReplicaSet", replica_set))
        self.add(namespace, "ReplicaSet", replica_set, Owner("apps/v1", "Deployment",
                                                             deployment))
        self.add(namespace, "Deployment", deployment,
                 Owner("serving.kserve.io/v1beta1", "InferenceService", isvc))

    def controller_of(self, namespace: str, kind: str, name: str) -> Owner | bool | None:
        self.reads.append((namespace, kind, name))
        if self.fail is not None:
            raise KubeError(f"cannot get {kind} {namespace}/{name}: HTTP {self.fail}", self.fail)
        key = (namespace, kind, name)
        return self.objects.get(key, False)
