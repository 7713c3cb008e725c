"""Shared pieces of the tests of the Deployments world (node agent, gateway): the models,
a world with kube-controller-manager, and reading pods, slices and endpoint counters."""

from __future__ import annotations

import uuid
from typing import Any

import kubernetes.client
from prometheus_client.parser import text_string_to_metric_families

from simulations.endpoints import Behaviour
from simulations.world import World, WorldConfig
from tests.e2e.rollouts import wait_for

__all__ = ["BROKEN", "V1", "V2", "deploy_ready", "endpoint_requests", "fresh_namespace",
           "make_world", "ready_pods", "slice_endpoints", "wait_for"]

V1, V2 = "gs://models/iris-v1", "gs://models/iris-v2"
BROKEN = "gs://models/iris-broken"   # never ready
TIMEOUT = (5.0, 15.0)


def make_world(binaries: Any) -> World:
    return World(WorldConfig(deployments=True, namespaces=(), ready_delay=0.5,
                             never_ready=frozenset({BROKEN}),
                             models={V1: Behaviour(), V2: Behaviour(latency_median_ms=30.0)}),
                 binaries=binaries)


def fresh_namespace(world: World) -> str:
    name = f"deploy-{uuid.uuid4().hex[:8]}"
    kubernetes.client.CoreV1Api(world.admin).create_namespace(
        {"metadata": {"name": name}}, _request_timeout=TIMEOUT)
    return name


def _ready(pod: kubernetes.client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())


def ready_pods(world: World, namespace: str, app: str,
               template_hash: str | None = None) -> list[kubernetes.client.V1Pod]:
    selector = f"app={app}" + (f",pod-template-hash={template_hash}" if template_hash else "")
    pods = kubernetes.client.CoreV1Api(world.admin).list_namespaced_pod(
        namespace, label_selector=selector, _request_timeout=TIMEOUT).items
    return [pod for pod in pods if _ready(pod) and not pod.metadata.deletion_timestamp]


def deploy_ready(world: World, namespace: str, name: str, uri: str,
                 replicas: int) -> list[kubernetes.client.V1Pod]:
    """Create a model's Deployment, Service and HTTPRoute; wait until all pods are ready."""
    world.create_model_deployment(namespace, name, uri, replicas=replicas)
    pods: list[kubernetes.client.V1Pod] = wait_for(
        lambda: (found := ready_pods(world, namespace, name)) and len(found) == replicas
        and found, 30, f"{replicas} ready pods of {namespace}/{name}")
    return pods


def slice_endpoints(world: World, namespace: str, service: str) -> dict[str, bool]:
    """Address -> ready, over the Service's EndpointSlices (as the real controller wrote)."""
    slices = kubernetes.client.DiscoveryV1Api(world.admin).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}",
        _request_timeout=TIMEOUT).items
    return {endpoint.addresses[0]: bool(endpoint.conditions.ready)
            for item in slices for endpoint in item.endpoints or ()}


def endpoint_requests(world: World, namespace: str, pod: str) -> int:
    """Requests a pod's endpoint served, from its own /metrics (what Prometheus scrapes)."""
    endpoint = world.fleet.get(namespace, pod)
    if endpoint is None:
        return 0
    total = 0.0
    for family in text_string_to_metric_families(endpoint.exposition().decode()):
        for sample in family.samples:
            if sample.name == "http_server_request_duration_seconds_count":
                total += sample.value
    return int(total)
