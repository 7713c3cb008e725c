"""The simulated KServe drives Standard-mode InferenceServices on the real kube-apiserver.

Against the session's control plane (the real KServe CRD and the Gateway API CRDs): the
loop is run synchronously with a fake clock (``run_pending``), so every step is
deterministic; the objects, the status subresource, the HTTPRoutes and their status are the
API server's. One test starts its own control plane with the CRD of KServe before 0.20.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from simulations.kserve import httproute
from simulations.kserve.controller import GATEWAY_CONTROLLER, RevisionEvent, SimulatedKServe
from simulations.kserve.crd import kserve_crd_before_canary
from simulations.kube.build import Binaries
from simulations.kube.controlplane import ControlPlane

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")
STANDARD = {"serving.kserve.io/deploymentMode": "Standard"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def model(uri: str) -> dict[str, Any]:
    return {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri}}


def canary(name: str, percent: int, uri: str) -> dict[str, Any]:
    """A canary entry as the 0.20 CRD accepts it: its schema requires ``model.name``, and
    ``kserve-container`` (the runtime's container name) keeps the pod template the stable
    will have after the promotion (where the webhook refuses ``model.name``)."""
    spec = model(uri)
    spec["model"]["name"] = "kserve-container"
    return {"predictor": {"name": name, **spec}, "trafficPercent": percent}


class Harness:
    """A namespace on the real API server, and a simulated KServe run by hand."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str,
                 ready_delay: Callable[[Any], float | None]) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.namespace = namespace
        self.clock = Clock()
        self.started: list[RevisionEvent] = []
        self.stopped: list[str] = []
        self.kserve = SimulatedKServe(
            api, namespace=namespace, clock=self.clock, ready_delay=ready_delay,
            on_revision_created=self.started.append,
            on_revision_deleted=lambda ns, isvc, name: self.stopped.append(name),
            progress_deadline=30.0,
        )

    def create(self, name: str, annotations: dict[str, str], spec: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
            "metadata": {"name": name, "annotations": annotations}, "spec": spec})

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec})

    def settle(self, name: str, seconds: float = 0.0) -> dict[str, Any]:
        """Let ``seconds`` pass on the fake clock and run KServe until it is quiet."""
        self.kserve.enqueue(self.namespace, name)
        self.kserve.run_pending()
        if seconds:
            self.clock.now += seconds
            self.kserve.run_pending()
        self.clock.now += 1.0  # reconcileHTTPRouteStatus' one-second requeue
        self.kserve.run_pending()
        return self.get(name)

    def get(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                       name)
        assert isinstance(obj, dict)
        return obj

    def route(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(*ROUTES[:2], self.namespace, ROUTES[2],
                                                       name)
        assert isinstance(obj, dict)
        return obj

    def weights(self, name: str) -> list[tuple[str, int]]:
        refs = self.route(name)["spec"]["rules"][0]["backendRefs"]
        return [(r["name"], r["weight"]) for r in refs]


@pytest.fixture
def harness(cluster: Any) -> Iterator[Harness]:
    namespace = f"std-{uuid.uuid4().hex[:8]}"
    with cluster.admin_api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace(kubernetes.client.V1Namespace(
            metadata=kubernetes.client.V1ObjectMeta(name=namespace)))
        try:
            yield Harness(api, namespace, lambda predictor: (
                None if "broken" in str(predictor) else 2.0))
        finally:
            core.delete_namespace(namespace)


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("reason", "")) for c in obj["status"]["conditions"]}


