"""Two controller replicas while the API server goes away and while the leader is frozen:
never two leaders, and the rollout in flight still finishes (issue 14, defect 1).

Who wrote what is read from the API server's audit log, where each replica's requests
carry its own User-Agent (``rollwise/<version> (<identity>)``): every successful
InferenceService patch must come from the replica whose Lease write came last, so the
writers switch at most once per Lease transition.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from controller.rollout.state import Phase
from simulations.controller_process import ControllerProcess
from simulations.kube.build import Binaries
from simulations.kube.controlplane import ControlPlane
from simulations.world import World, WorldConfig
from tests.e2e.audit import (
    assert_writes_follow_the_lease,
    controller_calls,
    identity_of,
    leading,
    now_utc,
    stopped_leading,
    world_with_plane,
)
from tests.e2e.rollouts import GOOD, finished, rollout_past_first_step, wait_for, write_policy

pytestmark = pytest.mark.e2e
RENEW_DEADLINE, RETRY, LEASE = 4.0, 1.0, 6.0   # what ControllerProcess configures
REQUEST_TIMEOUT = RENEW_DEADLINE / 2           # KubeLeases: half the renew deadline


@pytest.fixture(scope="module")
def plane_and_world(kube_binaries: Binaries) -> Iterator[tuple[ControlPlane, World]]:
    with world_with_plane(WorldConfig(default_behaviour=GOOD, ready_delay=1.0, seed=14),
                          kube_binaries) as both:
        yield both


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return write_policy(tmp_path / "policies")


def exactly_one_leader(a: ControllerProcess, b: ControllerProcess) -> ControllerProcess:
    """The one replica that leads, checked over three retry periods."""
    leader: ControllerProcess = wait_for(lambda: [c for c in (a, b) if leading(c)], 40,
                                         "a leader", a.tail)[0]
    for _ in range(6):
        assert [c for c in (a, b) if leading(c)] == [leader], "two leaders, or none"
        time.sleep(RETRY / 2)
    return leader


@contextlib.contextmanager
def two_replicas_mid_rollout(world: World, policies: Path, directory: Path,
                             name: str) -> Iterator[tuple[ControllerProcess, ControllerProcess]]:
    """Replicas a and b, a rollout of ``name`` past its first step: (leader, follower)."""
    with contextlib.ExitStack() as stack:
        # Each picks its free ports when made: b once a listens, so they never pick the same.
        a = stack.enter_context(ControllerProcess(world, policies, directory / "a.log",
                                                  identity="a"))
        b = stack.enter_context(ControllerProcess(world, policies, directory / "b.log",
                                                  identity="b", webhook=False))
        rollout_past_first_step(world, name, a.tail)
        leader = exactly_one_leader(a, b)
        yield leader, (b if leader is a else a)


def test_an_api_server_outage_stops_the_leader_at_its_deadline_and_never_gives_two(
        plane_and_world: tuple[ControlPlane, World], policies: Path, tmp_path: Path) -> None:
    plane, world = plane_and_world
    since = now_utc()
    with two_replicas_mid_rollout(world, policies, tmp_path, "outage") as (leader, follower):
        down = now_utc()
        plane.stop_apiserver()
        try:
            notice = wait_for(lambda: stopped_leading(leader), RENEW_DEADLINE + 5,
                              "the leader to say it stopped leading", leader.tail)[0]
            assert "renew deadline passed" in notice["reason"], notice
            # Its last renewal was sent at most a retry period before the outage; its loop
            # says so at most a retry period and one request timeout after the deadline.
            said = (datetime.fromisoformat(notice["timestamp"]) - down).total_seconds()
            assert said <= RENEW_DEADLINE + RETRY + REQUEST_TIMEOUT, said
            assert not leading(leader) and not leading(follower)
            time.sleep(max(0.0, 10.0 - (now_utc() - down).total_seconds()))
        finally:
            plane.start_apiserver()
        exactly_one_leader(leader, follower)
        state = wait_for(lambda: finished(world, "outage", "s3://m/outage/v2"), 150,
                         "the rollout to finish after the outage",
                         lambda: leader.tail() + follower.tail())
        assert state.phase == Phase.SUCCEEDED, state.last_decision
        assert_writes_follow_the_lease(world, since)
        agents = {call.agent for call in controller_calls(world, since)}
        for replica in (leader, follower):   # each replica's requests carry its own
            assert any(f"({identity_of(replica)})" in agent for agent in agents), agents


def test_a_frozen_leader_is_replaced_and_writes_nothing_when_it_thaws(
        plane_and_world: tuple[ControlPlane, World], policies: Path, tmp_path: Path) -> None:
    _, world = plane_and_world
    since = now_utc()
    with two_replicas_mid_rollout(world, policies, tmp_path, "frozen") as (leader, follower):
        assert leader.process is not None
        frozen = time.monotonic()
        os.killpg(leader.process.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: leading(follower), LEASE + 10, "the follower to take over",
                     follower.tail)
            assert time.monotonic() - frozen >= LEASE - RETRY   # only once the lease ran out
            time.sleep(max(0.0, LEASE + 3 - (time.monotonic() - frozen)))
        finally:
            os.killpg(leader.process.pid, signal.SIGCONT)
        thawed = now_utc()
        assert not leading(leader), "the thawed leader must see its deadline has passed"
        notice = wait_for(lambda: stopped_leading(leader), 10,
                          "the thawed leader to say it stopped leading", leader.tail)[0]
        assert "renew deadline passed" in notice["reason"], notice
        assert exactly_one_leader(leader, follower) is follower
        state = wait_for(lambda: finished(world, "frozen", "s3://m/frozen/v2"), 150,
                         "the rollout to finish on the new leader", follower.tail)
        assert state.phase == Phase.SUCCEEDED, state.last_decision
        writers = assert_writes_follow_the_lease(world, since)
        old = identity_of(leader)
        assert not [c for c in controller_calls(world, thawed) if f"({old})" in c.agent
                    and c.resource == "inferenceservices" and c.verb == "patch"
                    and c.code == 200], "the thawed leader wrote"
        assert f"({old})" in writers[0] and f"({identity_of(follower)})" in writers[-1]
