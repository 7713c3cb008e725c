"""Shared pieces of the controller's end-to-end tests: the policy, the models, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes.client

from controller.kube.annotations import STATE_ANNOTATION
from controller.rollout.state import RolloutState
from simulations.endpoints import Behaviour
from simulations.world import World

NAMESPACE = "models"
POLICY = """\
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: e2e}
spec:
  steps: [{weight: 10}, {weight: 25}, {weight: 50}, {weight: 100}]
  stepDefaults: {minDuration: 6s, minRequests: 100}
  readyTimeout: 20s
  analysis:
    interval: 3s
    warmup: {duration: 6s}      # two intervals: the world's revisions start warm
    alpha: 0.05
    checks:
      - {name: error-rate, kind: ratio, tolerance: 0.5, maxRate: 0.05}
      - {name: p99-latency, kind: latency, quantile: 0.99, tolerance: 0.5, maxLatency: 400ms}
      - name: prediction-drift
        kind: distribution
        method: jensenShannon
        threshold: 0.1
        reference: {source: stable}
  onInconclusive: {deadline: 150s, action: pause}
  onMissingData: {after: 15s, action: pause}
"""
GOOD = Behaviour(latency_median_ms=40, latency_sigma=0.3, error_rate=0.01,
                 prediction_mean=0.5, prediction_sd=0.1)
ERRORS = Behaviour(latency_median_ms=40, latency_sigma=0.3, error_rate=0.08,
                   prediction_mean=0.5, prediction_sd=0.1)
SLOW = Behaviour(latency_median_ms=120, latency_sigma=0.3, error_rate=0.01,
                 prediction_mean=0.5, prediction_sd=0.1)
DRIFTED = Behaviour(latency_median_ms=40, latency_sigma=0.3, error_rate=0.01,
                    prediction_mean=0.8, prediction_sd=0.1)


# What only the KServe Standard-mode router uses (test_standard_e2e proves it is used): a
# world of Knative-mode objects never reads an HTTPRoute.
STANDARD_ONLY_GRANTS = {("get", "gateway.networking.k8s.io", "httproutes")}
# What only the plain-Deployment router uses (test_deployment_e2e proves it is used); any
# world lists and watches Deployments, since the controller looks for managed ones.
DEPLOYMENT_ONLY_GRANTS = {("get", "apps", "deployments"), ("patch", "apps", "deployments"),
                          ("create", "apps", "deployments"), ("delete", "apps", "deployments"),
                          ("list", "apps", "replicasets"), ("list", "", "services"),
                          ("create", "", "services"), ("delete", "", "services"),
                          ("list", "gateway.networking.k8s.io", "httproutes"),
                          ("patch", "gateway.networking.k8s.io", "httproutes")}


def rbac_grants() -> set[tuple[str, str, str]]:
    """(verb, API group, resource) that deploy/rbac grants the controller."""
    import yaml

    from simulations.world import rbac_manifests

    granted = set()
    for path in rbac_manifests():
        for doc in yaml.safe_load_all(Path(path).read_text()):
            for rule in (doc or {}).get("rules", []):
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        granted |= {(verb, group, resource) for verb in rule["verbs"]}
    return granted


def write_policy(directory: Path, text: str = POLICY, name: str = "e2e") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yaml").write_text(text)
    return directory


def state_of(world: World, name: str) -> RolloutState | None:
    raw = (world.get_isvc(NAMESPACE, name)["metadata"].get("annotations") or {}).get(
        STATE_ANNOTATION)
    return RolloutState.from_json(raw) if raw else None


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             on_timeout: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")


def deploy_and_adopt(world: World, name: str, v1: str) -> None:
    """Create the InferenceService with its first model and wait until Rollwise adopted it."""
    world.create_isvc(NAMESPACE, name, v1, policy="e2e")
    wait_for(lambda: (s := state_of(world, name)) is not None and s.phase == "Succeeded",
             60, f"{name} adopted")


def deploy(world: World, name: str, uri: str) -> None:
    """A plain predictor change, as a GitOps tool would make it (the webhook guards it)."""
    world.patch_isvc(NAMESPACE, name, {"spec": {"predictor": {"model": {"storageUri": uri}}}})


def rollout_past_first_step(world: World, name: str, on_timeout: Callable[[], str]) -> None:
    """Adopt ``s3://m/<name>/v1``, send traffic, deploy v2 and wait until its rollout has
    passed the first step: a rollout in mid-flight to disturb."""
    deploy_and_adopt(world, name, f"s3://m/{name}/v1")
    world.start_traffic(NAMESPACE, name, 80, max_seconds=200)
    deploy(world, name, f"s3://m/{name}/v2")
    wait_for(lambda: (s := state_of(world, name)) is not None
             and s.storage_uri == f"s3://m/{name}/v2" and s.step >= 1, 90,
             "the rollout to reach step 2",
             lambda: f"{on_timeout()}\nstate: {state_of(world, name)}")


def finished(world: World, name: str, uri: str) -> RolloutState | None:
    state = state_of(world, name)
    if state is not None and state.storage_uri == uri and state.phase.terminal:
        return state
    return None


def event_reasons(world: World, name: str) -> list[str]:
    events = kubernetes.client.CoreV1Api(world.admin).list_namespaced_event(
        NAMESPACE, field_selector=f"involvedObject.name={name}")
    return [e.reason for e in sorted(events.items, key=lambda e: e.metadata.creation_timestamp)]


def api_errors(metrics_text: str) -> dict[str, float]:
    """rollwise_kubernetes_api_errors_total by verb (non-zero only): a 403 shows up here."""
    errors = {}
    for line in metrics_text.splitlines():
        if line.startswith("rollwise_kubernetes_api_errors_total{"):
            labels, value = line.rsplit(" ", 1)
            if float(value):
                errors[labels] = float(value)
    return errors
