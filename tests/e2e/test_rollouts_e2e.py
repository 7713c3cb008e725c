"""One real controller process, real Prometheus, the real API server with the shipped RBAC,
and five rollouts at once: a good model promoted; errors, latency and drift regressions
rolled back with the right reason; a revision that never gets ready rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from controller.rollout.state import Phase
from simulations.controller_process import ControllerProcess
from simulations.kube.build import Binaries
from simulations.world import World, WorldConfig
from tests.e2e.rollouts import (
    DRIFTED,
    ERRORS,
    GOOD,
    NAMESPACE,
    SLOW,
    api_errors,
    deploy,
    deploy_and_adopt,
    event_reasons,
    finished,
    wait_for,
    write_policy,
)

pytestmark = pytest.mark.e2e

SCENARIOS = {  # InferenceService -> (its new model, how that model behaves)
    "good": ("s3://m/good/v2", GOOD),
    "errors": ("s3://m/errors/v2", ERRORS),
    "slow": ("s3://m/slow/v2", SLOW),
    "drift": ("s3://m/drift/v2", DRIFTED),
    "broken": ("s3://m/broken/v2", GOOD),
}


@dataclass
class Env:
    world: World
    controller: ControllerProcess


@pytest.fixture(scope="module")
def env(kube_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("rollouts")
    models = {f"s3://m/{name}/v1": GOOD for name in SCENARIOS}
    models.update({uri: behaviour for uri, behaviour in SCENARIOS.values()})
    config = WorldConfig(models=models, never_ready=frozenset({"s3://m/broken/v2"}),
                         ready_delay=1.0, seed=11)
    with World(config, binaries=kube_binaries) as world:
        controller = ControllerProcess(world, write_policy(tmp / "policies"),
                                       tmp / "controller.log")
        with controller:
            for name in SCENARIOS:
                deploy_and_adopt(world, name, f"s3://m/{name}/v1")
            for name in SCENARIOS:
                world.start_traffic(NAMESPACE, name, 60, max_seconds=240)
            for name, (uri, _) in SCENARIOS.items():
                deploy(world, name, uri)
            yield Env(world, controller)
            print(controller.tail(80))  # shown by pytest only when a test failed


def _outcome(env: Env, name: str, timeout: float = 200) -> tuple[Phase, str]:
    uri = SCENARIOS[name][0]
    state = wait_for(lambda: finished(env.world, name, uri), timeout, f"{name} to finish",
                     env.controller.tail)
    reason = state.last_decision.reason if state.last_decision else ""
    return state.phase, reason


def test_a_good_model_is_promoted_step_by_step(env: Env) -> None:
    phase, reason = _outcome(env, "good")
    assert phase == Phase.SUCCEEDED, reason
    obj = env.world.get_isvc(NAMESPACE, "good")
    predictor = obj["spec"]["predictor"]
    status = obj["status"]["components"]["predictor"]
    assert "canaryTrafficPercent" not in predictor  # promotion removed the field
    assert status["latestRolledoutRevision"] == "good-predictor-00002"
    assert [t["percent"] for t in status["traffic"]] == [100]
    reasons = event_reasons(env.world, "good")
    assert reasons.count("StepAdvanced") == 2 and "Promoted" in reasons, reasons


def test_the_promoted_rollout_is_in_ml_metadata(env: Env) -> None:
    """Lineage written by the real controller through its background worker."""
    from controller.lineage.mlmd import MLMDLineageStore
    from controller.settings import MLMDSettings

    _outcome(env, "good")
    promoted = finished(env.world, "good", SCENARIOS["good"][0])
    assert promoted is not None
    store = MLMDLineageStore(MLMDSettings(sqlite_path=env.controller.mlmd_path),
                             read_only=True)

    def completed() -> dict[str, object] | None:
        view = store.view(NAMESPACE, "good")
        return next((dict(r) for r in view.rollouts
                     if r.get("id") == promoted.id and r.get("state") == "COMPLETE"), None)

    wait_for(completed, 30, "the promoted rollout COMPLETE in MLMD", env.controller.tail)


@pytest.mark.parametrize(("name", "check"), [
    ("errors", "error-rate"), ("slow", "p99-latency"), ("drift", "prediction-drift")])
def test_a_regression_is_rolled_back_with_its_reason(env: Env, name: str, check: str) -> None:
    phase, reason = _outcome(env, name)
    assert phase == Phase.FAILED, reason
    assert check in reason, reason
    status = env.world.get_isvc(NAMESPACE, name)["status"]["components"]["predictor"]
    assert status["latestRolledoutRevision"] == f"{name}-predictor-00001"
    assert {t["revisionName"]: t["percent"] for t in status["traffic"] if t["percent"]} == {
        f"{name}-predictor-00001": 100}
    assert "RollingBack" in event_reasons(env.world, name)


def test_a_revision_that_never_gets_ready_is_rolled_back(env: Env) -> None:
    phase, reason = _outcome(env, "broken")
    assert phase == Phase.FAILED
    assert "broken-predictor-00002" in reason, reason


def test_the_shipped_rbac_was_enough(env: Env) -> None:
    """The controller ran with deploy/rbac only: any forbidden call would be counted."""
    for name in SCENARIOS:
        _outcome(env, name)
    assert api_errors(env.controller.metrics()) == {}, env.controller.tail()
    log = env.controller.log_file.read_text()
    assert "Forbidden" not in log
