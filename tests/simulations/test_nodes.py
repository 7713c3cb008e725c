"""The simulated node: pods of real Deployments become Running and Ready model endpoints.

Pure rules first (reading a pod, the pod network, the statuses kubelet would write), then
the node agent with the real kube-controller-manager on the real API server.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import urllib.parse
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from simulations import nodes
from simulations.endpoints import Behaviour, EndpointFleet
from simulations.nodes import PodNetwork
from simulations.world import World
from tests.simulations.deployments import (
    BROKEN,
    TIMEOUT,
    V1,
    V2,
    deploy_ready,
    fresh_namespace,
    ready_pods,
    slice_endpoints,
    wait_for,
)

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z"


def _pod(*, env: list[dict[str, str]] | None = None, args: list[str] | None = None,
         ports: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None,
         owner: str | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "kserve-container", "image": "example/model:7"}
    if env is not None:
        container["env"] = env
    if args is not None:
        container["args"] = args
    if ports is not None:
        container["ports"] = ports
    metadata: dict[str, Any] = {"name": "iris-5d8f7c9b4-x2x9z", "namespace": "models",
                                "uid": "u-1", "labels": labels or {}}
    if owner is not None:
        metadata["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner}]
    return {"metadata": metadata, "spec": {"containers": [container], "nodeName": "n"},
            "status": status or {"phase": "Pending"}}


# --------------------------------------------------------------------------- reading pods


@pytest.mark.parametrize(("pod", "expected"), [
    (_pod(env=[{"name": "STORAGE_URI", "value": "gs://a"}], args=["--model-uri=gs://b"]),
     "gs://a"),
    (_pod(args=["--model-uri=gs://b"]), "gs://b"),
    (_pod(args=["--storage-uri", "gs://c"]), "gs://c"),
    (_pod(env=[{"name": "STORAGE_URI", "valueFrom": {"secretKeyRef": {}}}]), "example/model:7"),
    (_pod(), "example/model:7"),
], ids=["env-first", "arg-equals", "arg-space", "env-from-is-unknown", "image"])
def test_the_model_key_is_the_env_uri_then_the_argument_then_the_image(
        pod: dict[str, Any], expected: str) -> None:
    assert nodes.model_key(pod) == expected


def test_model_name_and_port_follow_the_container() -> None:
    assert nodes.model_name(_pod()) == "model"
    assert nodes.model_name(_pod(args=["--model_name", "iris"])) == "iris"
    assert nodes.model_name(_pod(env=[{"name": "MODEL_NAME", "value": "x"}])) == "x"
    assert nodes.serving_port(_pod()) == 8080
    assert nodes.serving_port(_pod(ports=[{"containerPort": 9000},
                                          {"name": "http", "containerPort": 8081}])) == 8081
    assert nodes.serving_port(_pod(ports=[{"containerPort": 53, "protocol": "UDP"},
                                          {"containerPort": 9000}])) == 9000


def test_the_workload_is_the_replicaset_without_its_template_hash() -> None:
    labels = {"pod-template-hash": "5d8f7c9b4"}
    assert nodes.workload_name(_pod(labels=labels, owner="iris-canary-5d8f7c9b4")) == (
        "iris-canary")
    assert nodes.workload_name(_pod(labels=labels, owner="other")) == "iris-5d8f7c9b4-x2x9z"
    assert nodes.target_labels(_pod(labels=labels)) == {"pod_template_hash": "5d8f7c9b4"}
    assert nodes.target_labels(_pod()) == {}


# --------------------------------------------------------------------------- the network


def test_pod_ips_are_reached_on_their_loopback_twin() -> None:
    network = PodNetwork(ipaddress.IPv4Network("10.77.3.0/24"))
    assert network.local_address("10.77.3.9") == "127.77.3.9"
    assert network.local_address("10.1.2.3") == "127.1.2.3"   # any node's pod
    with pytest.raises(ValueError, match="not a simulated pod IP"):
        network.local_address("192.168.1.1")
    assert list(network.addresses(253))[:2] == ["10.77.3.254", "10.77.3.1"]
    with pytest.raises(ValueError, match=r"within 10\.0\.0\.0/8"):
        PodNetwork(ipaddress.IPv4Network("192.168.0.0/24"))


def test_random_networks_stay_clear_of_the_service_range() -> None:
    import random

    services = ipaddress.IPv4Network("10.0.0.0/24")
    for seed in range(200):
        cidr = PodNetwork.random(random.Random(seed)).cidr
        assert cidr.prefixlen == 24 and not cidr.overlaps(services)


def test_a_pod_endpoint_listens_on_its_address_and_is_listed_with_its_labels(
        tmp_path: Path) -> None:
    network = PodNetwork.random()
    address = network.local_address(next(network.addresses()))
    with EndpointFleet(tmp_path / "targets.json") as fleet:
        endpoint = fleet.add("models", "iris", "iris-5d8f7c9b4-x2x9z", Behaviour(),
                             model_name="m", pod_name="iris-5d8f7c9b4-x2x9z", host=address,
                             port=0, flavour="otelhttp",
                             target_labels={"pod_template_hash": "5d8f7c9b4"})
        assert endpoint.address.startswith(f"{address}:")
        assert _predict(address, int(endpoint.address.rsplit(":", 1)[1]), "m") == 200
        (target,) = json.loads((tmp_path / "targets.json").read_text())
        assert target == {"targets": [endpoint.address], "labels": {
            "namespace": "models", "pod": "iris-5d8f7c9b4-x2x9z",
            "pod_template_hash": "5d8f7c9b4"}}
        exposition = endpoint.exposition().decode()
        assert 'http_server_request_duration_seconds_count{http_request_method="POST",' \
            'http_response_status_code="200"' in exposition
        assert 'k8s_pod_name="iris-5d8f7c9b4-x2x9z"' in exposition   # target_info
        assert "revision_request_count" not in exposition   # no queue-proxy in a pod
        with pytest.raises(OSError):   # the address is taken: nothing is registered
            fleet.add("models", "iris", "other", Behaviour(), host=address,
                      port=int(endpoint.address.rsplit(":", 1)[1]))
        assert len(fleet) == 1
    with pytest.raises(ValueError, match="loopback only"):
        EndpointFleet(tmp_path / "t.json").add("models", "iris", "x", Behaviour(),
                                                host="10.1.2.3")


# --------------------------------------------------------------------------- statuses


def test_a_started_pod_runs_unready_until_its_delay_then_ready_and_keeps_its_times() -> None:
    pod = _pod()
    starting = nodes.pod_status(pod, pod_ip="10.9.9.9", started_at=NOW, ready=False, now=NOW)
    assert starting["phase"] == "Running" and starting["podIP"] == "10.9.9.9"
    conditions = {c["type"]: c for c in starting["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "ContainersNotReady"
    assert starting["containerStatuses"][0]["ready"] is False
    assert nodes.status_patch(pod, starting) == {"status": starting}

    pod["status"] = starting
    again = nodes.pod_status(pod, pod_ip="10.9.9.9", started_at=NOW, ready=False, now=LATER)
    assert nodes.status_patch(pod, again) is None   # nothing to write twice
    ready = nodes.pod_status(pod, pod_ip="10.9.9.9", started_at=NOW, ready=True, now=LATER)
    by_type = {c["type"]: c for c in ready["conditions"]}
    assert by_type["Ready"] == {"type": "Ready", "status": "True", "lastTransitionTime": LATER}
    assert by_type["Initialized"]["lastTransitionTime"] == NOW   # unchanged status
    assert nodes.status_patch(pod, ready) == {"status": ready}


def test_the_node_is_ready_with_its_pod_cidr() -> None:
    network = PodNetwork(ipaddress.IPv4Network("10.77.3.0/24"))
    node = nodes.node_manifest("n1", network, "1.35.4", NOW)
    assert node["spec"]["podCIDR"] == "10.77.3.0/24"
    assert node["status"]["conditions"][0]["status"] == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.35.4"


# --------------------------------------------------------------------------- end to end


def _predict(local_address: str, port: int, model: str) -> int:
    connection = http.client.HTTPConnection(local_address, port, timeout=5)
    try:
        connection.request("POST", f"/v1/models/{model}:predict",
                           body=json.dumps({"instances": [[1, 2, 3, 4]]}),
                           headers={"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def _template_hash(pods: list[kubernetes.client.V1Pod]) -> set[str]:
    return {pod.metadata.labels["pod-template-hash"] for pod in pods}


def _prometheus_pods(world: World, namespace: str, template_hash: str) -> set[str]:
    query = urllib.parse.quote(
        f'up{{namespace="{namespace}",pod_template_hash="{template_hash}"}} == 1')
    answer = world.prometheus.api(f"query?query={query}")
    return {item["metric"]["pod"] for item in answer["result"]}


@pytest.mark.e2e
def test_a_deployment_of_three_gets_three_ready_pods_with_endpoints(
        deployment_world: World) -> None:
    world = deployment_world
    namespace = fresh_namespace(world)
    pods = deploy_ready(world, namespace, "iris", V1, replicas=3)
    ips = {pod.status.pod_ip for pod in pods}
    assert len(ips) == 3
    assert all(ipaddress.IPv4Address(ip) in world.nodes.network.cidr for ip in ips)
    assert {pod.spec.node_name for pod in pods} == {world.nodes.node_name}
    # The real endpointslice controller published exactly these, ready, on the container port.
    assert wait_for(lambda: slice_endpoints(world, namespace, "iris") == dict.fromkeys(ips, True),
                    20, "the EndpointSlice with the 3 pods")
    for ip in ips:
        assert _predict(world.nodes.network.local_address(ip), 8080, "iris") == 200
    # Prometheus scrapes each pod with the labels kubernetes_sd would give it.
    (template_hash,) = _template_hash(pods)
    assert wait_for(lambda: _prometheus_pods(world, namespace, template_hash) == {
        pod.metadata.name for pod in pods}, 20, "the 3 pods scraped with their template hash")


@pytest.mark.e2e
def test_a_template_change_rolls_the_pods_and_stops_the_old_endpoints(
        deployment_world: World) -> None:
    world = deployment_world
    namespace = fresh_namespace(world)
    old = deploy_ready(world, namespace, "iris", V1, replicas=3)
    (old_hash,) = _template_hash(old)
    old_addresses = {world.nodes.network.local_address(pod.status.pod_ip) for pod in old}
    world.set_deployment_model(namespace, "iris", V2)

    def rolled() -> list[kubernetes.client.V1Pod] | None:
        pods = kubernetes.client.CoreV1Api(world.admin).list_namespaced_pod(
            namespace, label_selector="app=iris", _request_timeout=TIMEOUT).items
        current = ready_pods(world, namespace, "iris")
        done = len(pods) == 3 and len(current) == 3 and old_hash not in _template_hash(current)
        return current if done else None

    new = wait_for(rolled, 45, "3 ready pods of v2 and no v1 pod left")
    assert {world.nodes.running()[(namespace, pod.metadata.name)] for pod in new} == {
        pod.status.pod_ip for pod in new}
    assert all(world.fleet.get(namespace, pod.metadata.name) is None for pod in old)
    for address in old_addresses:
        with pytest.raises(ConnectionRefusedError):
            _predict(address, 8080, "iris")
    new_ips = {pod.status.pod_ip for pod in new}
    assert wait_for(lambda: slice_endpoints(world, namespace, "iris") == dict.fromkeys(
        new_ips, True), 20, "the EndpointSlice with only the new pods")
    deployment = kubernetes.client.AppsV1Api(world.admin).read_namespaced_deployment(
        "iris", namespace, _request_timeout=TIMEOUT)
    assert deployment.status.updated_replicas == 3 and deployment.status.ready_replicas == 3


@pytest.mark.e2e
def test_a_never_ready_model_runs_unready_and_is_published_unready(
        deployment_world: World) -> None:
    world = deployment_world
    namespace = fresh_namespace(world)
    world.create_model_deployment(namespace, "broken", BROKEN, replicas=2)
    core = kubernetes.client.CoreV1Api(world.admin)

    def running() -> list[kubernetes.client.V1Pod]:
        pods = core.list_namespaced_pod(namespace, _request_timeout=TIMEOUT).items
        return pods if len(pods) == 2 and all(p.status.pod_ip for p in pods) else []

    pods = wait_for(running, 30, "2 running pods")
    ips = {pod.status.pod_ip for pod in pods}
    assert wait_for(lambda: slice_endpoints(world, namespace, "broken") == dict.fromkeys(
        ips, False), 20, "the EndpointSlice with 2 unready endpoints")
    assert ready_pods(world, namespace, "broken") == []
    assert {pod.status.phase for pod in pods} == {"Running"}


@pytest.mark.e2e
def test_a_deleted_pod_stops_its_endpoint_and_is_replaced(deployment_world: World) -> None:
    world = deployment_world
    namespace = fresh_namespace(world)
    (pod,) = deploy_ready(world, namespace, "iris", V1, replicas=1)
    address = world.nodes.network.local_address(pod.status.pod_ip)
    kubernetes.client.CoreV1Api(world.admin).delete_namespaced_pod(
        pod.metadata.name, namespace, _request_timeout=TIMEOUT)   # graceful, as kubectl does
    (replacement,) = wait_for(lambda: [p for p in ready_pods(world, namespace, "iris")
                                       if p.metadata.name != pod.metadata.name], 30,
                              "a ready replacement pod")
    assert world.fleet.get(namespace, pod.metadata.name) is None
    with pytest.raises(ConnectionRefusedError):
        _predict(address, 8080, "iris")
    assert replacement.status.pod_ip != pod.status.pod_ip   # not reused at once
    assert wait_for(lambda: slice_endpoints(world, namespace, "iris") == {
        replacement.status.pod_ip: True}, 20, "the EndpointSlice with the replacement only")
