"""Plain Deployments behind a Gateway API HTTPRoute end to end: the real API server
(deploy/rbac only), the real kube-controller-manager (deployment, replicaset and
endpointslice controllers), the simulated node and gateway, real Prometheus scraping the
pods by ``pod-template-hash``, and the real controller process with its admission webhook.

One world, four Deployments at once: a good model promoted step by step (D rolled to the
new template by a real rolling update, the canary gone, the route back to one backend);
a bad one rolled back with its numbers (canary gone, D still on its old pods); the
controller killed with SIGKILL while both are mid-step, and a new one resuming them; a
hand edit of a route mid-step, which pauses and is never written back; and a Deployment
whose route does not exist, which gets its Unsupported Warning Event."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from controller.kube.annotations import STATE_ANNOTATION
from controller.rollout.state import Phase, RolloutState
from simulations.controller_process import ControllerProcess
from simulations.kube.build import Binaries
from simulations.world import World, WorldConfig
from tests.e2e.rollouts import (
    DEPLOYMENT_ONLY_GRANTS,
    ERRORS,
    GOOD,
    NAMESPACE,
    api_errors,
    event_reasons,
    wait_for,
    write_policy,
)

pytestmark = pytest.mark.e2e

POLICY = """\
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: %(name)s}
spec:
  steps: [{weight: 20}, {weight: 50}, {weight: 100}]
  stepDefaults: {minDuration: %(duration)s, minRequests: 100}
  readyTimeout: 30s
  analysis:
    interval: 2s
    warmup: {duration: 3s}
    alpha: 0.05
    provider: deployment-pods
    checks:
      - {name: error-rate, kind: ratio, tolerance: 0.5, maxRate: 0.05}
      - {name: p99-latency, kind: latency, quantile: 0.99, tolerance: 0.5, maxLatency: 400ms}
  onInconclusive: {deadline: 90s, action: pause}
  onMissingData: {after: 20s, action: pause}