def test_canary_stepped_10_50_then_promoted_on_the_real_api_server(harness: Harness) -> None:
    h = harness
    h.create("iris", STANDARD, {"predictor": {**model("s3://m/v1"), "minReplicas": 4}})
    obj = h.settle("iris")
    assert conditions(obj)["PredictorReady"] == ("False", "MinimumReplicasUnavailable")
    assert [e.deployment for e in h.started] == ["iris-predictor"]
    stable_pod = h.started[0].pod_name
    assert stable_pod.startswith(h.started[0].revision + "-")
    assert h.started[0].revision.startswith("iris-predictor-")

    obj = h.settle("iris", seconds=2.0)
    assert conditions(obj)["Ready"] == ("True", "")
    assert obj["status"]["deploymentMode"] == "Standard"
    assert obj["status"]["url"] == f"http://iris-{h.namespace}.example.com"
    assert h.weights("iris") == [("iris-predictor", 1)]  # the CRD's default weight
    route = h.route("iris")
    parent = route["status"]["parents"][0]
    assert parent["controllerName"] == GATEWAY_CONTROLLER
    assert httproute.accepted_at_generation(route)
    assert route["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]

    h.patch("iris", {"canary": [canary("v2", 10, "s3://m/v2")]})
    obj = h.settle("iris")
    assert obj["status"]["canaryStatuses"] == [{
        "name": "v2", "ready": False, "trafficPercent": 10,
        "modelStatus": {"transitionStatus": ""}}]
    assert h.weights("iris") == [("iris-predictor", 100)]  # not ready: no weight
    canary_event = h.started[-1]
    assert (canary_event.deployment, canary_event.predictor["model"]["storageUri"]) == (
        "iris-v2-predictor", "s3://m/v2")

    obj = h.settle("iris", seconds=2.0)
    assert obj["status"]["canaryStatuses"][0]["ready"] is True
    assert conditions(obj)["CanaryPredictorReady"] == ("True", "AllCanariesReady")
    assert h.weights("iris") == [("iris-predictor", 90), ("iris-v2-predictor", 10)]
    assert h.weights("iris-predictor") == h.weights("iris")
    assert h.kserve.ready_backends(h.namespace, "iris-v2-predictor") == [canary_event.revision]

    h.patch("iris", {"canary": [canary("v2", 50, "s3://m/v2")]})
    obj = h.settle("iris")
    assert h.weights("iris") == [("iris-predictor", 50), ("iris-v2-predictor", 50)]
    assert {n: d.replicas for n, d in h.kserve.deployments(h.namespace, "iris").items()} == {
        "iris-predictor": 2, "iris-v2-predictor": 2}
    route = h.route("iris")
    assert httproute.accepted_at_generation(route)
    assert route["status"]["parents"][0]["conditions"][0]["observedGeneration"] == (
        route["metadata"]["generation"])

    # Promotion: one write, the canary's name and model on the predictor, the entry gone.
    starts = len(h.started)
    h.custom.patch_namespaced_custom_object(GROUP, VERSION, h.namespace, PLURAL, "iris", {
        "spec": {"predictor": {"name": "v2", "model": {"storageUri": "s3://m/v2"}},
                 "canary": None}})
    obj = h.settle("iris")
    assert len(h.started) == starts  # no pod restarted
    assert h.stopped == [h.started[0].revision]  # the old stable's pods are gone
    assert set(h.kserve.deployments(h.namespace, "iris")) == {"iris-v2-predictor"}
    assert "canaryStatuses" not in obj["status"]
    assert conditions(obj)["Ready"] == ("True", "")
    assert "CanaryPredictorReady" not in conditions(obj)
    assert h.weights("iris") == [("iris-v2-predictor", 1)]
    assert obj["status"]["address"] == {
        "url": f"http://iris-v2-predictor.{h.namespace}.svc.cluster.local"}

    # Settled: nothing more is written.
    version = h.get("iris")["metadata"]["resourceVersion"]
    route_version = h.route("iris")["metadata"]["resourceVersion"]
    h.settle("iris", seconds=5.0)
    assert h.get("iris")["metadata"]["resourceVersion"] == version
    assert h.route("iris")["metadata"]["resourceVersion"] == route_version


def test_rollback_dark_launch_refusal_and_a_knative_neighbour(harness: Harness) -> None:
    h = harness
    h.create("std", STANDARD, {"predictor": model("s3://m/v1")})
    h.create("kn", {}, {"predictor": model("s3://m/v1")})
    h.settle("std", seconds=2.0)
    h.settle("kn", seconds=2.0)
    assert h.get("kn")["status"]["deploymentMode"] == "Knative"
    assert h.get("kn")["status"]["components"]["predictor"]["traffic"][0]["percent"] == 100
    with pytest.raises(ApiException) as missing:
        h.route("kn")
    assert missing.value.status == 404  # Knative mode writes no HTTPRoute

    h.patch("std", {"canary": [canary("v2", 30, "s3://m/broken")]})
    obj = h.settle("std", seconds=31.0)  # past the progress deadline
    assert obj["status"]["canaryStatuses"][0]["ready"] is False
    assert h.weights("std") == [("std-predictor", 100)]
    assert conditions(obj)["Ready"] == ("True", "")

    # Rollback: the entry removed, its Deployment and pods gone.
    h.custom.patch_namespaced_custom_object(GROUP, VERSION, h.namespace, PLURAL, "std",
                                            {"spec": {"canary": None}})
    obj = h.settle("std")
    assert set(h.kserve.deployments(h.namespace, "std")) == {"std-predictor"}
    assert h.stopped[-1].startswith("std-v2-predictor-")
    # The never-ready canary had no backend, so one weighted backend stays: DeepDerivative
    # ignores the weight the desired route leaves unset, and the count did not change.
    assert h.weights("std") == [("std-predictor", 100)]

    # A dark launch: trafficPercent 0, no replicas without minReplicas, never Ready.
    h.patch("std", {"canary": [canary("v3", 0, "s3://m/v3")]})
    obj = h.settle("std", seconds=5.0)
    assert obj["status"]["canaryStatuses"][0]["ready"] is False
    assert h.kserve.deployments(h.namespace, "std")["std-v3-predictor"].replicas == 0

    # What KServe's webhook refuses is stored here, not acted on, and shown.
    h.patch("std", {"canary": [canary("v3", 60, "s3://m/v3"), canary("v4", 50, "s3://m/v4")]})
    obj = h.settle("std")
    spec_accepted = next(c for c in obj["status"]["conditions"] if c["type"] == "SpecAccepted")
    assert (spec_accepted["status"], spec_accepted["reason"]) == ("False", "AdmissionDenied")
    assert "sum of canary trafficPercent values (110) must be <= 100" in spec_accepted["message"]
    assert "std-v4-predictor" not in h.kserve.deployments(h.namespace, "std")

    # A canary on the Knative-mode neighbour is refused the same way.
    h.patch("kn", {"canary": [canary("v2", 10, "s3://m/v2")]})
    obj = h.settle("kn")
    refused = next(c for c in obj["status"]["conditions"] if c["type"] == "SpecAccepted")
    assert refused["message"].endswith("canary is only supported in Standard deployment mode")
    assert conditions(obj)["Ready"] == ("True", "")

    # Deleting the InferenceService takes its routes (the garbage collector's job) and pods.
    h.custom.delete_namespaced_custom_object(GROUP, VERSION, h.namespace, PLURAL, "std")
    h.kserve.enqueue(h.namespace, "std")
    h.kserve.run_pending()
    with pytest.raises(ApiException) as gone:
        h.route("std")
    assert gone.value.status == 404
    assert h.kserve.deployments(h.namespace, "std") == {}


def test_before_kserve_0_20_spec_canary_is_not_in_the_schema(
    tmp_path: Path, kube_binaries: Binaries
) -> None:
    """KServe < 0.20 has no spec.canary (PR #5672): the API server prunes the field from a
    write without field validation (a warning only) and refuses it with
    fieldValidation=Strict, which is what a router must ask for to find out."""
    crd = tmp_path / "inferenceservices-0.19.yaml"
    crd.write_text(yaml.safe_dump(kserve_crd_before_canary()))
    with ControlPlane(kserve_crd=crd, binaries=kube_binaries) as running, \
            running.admin_api_client() as api:
        custom = kubernetes.client.CustomObjectsApi(api)
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
                "metadata": {"name": "old", "namespace": "default", "annotations": STANDARD},
                "spec": {"predictor": model("s3://m/v1")}}
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
        patch = {"spec": {"canary": [canary("v2", 10, "s3://m/v2")]}}
        with pytest.raises(ApiException) as strict:
            custom.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "old",
                                                  patch, field_validation="Strict")
        assert strict.value.status == 422, strict.value.body
        message = json.loads(strict.value.body)["message"]
        assert 'strict decoding error: unknown field "spec.canary"' in message, message
        _, code, headers = custom.patch_namespaced_custom_object_with_http_info(
            GROUP, VERSION, "default", PLURAL, "old", patch)
        assert code == 200
        assert 'unknown field \\"spec.canary\\"' in headers.get("Warning", ""), headers
        stored = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "old")
        assert "canary" not in stored["spec"]  # pruned: the write "succeeded" and did nothing
        assert stored["metadata"]["generation"] == 1
