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

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import kubernetes.client
import kubernetes.watch
import pytest

from controller.kube.annotations import STATE_ANNOTATION
from controller.rollout.state import Phase, RolloutState, StepVerdict
from controller.routers.kserve_knative import GROUP, PLURAL, VERSION, WEIGHT_FIELD
from simulations.controller_process import ControllerProcess
from simulations.kube.build import Binaries
from simulations.world import World, WorldConfig
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


@dataclass(frozen=True)
class Version:
    """One version of an InferenceService, as the API server's watch delivered it."""

    resource_version: str
    weight: Any                   # spec.predictor's weight field (None: absent)
    state: RolloutState | None


@dataclass
class History:
    """Every version of every InferenceService in the namespace, from a watch started
    before the new models are deployed (restarted from the last resourceVersion when it ends)."""

    api: kubernetes.client.ApiClient
    versions: dict[str, list[Version]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> History:
        listed = cast(dict[str, Any], kubernetes.client.CustomObjectsApi(
            self.api).list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL))
        for obj in listed["items"]:
            self._record(obj)
        self._thread = threading.Thread(target=self._watch,
                                        args=(listed["metadata"]["resourceVersion"],),
                                        daemon=True, name="isvc-history")
        self._thread.start()
        return self

    def _record(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        raw = (meta.get("annotations") or {}).get(STATE_ANNOTATION)
        try:
            state = RolloutState.from_json(raw) if raw else None
        except ValueError as err:
            self.errors.append(f"{meta['name']}@{meta['resourceVersion']}: {err}")
            state = None
        predictor = (obj.get("spec") or {}).get("predictor") or {}
        self.versions.setdefault(meta["name"], []).append(
            Version(meta["resourceVersion"], predictor.get(WEIGHT_FIELD), state))

    def _watch(self, resource_version: str) -> None:
        api = kubernetes.client.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(api.list_namespaced_custom_object, GROUP, VERSION,
                                          NAMESPACE, PLURAL, resource_version=resource_version,
                                          timeout_seconds=5, allow_watch_bookmarks=True):
                    obj = event["object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(obj)
                    elif event["type"] == "ERROR":
                        self.errors.append(f"watch error: {obj}")
                        return
                    if self._stop.is_set():
                        break
            except Exception as err:  # the history must be complete, or the test says so
                self.errors.append(f"watch failed: {err!r}")
                return
            finally:
                watch.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


def _log_records(log_file: Path) -> tuple[list[dict[str, Any]], int]:
    """The controller's JSON log lines, and how many lines were not JSON (a line cut by a
    SIGKILL mid-write is one)."""
    records, torn = [], 0
    for line in log_file.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            torn += 1
    return records, torn


def _step_problem(state: RolloutState, good: bool) -> str | None:
    """Why the verdicts of a finished rollout show a skipped or repeated step, or None."""
    steps = [v.step for v in state.verdicts]
    outcomes = [v.outcome for v in state.verdicts]
    if steps != list(range(len(steps))):
        return f"verdict steps {steps} are not one per step from 0"
    expected = ["pass"] * len(steps) if good else ["pass"] * (len(steps) - 1) + ["fail"]
    if not steps or outcomes != expected:
        return f"verdict outcomes {outcomes} for a {'good' if good else 'bad'} model"
    return None


def _steps(verdicts: tuple[StepVerdict, ...]) -> list[tuple[int, str]]:
    return [(v.step, v.outcome) for v in verdicts]


def _rolled_out(world: World, name: str) -> bool:
    """Whether KServe reports the first model's revision as rolled out. A deploy before
    that (just after adoption, under load) is a race of its own, found by this test: the
    controller took the old revision, ready at last, for the new model's canary and paused
    for ever on "the stable revision is not known"."""
    status = world.get_isvc(NAMESPACE, name).get("status") or {}
    return bool(((status.get("components") or {}).get("predictor") or {}).get(
        "latestRolledoutRevision"))


def _unfinished_report(world: World, names: list[str], controller: ControllerProcess) -> str:
    unfinished = [n for n in names if finished(world, n, f"s3://m/{n}/v2") is None]
    return f"unfinished: {unfinished}\n{controller.tail()}"


def _leads(controller: ControllerProcess) -> bool:
    return "rollwise_leader 1.0" in controller.metrics()


def _rewritten(versions: list[Version], rollout: str) -> list[str]:
    """Versions of ``rollout``'s state whose verdicts do not extend the previous ones."""
    problems: list[str] = []
    previous: tuple[StepVerdict, ...] = ()
    for version in versions:
        if version.state is None or version.state.id != rollout:
            continue
        verdicts = version.state.verdicts
        if verdicts[:len(previous)] != previous:
            problems.append(f"@{version.resource_version}: {_steps(verdicts)} after "
                            f"{_steps(previous)}")
        previous = verdicts
    return problems


def _writes_after_promotion(versions: list[Version], rollout: str) -> tuple[str, list[str]]:
    """(resourceVersion of the promotion write, the later versions whose weight differs)."""
    promoted: Version | None = None
    changed = []
    for version in versions:
        if promoted is None:
            if (version.state is not None and version.state.id == rollout
                    and version.state.phase in (Phase.PROMOTING, Phase.SUCCEEDED)):
                promoted = version
        elif version.weight != promoted.weight:
            changed.append(f"@{version.resource_version}: {WEIGHT_FIELD}={version.weight!r}")
    return ("" if promoted is None else promoted.resource_version), changed


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
        for name in names:   # see _rolled_out: a deploy before this is another test
            wait_for(partial(_rolled_out, world, name), 30, f"{name}'s first revision")
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
    finals = {n: finished(world, n, f"s3://m/{n}/v2") for n in names}
    outcomes: Counter[str] = Counter()
    weight_writes_after_promotion = 0
    for name, good in names.items():
        state = finals[name]
        if state is None:
            problems.append(f"{name}: not finished")
            continue
        outcomes[f"{'good' if good else 'bad'} {state.phase}"] += 1
        want = Phase.SUCCEEDED if good else Phase.FAILED
        if state.phase != want:
            problems.append(f"{name}: {state.phase}, not {want} "
                            f"({state.last_decision.reason if state.last_decision else ''})")
        if (step := _step_problem(state, good)) is not None:
            problems.append(f"{name}: {step}")
        versions = history.versions.get(name, [])
        ids = {v.state.id for v in versions
               if v.state is not None and v.state.storage_uri == f"s3://m/{name}/v2"}
        if ids != {state.id}:
            problems.append(f"{name}: the new model had rollouts {sorted(ids)}, not one")
        problems += [f"{name}: verdicts rewritten {p}" for p in _rewritten(versions, state.id)]
        if good:
            promoted_at, changed = _writes_after_promotion(versions, state.id)
            if not promoted_at:
                problems.append(f"{name}: no promotion version in the watched history")
            weight_writes_after_promotion += len(changed)
            problems += [f"{name}: weight written after promotion {c}" for c in changed]

    events = kubernetes.client.CoreV1Api(world.admin).list_namespaced_event(NAMESPACE).items
    ours = [e for e in events if e.involved_object.name in names]
    seen = Counter((e.involved_object.name, e.involved_object.uid, e.reason, e.message)
                   for e in ours for _ in range(max(e.count or 1, 1)))
    duplicates = {key: n for key, n in seen.items() if n > 1}
    problems += [f"duplicate Event x{n}: {key}" for key, n in duplicates.items()]

    # -- what the controller logged ----------------------------------------------------
    records, torn = _log_records(log_file)
    tracebacks = log_file.read_text(errors="replace").count("Traceback")
    promoted_rollouts: set[str] = set()
    logged_after_promotion = 0
    for record in records:
        if record.get("event") != "traffic written":
            continue
        rollout = str(record.get("rollout"))
        if rollout in promoted_rollouts:
            logged_after_promotion += 1
            problems.append(f"traffic written after promotion (log): {record}")
        if record.get("action") == "Promote":
            promoted_rollouts.add(rollout)
    if tracebacks:
        problems.append(f"{tracebacks} tracebacks in the controller's log")

    verdicts = sum(len(s.verdicts) for s in finals.values() if s is not None)
    watched = sum(len(v) for v in history.versions.values())
    with capsys.disabled():
        print(f"\nkill -9 chaos (seed {SEED}): {len(names)} rollouts "
              f"({sum(names.values())} good, {len(names) - sum(names.values())} bad), "
              f"{kills} kills ({restarted_at_once} restarted at once, {down_seconds:.1f} s "
              f"down in all; rollouts in flight at each kill: {in_flight_at_kills}); "
              f"outcomes: {dict(sorted(outcomes.items()))}, "
              f"{len(names) - sum(outcomes.values())} unfinished; {verdicts} verdicts, "
              f"{watched} object versions watched, {len(ours)} Events "
              f"({len(duplicates)} duplicated), {weight_writes_after_promotion} weight "
              f"changes and {logged_after_promotion} logged traffic writes after promotion, "
              f"{tracebacks} tracebacks, {torn} torn log lines; {elapsed:.1f} s")
    assert kills == KILLS, f"only {kills} of {KILLS} kills happened before the rollouts ended"
    assert not problems, "\n".join(problems[:20])
