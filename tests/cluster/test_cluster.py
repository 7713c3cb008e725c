"""What a real cluster can show: the installed controller, through the API server only.

These tests use nothing but a kubeconfig, the `kubernetes` client and the `rollwise` CLI,
and only the policies Rollwise ships (`policies/`), so they run unchanged against:

- a real cluster with real KServe and Rollwise installed from `deploy/` (the
  `e2e-kind.yaml` workflow, or by hand: docs/operations.md) when ROLLWISE_E2E_KUBECONFIG
  names its kubeconfig (`pytest -m cluster`);
- otherwise, the simulated cluster (the real kube-apiserver, the simulated KServe, the
  controller as a process with the shipped policies), which `make test` runs, so that
  this module is proven on every run and never claims what does not run.

They need no traffic and no fault injection (those are the simulated world's tests in
tests/e2e and tests/chaos): one replica leads; an opted-in model is adopted; a new model
is held at the policy's first weight in the same write that deploys it (the admission
webhook) and becomes a rollout; an operator's abort, written with the CLI, is stamped
with the user the API server authenticated and rolls the canary back to weight 0.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
from click.testing import CliRunner
from kubernetes.client.exceptions import ApiException

from controller.cli import main
from controller.kube.annotations import STATE_ANNOTATION
from controller.rollout.state import Phase, RolloutState
from controller.routers.kserve_knative import GROUP, PLURAL, VERSION, WEIGHT_FIELD
from tests.e2e.rollouts import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = os.environ.get("ROLLWISE_E2E_KUBECONFIG")
# KServe's own sample models (its canary rollout docs); any two loadable URIs will do.
V1 = os.environ.get("ROLLWISE_E2E_MODEL_V1", "gs://kfserving-examples/models/sklearn/1.0/model")
V2 = os.environ.get("ROLLWISE_E2E_MODEL_V2",
                    "gs://kfserving-examples/models/sklearn/1.0/model-2")
POLICY = "fast"          # shipped in policies/ and installed by deploy/ (its first step: 10%)
FIRST_WEIGHT = 10


@dataclass
class Target:
    """The cluster under test, as a user's kubeconfig sees it."""

    kubeconfig: Path
    namespace: str                  # where the tests' InferenceServices live
    lease_namespace: str            # where the controller's Lease is
    timeout: float                  # seconds to wait for the serving layer
    real: bool

    @property
    def api(self) -> kubernetes.client.ApiClient:
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(main, [*args, "--kubeconfig", str(self.kubeconfig)])
        assert result.exit_code == 0, result.output
        return result.output


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if KUBECONFIG:
        yield from _real_cluster(Path(KUBECONFIG))
    else:
        yield from _simulated_cluster(request, tmp_path_factory.mktemp("cluster"))


def _real_cluster(kubeconfig: Path) -> Iterator[Target]:
    namespace = f"rollwise-e2e-{uuid.uuid4().hex[:6]}"
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace(kubernetes.client.V1Namespace(
        metadata=kubernetes.client.V1ObjectMeta(name=namespace)))
    try:
        yield Target(kubeconfig, namespace,
                     os.environ.get("ROLLWISE_E2E_CONTROLLER_NAMESPACE", "rollwise-system"),
                     float(os.environ.get("ROLLWISE_E2E_TIMEOUT", "600")), real=True)
    finally:
        core.delete_namespace(namespace)


def _simulated_cluster(request: pytest.FixtureRequest, tmp: Path) -> Iterator[Target]:
    from simulations.controller_process import ControllerProcess
    from simulations.world import World, WorldConfig
    from tests.e2e.rollouts import GOOD, NAMESPACE

    binaries = request.getfixturevalue("kube_binaries")
    world = World(WorldConfig(default_behaviour=GOOD, ready_delay=1.0, seed=5),
                  binaries=binaries)
    # The shipped policies, as deploy/ mounts them.
    with world, ControllerProcess(world, ROOT / "policies", tmp / "controller.log"):
        yield Target(world.cluster.admin_kubeconfig, NAMESPACE,
                     world.cluster.controller_namespace, 60.0, real=False)


def get_isvc(target: Target, name: str) -> dict[str, Any]:
    api = kubernetes.client.CustomObjectsApi(target.api)
    obj: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, target.namespace,
                                                           PLURAL, name)
    return obj


def state_of(target: Target, name: str) -> RolloutState | None:
    raw = (get_isvc(target, name)["metadata"].get("annotations") or {}).get(STATE_ANNOTATION)
    return RolloutState.from_json(raw) if raw else None


def create_isvc(target: Target, name: str, uri: str) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": target.namespace,
                         "annotations": {"rollwise.io/policy": POLICY}},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                             "storageUri": uri}}}}
    kubernetes.client.CustomObjectsApi(target.api).create_namespaced_custom_object(
        GROUP, VERSION, target.namespace, PLURAL, body)


def test_exactly_one_replica_holds_a_current_lease(target: Target) -> None:
    def current() -> Any:
        try:
            lease = kubernetes.client.CoordinationV1Api(target.api).read_namespaced_lease(
                "rollwise-controller", target.lease_namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        spec = lease.spec
        if not spec.holder_identity or spec.renew_time is None:
            return None
        age = (datetime.now(UTC) - spec.renew_time).total_seconds()
        return lease if age <= 2 * spec.lease_duration_seconds else None

    lease = wait_for(current, 60, "a Lease renewed within twice its duration")
    assert lease.spec.holder_identity


def test_a_model_is_adopted_held_at_the_first_step_and_aborted_by_an_authenticated_user(
        target: Target) -> None:
    name = f"rw-e2e-{uuid.uuid4().hex[:6]}"
    create_isvc(target, name, V1)
    adopted = wait_for(lambda: (s := state_of(target, name)) is not None
                       and s.phase == Phase.SUCCEEDED and s, target.timeout,
                       f"{name} adopted with its first model")
    assert adopted.storage_uri == V1

    # A plain edit of the model, as a GitOps tool makes it: the admission webhook holds
    # the new model at the policy's first weight in that very write.
    written = kubernetes.client.CustomObjectsApi(target.api).patch_namespaced_custom_object(
        GROUP, VERSION, target.namespace, PLURAL, name,
        {"spec": {"predictor": {"model": {"storageUri": V2}}}})
    assert written["spec"]["predictor"][WEIGHT_FIELD] == FIRST_WEIGHT
    rollout = wait_for(lambda: (s := state_of(target, name)) is not None
                       and s.storage_uri == V2 and s, 60, "a rollout of the new model")
    assert rollout.id != adopted.id and not rollout.phase.terminal

    # The CLI's abort is stamped with the user the API server authenticated.
    me = kubernetes.client.AuthenticationV1Api(target.api).create_self_subject_review(
        kubernetes.client.V1SelfSubjectReview()).status.user_info.username
    output = target.cli("abort", f"{target.namespace}/{name}", "--reason", "cluster e2e")
    assert f"as {me} (command" in output, output
    ended = wait_for(lambda: (s := state_of(target, name)) is not None and s.phase.terminal
                     and s, target.timeout, "the abort to end the rollout")
    assert ended.id == rollout.id and ended.phase == Phase.ABORTED
    assert ended.last_decision is not None and me in ended.last_decision.reason
    assert get_isvc(target, name)["spec"]["predictor"].get(WEIGHT_FIELD) == 0
