"""What goes wrong in clusters: Prometheus unreachable, the controller killed mid-step,
two replicas at once. Each test runs the real controller process(es) against one world."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.analysis.looks import step_totals
from controller.rollout.state import Phase
from simulations.controller_process import ControllerProcess, free_port
from simulations.kube.build import Binaries
from simulations.world import World, WorldConfig
from tests.e2e.rollouts import (
    GOOD,
    NAMESPACE,
    api_errors,
    deploy,
    deploy_and_adopt,
    event_reasons,
    finished,
    rollout_past_first_step,
    state_of,
    wait_for,
    write_policy,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(kube_binaries: Binaries) -> Iterator[World]:
    with World(WorldConfig(default_behaviour=GOOD, ready_delay=1.0, seed=5),
               binaries=kube_binaries) as running:
        yield running


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return write_policy(tmp_path / "policies")


def test_prometheus_unreachable_holds_and_never_promotes(world: World, policies: Path,
                                                         tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with ControllerProcess(world, policies, tmp_path / "c.log",
                           env={"ROLLWISE_PROMETHEUS__URL": dead}) as controller:
        deploy_and_adopt(world, "blind", "s3://m/blind/v1")
        world.start_traffic(NAMESPACE, "blind", 40, max_seconds=60)
        deploy(world, "blind", "s3://m/blind/v2")
        paused = wait_for(lambda: (s := state_of(world, "blind")) is not None
                          and s.phase == Phase.PAUSED and s.storage_uri == "s3://m/blind/v2"
                          and s, 60, "the rollout to pause for missing data", controller.tail)
        assert paused.pause is not None and paused.pause.reason == "missing-data"
        assert "query failed" in paused.pause.message
        time.sleep(5)
        state = state_of(world, "blind")
        assert state is not None and state.phase == Phase.PAUSED and state.step == 0
        obj = world.get_isvc(NAMESPACE, "blind")
        assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 10  # held, not promoted
        assert "MetricsMissing" in event_reasons(world, "blind")
        metrics = controller.metrics()
        errors = [line for line in metrics.splitlines()
                  if line.startswith('rollwise_metric_query_errors_total{quality="error"}')]
        assert errors and float(errors[0].rsplit(" ", 1)[1]) > 0


def test_kill_9_mid_step_resumes_without_skipping_or_repeating(world: World, policies: Path,
                                                               tmp_path: Path) -> None:
    first = ControllerProcess(world, policies, tmp_path / "first.log").start()
    try:
        rollout_past_first_step(world, "phoenix", first.tail)
    finally:
        first.kill()  # SIGKILL: no shutdown, no lease release
    killed_at = state_of(world, "phoenix")
    assert killed_at is not None
    with ControllerProcess(world, policies, tmp_path / "second.log", identity="b") as second:
        state = wait_for(lambda: finished(world, "phoenix", "s3://m/phoenix/v2"), 200,
                         "the rollout to finish after the restart", second.tail)
        assert state.id == killed_at.id  # the same rollout, resumed
        assert state.phase == Phase.SUCCEEDED, state.last_decision
        steps = [v.step for v in state.verdicts if v.outcome == "pass"]
        assert steps == sorted(set(steps)), f"a step was repeated: {steps}"
        assert steps == list(range(len(steps))), f"a step was skipped: {steps}"
        assert all(step_totals(state.evidence, s) for s in steps)  # evidence of each step
        assert api_errors(second.metrics()) == {}


def test_two_controllers_only_the_leader_acts_and_failover_finishes(
        world: World, policies: Path, tmp_path: Path) -> None:
    a = ControllerProcess(world, policies, tmp_path / "a.log", identity="a").start()
    b = ControllerProcess(world, policies, tmp_path / "b.log", identity="b", webhook=False)
    b.start()
    try:
        rollout_past_first_step(world, "twins", a.tail)
        leaders = [c for c in (a, b) if 'rollwise_leader 1.0' in c.metrics()]
        assert len(leaders) == 1, "exactly one replica holds the lease"
        leader, follower = leaders[0], (b if leaders[0] is a else a)
        assert "traffic written" not in follower.log_file.read_text()
        leader.kill()
        started = time.monotonic()
        wait_for(lambda: 'rollwise_leader 1.0' in follower.metrics(), 30,
                 "the follower to take over", follower.tail)
        assert time.monotonic() - started < 15  # within a lease duration (6 s) plus retries
        state = wait_for(lambda: finished(world, "twins", "s3://m/twins/v2"), 200,
                         "the rollout to finish on the new leader", follower.tail)
        assert state.phase == Phase.SUCCEEDED
    finally:
        a.stop()
        b.stop()


def test_a_stopped_leader_hands_the_lease_over_at_once(world: World, policies: Path,
                                                      tmp_path: Path) -> None:
    """A rolling upgrade sends SIGTERM: the leader releases the Lease, so the follower takes
    over at its next retry (1 s here), not after the 6 s lease duration."""
    a = ControllerProcess(world, policies, tmp_path / "a.log", identity="a").start()
    b = ControllerProcess(world, policies, tmp_path / "b.log", identity="b", webhook=False)
    b.start()
    try:
        leaders = wait_for(lambda: [c for c in (a, b) if "rollwise_leader 1.0" in c.metrics()],
                           30, "a leader", a.tail)
        leader, follower = leaders[0], (b if leaders[0] is a else a)
        started = time.monotonic()
        leader.stop()
        assert leader.process is not None and leader.process.returncode == 0
        wait_for(lambda: "rollwise_leader 1.0" in follower.metrics(), 10,
                 "the follower to take over", follower.tail)
        assert time.monotonic() - started < 4, "handover should not wait for lease expiry"
        assert "released the leader lease" in leader.log_file.read_text()
    finally:
        a.stop()
        b.stop()
