"""Drift over the prediction-sink path: the simulated endpoints export no prediction
histogram; like KServe's agent they send each request and response as a CloudEvent to
the real ``rollwise prediction-sink`` (its own process, its shipped RBAC), which maps each
event's pod to its revision from the API server and exports ``rollwise_prediction``; the
real controller reads it from Prometheus and rolls the drifting canary back. Two at once:
a Knative-mode InferenceService (revision = the Revision owning the pod's Deployment) and
a Standard-mode one (revision = the pod's Deployment, ``{isvc}-{canary}-predictor``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from controller.providers.presets import SINK_METRIC
from controller.rollout.state import Phase
from simulations.controller_process import ControllerProcess
from simulations.kube.build import Binaries
from simulations.sink_process import SinkProcess
from simulations.world import World, WorldConfig
from tests.e2e.rollouts import (
    DRIFTED,
    GOOD,
    NAMESPACE,
    POLICY,
    deploy,
    deploy_and_adopt,
    event_reasons,
    finished,
    state_of,
    wait_for,
    write_policy,
)
from tests.e2e.test_standard_e2e import POLICY as STANDARD_POLICY
from tests.e2e.test_standard_e2e import create as create_standard

pytestmark = pytest.mark.e2e

NAME, V1, V2 = "drift", "s3://m/drift/v1", "s3://m/drift/v2"
STANDARD = "sdrift"     # test_standard_e2e's create: stable predictor "v1", policy "standard"
SV1, SV2 = f"s3://m/{STANDARD}/v1", f"s3://m/{STANDARD}/v2"
SINK_POLICY = POLICY.replace(
    "        reference: {source: stable}\n",
    f"        metric: {SINK_METRIC}\n        reference: {{source: stable}}\n")
SINK_STANDARD_POLICY = STANDARD_POLICY.replace(
    "  onInconclusive:",
    "      - {name: prediction-drift, kind: distribution, method: jensenShannon, "
    f"threshold: 0.1, metric: {SINK_METRIC}}}\n  onInconclusive:")


@dataclass
class Env:
    world: World
    sink: SinkProcess
    controller: ControllerProcess


@pytest.fixture(scope="module")
def env(kube_binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    assert SINK_POLICY != POLICY and SINK_STANDARD_POLICY != STANDARD_POLICY
    tmp = tmp_path_factory.mktemp("sink")
    config = WorldConfig(models={V1: GOOD, V2: DRIFTED, SV1: GOOD, SV2: DRIFTED},
                         ready_delay=1.0, seed=17, prediction_sink=True)
    with World(config, binaries=kube_binaries) as world:
        assert world.sink is not None
        policies = write_policy(tmp / "policies", SINK_POLICY)
        write_policy(policies, SINK_STANDARD_POLICY, "standard")
        controller = ControllerProcess(world, policies, tmp / "controller.log")
        with controller:
            create_standard(world, STANDARD)
            deploy_and_adopt(world, NAME, V1)
            wait_for(lambda: (s := state_of(world, STANDARD)) is not None
                     and s.phase == Phase.SUCCEEDED, 30, f"{STANDARD} adopted", controller.tail)
            world.start_traffic(NAMESPACE, NAME, 60, max_seconds=150)
            world.start_traffic(NAMESPACE, STANDARD, 60, max_seconds=150, split_refresh_s=0.5)
            deploy(world, NAME, V2)
            deploy(world, STANDARD, SV2)
            yield Env(world, world.sink, controller)
            print(controller.tail(60))      # shown by pytest only when a test failed
            print(world.sink.tail(30))


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def test_a_drifting_canary_is_rolled_back_by_predictions_sent_as_cloudevents(
        env: Env) -> None:
    state = wait_for(lambda: finished(env.world, NAME, V2), 110, "the drift rollout to end",
                     lambda: env.controller.tail() + "\n" + env.sink.tail())
    reason = state.last_decision.reason if state.last_decision else ""
    assert state.phase == Phase.FAILED, reason
    assert "prediction-drift" in reason, reason
    status = env.world.get_isvc(NAMESPACE, NAME)["status"]["components"]["predictor"]
    assert status["latestRolledoutRevision"] == f"{NAME}-predictor-00001"
    assert "RollingBack" in event_reasons(env.world, NAME)


def test_a_drifting_standard_mode_canary_is_rolled_back_too(env: Env) -> None:
    state = wait_for(lambda: finished(env.world, STANDARD, SV2), 110,
                     "the Standard-mode drift rollout to end",
                     lambda: env.controller.tail() + "\n" + env.sink.tail())
    reason = state.last_decision.reason if state.last_decision else ""
    assert state.phase == Phase.FAILED, reason
    assert "prediction-drift" in reason, reason
    spec = env.world.get_isvc(NAMESPACE, STANDARD)["spec"]
    assert [c["trafficPercent"] for c in spec["canary"]] == [0]
    canary = f"{STANDARD}-{spec['canary'][0]['predictor']['name']}-predictor"
    revisions = {labels["revision"] for labels, _ in
                 _samples(env.sink.metrics(), f"{SINK_METRIC}_count")
                 if labels["inferenceservice"] == STANDARD}
    assert revisions == {f"{STANDARD}-v1-predictor", canary}, revisions


def test_the_predictions_travelled_through_the_sink(env: Env) -> None:
    for name, uri in ((NAME, V2), (STANDARD, SV2)):
        wait_for(lambda n=name, u=uri: finished(env.world, n, u), 110,  # type: ignore[misc]
                 f"the {name} rollout to end")
    metrics = env.sink.metrics()
    counts = {labels["revision"]: value
              for labels, value in _samples(metrics, f"{SINK_METRIC}_count")
              if labels["inferenceservice"] == NAME}
    assert counts.keys() == {f"{NAME}-predictor-00001", f"{NAME}-predictor-00002"}, counts
    assert all(v > 20 for v in counts.values()), counts     # the canary had 10%
    events = {labels["type"]: v for labels, v in _samples(metrics, "rollwise_sink_events_total")}
    assert events["request"] >= events["response"] > 0
    assert sum(v for _, v in _samples(metrics, "rollwise_sink_unparseable_events_total")) == 0
    assert sum(v for _, v in _samples(metrics, "rollwise_sink_dropped_predictions_total")) == 0
    agent = env.world.fleet.logger
    assert agent is not None and agent.sent > 0 and agent.dropped == 0
    # The endpoints exported no prediction histogram: what the controller judged was the
    # sink's (Prometheus has it for both revisions, from the sink's target).
    prometheus = env.world.prometheus.url

    def series(query: str) -> list[object]:
        answer = requests.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5)
        return list(answer.json()["data"]["result"])
    assert series("kserve_model_prediction_count") == []
    assert len(series(f'{SINK_METRIC}_count{{namespace="{NAMESPACE}"}}')) == 4


def test_the_sinks_shipped_rbac_was_enough(env: Env) -> None:
    """The sink ran with deploy/base/sink/rbac.yaml only; it read pods and their owners."""
    wait_for(lambda: finished(env.world, NAME, V2), 110, "the drift rollout to end")
    calls = env.world.sink_api_calls()
    assert {(verb, group, resource) for verb, group, resource, _ in calls} == {
        ("get", "", "pods"), ("get", "apps", "replicasets"), ("get", "apps", "deployments")}
    assert {status for *_, status in calls} <= {200, 404}, calls