"""
REGRESSED = replace(ERRORS, error_rate=0.3)
MODELS = {"s3://m/good/v1": GOOD, "s3://m/good/v2": GOOD,
          "s3://m/bad/v1": GOOD, "s3://m/bad/v2": REGRESSED,
          "s3://m/hand/v1": GOOD, "s3://m/hand/v2": GOOD}
RATES = {"good": 100, "bad": 60, "hand": 40}   # requests per second, through the gateway
LEASE = {"ROLLWISE_LEADER_ELECTION__LEASE_DURATION_SECONDS": "3",
         "ROLLWISE_LEADER_ELECTION__RENEW_DEADLINE_SECONDS": "2"}


def apps(world: World) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(world.admin)


def custom(world: World) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(world.admin)


def deployment(world: World, name: str) -> Any:
    return apps(world).read_namespaced_deployment(name, NAMESPACE)


def state_of(world: World, name: str) -> RolloutState | None:
    raw = (deployment(world, name).metadata.annotations or {}).get(STATE_ANNOTATION)
    return RolloutState.from_json(raw) if raw else None


def finished(world: World, name: str) -> RolloutState | None:
    state = state_of(world, name)
    if state is not None and state.storage_uri == f"s3://m/{name}/v2" and state.phase.terminal:
        return state
    return None


def route(world: World, name: str) -> Any:
    return custom(world).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", name)


def weights(world: World, name: str) -> dict[str, int]:
    return {ref["name"]: ref.get("weight", 1)
            for ref in route(world, name)["spec"]["rules"][0]["backendRefs"]}


def canary_exists(world: World, name: str) -> bool:
    found = apps(world).list_namespaced_deployment(
        NAMESPACE, field_selector=f"metadata.name={name}-canary").items
    services = kubernetes.client.CoreV1Api(world.admin).list_namespaced_service(
        NAMESPACE, field_selector=f"metadata.name={name}-canary").items
    return bool(found or services)


def pod_models(world: World, name: str) -> dict[str, set[str]]:
    """pod-template-hash -> models, over the running pods of D (``app=<name>``)."""
    pods = kubernetes.client.CoreV1Api(world.admin).list_namespaced_pod(
        NAMESPACE, label_selector=f"app={name}").items
    out: dict[str, set[str]] = {}
    for pod in pods:
        if pod.metadata.deletion_timestamp:
            continue
        env = {e.name: e.value for e in pod.spec.containers[0].env or ()}
        out.setdefault(pod.metadata.labels["pod-template-hash"], set()).add(env["STORAGE_URI"])
    return out


def test_deployments_behind_a_gateway_are_promoted_rolled_back_resumed_and_paused(
        kube_binaries: Binaries, tmp_path: Path) -> None:
    started = time.monotonic()
    policies = write_policy(tmp_path / "policies", POLICY % {"name": "gw", "duration": "6s"},
                            "gw")
    write_policy(policies, POLICY % {"name": "held", "duration": "10m"}, "held")
    log = tmp_path / "controller.log"
    config = WorldConfig(deployments=True, models=MODELS, ready_delay=0.5, seed=7)
    with World(config, binaries=kube_binaries) as world:
        controller = ControllerProcess(world, policies, log, env=LEASE).start()
        try:
            for name in ("good", "bad", "hand"):
                world.create_model_deployment(NAMESPACE, name, f"s3://m/{name}/v1",
                                              policy="held" if name == "hand" else "gw")
            world.create_model_deployment(NAMESPACE, "lost", "s3://m/good/v1", policy="gw",
                                          annotations={"rollwise.io/route": "nowhere"})
            for name in ("good", "bad", "hand"):
                wait_for(lambda n=name: (s := state_of(world, n)) is not None  # type: ignore[misc]
                         and s.phase == Phase.SUCCEEDED and deployment(world, n).spec.paused,
                         60, f"{name} adopted and paused", controller.tail)
                world.start_route_traffic(NAMESPACE, name, RATES[name], max_seconds=150)
            before = {name: pod_models(world, name) for name in ("good", "bad")}
            for name in ("good", "bad", "hand"):    # a new model URI in the template
                world.set_deployment_model(NAMESPACE, name, f"s3://m/{name}/v2")

            # SIGKILL while the good rollout is mid-step (the bad one mid-step or already
            # rolled back); a new process resumes from the committed state.
            wait_for(lambda: (s := state_of(world, "good")) is not None and s.step >= 1
                     and s.phase == Phase.PROGRESSING, 60, "good at step 2", controller.tail)
            at_kill = {name: state_of(world, name) for name in ("good", "bad")}
            controller.kill()
            killed_at = time.monotonic()
            controller = ControllerProcess(world, policies, log, env=LEASE).start()
            down = time.monotonic() - killed_at

            # A hand edit of the held route's weights mid-step pauses, never fought.
            wait_for(lambda: (s := state_of(world, "hand")) is not None
                     and s.phase == Phase.PROGRESSING and s.storage_uri == "s3://m/hand/v2"
                     and weights(world, "hand") == {"hand": 80, "hand-canary": 20}, 60,
                     "hand at step 1", controller.tail)
            body = route(world, "hand")
            body["spec"]["rules"][0]["backendRefs"][1]["weight"] = 45
            body["spec"]["rules"][0]["backendRefs"][0]["weight"] = 55
            custom(world).replace_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", "hand", body)

            good = wait_for(lambda: finished(world, "good"), 90, "the good model to finish",
                            controller.tail)
            bad = wait_for(lambda: finished(world, "bad"), 60, "the bad model to finish",
                           controller.tail)
            hand = wait_for(lambda: (s := state_of(world, "hand")) is not None
                            and s.phase == Phase.PAUSED and s, 30, "hand paused",
                            controller.tail)
            # Promoted step by step, resumed by the second process in the same rollout:
            # D rolled to v2 (a new ReplicaSet, all its pods), paused again; the route
            # back to D's Service alone; the canary Deployment and Service gone.
            killed_good = at_kill["good"]
            assert killed_good is not None and good.id == killed_good.id, (killed_good, good)
            assert good.phase == Phase.SUCCEEDED, good
            assert [v.step for v in good.verdicts if v.outcome == "pass"] == [0, 1]
            wait_for(lambda: not canary_exists(world, "good")
                     and weights(world, "good") == {"good": 100}
                     and set(pod_models(world, "good")) - set(before["good"])
                     and pod_models(world, "good") == {
                         h: {"s3://m/good/v2"} for h in pod_models(world, "good")},
                     30, "good rolled, canary gone", controller.tail)
            assert deployment(world, "good").spec.paused is True
            reasons = event_reasons(world, "good")
            assert {"RolloutStarted", "Promoting", "Promoted"} <= set(reasons), reasons
            assert "UnguardedDeploy" not in reasons and "Paused" not in reasons, reasons

            # Rolled back with its numbers; D still on its old pods, the canary gone.
            reason = bad.last_decision.reason if bad.last_decision else ""
            assert bad.phase == Phase.FAILED, bad
            killed_bad = at_kill["bad"]
            assert killed_bad is not None and bad.id == killed_bad.id, (killed_bad, bad)
            assert "error-rate" in reason, reason
            assert re.search(r"at step [12] \((20|50)%\).*canary, .* stable", reason), reason
            wait_for(lambda: not canary_exists(world, "bad")
                     and weights(world, "bad") == {"bad": 100}, 30, "bad canary gone",
                     controller.tail)
            assert pod_models(world, "bad") == before["bad"]
            assert deployment(world, "bad").spec.paused is True

            # The hand edit stands: paused on it, the route as the hand left it.
            assert hand.pause is not None and hand.pause.reason == "manual-edit", hand
            assert hand.expected_percent == 45
            time.sleep(3)
            assert weights(world, "hand") == {"hand": 55, "hand-canary": 45}

            # A route that does not exist: a Warning Event saying so, nothing written.
            assert "Unsupported" in event_reasons(world, "lost")
            assert state_of(world, "lost") is None

            # deploy/rbac was enough, and the Deployment router's own grants were used.
            calls = world.controller_api_calls()
            assert not [c for c in calls if c[3] == 403], sorted(calls)
            assert {(v, g, r) for v, g, r, _ in calls} >= DEPLOYMENT_ONLY_GRANTS
            assert api_errors(controller.metrics()) == {}, controller.tail()
            for name, done in (("good", good), ("bad", bad)):
                took = (done.phase_since - done.started_at).total_seconds()
                print(f"{name}: {done.phase} in {took:.0f}s; killed at step "
                      f"{(at_kill[name] or done).step + 1} ({(at_kill[name] or done).phase})")
            print(f"bad: {reason}\ncontroller down {down:.1f}s after SIGKILL; "
                  f"hand paused at {hand.expected_percent}%")
        finally:
            controller.stop()
    print(f"test took {time.monotonic() - started:.0f}s")
    assert time.monotonic() - started < 170
