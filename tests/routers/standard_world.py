"""A Standard-mode InferenceService as the simulated KServe leaves it, for the router's and
the reconciler's unit tests: the object (metadata, spec, status) and its HTTPRoutes come
from ``simulations.kserve.standard``'s pure functions (driven by the story helper of its own
tests, ``Cluster``), so the fixtures are what KServe writes, not what the router expects."""

from __future__ import annotations

import copy
from typing import Any

from controller.kube.fakes import FakeObjects, merge_patch
from controller.rollout.state import Observation
from controller.routers.base import Ref
from controller.routers.kserve_standard import HTTPROUTES, STANDARD
from simulations.kserve.rules import InferenceService, Settings
from tests.simulations.test_kserve_standard_rules import Cluster

NS, NAME = "models", "iris"
MODE = {"serving.kserve.io/deploymentMode": "Standard"}


def model(uri: str) -> dict[str, Any]:
    return {"modelFormat": {"name": "sklearn"}, "storageUri": uri}


def apply_json_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """The two JSON patch operations the admission webhooks answer with (add, replace)."""
    out = copy.deepcopy(obj)
    for op in ops:
        assert op["op"] in ("add", "replace"), op
        *parents, last = [p.replace("~1", "/").replace("~0", "~")
                          for p in op["path"].split("/")[1:]]
        target: Any = out
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = copy.deepcopy(op["value"])
        else:
            target[last] = copy.deepcopy(op["value"])
    return out


class StandardSim:
    """One InferenceService in Standard mode, with KServe reconciling every change."""

    def __init__(self, *, code: str = "aaac4e29", predictor_name: str | None = "v1",
                 uri: str = "s3://m/v1", policy: str = "fast") -> None:
        self.cluster = Cluster(settings=Settings(domain="example.com", canary_code=code))
        predictor: dict[str, Any] = {"model": model(uri)}
        if predictor_name:
            predictor["name"] = predictor_name
        self.obj: dict[str, Any] = {
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"namespace": NS, "name": NAME, "uid": "u1", "resourceVersion": "1",
                         "generation": 1,
                         "annotations": {"rollwise.io/policy": policy, **MODE}},
            "spec": {"predictor": predictor}}
        self.settle()
        self.bring_up()

    def settle(self) -> dict[str, Any]:
        """KServe reconciles the object as it is now, until quiet."""
        self.cluster.apply(InferenceService.from_object(self.obj))
        self.obj["status"] = copy.deepcopy(self.cluster.status)
        return self.obj

    def bring_up(self) -> dict[str, Any]:
        """Every current ReplicaSet's pods become ready."""
        self.cluster.ready.update(d.current.name for d in self.cluster.deployments.values())
        return self.settle()

    def merge(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.obj = merge_patch(self.obj, {"spec": spec})
        return self.settle()

    def related(self) -> dict[Ref, dict[str, Any] | None]:
        return {ref: copy.deepcopy(self.cluster.routes.get(ref.name))
                for ref in STANDARD.related(self.obj)}

    def observe(self) -> Observation:
        return STANDARD.observe(self.obj, self.related())

    # -- with the reconciler's fake API server ------------------------------------------

    def fake(self) -> FakeObjects:
        objects = FakeObjects(copy.deepcopy(self.obj))
        self.publish(objects)
        return objects

    def sync(self, objects: FakeObjects, *, bring_up: bool = False) -> None:
        """KServe reacts to what the controller wrote into ``objects``."""
        self.obj = copy.deepcopy(objects.objects[(NS, NAME)])
        if bring_up:
            self.bring_up()
        else:
            self.settle()
        self.publish(objects)

    def publish(self, objects: FakeObjects) -> None:
        objects.objects[(NS, NAME)]["status"] = copy.deepcopy(self.obj["status"])
        for name, route in self.cluster.routes.items():
            objects.others[Ref(HTTPROUTES, NS, name)] = copy.deepcopy(route)
