"""kill -9 chaos: one controller SIGKILLed at seeded random moments over concurrent rollouts.

Issue 14's chaos suite, first bullet. One world (real kube-apiserver and Prometheus,
simulated KServe), ROLLWISE_CHAOS_ROLLOUTS InferenceServices (half get a good model, half
one whose error rate fails analysis), deployed at once (in waves of 4), one controller
process killed with SIGKILL ROLLWISE_CHAOS_KILLS times at moments drawn from
``random.Random(ROLLWISE_CHAOS_SEED)``, restarted at once or after a short random delay
(each restart is a new replica that waits for the dead one's Lease),
until every rollout has finished or a bounded deadline passes. Then, from the API server
and the controller's own log:

- every rollout ended as its model deserves: good promoted (Succeeded), bad rolled back
  (Failed), none left running, and it stayed the same rollout (one id) through the kills;
- no step skipped or repeated: the verdicts are one per step, contiguous from 0, all
  passes but a last fail for a bad model; and no version of the state the API server ever
  held rewrote an earlier verdict (every version is watched, not only the last);
- no duplicate Event: the same reason and message twice on one object;
- no traffic write after promotion: from the version that wrote the promotion on, the
  object's weight field never changes in any version, and the controller never logged a
  traffic write for that rollout after its Promote.

The default (what ``make test`` runs) is small: 4 rollouts, 4 kills, about two minutes on
2 cores; ``make chaos`` runs 20 rollouts and 20 kills. At most 4 rollouts run at once
(20 at 120 requests per second each are more than 2 cores serve: steps ran out of time),
so more come in waves of 4, each with its share of the kills; the controller and the
watched history span all waves. The figures are printed.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from simulations.controller_process import ControllerProcess
from simulations.kube.build import Binaries
from simulations.world import World, WorldConfig
from tests.chaos.checks import (
    History,
    duplicate_events,
    log_records,
    rolled_out,
    rollout_outcomes,
    traffic_writes_after_promotion,
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
ROLLOUTS = int(os.environ.get("ROLLWISE_CHAOS_ROLLOUTS", "4"))
KILLS = int(os.environ.get("ROLLWISE_CHAOS_KILLS", "4"))
RUN_FOR = (1.0, 4.0)              # seconds the controller leads before it is killed (uniform)
DOWN_FOR = (0.2, 2.0)             # seconds it stays down, when it is not restarted at once
# A restarted controller is a new replica: it leads once the killed one's Lease expired.
# A 3 s lease (ControllerProcess's is 6 s; retries every 1 s) keeps the default variant
# within two minutes on 2 cores and 20 kills within the deadline.
LEASE = {"ROLLWISE_LEADER_ELECTION__LEASE_DURATION_SECONDS": "3",
         "ROLLWISE_LEADER_ELECTION__RENEW_DEADLINE_SECONDS": "2"}
# At most 4 rollouts run at once (2 cores): more come in waves, each with its share of kills.
WAVES = max(1, -(-ROLLOUTS // 4))
RATE_RPS = 120                    # per InferenceService: 100 requests at 10% in about 8 s
DEADLINE = 180 + 12 * KILLS // WAVES    # seconds from a wave's deploys to its last verdict

AFTERWARDS = 3.0                  # seconds the last controller runs on after the last verdict

pytestmark = [pytest.mark.chaos, pytest.mark.e2e, pytest.mark.timeout(DEADLINE * WAVES + 240)]


def _names() -> dict[str, bool]:
    """InferenceService -> whether its new model is good (alternating, half and half)."""
    return {f"{'good' if i % 2 == 0 else 'bad'}-{i:02d}": i % 2 == 0 for i in range(ROLLOUTS)}


def _unfinished_report(world: World, names: list[str], controller: ControllerProcess) -> str:
    unfinished = [n for n in names if finished(world, n, f"s3://m/{n}/v2") is None]
    return f"unfinished: {unfinished}\n{controller.tail()}"


def _leads(controller: ControllerProcess) -> bool:
    return "rollwise_leader 1.0" in controller.metrics()


@pytest.fixture
def world(kube_binaries: Binaries) -> Iterator[World]:
    models = {f"s3://m/{name}/v2": GOOD if good else ERRORS for name, good in _names().items()}
    with World(WorldConfig(models=models, default_behaviour=GOOD, ready_delay=1.0, seed=SEED),
               binaries=kube_binaries) as running:
        yield running


def test_kill_9_at_random_moments_every_rollout_ends_as_its_model_deserves(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(SEED)
    names = _names()
    policies = write_policy(tmp_path / "policies")
    log_file = tmp_path / "controller.log"   # every incarnation appends to the same log
    controller = ControllerProcess(world, policies, log_file, env=LEASE).start()
    kills, restarted_at_once, down_seconds, in_flight_at_kills = 0, 0, 0.0, []
    started = time.monotonic()
    history = History(world.admin)
    try:
        for name in names:
            deploy_and_adopt(world, name, f"s3://m/{name}/v1")
        for name in names:   # see rolled_out: a deploy before this is another test
            wait_for(partial(rolled_out, world, name), 30, f"{name}'s first revision")
        history.start()
        order = list(names)
        for wave in range(WAVES):
            batch = order[wave * len(order) // WAVES:(wave + 1) * len(order) // WAVES]
            traffic = [world.start_traffic(NAMESPACE, name, RATE_RPS, max_seconds=DEADLINE + 60)
                       for name in batch]
            for name in batch:
                deploy(world, name, f"s3://m/{name}/v2")
            deployed = time.monotonic()

            def unfinished(batch: list[str] = batch) -> list[str]:
                return [n for n in batch if finished(world, n, f"s3://m/{n}/v2") is None]

            while kills < KILLS * (wave + 1) // WAVES and (
                    time.monotonic() - deployed < DEADLINE):
                # Killing a replica that does not lead yet would disturb nothing.
                wait_for(partial(_leads, controller), 30, "the restarted controller to lead",
                         controller.tail)
                time.sleep(rng.uniform(*RUN_FOR))
                running = unfinished()
                if not running:
                    break
                controller.kill()                      # SIGKILL of the whole process group
                kills += 1
                in_flight_at_kills.append(len(running))
                down = 0.0 if rng.random() < 0.5 else rng.uniform(*DOWN_FOR)
                restarted_at_once += down == 0.0
                down_seconds += down
                time.sleep(down)
                controller = ControllerProcess(world, policies, log_file, env=LEASE).start()
            remaining = max(DEADLINE - (time.monotonic() - deployed), 1.0)
            wait_for(lambda: not unfinished(), remaining, f"every rollout of wave {wave + 1} "
                     "to finish", partial(_unfinished_report, world, batch, controller))
            if wave + 1 < WAVES:
                for generator in traffic:
                    generator.stop()
        time.sleep(AFTERWARDS)
    finally:
        controller.stop()
        history.stop()
    elapsed = time.monotonic() - started

    # -- what the API server holds -----------------------------------------------------
    problems: list[str] = [f"history: {e}" for e in history.errors]
    found = rollout_outcomes(world, names, history)
    problems += found.problems
    outcomes, weight_writes_after_promotion = found.outcomes, found.weight_writes_after_promotion
    events, duplicates = duplicate_events(world, names)
    problems += [f"duplicate Event x{n}: {key}" for key, n in duplicates.items()]

    # -- what the controller logged ----------------------------------------------------
    records, torn = log_records(log_file)
    tracebacks = log_file.read_text(errors="replace").count("Traceback")
    late = traffic_writes_after_promotion(records)
    logged_after_promotion = len(late)
    problems += [f"traffic written after promotion (log): {record}" for record in late]
    if tracebacks:
        problems.append(f"{tracebacks} tracebacks in the controller's log")

    verdicts = found.verdicts
    watched = sum(len(v) for v in history.versions.values())
    with capsys.disabled():
        print(f"\nkill -9 chaos (seed {SEED}): {len(names)} rollouts "
              f"({sum(names.values())} good, {len(names) - sum(names.values())} bad), "
              f"{kills} kills ({restarted_at_once} restarted at once, {down_seconds:.1f} s "
              f"down in all; rollouts in flight at each kill: {in_flight_at_kills}); "
              f"outcomes: {dict(sorted(outcomes.items()))}, "
              f"{len(names) - sum(outcomes.values())} unfinished; {verdicts} verdicts, "
              f"{watched} object versions watched, {events} Events "
              f"({len(duplicates)} duplicated), {weight_writes_after_promotion} weight "
              f"changes and {logged_after_promotion} logged traffic writes after promotion, "
              f"{tracebacks} tracebacks, {torn} torn log lines; {elapsed:.1f} s")
    assert kills == KILLS, f"only {kills} of {KILLS} kills happened before the rollouts ended"
    assert not problems, "\n".join(problems[:20])
