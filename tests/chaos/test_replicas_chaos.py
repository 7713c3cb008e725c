"""Replicas chaos: three controller replicas (or two) while the leader is SIGKILLed, frozen
for longer than its lease, and the API server restarted, over good and bad rollouts.

Issue 14's chaos suite, second bullet. One world (real kube-apiserver writing its audit log,
real Prometheus, simulated KServe), ROLLWISE_REPLICAS replicas of ``rollwise run`` (each its
own process, identity and User-Agent), ROLLWISE_REPLICAS_ROLLOUTS InferenceServices (half
get a good model, half one whose error rate fails analysis) deployed one after another
between the faults, and a schedule of faults shuffled by ``random.Random(ROLLWISE_CHAOS_SEED)``:

- ROLLWISE_REPLICAS_KILLS SIGKILLs of the current leader, restarted at once or after a short
  random delay (a new process: a new identity, which must wait for the Lease);
- ROLLWISE_REPLICAS_FREEZES SIGSTOPs of the current leader for longer than the lease (until
  another replica leads, and a random 1-3 s beyond the lease), then SIGCONT;
- ROLLWISE_REPLICAS_API_RESTARTS restarts of kube-apiserver (stopped, down 1-5 s, started
  again on the same port over the same etcd).

Before each fault the admission webhook is pointed at a follower, as the webhook's Service
would route around a pod that stopped answering (a frozen replica's webhook would otherwise
hold every InferenceService write for its 5 s timeout, a matter for another test).

Then, from the API server's audit log (each request under its replica's User-Agent):

- zero split-brain writes: every successful InferenceService write comes from the replica
  whose Lease write came last, at most ``renew_deadline`` after that renewal was received
  (the one margin ``controller.leader`` allows), and completes before any other replica
  writes the Lease (``tests.e2e.audit.split_brain_writes``);
- a frozen leader writes nothing from its thaw until it acquires the Lease again, and says
  it stopped leading because its renew deadline passed;
- every kill and freeze gave the Lease to another replica, and every replica process shows
  in the audit log under its own identity;

and from the API server's objects and the replicas' logs, the kill -9 test's checks
(``tests.chaos.checks``): every rollout ended as its model deserves (good promoted, bad
rolled back) as one rollout, no step skipped or repeated, no verdict rewritten in any
version the API server held, no duplicate Event, no traffic write after promotion, no
traceback.

The default (what ``make test`` runs) is small: 3 replicas, 4 rollouts, 2 kills, 1 freeze,
1 API-server restart, about 2 minutes on 2 cores. A larger variant, e.g.
``ROLLWISE_REPLICAS_ROLLOUTS=12 ROLLWISE_REPLICAS_KILLS=8 ROLLWISE_REPLICAS_FREEZES=4
ROLLWISE_REPLICAS_API_RESTARTS=3``, and two replicas with ``ROLLWISE_REPLICAS=2``. At most
4 rollouts are in flight at once (2 cores). The figures are printed.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from simulations.controller_process import ControllerProcess
from simulations.kube.build import Binaries
from simulations.kube.controlplane import ControlPlane
from simulations.traffic import TrafficGenerator
from simulations.world import World, WorldConfig
from tests.chaos.checks import (
    History,
    duplicate_events,
    log_records,
    rolled_out,
    rollout_outcomes,
    traffic_writes_after_promotion,
)
from tests.e2e.audit import (
    controller_calls,
    holders,
    identity_of,
    leading,
    lease_writes,
    managed_writes,
    now_utc,
    split_brain_writes,
    stopped_leading,
    world_with_plane,
    written_before_reacquiring,
)
from tests.e2e.rollouts import (
    ERRORS,
    GOOD,
    NAMESPACE,
    deploy,
    deploy_and_adopt,
    finished,
    wait_for,
    write_policy,
)

SEED = int(os.environ.get("ROLLWISE_CHAOS_SEED", "14"))
REPLICAS = int(os.environ.get("ROLLWISE_REPLICAS", "3"))
ROLLOUTS = int(os.environ.get("ROLLWISE_REPLICAS_ROLLOUTS", "4"))
KILLS = int(os.environ.get("ROLLWISE_REPLICAS_KILLS", "2"))
FREEZES = int(os.environ.get("ROLLWISE_REPLICAS_FREEZES", "1"))
API_RESTARTS = int(os.environ.get("ROLLWISE_REPLICAS_API_RESTARTS", "1"))
FAULTS = KILLS + FREEZES + API_RESTARTS

# The kill -9 test's short lease (2 cores, a bounded run); retries every 1 s
# (ControllerProcess's default).
LEASE_S, RENEW_DEADLINE_S = 3.0, 2.0
LEASE = {"ROLLWISE_LEADER_ELECTION__LEASE_DURATION_SECONDS": f"{LEASE_S:g}",
         "ROLLWISE_LEADER_ELECTION__RENEW_DEADLINE_SECONDS": f"{RENEW_DEADLINE_S:g}"}
RUN_FOR = (1.0, 4.0)          # seconds the leader leads before its fault (uniform)
DOWN_FOR = (0.2, 2.0)         # seconds a killed replica stays down, when not restarted at once
FROZEN_BEYOND_LEASE = (1.0, 3.0)   # seconds a frozen leader stays frozen beyond its lease
API_DOWN_FOR = (1.0, 5.0)     # seconds kube-apiserver stays stopped
MAX_IN_FLIGHT = 4             # rollouts at once (2 cores)
RATE_RPS = 120                # per InferenceService, as in the kill -9 test
DEADLINE = 180                # seconds for the rollouts to end after the last fault
AFTERWARDS = 3.0              # seconds the replicas run on after the last verdict
READY_S = 90.0                # for a replica to start (2 cores shared with other tests)

pytestmark = [pytest.mark.chaos, pytest.mark.e2e,
              pytest.mark.timeout(240 + DEADLINE + 40 * FAULTS + 30 * ROLLOUTS)]


def _names() -> dict[str, bool]:
    """InferenceService -> whether its new model is good (alternating, half and half)."""
    return {f"{'good' if i % 2 == 0 else 'bad'}-{i:02d}": i % 2 == 0 for i in range(ROLLOUTS)}


@dataclass(frozen=True)
class Thaw:
    """A leader frozen past its lease: its identity and the moment it was let go on."""

    identity: str
    at: datetime


@dataclass
class Replicas:
    """The replica slots; a killed replica is replaced in its slot by a new process."""

    world: World
    policies: Path
    directory: Path
    slots: list[ControllerProcess] = field(default_factory=list)
    every: list[ControllerProcess] = field(default_factory=list)   # all incarnations

    def start(self, slot: int) -> ControllerProcess:
        # One at a time: each picks its free ports when made, once the previous listens.
        replica = ControllerProcess(
            self.world, self.policies,
            self.directory / f"r{slot}-{len(self.every)}.log", env=LEASE,
            identity=f"r{slot}").start(wait_ready=READY_S)
        if slot < len(self.slots):
            self.slots[slot] = replica
        else:
            self.slots.append(replica)
        self.every.append(replica)
        return replica

    def leader(self, among: list[ControllerProcess] | None = None,
               timeout: float = 60.0) -> ControllerProcess:
        """The one replica that leads (waiting until one does)."""
        candidates = among if among is not None else self.slots
        found: list[ControllerProcess] = wait_for(
            lambda: [c for c in candidates if leading(c)], timeout, "a leader",
            lambda: "\n".join(c.tail(15) for c in candidates))
        assert len(found) == 1, f"{len(found)} replicas lead at once"
        return found[0]

    def point_webhook_away_from(self, leader: ControllerProcess) -> None:
        follower = next((c for c in self.slots if c is not leader), leader)
        assert follower.webhook_port is not None
        _, _, ca = self.world.webhook_certificate()
        self.world.register_webhook(f"https://127.0.0.1:{follower.webhook_port}", ca)

    def stop(self) -> None:
        for replica in self.slots:
            replica.stop()


@dataclass
class Faults:
    """What the schedule did, for the figures and the checks."""

    kills: int = 0
    restarted_at_once: int = 0
    freezes: int = 0
    frozen_seconds: list[float] = field(default_factory=list)
    thaws: list[Thaw] = field(default_factory=list)
    api_restarts: int = 0
    api_down_seconds: list[float] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)   # rollouts in flight at each fault


def _kill(replicas: Replicas, leader: ControllerProcess, rng: random.Random,
          faults: Faults) -> None:
    slot = replicas.slots.index(leader)
    leader.kill()                              # SIGKILL of its process group
    faults.kills += 1
    down = 0.0 if rng.random() < 0.5 else rng.uniform(*DOWN_FOR)
    faults.restarted_at_once += down == 0.0
    time.sleep(down)
    replicas.start(slot)


def _freeze(replicas: Replicas, leader: ControllerProcess, seen: float, rng: random.Random,
            faults: Faults) -> None:
    """``leader`` led at some moment after ``seen`` (time.monotonic())."""
    assert leader.process is not None
    others = [c for c in replicas.slots if c is not leader]
    notices = len(stopped_leading(leader))
    hold = LEASE_S + rng.uniform(*FROZEN_BEYOND_LEASE)
    frozen = time.monotonic()
    os.killpg(leader.process.pid, signal.SIGSTOP)
    try:
        replicas.leader(others, LEASE_S + 20)
        # It led after ``seen``, so its last renewal was sent after seen - renew_deadline,
        # and the Lease can be taken only lease_duration after that renewal.
        assert time.monotonic() - seen > LEASE_S - RENEW_DEADLINE_S, (
            "the Lease was taken before it ran out")
        time.sleep(max(0.0, hold - (time.monotonic() - frozen)))
    finally:
        thawed = now_utc()
        os.killpg(leader.process.pid, signal.SIGCONT)
    faults.freezes += 1
    faults.frozen_seconds.append(time.monotonic() - frozen)
    faults.thaws.append(Thaw(identity_of(leader), thawed))
    assert not leading(leader), "the thawed leader must see its deadline has passed"
    notice = wait_for(lambda: stopped_leading(leader)[notices:], 10,
                      "the thawed leader to say it stopped leading", leader.tail)[0]
    assert "renew deadline passed" in notice["reason"], notice
    assert replicas.leader() is not leader, "the Lease went back to the thawed leader"


def _restart_api_server(plane: ControlPlane, rng: random.Random, faults: Faults) -> None:
    down = time.monotonic()
    plane.stop_apiserver()
    try:
        time.sleep(rng.uniform(*API_DOWN_FOR))
    finally:
        plane.start_apiserver()
    faults.api_restarts += 1
    faults.api_down_seconds.append(time.monotonic() - down)


@pytest.fixture
def plane_and_world(kube_binaries: Binaries) -> Iterator[tuple[ControlPlane, World]]:
    models = {f"s3://m/{name}/v2": GOOD if good else ERRORS for name, good in _names().items()}
    with world_with_plane(WorldConfig(models=models, default_behaviour=GOOD, ready_delay=1.0,
                                      seed=SEED), kube_binaries) as both:
        yield both


def test_replicas_under_kill_freeze_and_api_server_restart_never_split_brain(
        plane_and_world: tuple[ControlPlane, World], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    plane, world = plane_and_world
    rng = random.Random(SEED)
    names = _names()
    schedule = ["kill"] * KILLS + ["freeze"] * FREEZES + ["api-server restart"] * API_RESTARTS
    rng.shuffle(schedule)
    order = list(names)
    # Rollout j is deployed just before fault j * FAULTS // ROLLOUTS.
    deploys: dict[int, list[str]] = {}
    for j, name in enumerate(order):
        deploys.setdefault(j * FAULTS // ROLLOUTS if FAULTS else 0, []).append(name)
    replicas = Replicas(world, write_policy(tmp_path / "policies"), tmp_path)
    faults = Faults()
    traffic: dict[str, TrafficGenerator] = {}
    history = History(world.admin)
    since = now_utc()
    started = time.monotonic()

    def unfinished(among: list[str]) -> list[str]:
        return [n for n in among if finished(world, n, f"s3://m/{n}/v2") is None]

    def deployed_and_unfinished() -> list[str]:
        running = unfinished(list(traffic))
        for name in set(traffic) - set(running):
            traffic[name].stop()     # ended: its traffic is no longer needed
        return running

    try:
        for slot in range(REPLICAS):
            replicas.start(slot)
        for name in names:
            deploy_and_adopt(world, name, f"s3://m/{name}/v1")
        for name in names:   # see rolled_out: a deploy before this is another test
            wait_for(partial(rolled_out, world, name), 30, f"{name}'s first revision")
        history.start()
        for index in range(max(FAULTS, 1)):
            replicas.leader()
            for name in deploys.get(index, []):
                wait_for(lambda: len(deployed_and_unfinished()) < MAX_IN_FLIGHT, DEADLINE,
                         "a rollout in flight to end")
                traffic[name] = world.start_traffic(NAMESPACE, name, RATE_RPS,
                                                    max_seconds=DEADLINE + 60 * FAULTS)
                deploy(world, name, f"s3://m/{name}/v2")
            if index >= FAULTS:
                break
            time.sleep(rng.uniform(*RUN_FOR))
            seen = time.monotonic()
            leader = replicas.leader()
            faults.in_flight.append(len(deployed_and_unfinished()))
            replicas.point_webhook_away_from(leader)
            fault = schedule[index]
            if fault == "kill":
                _kill(replicas, leader, rng, faults)
            elif fault == "freeze":
                _freeze(replicas, leader, seen, rng, faults)
            else:
                _restart_api_server(plane, rng, faults)
        wait_for(lambda: not unfinished(order), DEADLINE, "every rollout to end",
                 lambda: f"unfinished: {unfinished(order)}\n"
                 + "\n".join(c.tail(15) for c in replicas.slots))
        time.sleep(AFTERWARDS)
        ended = now_utc()
    finally:
        replicas.stop()
        history.stop()
    elapsed = time.monotonic() - started

    # -- the audit log: who wrote while holding the Lease ---------------------------------
    calls = [c for c in controller_calls(world, since) if c.received < ended]
    problems: list[str] = [f"split brain: {w}" for w in
                           split_brain_writes(calls, RENEW_DEADLINE_S)]
    for thaw in faults.thaws:
        problems += [f"written by the thawed leader before it re-acquired: {c}" for c in
                     written_before_reacquiring(calls, f"({thaw.identity})", thaw.at)]
    # Events are no managed object (their names make a repeat a 409), but a replica
    # without the Lease should not write them either: counted, not asserted.
    stray_events = split_brain_writes(calls, RENEW_DEADLINE_S, frozenset({"events"}))
    changes = holders(calls)
    if len(changes) - 1 < faults.kills + faults.freezes:
        problems.append(f"{faults.kills} kills and {faults.freezes} freezes of the leader "
                        f"but the Lease changed hands {len(changes) - 1} times: {changes}")
    identities = [identity_of(r) for r in replicas.every]
    agents = {c.agent for c in calls}
    problems += [f"no request of replica {i} in the audit log" for i in identities
                 if not any(f"({i})" in a for a in agents)]
    problems += [f"a Lease holder that is no replica of this test: {a}" for a in set(changes)
                 if not any(f"({i})" in a for i in identities)]
    writes = managed_writes(calls)
    fenced = [c for c in calls if c.resource == "inferenceservices" and c.code == 409]

    # -- the objects: every rollout as its model deserves ----------------------------------
    problems += [f"history: {e}" for e in history.errors]
    found = rollout_outcomes(world, names, history)
    problems += found.problems
    events, duplicates = duplicate_events(world, names)
    problems += [f"duplicate Event x{n}: {key}" for key, n in duplicates.items()]

    # -- the replicas' logs -------------------------------------------------------------------
    logged: list[dict[str, Any]] = []
    torn = tracebacks = 0
    for replica in replicas.every:
        lines, cut = log_records(replica.log_file)
        logged += lines
        torn += cut
        tracebacks += replica.log_file.read_text(errors="replace").count("Traceback")
    logged.sort(key=lambda record: str(record.get("timestamp", "")))
    late = traffic_writes_after_promotion(logged)
    problems += [f"traffic written after promotion (log): {record}" for record in late]
    if tracebacks:
        problems.append(f"{tracebacks} tracebacks in the replicas' logs")

    by_agent = Counter(next((i for i in identities if f"({i})" in w.agent), w.agent)
                       for w in writes)
    with capsys.disabled():
        print(f"\nreplicas chaos (seed {SEED}): {REPLICAS} replicas ({len(replicas.every)} "
              f"processes), {len(names)} rollouts ({sum(names.values())} good, "
              f"{len(names) - sum(names.values())} bad); faults {schedule}: {faults.kills} "
              f"kills ({faults.restarted_at_once} restarted at once), {faults.freezes} "
              f"freezes ({', '.join(f'{s:.1f}' for s in faults.frozen_seconds)} s), "
              f"{faults.api_restarts} API-server restarts (down "
              f"{', '.join(f'{s:.1f}' for s in faults.api_down_seconds)} s); rollouts in "
              f"flight at each fault: {faults.in_flight}; {len(changes) - 1} leader changes; "
              f"{len(writes)} InferenceService writes audited ({sorted(by_agent.values())} by "
              f"replica), {len(fenced)} refused by the resourceVersion fence, "
              f"{len(lease_writes(calls))} Lease writes; "
              f"{sum('split brain' in p for p in problems)} split-brain writes, "
              f"{len(stray_events)} Event writes outside the Lease; outcomes: "
              f"{dict(sorted(found.outcomes.items()))}, "
              f"{len(names) - sum(found.outcomes.values())} unfinished; {found.verdicts} "
              f"verdicts, {sum(len(v) for v in history.versions.values())} object versions "
              f"watched ({history.reconnects} watch reconnects, {history.catch_ups} after a "
              f"410 with {history.caught_up_revisions} revisions read back), {events} Events "
              f"({len(duplicates)} duplicated), {found.weight_writes_after_promotion} weight "
              f"changes and {len(late)} logged traffic writes after promotion, {tracebacks} "
              f"tracebacks, {torn} torn log lines; {elapsed:.1f} s")
    assert faults.kills + faults.freezes + faults.api_restarts == FAULTS
    assert not problems, "\n".join(problems[:20])
