"""What a user owns for a model on plain Deployments (a Deployment, its Service, an
HTTPRoute), in the in-memory fakes, and a small simulation of what the cluster does with
them: the deployment controller's ReplicaSets and statuses (paused Deployments roll
nothing; ``pod-template-hash`` is a hash of the template) and a gateway that accepts each
route's generation. The real ones run in tests/e2e/test_deployment_e2e.py."""

from __future__ import annotations

import copy
from typing import Any

from controller.kube.fakes import FakeChildren, FakeObjects
from controller.routers.base import Ref, spec_hash
from controller.routers.deployment_gateway import (
    DEPLOYMENT_GATEWAY,
    DEPLOYMENTS,
    HASH_LABEL,
    REPLICASETS,
    REVISION_ANNOTATION,
    SERVICES,
)
from controller.routers.kserve_standard import HTTPROUTES
from tests.fakes import TEST_SEALER

NS, NAME = "models", "churn"


def template(uri: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"labels": labels or {"app": NAME}},
            "spec": {"containers": [{"name": "kserve-container", "image": "model-server:1",
                                     "env": [{"name": "STORAGE_URI", "value": uri}],
                                     "ports": [{"name": "http", "containerPort": 8080}]}]}}


def deployment(uri: str = "s3://m/v1", *, paused: bool = False,
               policy: str = "fast") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NS, "uid": "d-uid", "generation": 1,
                         "resourceVersion": "10", "labels": {"app": NAME},
                         "annotations": {"rollwise.io/policy": policy}},
            "spec": {"replicas": 2, "paused": paused,
                     "selector": {"matchLabels": {"app": NAME}}, "template": template(uri)},
            "status": {}}


def service(name: str = NAME, selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": NAME},
                         "resourceVersion": "1"},
            "spec": {"selector": selector or {"app": NAME}, "type": "ClusterIP",
                     "ports": [{"name": "http", "port": 80, "targetPort": "http",
                                "protocol": "TCP"}]}}


def route(name: str = NAME, backend: str = NAME) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": NS, "generation": 1,
                         "resourceVersion": "1"},
            "spec": {"parentRefs": [{"name": "gateway", "namespace": "gateway-system"}],
                     "hostnames": [f"{NAME}.{NS}.example.com"],
                     "rules": [{"backendRefs": [{"name": backend, "port": 80,
                                                 "weight": 100}]}]}}


def template_hash(tmpl: dict[str, Any]) -> str:
    return spec_hash(tmpl)[:10]


class DeploymentSim:
    """The fakes holding D, its Service and route, and the cluster's reaction (``settle``)."""

    def __init__(self, obj: dict[str, Any] | None = None, *, paused: bool = False) -> None:
        """D rolled out (its first ReplicaSet), then ``paused`` as adoption leaves it."""
        self.objects = FakeObjects(obj or deployment(), commands_webhook=TEST_SEALER)
        self.children = FakeChildren(self.objects)
        self.others[Ref(SERVICES, NS, NAME)] = service()
        self.others[Ref(HTTPROUTES, NS, NAME)] = route()
        self.settle()
        self.obj["spec"]["paused"] = paused

    @property
    def others(self) -> dict[Ref, dict[str, Any]]:
        return self.objects.others

    @property
    def obj(self) -> dict[str, Any]:
        return self.objects.objects[(NS, NAME)]

    @obj.setter
    def obj(self, value: dict[str, Any]) -> None:
        self.objects.objects[(NS, NAME)] = value

    def route(self) -> dict[str, Any]:
        return self.others[Ref(HTTPROUTES, NS, NAME)]

    def canary(self) -> dict[str, Any] | None:
        return self.others.get(Ref(DEPLOYMENTS, NS, f"{NAME}-canary"))

    def weights(self) -> dict[str, int]:
        return {r["name"]: r.get("weight", 1)
                for r in self.route()["spec"]["rules"][0]["backendRefs"]}

    def related(self) -> dict[Ref, Any]:
        return {ref: self.objects.related(ref) for ref in DEPLOYMENT_GATEWAY.related(self.obj)}

    def observe(self) -> Any:
        return DEPLOYMENT_GATEWAY.observe(self.obj, self.related())

    def settle(self, *, canary_ready: bool = True, accept: bool = True) -> None:
        """One round of the deployment controller and the gateway."""
        self._roll(self.obj, ready=True)
        canary = self.canary()
        if canary is not None:
            self._roll(canary, ready=canary_ready)
        if accept and Ref(HTTPROUTES, NS, NAME) in self.others:
            r = self.route()
            r["status"] = {"parents": [{"controllerName": "sim", "conditions": [
                {"type": "Accepted", "status": "True",
                 "observedGeneration": r["metadata"]["generation"]}]}]}

    def _roll(self, dep: dict[str, Any], *, ready: bool) -> None:
        """The deployment controller: a paused Deployment makes no new ReplicaSet; an
        unpaused one has all its replicas on its template's (at once)."""
        meta, spec = dep["metadata"], dep["spec"]
        tmpl = copy.deepcopy(spec["template"])
        digest = template_hash(tmpl)
        owned = {ref: rs for ref, rs in self.others.items() if ref.resource == REPLICASETS
                 and rs["metadata"]["ownerReferences"][0]["uid"] == meta["uid"]}
        mine = next((rs for rs in owned.values()
                     if rs["metadata"]["labels"][HASH_LABEL] == digest), None)
        replicas = int(spec.get("replicas", 1))
        if mine is None and not spec.get("paused"):
            tmpl["metadata"]["labels"][HASH_LABEL] = digest
            mine = {"metadata": {
                "name": f"{meta['name']}-{digest}", "namespace": NS,
                "labels": dict(tmpl["metadata"]["labels"]),
                "annotations": {REVISION_ANNOTATION: str(len(owned) + 1)},
                "ownerReferences": [{"kind": "Deployment", "name": meta["name"],
                                     "uid": meta["uid"]}]},
                "spec": {"replicas": replicas, "template": tmpl}, "status": {}}
            self.others[Ref(REPLICASETS, NS, mine["metadata"]["name"])] = mine
        if not spec.get("paused") and mine is not None:
            for rs in owned.values():
                if rs is not mine:
                    rs["spec"]["replicas"], rs["status"] = 0, {"availableReplicas": 0}
            mine["status"] = {"availableReplicas": replicas if ready else 0}
        dep["metadata"].setdefault("generation", 1)
        available = replicas if ready else 0
        dep["status"] = {"observedGeneration": meta["generation"], "replicas": replicas,
                         "updatedReplicas": replicas if mine is not None else 0,
                         "availableReplicas": available}
        if spec.get("paused") and mine is None:
            dep["status"]["updatedReplicas"] = 0
